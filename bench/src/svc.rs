//! bench/svc: how fast svc.startd brings a graph of services up and a killed one back.
//!
//! In one run: a random DAG of `HULL_BENCH_SERVICES` (500) services (each requires up to
//! three earlier ones; seed fixed), whose start methods run a sleeping process (duration
//! child), imported from one SMF XML bundle. Measured: the import; from svc.startd's start
//! to every one online (read from its control socket); from a SIGKILL of a service's
//! process to its replacement running, over `HULL_BENCH_KILLS` (20) services; the daemon's
//! memory with all of them running. Beside it, the floor: the same number of `sleep`
//! processes spawned straight from this process, and one spawn's time. No service
//! manager peer runs on this machine (its PID 1 is not systemd). Prints one JSON line.
//! Needs root and `target/release/hull`.

use hull_bench::{Hull, env_n, ms, pct};
use hull_svc::proto::{self, Request};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    match bench() {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("bench/svc: {e}");
            std::process::exit(1);
        }
    }
}

/// xorshift64*: a fixed, repeatable graph.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn bundle(n: usize) -> String {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = String::from(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE service_bundle SYSTEM \"/usr/share/lib/xml/dtd/service_bundle.dtd.1\">\n<service_bundle type=\"manifest\" name=\"bench\">\n",
    );
    for i in 0..n {
        out.push_str(&format!("<service name=\"bench/s{i}\" type=\"service\" version=\"1\">\n<create_default_instance enabled=\"true\"/>\n"));
        if i > 0 {
            let k = (rng.next() % 4) as usize;
            let mut deps: Vec<usize> = (0..k).map(|_| (rng.next() % i as u64) as usize).collect();
            deps.sort();
            deps.dedup();
            for d in deps {
                out.push_str(&format!(
                    "<dependency name=\"d{d}\" grouping=\"require_all\" restart_on=\"none\" type=\"service\"><service_fmri value=\"svc:/bench/s{d}\"/></dependency>\n"
                ));
            }
        }
        out.push_str("<exec_method type=\"method\" name=\"start\" exec=\"sleep 3600\" timeout_seconds=\"30\"/>\n");
        out.push_str("<exec_method type=\"method\" name=\"stop\" exec=\":kill\" timeout_seconds=\"10\"/>\n");
        out.push_str("<property_group name=\"startd\" type=\"framework\"><propval name=\"duration\" type=\"astring\" value=\"child\"/></property_group>\n</service>\n");
    }
    out.push_str("</service_bundle>\n");
    out
}

fn pss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("Pss:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// The bench services' states and pids, from the daemon.
fn states(sock: &Path) -> BTreeMap<String, (String, Vec<i32>)> {
    proto::call(sock, &Request::Status)
        .map(|r| {
            r.instances
                .into_iter()
                .filter(|s| s.fmri.starts_with("svc:/bench/"))
                .map(|s| (s.fmri, (s.state, s.pids)))
                .collect()
        })
        .unwrap_or_default()
}

fn bench() -> Result<String, String> {
    let n = env_n("HULL_BENCH_SERVICES", 500);
    let kills = env_n("HULL_BENCH_KILLS", 20).min(n);
    let bin = hull_bench::hull_bin()?;
    let dir = tempfile::Builder::new().prefix("hull-bench-svc-").tempdir().map_err(|e| e.to_string())?;
    let h = Hull { bin: bin.clone(), root: dir.path().to_path_buf(), netns: None, node: "hbench".into() };
    let manifest = dir.path().join("bench.xml");
    std::fs::write(&manifest, bundle(n)).map_err(|e| e.to_string())?;
    let t = Instant::now();
    h.run(&["svccfg", "import", &manifest.to_string_lossy()])?;
    let import_ms = ms(t);
    let sock = dir.path().join("var/hull/svc/startd.sock");
    let t = Instant::now();
    let mut daemon: Child = Command::new(&bin)
        .args(["--root", &dir.path().to_string_lossy(), "--node", "hbench", "svc.startd"])
        .env("HULL_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("svc.startd: {e}"))?;
    let result = (|| -> Result<String, String> {
        let all_online = loop {
            let s = states(&sock);
            if s.len() == n && s.values().all(|(st, _)| st == "online") {
                break ms(t);
            }
            if t.elapsed() > Duration::from_secs(120) {
                let off = s.values().filter(|(st, _)| st != "online").count();
                return Err(format!("{off} of {n} services not online after 120 s"));
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        std::thread::sleep(Duration::from_millis(300));
        let daemon_pss = pss_kb(daemon.id());
        // Kill one process at a time and time its replacement.
        let mut restart = Vec::new();
        let names: Vec<String> = states(&sock).keys().cloned().collect();
        let contracts = hull_svc::contract::Contracts::new("hbench-svc");
        for f in names.iter().rev().take(kills) {
            let before = states(&sock).get(f).map(|(_, p)| p.clone()).unwrap_or_default();
            let Some(pid) = before.first() else { continue };
            // The contract's own list of processes: the replacement joins it as it starts.
            let procs = contracts.dir(&hull_svc::Fmri::parse(f).map_err(|e| e.to_string())?).join("cgroup.procs");
            let t = Instant::now();
            // SAFETY: kill takes two integers.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
            loop {
                let now: Vec<i32> = std::fs::read_to_string(&procs)
                    .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
                    .unwrap_or_default();
                if !now.is_empty() && !now.contains(pid) {
                    restart.push(ms(t));
                    break;
                }
                if t.elapsed() > Duration::from_secs(10) {
                    let name = hull_svc::Fmri::parse(f).map(|x| x.log_name()).unwrap_or_default();
                    let log = std::fs::read_to_string(dir.path().join("var/svc/log").join(name)).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(6).collect();
                    return Err(format!("{f} did not come back: {now:?}; its log ends: {tail:?}"));
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        // Every one came back online, and only once.
        let after = states(&sock);
        let bad: Vec<&String> =
            after.iter().filter(|(_, (st, p))| st != "online" || p.len() != 1).map(|(f, _)| f).collect();
        if !bad.is_empty() {
            return Err(format!("not online with one process after the kills: {bad:?}"));
        }
        // The floor: the same processes, spawned straight.
        let t = Instant::now();
        let mut raw: Vec<Child> = Vec::new();
        for _ in 0..n {
            raw.push(Command::new("sleep").arg("3600").spawn().map_err(|e| e.to_string())?);
        }
        let raw_ms = ms(t);
        for mut c in raw {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(serde_json::json!({
            "services": n,
            "import_ms": (import_ms * 10.0).round() / 10.0,
            "all_online_ms": (all_online * 10.0).round() / 10.0,
            "floor_spawn_all_ms": (raw_ms * 10.0).round() / 10.0,
            "all_online_over_floor": (all_online / raw_ms * 100.0).round() / 100.0,
            "restart_p50_ms": (pct(&mut restart.clone(), 0.5) * 100.0).round() / 100.0,
            "restart_p99_ms": (pct(&mut restart, 0.99) * 100.0).round() / 100.0,
            "daemon_pss_kb": daemon_pss,
        })
        .to_string())
    })();
    let _ = proto::call(&sock, &Request::Shutdown);
    let t = Instant::now();
    while daemon.try_wait().ok().flatten().is_none() && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    hull_svc::contract::Contracts::new("hbench-svc").remove_all_empty();
    result
}
