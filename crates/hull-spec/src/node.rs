//! The node's configuration, `$ROOT/etc/hull/node.json`.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `$ROOT/etc/hull/node.json`. Later issues add nic tags and defaults beside the pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolBackend {
    Btrfs,
    Zfs,
    Dir,
}

impl std::fmt::Display for PoolBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PoolBackend::Btrfs => "btrfs",
            PoolBackend::Zfs => "zfs",
            PoolBackend::Dir => "dir",
        })
    }
}

/// Where the pool lives and how to bring it back after a reboot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub backend: PoolBackend,
    /// The pool's name as datasets carry it (`zones`).
    pub name: String,
    /// A loop-backed pool's file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// A pool made on a block device the operator named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<PathBuf>,
    /// A dir-backend pool's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// The zfs backend's zpool (or parent dataset) that stands for `zones`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zpool: Option<String>,
    /// Size given at creation, in bytes (loop files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}
