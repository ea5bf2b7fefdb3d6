//! The OCI runtime spec of a zone, and the security baseline every zone gets.
//!
//! The baseline is at least as strict as LXC's unprivileged defaults on the points that
//! matter to a multi-tenant node:
//!
//! - capabilities: Docker's default set without `CAP_MKNOD`, with `CAP_SYS_BOOT` (no
//!   `CAP_SYS_ADMIN`, so no mounts; no `CAP_SYS_MODULE`, `CAP_SYS_RAWIO`, `CAP_SYS_TIME` ...);
//! - `/proc` and `/sys` paths masked or read-only as runc masks them, `/sys` read-only;
//! - devices: the cgroup allowlist (null, zero, full, random, urandom, tty, ptmx, pts);
//! - a seccomp filter that refuses with `EPERM` the calls a zone has no business making
//!   (module loading, kexec, swap, clock setting, bpf, perf, keyrings, `open_by_handle_at`);
//! - no host devices, filesystems or namespaces.

use crate::{Limits, ZoneConfig};
use serde_json::{Value, json};

/// Docker's default capabilities, less `CAP_MKNOD`, plus `CAP_SYS_BOOT` (as LXC keeps it):
/// `reboot(2)` in a pid namespace ends that namespace only, which is how an init powers its
/// zone off.
pub const CAPABILITIES: &[&str] = &[
    "CAP_AUDIT_WRITE",
    "CAP_SYS_BOOT",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

/// System calls refused with EPERM inside every zone.
pub const DENIED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "get_kernel_syms",
    "init_module",
    "ioperm",
    "iopl",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "nfsservctl",
    "open_by_handle_at",
    "perf_event_open",
    "query_module",
    "quotactl",
    "request_key",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "syslog",
    "uselib",
    "userfaultfd",
    "vm86",
    "vm86old",
];

/// btrfs ioctls a zone is refused: making, snapshotting or removing subvolumes. A subvolume
/// made inside a zone's dataset escapes the dataset's quota (simple quotas count per
/// subvolume) and blocks its deletion. Reflinks (FICLONE, which shares btrfs's number) stay.
pub const DENIED_IOCTLS: &[(&str, u64)] = &[
    ("BTRFS_IOC_SNAP_CREATE", 0x5000_9401),
    ("BTRFS_IOC_SUBVOL_CREATE", 0x5000_940e),
    ("BTRFS_IOC_SNAP_DESTROY", 0x5000_940f),
    ("BTRFS_IOC_DEFAULT_SUBVOL", 0x4008_9413),
    ("BTRFS_IOC_SNAP_CREATE_V2", 0x5000_9417),
    ("BTRFS_IOC_SUBVOL_CREATE_V2", 0x5000_9418),
    ("BTRFS_IOC_SUBVOL_SETFLAGS", 0x4008_941a),
    ("BTRFS_IOC_SNAP_DESTROY_V2", 0x5000_943f),
];

const CLONE_NEWUSER: u64 = 0x1000_0000;

/// The zone's seccomp rules: the denied calls, the denied ioctls, and no nested user
/// namespaces (`unshare`/`clone` with `CLONE_NEWUSER`; `clone3` answers ENOSYS, whose flags
/// seccomp cannot see, so libc falls back to `clone`). A user namespace would give zone root
/// a fresh set of capabilities over new mount and cgroup namespaces: the way to another
/// zone's `cgroup.kill`.
fn seccomp_rules() -> Vec<Value> {
    let eperm = |names: Vec<&str>, args: Value| json!({"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM, "args": args});
    let mut rules = vec![json!({"names": DENIED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM})];
    for (_, nr) in DENIED_IOCTLS {
        rules.push(eperm(vec!["ioctl"], json!([{"index": 1, "value": nr, "op": "SCMP_CMP_EQ"}])));
    }
    rules.push(eperm(
        vec!["unshare", "clone"],
        json!([{"index": 0, "value": CLONE_NEWUSER, "valueTwo": CLONE_NEWUSER, "op": "SCMP_CMP_MASKED_EQ"}]),
    ));
    rules.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS}));
    rules
}

const MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/kallsyms",
    "/proc/config.gz",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/sys/kernel/debug",
];

const READONLY: &[&str] =
    &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger", "/proc/sys/kernel/core_pattern"];

