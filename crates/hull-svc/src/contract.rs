//! Process contracts as cgroups: every instance's methods run in its own cgroup, and the
//! instance lives while the cgroup has processes. On cgroup v2 the cgroups are in the unified
//! hierarchy; on v1 in the `pids` hierarchy (any one hierarchy tracks membership).

use crate::{Fmri, Result, SvcError};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Contracts {
    base: PathBuf,
}

/// The hierarchy's root: the unified one on v2, v1's pids otherwise.
fn hierarchy() -> PathBuf {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return root.to_path_buf();
    }
    for h in ["pids", "systemd", "memory", "cpu,cpuacct", "cpu"] {
        if root.join(h).join("cgroup.procs").exists() {
            return root.join(h);
        }
    }
    root.to_path_buf()
}

fn io(op: &'static str, path: &Path, e: std::io::Error) -> SvcError {
    SvcError::Io { op, path: path.to_path_buf(), source: e }
}

impl Contracts {
    /// Contracts under `<hierarchy>/<name>`.
    pub fn new(name: &str) -> Contracts {
        Contracts { base: hierarchy().join(name) }
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    /// An instance's cgroup: `/` in the service name becomes `%`, which FMRIs never hold.
    pub fn dir(&self, f: &Fmri) -> PathBuf {
        self.base.join(format!("{}:{}", f.service.replace('/', "%"), f.instance.as_deref().unwrap_or("")))
    }

    /// Makes the instance's cgroup and opens its `cgroup.procs` for a child to join.
    pub fn prepare(&self, f: &Fmri) -> Result<std::fs::File> {
        let d = self.dir(f);
        std::fs::create_dir_all(&d).map_err(|e| io("create cgroup", &d, e))?;
        let p = d.join("cgroup.procs");
        std::fs::OpenOptions::new().write(true).open(&p).map_err(|e| io("open", &p, e))
    }

    /// The processes in an instance's contract.
    pub fn procs(&self, f: &Fmri) -> Vec<i32> {
        read_pids(&self.dir(f))
    }

    /// Signals every process of the contract.
    pub fn kill(&self, f: &Fmri, sig: i32) -> usize {
        let pids = self.procs(f);
        for p in &pids {
            // SAFETY: kill takes two integers.
            unsafe { libc::kill(*p, sig) };
        }
        pids.len()
    }

    /// Removes an empty contract's cgroup; one with processes stays.
    pub fn remove(&self, f: &Fmri) {
        let _ = std::fs::remove_dir(self.dir(f));
    }

    /// Every instance cgroup that has processes: (directory name, pids).
    pub fn live(&self) -> Vec<(String, Vec<i32>)> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.base).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                let pids = read_pids(&e.path());
                if !pids.is_empty() {
                    out.push((e.file_name().to_string_lossy().into_owned(), pids));
                }
            }
        }
        out
    }

    /// Removes the base when nothing is left in it.
    pub fn remove_all_empty(&self) {
        for e in std::fs::read_dir(&self.base).into_iter().flatten().flatten() {
            let _ = std::fs::remove_dir(e.path());
        }
        let _ = std::fs::remove_dir(&self.base);
    }
}

fn read_pids(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Writes a line to a log file, ignoring failures (logs never stop the restarter).
pub fn log_line(path: &Path, text: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(f, "[ {} {text} ]", timestamp());
    }
}

/// `Nov 26 01:02:03`, UTC.
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = secs / 86400;
    let (h, m, s) = ((secs % 86400) / 3600, (secs % 3600) / 60, secs % 60);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!("{} {d:2} {h:02}:{m:02}:{s:02}", MONTHS[(mo - 1) as usize])
}

/// When a process started, in seconds since the epoch (`svcs -p`'s STIME): its start in
/// clock ticks after boot (`/proc/PID/stat`, field 22), plus the boot time (`/proc/stat`).
pub fn started(pid: i32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count fields after it.
    let after = &stat[stat.rfind(')')? + 1..];
    let ticks: i64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let btime: i64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| btime + ticks / hz as i64)
}
