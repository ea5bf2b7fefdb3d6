//! `hull trace`: bpftrace, scoped to zones (DTrace's `zonename` and `-z` on Linux).

use crate::{CmdResult, Failure};
use hull_spec::trace::{Zone, scope};
use hull_storage::Node;
use std::os::unix::process::CommandExt;
use std::path::Path;

#[derive(clap::Args)]
pub struct TraceArgs {
    /// Only this zone's tasks (uuid or alias): probes that run in a task fire for its tasks
    /// alone (timers, BEGIN/END and I/O completions are not filtered).
    #[arg(short = 'z', value_name = "ZONE")]
    zone: Option<String>,
    /// The program, as bpftrace -e takes it; `zonename` names the zone of the current task
    /// ("global" outside any zone).
    #[arg(short = 'e', value_name = "PROGRAM", conflicts_with = "script")]
    program: Option<String>,
    /// List the named scripts.
    #[arg(short = 'l', long)]
    list: bool,
    /// Print the program bpftrace would be given, and stop.
    #[arg(long)]
    dry_run: bool,
    /// A named script (see -l) or a bpftrace file.
    script: Option<String>,
    /// Arguments for bpftrace itself, after `--` (`-- -c CMD`, `-- -f json`).
    #[arg(last = true)]
    bpftrace: Vec<String>,
}

/// The scripts an operator reaches for first, each scoped by `-z` or keyed by `zonename`.
pub const SCRIPTS: &[(&str, &str, &str)] = &[
    (
        "syscalls",
        "system calls by zone, process and call, until Ctrl-C",
        r#"tracepoint:raw_syscalls:sys_enter { @syscalls[zonename, pid, comm] = count(); }"#,
    ),
    (
        "opens",
        "files opened, as they are opened: zone, pid, process, result, path",
        r#"tracepoint:syscalls:sys_enter_openat { @path[tid] = args->filename; }
tracepoint:syscalls:sys_exit_openat /@path[tid]/ {
  printf("%-36s %-7d %-16s %4d %s\n", zonename, pid, comm, args->ret, str(@path[tid]));
  delete(@path[tid]);
}"#,
    ),
    (
        "profile",
        "CPU samples at 99 Hz by zone, process and stacks, until Ctrl-C",
        r#"profile:hz:99 { @samples[zonename, comm, kstack, ustack] = count(); }"#,
    ),
    (
        "biolat",
        "block I/O latency by zone (the zone that queued it), a histogram in microseconds",
        r#"tracepoint:block:block_bio_queue { @start[args->dev, args->sector] = nsecs; @who[args->dev, args->sector] = zonename; }
tracepoint:block:block_bio_complete /@start[args->dev, args->sector]/ {
  @usecs[@who[args->dev, args->sector]] = hist((nsecs - @start[args->dev, args->sector]) / 1000);
  delete(@start[args->dev, args->sector]); delete(@who[args->dev, args->sector]);
}
END { clear(@start); clear(@who); }"#,
    ),
    (
        "tcpconnect",
        "TCP connections a zone opens: zone, pid, process, destination",
        r#"tracepoint:sock:inet_sock_set_state /args->newstate == 2 && args->family == 2/ {
  printf("%-36s %-7d %-16s %s:%d\n", zonename, pid, comm, ntop(args->daddr), args->dport);
}"#,
    ),
    (
        "tcpaccept",
        "TCP connections a zone accepts: zone, pid, process, file descriptor",
        r#"tracepoint:syscalls:sys_exit_accept4, tracepoint:syscalls:sys_exit_accept /args->ret >= 0/ {
  printf("%-36s %-7d %-16s fd %d\n", zonename, pid, comm, args->ret);
}"#,
    ),
];