const MIB: u64 = 1 << 20;
/// The CFS period hull uses for `cpu_cap`: 100 ms.
pub const CPU_PERIOD_US: u64 = 100_000;

/// The cgroup resources of a zone's limits, as OCI's `linux.resources`.
pub fn resources(l: &Limits) -> Value {
    let mut r = serde_json::Map::new();
    r.insert("devices".into(), json!([{"allow": false, "access": "rwm"}]));
    let mut mem = serde_json::Map::new();
    if let Some(m) = l.memory_mib {
        mem.insert("limit".into(), json!(m * MIB));
        // Memory plus swap: at least the memory cap, so a lone memory cap means no swap.
        mem.insert("swap".into(), json!(l.swap_mib.unwrap_or(m).max(m) * MIB));
    } else if let Some(s) = l.swap_mib {
        mem.insert("swap".into(), json!(s * MIB));
    }
    if !mem.is_empty() {
        r.insert("memory".into(), Value::Object(mem));
    }
    // No cap is said as such (quota -1, pids "max"): applied live, a cap that was removed
    // must be lifted, not left as it was.
    let mut cpu = serde_json::Map::new();
    let quota = l.cpu_cap.filter(|c| *c > 0).map_or(-1, |cap| (cap * CPU_PERIOD_US / 100) as i64);
    cpu.insert("quota".into(), json!(quota));
    cpu.insert("period".into(), json!(CPU_PERIOD_US));
    if let Some(s) = l.cpu_shares.filter(|s| *s > 0) {
        cpu.insert("shares".into(), json!(s.clamp(2, 262_144)));
    }
    r.insert("cpu".into(), Value::Object(cpu));
    r.insert("pids".into(), json!({"limit": l.max_lwps.filter(|n| *n > 0).unwrap_or(0)}));
    Value::Object(r)
}

/// The zone's OCI runtime spec.
pub fn oci_config(z: &ZoneConfig) -> Value {
    let network = match &z.netns {
        Some(p) => json!({"type": "network", "path": p}),
        None => json!({"type": "network"}),
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
        json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=755", "size=65536k"]}),
        json!({"destination": "/run/lock", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "noexec", "mode=1777", "size=5120k"]}),
    ];
    for b in &z.binds {
        let mode = if b.writable { "rw" } else { "ro" };
        mounts.push(json!({"destination": b.destination, "type": "bind", "source": b.source, "options": ["rbind", mode, "nosuid"]}));
    }
    if let Some(t) = z.tmpfs_mib.filter(|t| *t > 0) {
        mounts.push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", format!("size={t}m")]}));
    }
    // Open files: the zone inherits its supervisor's limit (raising it needs a capability
    // zones do not have).
    let mut rlimits = Vec::new();
    if let Some(l) = z.limits.locked_mib {
        rlimits.push(json!({"type": "RLIMIT_MEMLOCK", "hard": l * MIB, "soft": l * MIB}));
    }
    let mut res = resources(&z.limits);
    if let Some(list) = res.get_mut("devices").and_then(Value::as_array_mut) {
        for d in &z.devices {
            list.push(json!({"allow": true, "type": "c", "major": d.major, "minor": d.minor, "access": "rwm"}));
        }
    }
    let devices: Vec<Value> = z
        .devices
        .iter()
        .map(|d| json!({"path": d.path, "type": "c", "major": d.major, "minor": d.minor, "fileMode": 0o660, "uid": 0, "gid": 0}))
        .collect();
    json!({
        "ociVersion": "1.0.2",
        "root": {"path": z.rootfs, "readonly": false},
        "hostname": z.hostname,
        "process": {
            "terminal": z.terminal,
            "user": {"uid": 0, "gid": 0},
            "args": z.init,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=vt100", "container=hull"],
            "cwd": "/",
            "capabilities": {
                "bounding": CAPABILITIES, "effective": CAPABILITIES, "permitted": CAPABILITIES,
            },
            "rlimits": rlimits,
            // No `noNewPrivileges` at all: setuid programs work in a zone, and libcontainer
            // loads the seccomp filter while it still holds the capability to (with the
            // field present but false it loads it too late and fails).
        },
        "mounts": mounts,
        "linux": {
            "cgroupsPath": z.cgroup,
            "namespaces": [
                {"type": "pid"}, network, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}
            ],
            "resources": res,
            "devices": devices,
            "maskedPaths": MASKED,
            "readonlyPaths": READONLY,
            "seccomp": {
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                "syscalls": seccomp_rules(),
            },
        },
    })
}

