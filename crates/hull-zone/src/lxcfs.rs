//! lxcfs (Debian's): a FUSE filesystem whose /proc files answer each reader with its own
//! cgroup's figures. The node runs one (`hull node lxcfs`, an SMF service) at
//! `var/hull/lxcfs`; a zone started while it is mounted gets its files bound over its own
//! /proc, so `free`, `top` and `uptime` in the zone show the zone's caps and use.

use crate::Bind;
use std::path::{Path, PathBuf};

/// Where the node's lxcfs is mounted.
pub fn mountpoint(var_dir: &Path) -> PathBuf {
    var_dir.join("lxcfs")
}

/// Whether an lxcfs answers at `at` now.
pub fn live(at: &Path) -> bool {
    hull_exec::mountinfo::mounts().iter().any(|m| m.mountpoint == at && m.fstype == "fuse.lxcfs")
}

/// The files a zone gets from lxcfs, as binds (only those this lxcfs serves).
pub fn binds(at: &Path) -> Vec<Bind> {
    if !live(at) {
        return Vec::new();
    }
    let files = [
        "proc/cpuinfo",
        "proc/diskstats",
        "proc/loadavg",
        "proc/meminfo",
        "proc/stat",
        "proc/swaps",
        "proc/uptime",
        "proc/slabinfo",
        "sys/devices/system/cpu/online",
    ];
    files
        .iter()
        .map(|f| (at.join(f), Path::new("/").join(f)))
        .filter(|(src, _)| src.exists())
        .map(|(source, destination)| Bind { source, destination, writable: false })
        .collect()
}
