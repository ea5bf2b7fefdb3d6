//! Zones: OS containers, the outer hull of every instance.
//!
//! A zone is an OCI container made through youki's libcontainer, rooted on its VM's dataset
//! (`$ROOT/zones/<uuid>/root`) with the image's own init as PID 1, in its own pid, mount,
//! network, ipc, uts and cgroup namespaces. [`spec`] turns a [`ZoneConfig`] into the OCI
//! runtime spec (pure); [`runtime`] creates, signals, enters and deletes containers.
//!
//! libcontainer forks. It must be called from a single-threaded process: hull's commands
//! and `zoneadmd` are single-threaded by construction (no async runtime).

pub mod cgroup;
pub mod events;
pub mod idmap;
pub mod lxcfs;
mod relay;
pub mod runtime;
pub mod spec;
pub mod stats;
pub mod supervisor;
pub mod sysinfo;
mod tty;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What a zone needs to run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ZoneConfig {
    /// The container id: the VM's uuid.
    pub id: String,
    /// The zone's root filesystem.
    pub rootfs: PathBuf,
    pub hostname: String,
    /// PID 1's command line.
    pub init: Vec<String>,
    /// The cgroup path, `/<prefix>-<uuid>`: flat, so nothing is left above it.
    pub cgroup: String,
    pub limits: Limits,
    /// Size of the `/tmp` tmpfs in MiB; 0 or None for none.
    pub tmpfs_mib: Option<u64>,
    /// Give init a console (a pty).
    pub terminal: bool,
    /// A network namespace made for the zone (with its NICs), or None for a new, empty one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    /// Host paths bound into the zone (a KVM zone's view of qemu and its disks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub binds: Vec<Bind>,
    /// Host character devices the zone may use (`/dev/kvm`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    /// TCP ports on the host's loopback that zoneadmd relays to unix sockets of the zone
    /// (a KVM guest's VNC console).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relays: Vec<Relay>,
    /// The zone's own user namespace ([`idmap`]); None runs zone root as host root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idmap: Option<Idmap>,
    /// sysinfo(2) answered by zoneadmd with the zone's caps ([`sysinfo`]).
    #[serde(default)]
    pub sysinfo: bool,
}

/// A zone's user namespace: its ids 0..[`idmap::SIZE`] are the host's from `base`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Idmap {
    pub base: u32,
    /// The namespace, kept by a bind mount (made with the zone's network namespace).
    pub userns: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Relay {
    pub port: u16,
    pub socket: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Bind {
    pub source: PathBuf,
    pub destination: PathBuf,
    pub writable: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Device {
    pub path: PathBuf,
    pub major: i64,
    pub minor: i64,
}

/// Resource caps, in SmartOS's units.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Limits {
    /// `max_physical_memory`, MiB.
    pub memory_mib: Option<u64>,
    /// `max_swap`, MiB: memory plus swap.
    pub swap_mib: Option<u64>,
    /// `max_locked_memory`, MiB.
    pub locked_mib: Option<u64>,
    /// `cpu_cap`: percent of one CPU (100 = one CPU).
    pub cpu_cap: Option<u64>,
    /// `cpu_shares`: relative weight.
    pub cpu_shares: Option<u64>,
    /// `max_lwps`: processes and threads.
    pub max_lwps: Option<u64>,
    /// `zfs_io_priority`: relative IO weight.
    pub io_priority: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    #[error("zone {id}: {op}: {reason}")]
    Runtime { id: String, op: &'static str, reason: String },
    #[error("zone {0} is not running")]
    NotRunning(String),
    #[error("zone {id}: {op} {}", path.display())]
    Io {
        id: String,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = ZoneError> = std::result::Result<T, E>;