/// Sends the zone's sysinfo calls to the listener at `listener` (zoneadmd), which
/// libcontainer hands the filter's notification fd to.
pub fn notify_sysinfo(config: &mut Value, listener: &std::path::Path) {
    if let Some(sc) = config.pointer_mut("/linux/seccomp") {
        sc["listenerPath"] = json!(listener);
        if let Some(list) = sc["syscalls"].as_array_mut() {
            list.push(json!({"names": ["sysinfo"], "action": "SCMP_ACT_NOTIFY"}));
        }
    }
}

/// Puts the zone in its own user namespace (joined by path: the host made it with the
/// network namespace it owns), on the root the host mounted idmapped at `root`. The zone's
/// own mounts (proc, sysfs, tmpfs, devpts, mqueue) then belong to its user namespace, and
/// devices are bound, not made.
pub fn own_userns(config: &mut Value, idmap: &crate::Idmap, root: &std::path::Path) {
    config["root"]["path"] = json!(root);
    let map = json!([{"containerID": 0, "hostID": idmap.base, "size": crate::idmap::SIZE}]);
    config["linux"]["uidMappings"] = map.clone();
    config["linux"]["gidMappings"] = map;
    if let Some(ns) = config["linux"]["namespaces"].as_array_mut() {
        ns.insert(0, json!({"type": "user", "path": idmap.userns}));
    }
}

/// The spec as libcontainer takes it.
pub fn oci_spec(z: &ZoneConfig) -> Result<oci_spec::runtime::Spec, String> {
    serde_json::from_value(oci_config(z)).map_err(|e| format!("OCI spec: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> ZoneConfig {
        ZoneConfig {
            id: "z".into(),
            rootfs: "/r".into(),
            hostname: "h".into(),
            init: vec!["/sbin/init".into()],
            cgroup: "/t-z".into(),
            limits: Limits { memory_mib: Some(256), cpu_cap: Some(50), max_lwps: Some(100), ..Default::default() },
            tmpfs_mib: Some(64),
            terminal: true,
            netns: None,
            binds: Vec::new(),
            devices: Vec::new(),
            relays: Vec::new(),
            idmap: None,
            sysinfo: false,
        }
    }

    #[test]
    fn a_made_namespace_is_joined_by_path() {
        let mut z = zone();
        assert!(oci_config(&z)["linux"]["namespaces"].as_array().expect("list").contains(&json!({"type": "network"})));
        z.netns = Some("/var/hull/netns/z".into());
        let ns = oci_config(&z)["linux"]["namespaces"].clone();
        assert!(ns.as_array().expect("list").contains(&json!({"type": "network", "path": "/var/hull/netns/z"})));
    }

    #[test]
    fn caps_become_cgroup_resources() {
        let r = resources(&zone().limits);
        assert_eq!(r["memory"]["limit"], json!(256u64 << 20));
        assert_eq!(r["memory"]["swap"], json!(256u64 << 20), "no swap beyond memory unless max_swap says so");
        assert_eq!(r["cpu"]["quota"], json!(50_000));
        assert_eq!(r["pids"]["limit"], json!(100));
        assert!(resources(&Limits::default()).get("memory").is_none());
    }

    #[test]
    fn spec_parses_and_keeps_the_baseline() {
        let s = oci_spec(&zone()).expect("spec");
        let caps = s.process().as_ref().and_then(|p| p.capabilities().as_ref()).and_then(|c| c.bounding().clone());
        let caps: Vec<String> = caps.expect("caps").iter().map(|c| c.to_string()).collect();
        assert!(
            !caps.iter().any(|c| c.contains("MKNOD") || c.contains("SYS_ADMIN") || c.contains("SYS_MODULE")),
            "{caps:?}"
        );
        let v = oci_config(&zone());
        assert!(v["mounts"].as_array().expect("mounts").iter().any(|m| m["destination"] == "/tmp"));
        assert!(v["linux"]["readonlyPaths"].as_array().expect("ro").contains(&json!("/proc/sysrq-trigger")));
    }
}
