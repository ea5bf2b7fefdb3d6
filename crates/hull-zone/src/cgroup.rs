//! A zone's cgroup after it started: caps changed live, processes counted.

use crate::{Limits, Result, ZoneError};
use libcgroups::common::{CgroupConfig, CgroupManager, ControllerOpt, create_cgroup_manager};
use std::path::PathBuf;

fn manager(id: &str, cgroup: &str) -> Result<libcgroups::common::AnyCgroupManager> {
    create_cgroup_manager(CgroupConfig {
        cgroup_path: PathBuf::from(cgroup),
        systemd_cgroup: false,
        container_name: id.to_string(),
    })
    .map_err(|e| ZoneError::Runtime { id: id.to_string(), op: "open cgroup", reason: e.to_string() })
}

/// Applies `limits` to a running zone's cgroup.
pub fn apply(id: &str, cgroup: &str, limits: &Limits) -> Result<()> {
    let resources: oci_spec::runtime::LinuxResources = serde_json::from_value(crate::spec::resources(limits))
        .map_err(|e| ZoneError::Runtime { id: id.to_string(), op: "resources", reason: e.to_string() })?;
    let m = manager(id, cgroup)?;
    m.apply(&ControllerOpt {
        resources: &resources,
        disable_oom_killer: false,
        oom_score_adj: None,
        freezer_state: None,
    })
    .map_err(|e| ZoneError::Runtime { id: id.to_string(), op: "apply caps", reason: e.to_string() })
}

/// Pids in the zone's cgroup (empty when it does not exist).
pub fn pids(id: &str, cgroup: &str) -> Vec<i32> {
    manager(id, cgroup)
        .ok()
        .and_then(|m| m.get_all_pids().ok())
        .unwrap_or_default()
        .iter()
        .map(|p| p.as_raw())
        .collect()
}

/// The zone's cgroup directory in every mounted hierarchy (v1: one per controller; v2: one).
fn dirs(cgroup: &str) -> Vec<PathBuf> {
    let rel = cgroup.trim_start_matches('/');
    if rel.is_empty() || rel.contains("..") {
        return Vec::new();
    }
    let root = std::path::Path::new("/sys/fs/cgroup");
    let mut out = Vec::new();
    if root.join(rel).is_dir() {
        out.push(root.join(rel));
    }
    if let Ok(rd) = std::fs::read_dir(root) {
        for h in rd.flatten() {
            let p = h.path().join(rel);
            if p.is_dir() && !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// Kills every process under `dir` and removes it and the cgroups a zone made below it
/// (systemd makes its own), deepest first.
fn remove_tree(dir: &std::path::Path) -> std::io::Result<()> {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path())?;
            }
        }
    }
    for attempt in 0..100 {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if attempt == 99 => return Err(e),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
    Ok(())
}

/// Kills what is left in the zone's cgroup and removes it, with whatever the zone made below
/// it, in every hierarchy; a cgroup that does not exist is fine.
pub fn remove(id: &str, cgroup: &str) -> Result<()> {
    for dir in dirs(cgroup) {
        remove_tree(&dir).map_err(|e| ZoneError::Io {
            id: id.to_string(),
            op: "remove cgroup",
            path: dir.clone(),
            source: e,
        })?;
    }
    Ok(())
}

/// A cgroup hierarchy mounted on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Hierarchy {
    pub mountpoint: PathBuf,
    /// Has resource controllers (limits live here).
    pub controllers: bool,
    /// How `/proc/PID/cgroup` names it: its controllers and name, sorted and joined by
    /// commas (`cpu,cpuacct`, `name=systemd`); empty for v2.
    pub key: String,
}

/// The key of a hierarchy's line in `/proc/PID/cgroup` (`4:memory:/x` is `memory`).
fn key_of(options: &str) -> String {
    // Mount options that are neither a controller nor the hierarchy's name.
    let other = |o: &str| {
        (o.contains('=') && !o.starts_with("name="))
            || matches!(o, "" | "rw" | "ro" | "none" | "xattr" | "noprefix" | "clone_children" | "cpuset_v2_mode")
            || matches!(o, "favordynmods" | "nsdelegate")
    };
    let mut k: Vec<&str> = options.split(',').filter(|o| !other(o)).collect();
    k.sort_unstable();
    k.join(",")
}

/// Where this process is in each hierarchy, by key.
fn own_cgroups() -> std::collections::HashMap<String, String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, keys, path) = (f.next()?, f.next()?, f.next()?);
            Some((key_of(keys), path.to_string()))
        })
        .collect()
}

