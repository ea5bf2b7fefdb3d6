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
    // A FUSE filesystem mounted at the node's own path: hull's lxcfs (a dead one answers
    // statfs with ENOTCONN, and is not live). Not mountinfo: it grows with every zone.
    const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
    hull_exec::mountinfo::is_mountpoint(at) && hull_exec::mountinfo::fs_magic(at) == Some(FUSE_SUPER_MAGIC)
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