pub fn run(node: &Node, a: TraceArgs) -> CmdResult {
    if a.list {
        for (name, what, _) in SCRIPTS {
            println!("{name:<12} {what}");
        }
        return Ok(());
    }
    let program = match (&a.program, &a.script) {
        (Some(p), _) => p.clone(),
        (None, Some(s)) => match SCRIPTS.iter().find(|(n, _, _)| n == s) {
            Some((_, _, text)) => text.to_string(),
            None if Path::new(s).is_file() => {
                std::fs::read_to_string(s).map_err(|e| Failure::new(1, format!("read {s}: {e}")))?
            }
            None => {
                return Err(Failure::new(2, format!("{s}: no such script or file (hull trace -l lists the scripts)")));
            }
        },
        (None, None) => return Err(Failure::new(2, "give a program (-e), a named script (-l lists them) or a file")),
    };
    let providers = hull_spec::trace::providers(&program).map_err(|e| Failure::new(2, format!("program: {e}")))?;
    refuse_unsupported(&providers)?;
    let zones = running_zones(node)?;
    let only = match &a.zone {
        None => None,
        Some(z) => {
            let found: Vec<&ZoneRow> =
                zones.iter().filter(|(uuid, alias, _)| uuid == z || alias.as_deref() == Some(z.as_str())).collect();
            match found[..] {
                [(_, _, Some(ns))] => Some(*ns),
                [(uuid, _, None)] => return Err(Failure::new(1, format!("zone {uuid} is not running"))),
                [] => return Err(Failure::new(1, format!("no zone {z} on this node"))),
                _ => return Err(Failure::new(2, format!("alias {z} names {} zones: give a uuid", found.len()))),
            }
        }
    };
    // A zone is named by its alias when bpftrace can take it in a string (an alias is any
    // text its creator chose), else by its uuid.
    let named: Vec<Zone> = zones
        .iter()
        .filter_map(|(uuid, alias, ns)| {
            let name = alias.clone().filter(|a| hull_spec::trace::fits_in_string(a)).unwrap_or(uuid.clone());
            ns.map(|pidns| Zone { pidns, name })
        })
        .collect();
    let text = scope(&program, own_level() + 1, &named, only).map_err(|e| Failure::new(2, format!("program: {e}")))?;
    if a.dry_run {
        println!("{text}");
        return Ok(());
    }
    let bpftrace = which("bpftrace")
        .ok_or_else(|| Failure::new(1, "bpftrace is not installed (Debian: apt-get install bpftrace)"))?;
    mount_tracefs()?;
    // BPF maps count against the locked-memory limit on older kernels.
    let inf = nix::sys::resource::RLIM_INFINITY;
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK, inf, inf);
    let err = std::process::Command::new(&bpftrace).args(&a.bpftrace).arg("-e").arg(&text).exec();
    Err(Failure::new(1, format!("run {}: {err}", bpftrace.display())))
}

/// A VM of the node: uuid, alias, and the inode of its PID namespace when it runs.
type ZoneRow = (String, Option<String>, Option<u64>);

fn running_zones(node: &Node) -> Result<Vec<ZoneRow>, Failure> {
    let exe = std::env::current_exe().map_err(|e| Failure::new(1, e))?;
    let vm = hull_vm::Vmadm::open(node, exe)?;
    let mut out = Vec::new();
    for uuid in vm.uuids()? {
        let Ok(cfg) = vm.load(&uuid) else { continue };
        let alias = cfg.get("alias").and_then(|a| a.as_str()).map(str::to_string);
        let ns = vm.state(&uuid, &cfg).pid.and_then(pidns_inode);
        out.push((uuid, alias, ns));
    }
    Ok(out)
}

/// The inode of a process's PID namespace.
pub(crate) fn pidns_inode(pid: i32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/pid")).ok().map(|m| m.ino())
}

/// This process's PID namespace level (0 on the host): zones are one below.
fn own_level() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .map(|l| l.split_whitespace().count().saturating_sub(1) as u32)
        })
        .unwrap_or(0)
}

/// A host tool from the system directories (never the caller's PATH), if installed.
fn which(name: &str) -> Option<std::path::PathBuf> {
    Some(hull_exec::tool(name)).filter(|p| p.is_absolute())
}

/// Refuses, before bpftrace fails obscurely, probes this kernel cannot attach.
fn refuse_unsupported(providers: &[String]) -> CmdResult {
    let kprobes = Path::new("/sys/bus/event_source/devices/kprobe").exists()
        || Path::new("/sys/kernel/tracing/kprobe_events").exists();
    for p in providers {
        let why = match p.as_str() {
            "kprobe" | "kretprobe" if !kprobes => {
                "this kernel has no kprobes (no kprobe PMU and no kprobe_events); tracepoints \
                 (bpftrace -l 'tracepoint:*'), uprobes and USDT probes work"
            }
            "kfunc" | "kretfunc" if !kfuncs() => {
                "this kernel cannot attach BPF trampolines (fentry/kfunc); use tracepoints \
                 (bpftrace -l 'tracepoint:*')"
            }
            _ => continue,
        };
        return Err(Failure::new(2, format!("{p} probes: {why}")));
    }
    Ok(())
}

/// Whether bpftrace says the kernel takes kfunc probes.
fn kfuncs() -> bool {
    let Some(b) = which("bpftrace") else { return false };
    std::process::Command::new(b)
        .arg("--info")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).lines().chain(String::from_utf8_lossy(&o.stderr).lines()).any(|l| {
                let l = l.trim();
                l.starts_with("kfunc:") && l.ends_with("yes")
            })
        })
        .unwrap_or(false)
}

/// Mounts tracefs at /sys/kernel/tracing when nothing is mounted there.
pub(crate) fn mount_tracefs() -> CmdResult {
    let at = Path::new("/sys/kernel/tracing");
    if hull_exec::mountinfo::mounts().iter().any(|m| m.mountpoint == at && m.fstype == "tracefs") {
        return Ok(());
    }
    nix::mount::mount(Some("tracefs"), at, Some("tracefs"), nix::mount::MsFlags::empty(), None::<&str>)
        .map_err(|e| Failure::new(1, format!("mount tracefs at {}: {e}", at.display())))
}