/// Moves this process to `rel` (relative to each mountpoint, "" for the root) in each
/// hierarchy `pick` takes, where it is not there already. A move takes a lock that waits for
/// an RCU grace period (several milliseconds), and the first of a burst pays it: a boot
/// skips the moves it does not need.
fn move_self(pick: impl Fn(&Hierarchy) -> bool, rel: &str, create: bool) -> std::io::Result<()> {
    let here = own_cgroups();
    let want = format!("/{}", rel.trim_matches('/'));
    for h in hierarchies().into_iter().filter(|h| pick(h)) {
        if here.get(&h.key).is_some_and(|p| *p == want) {
            continue;
        }
        let dir = h.mountpoint.join(rel.trim_start_matches('/'));
        if create {
            std::fs::create_dir_all(&dir)?;
        }
        std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string())?;
    }
    Ok(())
}

/// The host's cgroup hierarchies under /sys/fs/cgroup, read once per process (a boot asks
/// several times, and mountinfo grows with every zone that runs).
pub fn hierarchies() -> Vec<Hierarchy> {
    static ONCE: std::sync::OnceLock<Vec<Hierarchy>> = std::sync::OnceLock::new();
    ONCE.get_or_init(read_hierarchies).clone()
}

fn read_hierarchies() -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for m in hull_exec::mountinfo::mounts() {
        if !m.mountpoint.starts_with("/sys/fs/cgroup") {
            continue;
        }
        let controllers = match m.fstype.as_str() {
            // A v1 hierarchy with only a name (name=systemd) limits nothing.
            "cgroup" => {
                !m.super_options.split(',').all(|o| o.starts_with("name=") || o == "rw" || o == "ro" || o == "none")
            }
            // v2 at /sys/fs/cgroup is where limits live (a v2 host); v2 beside v1 (hybrid, at
            // /sys/fs/cgroup/unified) carries none of ours.
            "cgroup2" => m.mountpoint == std::path::Path::new("/sys/fs/cgroup"),
            _ => continue,
        };
        let key = if m.fstype == "cgroup" { key_of(&m.super_options) } else { String::new() };
        out.push(Hierarchy { mountpoint: m.mountpoint, controllers, key });
    }
    out
}

/// What a zone sees at /sys/fs/cgroup: its own cgroup in each hierarchy, bound read-only
/// where controllers (and so its limits) live, read-write where none do (systemd keeps its
/// own tree in name=systemd). libcontainer's own cgroup mount ignores `ro` on v1, which let a
/// zone raise its own `pids.max`. Creates the zone's cgroup directories as needed.
pub fn view(cgroup: &str) -> std::io::Result<Vec<serde_json::Value>> {
    let rel = cgroup.trim_start_matches('/');
    let mut mounts = vec![serde_json::json!({
        "destination": "/sys/fs/cgroup", "type": "tmpfs", "source": "tmpfs",
        "options": ["nosuid", "nodev", "noexec", "mode=755", "size=64k"]
    })];
    for h in hierarchies() {
        let src = h.mountpoint.join(rel);
        std::fs::create_dir_all(&src)?;
        let dest = if h.mountpoint == std::path::Path::new("/sys/fs/cgroup") {
            PathBuf::from("/sys/fs/cgroup")
        } else {
            h.mountpoint.clone()
        };
        let mut options = vec!["bind", "nosuid", "nodev", "noexec"];
        if h.controllers {
            options.push("ro");
        }
        mounts.push(serde_json::json!({"destination": dest, "type": "bind", "source": src, "options": options}));
    }
    Ok(mounts)
}

/// Moves this process into the zone's cgroup in the hierarchies without controllers, so the
/// zone's init starts there and its cgroup namespace is rooted there.
pub fn join_unmanaged(cgroup: &str) -> std::io::Result<()> {
    move_self(|h| !h.controllers, cgroup, true)
}

/// Keeps the kernel's OOM killer off a zone's init while the zone has anything else to give
/// up: a zone's own memory pressure then kills one of its processes, not the zone.
///
/// Every process of the zone but init gets `oom_score_adj` 1000 (the kernel's "first to
/// go"), set by the supervisor at each turn of its loop (at least once a second) on the
/// processes that appeared since the last; init keeps its own. Raising a score needs no
/// privilege (lowering init's own would need `CAP_SYS_RESOURCE`, which a host in a
/// container may not have: this one does not). Alone in its cgroup, init can still be
/// killed, and the zone is booted again, rather than every allocation in the zone waiting
/// for ever. A process is unmarked for at most a turn; a zone's process may lower its own
/// score again, which harms only its own zone.
pub struct OomShield {
    procs: Option<PathBuf>,
    init: i32,
    seen: std::collections::HashSet<i32>,
}

impl OomShield {
    pub fn new(cgroup: &str, init: i32) -> OomShield {
        let rel = cgroup.trim_start_matches('/');
        // The memory controller's cgroup: every process the cap covers is there.
        let procs = hierarchies()
            .into_iter()
            .filter(|h| h.controllers)
            .map(|h| h.mountpoint.join(rel))
            .find(|d| d.join("memory.limit_in_bytes").exists() || d.join("memory.max").exists())
            .map(|d| d.join("cgroup.procs"));
        OomShield { procs, init, seen: std::collections::HashSet::new() }
    }

    /// Marks the processes that appeared since the last turn.
    pub fn tick(&mut self) {
        let Some(p) = &self.procs else { return };
        let Ok(text) = std::fs::read_to_string(p) else { return };
        let now: std::collections::HashSet<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        for pid in now.iter().filter(|p| **p != self.init && !self.seen.contains(p)) {
            let _ = std::fs::write(format!("/proc/{pid}/oom_score_adj"), "1000");
        }
        self.seen = now;
    }
}

/// Moves this process into the zone's cgroup in every hierarchy.
pub fn join_all(cgroup: &str) -> std::io::Result<()> {
    move_self(|_| true, cgroup, false)
}

/// Moves this process to the root cgroup of every hierarchy: a zone's supervisor belongs to
/// no service's contract (SMF gives zoneadmd a contract of its own), so stopping the service
/// that started it (`system/zones`, or any script run by svc.startd) never kills it.
pub fn leave_contracts() {
    let _ = move_self(|_| true, "", false);
}

/// Moves this process back to the root of those hierarchies, so the zone's can go.
pub fn leave_unmanaged() {
    let _ = move_self(|h| !h.controllers, "", false);
}

/// Sets RLIMIT_MEMLOCK on every process of the zone (`max_locked_memory`, live): processes
/// the zone starts later inherit it from their parents.
pub fn set_memlock(id: &str, cgroup: &str, bytes: u64) -> Result<()> {
    for pid in pids(id, cgroup) {
        let lim = libc::rlimit64 { rlim_cur: bytes, rlim_max: bytes };
        // SAFETY: prlimit64 reads `lim` and writes nothing back (old limit pointer is null).
        let rc = unsafe { libc::prlimit64(pid, libc::RLIMIT_MEMLOCK, &lim, std::ptr::null_mut()) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                let host = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK)
                    .map(|l| l.1)
                    .unwrap_or(0);
                return Err(ZoneError::Runtime {
                    id: id.to_string(),
                    op: "set max_locked_memory",
                    reason: format!("{e} (this host allows at most {} MiB)", host >> 20),
                });
            }
        }
    }
    Ok(())
}

/// The file through which this host weighs a cgroup's IO, if its IO scheduler honours
/// weights (BFQ on v1: `blkio.bfq.weight`; v2: `io.bfq.weight` or `io.weight`).
pub fn io_weight_file(cgroup: &str) -> Option<PathBuf> {
    let rel = cgroup.trim_start_matches('/');
    ["/sys/fs/cgroup/blkio/{}/blkio.bfq.weight", "/sys/fs/cgroup/{}/io.bfq.weight", "/sys/fs/cgroup/{}/io.weight"]
        .iter()
        .map(|t| PathBuf::from(t.replace("{}", rel)))
        .find(|p| p.exists())
}

/// Applies `zfs_io_priority` as the cgroup's IO weight (1 to 1000; 100 is both SmartOS's
/// default priority and BFQ's default weight). Returns false when the host cannot weigh IO.
pub fn set_io_weight(id: &str, cgroup: &str, priority: u64) -> Result<bool> {
    let Some(file) = io_weight_file(cgroup) else { return Ok(false) };
    let w = priority.clamp(1, 1000);
    let text = if file.ends_with("io.weight") { format!("default {w}") } else { w.to_string() };
    std::fs::write(&file, text).map_err(|e| ZoneError::Io {
        id: id.to_string(),
        op: "set IO weight",
        path: file,
        source: e,
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::key_of;

    #[test]
    fn a_hierarchy_is_keyed_as_proc_pid_cgroup_names_it() {
        // Mount options (mountinfo's super options) against /proc/self/cgroup's field.
        assert_eq!(key_of("rw,memory"), "memory");
        assert_eq!(key_of("rw,cpuacct,cpu"), "cpu,cpuacct");
        assert_eq!(key_of("rw,xattr,release_agent=/x,name=systemd"), "name=systemd");
        assert_eq!(key_of("rw,favordynmods,clone_children,pids"), "pids");
        assert_eq!(key_of("memory"), key_of("rw,memory"));
    }
}
