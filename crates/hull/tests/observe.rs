//! Observability: `hull trace` (bpftrace scoped to zones), hull's USDT probes, per-zone
//! stats (zonememstat, zonestat), the API's /metrics, and zones that see their own limits.
//! Needs bpftrace (Debian) and tracefs; hull trace mounts it.

mod common;
use common::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn zone(n: &TestNode, img: &str, alias: &str, extra: Value) -> String {
    let mut p = json!({"brand": "joyent-minimal", "image_uuid": img, "alias": alias, "max_physical_memory": 128});
    if let (Value::Object(m), Value::Object(e)) = (&mut p, extra) {
        m.extend(e);
    }
    n.create_vm(&p)
}

/// Starts a loop in the zone that outlives the zlogin that started it.
fn spin(n: &TestNode, uuid: &str, body: &str) {
    let script = format!("(while :; do {body}; done) >/dev/null 2>&1 </dev/null &");
    n.hull(&["zlogin", uuid, "sh", "-c", &script]).ok();
}

/// `hull trace ARGS` in the background, once bpftrace says it attached.
struct Tracer {
    child: Child,
    out: std::sync::mpsc::Receiver<String>,
}

impl Tracer {
    fn start(n: &TestNode, args: &[&str]) -> Tracer {
        let mut c = n.cmd();
        c.arg("trace").args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("hull trace");
        let (tx, rx) = std::sync::mpsc::channel();
        for r in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(r).lines().map_while(Result::ok) {
                    let _ = tx.send(l);
                }
            });
        }
        let t = Tracer { child, out: rx };
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match t.out.recv_timeout(Duration::from_secs(1)) {
                Ok(l) if l.starts_with("Attaching") => return t,
                Ok(l) => seen.push(l),
                Err(_) => {}
            }
        }
        panic!("bpftrace did not attach: {seen:?}");
    }

    /// Stops bpftrace as Ctrl-C does and returns everything it printed.
    fn stop(mut self) -> Vec<String> {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && self.child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(200));
        self.out.try_iter().collect()
    }
}

#[test]
fn a_trace_scoped_to_one_zone_sees_its_syscalls_and_nothing_of_another() {
    let n = TestNode::new("512M");
    let img = n.busybox();
    let a = zone(&n, &img, "tr-a", json!({}));
    let b = zone(&n, &img, "tr-b", json!({}));
    // Each zone's loop runs a program of its own name, so a line says whose it is.
    spin(&n, &a, "cat /etc/hostname");
    spin(&n, &b, "head -c 1 /etc/hostname");
    let t = Tracer::start(
        &n,
        &["-z", "tr-a", "-e", "tracepoint:raw_syscalls:sys_enter { @calls[zonename, comm] = count(); }"],
    );
    std::thread::sleep(Duration::from_secs(3));
    let out = t.stop().join("\n");
    assert!(out.contains("@calls[tr-a, cat]:"), "A's loop is seen:\n{out}");
    assert!(!out.contains("tr-b"), "B's zone is not:\n{out}");
    assert!(!out.contains("head"), "nor B's loop:\n{out}");
    assert!(!out.contains("global"), "nor the host:\n{out}");
    // Without -z, zonename tells the zones and the host apart.
    let t = Tracer::start(&n, &["-e", "tracepoint:raw_syscalls:sys_enter { @calls[zonename, comm] = count(); }"]);
    std::thread::sleep(Duration::from_secs(3));
    let out = t.stop().join("\n");
    for want in ["@calls[tr-a, cat]:", "@calls[tr-b, head]:", "@calls[global, "] {
        assert!(out.contains(want), "{want} in:\n{out}");
    }
    assert!(!out.contains("@calls[tr-a, head]") && !out.contains("@calls[tr-b, cat]"), "{out}");
    // The hull map does not show up among the user's.
    assert!(!out.contains("__hull_zone"), "{out}");
}

#[test]
fn trace_refuses_what_the_kernel_cannot_and_what_is_not_there() {
    let n = TestNode::new("256M");
    let img = n.busybox();
    let u = zone(&n, &img, "tr-stopped", json!({"autoboot": false}));
    let r = n.hull(&["trace", "-z", "nosuch", "-e", "BEGIN { exit(); }"]);
    assert!(r.code != 0 && r.stderr.contains("no zone nosuch"), "{}", r.stderr);
    let r = n.hull(&["trace", "-z", &u, "-e", "BEGIN { exit(); }"]);
    assert!(r.code != 0 && r.stderr.contains("is not running"), "{}", r.stderr);
    let r = n.hull(&["trace", "-e", "BEGIN { exit(); "]);
    assert!(r.code == 2 && r.stderr.contains("program:"), "{}", r.stderr);
    let r = n.hull(&["trace", "nosuch-script"]);
    assert!(r.code == 2 && r.stderr.contains("hull trace -l"), "{}", r.stderr);
    // This kernel has no kprobes: said plainly, before bpftrace runs.
    if !std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists()
        && !std::path::Path::new("/sys/kernel/tracing/kprobe_events").exists()
    {
        let r = n.hull(&["trace", "-e", "kprobe:do_sys_openat2 { @ = count(); }"]);
        assert!(r.code == 2 && r.stderr.contains("no kprobes"), "{}", r.stderr);
    }
    let l = n.hull(&["trace", "-l"]).ok();
    for s in ["syscalls", "opens", "profile", "biolat", "tcpconnect"] {
        assert!(l.contains(s), "{l}");
    }
}

#[test]
fn the_vm_done_probe_fires_once_per_create_with_the_uuid() {
    let n = TestNode::new("256M");
    let img = n.busybox();
    let hull = HULL;
    let prog = format!(
        "usdt:{hull}:hull:vm-done /str(arg0) == \"create\"/ {{ printf(\"DONE %s %s %d [%s]\\n\", str(arg0), str(arg1), arg2 > 0, str(arg3)); }}"
    );
    let t = Tracer::start(&n, &["-e", &prog]);
    let one = zone(&n, &img, "p1", json!({"autoboot": false}));
    let two = zone(&n, &img, "p2", json!({"autoboot": false}));
    // A refused create fires too, with its error.
    let bad = n.root().join("bad.json");
    std::fs::write(&bad, json!({"brand": "joyent-minimal", "image_uuid": img, "ram": "lots"}).to_string())
        .expect("write");
    assert_ne!(n.hull(&["vmadm", "create", "-f", &bad.to_string_lossy()]).code, 0);
    std::thread::sleep(Duration::from_millis(500));
    let out = t.stop();
    for u in [&one, &two] {
        let lines: Vec<_> = out.iter().filter(|l| l.starts_with(&format!("DONE create {u} 1 []"))).collect();
        assert_eq!(lines.len(), 1, "{u}: {out:?}");
    }
    // (The probe is in the binary: other tests' creates fire it too, so only ours are counted.)
    assert!(out.iter().any(|l| l.starts_with("DONE create  1 [") && l.contains("ram")), "{out:?}");
}

/// CPUs' idle time so far, in CPU-seconds (/proc/stat's idle and iowait, at 100 Hz).
fn host_idle_cpus() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let cpu: Vec<f64> =
        stat.lines().next().expect("cpu line").split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    (cpu[3] + cpu[4]) / 100.0
}

/// The value of the first sample of `name` whose labels hold `uuid`.
fn sample(text: &str, name: &str, uuid: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(uuid))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn a_capped_zone_s_memory_and_cpu_read_the_same_in_zonememstat_zonestat_and_metrics() {
    let n = TestNode::new("512M");
    let img = n.busybox();
    let u = zone(&n, &img, "capped", json!({"cpu_cap": 50}));
    // 64 MiB held in the zone's tmpfs, charged to its cgroup, and a spinner under the cap.
    n.hull(&["zlogin", &u, "sh", "-c", "head -c 67108864 /dev/zero > /tmp/hold"]).ok();
    spin(&n, &u, ":");
    let mib64 = 64.0 * 1048576.0;
    let near = |v: f64| (v - mib64).abs() / mib64 < 0.10;
    let m: Value = serde_json::from_str(&n.hull(&["zonememstat", "-j", "-z", "capped"]).ok()).expect("json");
    let rss = m[0]["rss"].as_f64().expect("rss");
    assert!(near(rss), "zonememstat RSS {rss} is not 64 MiB within 10%: {m}");
    assert_eq!(m[0]["cap"], 128u64 << 20, "{m}");
    let table = n.hull(&["zonememstat"]).ok();
    assert!(table.contains("RSS(MB)") && table.lines().any(|l| l.contains(&u) && l.contains(" 128 ")), "{table}");

    let api = Server::start(&n, &[], &[]);
    let scrape = || match api.call("GET", "/metrics", None) {
        (200, Value::String(s)) => s,
        other => panic!("/metrics: {other:?}"),
    };
    let first = scrape();
    let ws = sample(&first, "container_memory_working_set_bytes", &u).expect("working set");
    assert!(near(ws), "/metrics working set {ws} is not 64 MiB within 10%:\n{first}");
    assert_eq!(sample(&first, "container_spec_memory_limit_bytes", &u), Some(134217728.0));
    assert!(first.contains(r#"alias="capped""#) && first.contains(r#"brand="joyent-minimal""#), "{first}");
    assert!(first.contains("hull_pool_size_bytes") && first.contains(r#"hull_vms{state="running"} 1"#), "{first}");

    // zonestat: never over the cap; about half a CPU, and the throttled counter rising,
    // whenever the machine had half a CPU to give (the suite runs tests side by side).
    let idle0 = host_idle_cpus();
    let t0 = Instant::now();
    let z = n.hull(&["zonestat", "-j", "-z", "capped", "2", "1"]).ok();
    let spare = (host_idle_cpus() - idle0) / t0.elapsed().as_secs_f64();
    let line: Value = serde_json::from_str(z.lines().last().expect("a line")).expect("json");
    let pct = line["zones"][0]["cpu_pct"].as_f64().expect("cpu_pct");
    assert!(pct <= 60.0, "cpu_cap=50 spins at {pct}%: {line}");
    let second = scrape();
    let t = |s: &str| sample(s, "container_cpu_cfs_throttled_periods_total", &u).expect("throttled");
    if spare + pct / 100.0 >= 0.6 {
        assert!(pct >= 30.0, "cpu_cap=50 spins at {pct}% with {spare:.2} CPUs idle: {line}");
        assert!(t(&second) > t(&first), "throttled {} then {}", t(&first), t(&second));
    }
    let c = |s: &str| sample(s, "container_cpu_usage_seconds_total", &u).expect("cpu");
    assert!(c(&second) > c(&first));
    // Prometheus's own checker takes the whole scrape.
    let f = n.root().join("metrics.txt");
    std::fs::write(&f, &second).expect("write");
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&f).expect("open"))
        .output()
        .expect("promtool (Debian: prometheus)");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // vmadm get gains no figures.
    let vm = n.vm(&u);
    for k in ["usage", "rss", "cpu_ns", "stats"] {
        assert!(vm.get(k).is_none(), "vmadm get has {k}");
    }
}

/// A static program that calls sysinfo(2) on good and crafted buffers and prints what it got.
const SYSINFO_PROBE: &str = r#"
#include <stdio.h>
#include <errno.h>
#include <sys/sysinfo.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    struct sysinfo s;
    long r = syscall(SYS_sysinfo, &s);
    printf("ok %ld total %lu unit %u procs %u uptime %ld\n", r, s.totalram, s.mem_unit, s.procs, s.uptime);
    r = syscall(SYS_sysinfo, (void *)8);
    printf("low %ld %d\n", r, errno);
    r = syscall(SYS_sysinfo, (void *)0xffffffff81000000UL);
    printf("kernel %ld %d\n", r, errno);
    return 0;
}
"#;

#[test]
fn a_zone_sees_its_own_memory_in_proc_and_in_sysinfo_and_crafted_buffers_fail_only_the_caller() {
    let n = TestNode::new("512M");
    let img = n.busybox();
    let _lx = Lxcfs::start(&n);
    let u = zone(&n, &img, "limits", json!({"max_physical_memory": 256}));
    let meminfo = n.hull(&["zlogin", &u, "head", "-1", "/proc/meminfo"]).ok();
    assert!(meminfo.contains("262144 kB"), "lxcfs's meminfo: {meminfo}");
    // busybox's free asks sysinfo(2), which zoneadmd answers.
    let free = n.hull(&["zlogin", &u, "free", "-m"]).ok();
    let total: Vec<&str> = free.lines().find(|l| l.starts_with("Mem:")).expect("Mem line").split_whitespace().collect();
    assert_eq!(total[1], "256", "busybox free: {free}");
    let up: f64 = n
        .hull(&["zlogin", &u, "cat", "/proc/uptime"])
        .ok()
        .split_whitespace()
        .next()
        .expect("uptime")
        .parse()
        .expect("secs");
    let host_up: f64 = std::fs::read_to_string("/proc/uptime")
        .expect("uptime")
        .split_whitespace()
        .next()
        .expect("u")
        .parse()
        .expect("s");
    assert!(up < 120.0 && up < host_up, "the zone's uptime {up} (host {host_up})");

    // A program of the tenant's own, calling sysinfo on crafted pointers.
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("probe.c");
    std::fs::write(&src, SYSINFO_PROBE).expect("write");
    let bin = n.zones().join(&u).join("root/probe");
    let cc =
        std::process::Command::new("gcc").args(["-static", "-O1", "-o"]).arg(&bin).arg(&src).status().expect("gcc");
    assert!(cc.success());
    let out = n.hull(&["zlogin", &u, "/probe"]).ok();
    assert!(out.contains(&format!("ok 0 total {} unit 1 ", 256u64 << 20)), "{out}");
    assert!(out.contains(&format!("low -1 {}", libc::EFAULT)), "{out}");
    assert!(out.contains(&format!("kernel -1 {}", libc::EFAULT)), "{out}");
    // zoneadmd still answers, and the zone still runs.
    assert!(n.hull(&["zlogin", &u, "free", "-m"]).ok().contains(" 256 "));
    assert_eq!(n.vm(&u)["state"], "running");
    // Without lxcfs a zone still boots, and sees the host's figures in /proc and in sysinfo
    // alike (busybox's free reads both: mixed, its sums went below zero).
    drop(_lx);
    let v = zone(&n, &img, "nolx", json!({"max_physical_memory": 128}));
    let free = n.hull(&["zlogin", &v, "free", "-m"]).ok();
    let mem: Vec<u64> = free
        .lines()
        .find(|l| l.starts_with("Mem:"))
        .expect("Mem line")
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().expect("a number"))
        .collect();
    assert!(mem[0] > 128 && mem.iter().all(|x| *x <= mem[0]), "{free}");
}

#[test]
fn an_alias_made_to_break_out_of_a_string_is_never_put_in_the_program() {
    let n = TestNode::new("256M");
    let img = n.busybox();
    let mark = n.root().join("pwned");
    let alias = format!("x\"; system(\"touch {}\"); @y[\"", mark.display());
    let u = zone(&n, &img, &alias, json!({}));
    let dry = n.hull(&["trace", "--dry-run", "-e", "BEGIN { printf(\"%s\\n\", zonename); exit(); }"]).ok();
    assert!(dry.contains(&format!("\"{u}\"")) && !dry.contains("system("), "{dry}");
    // bpftrace runs the program (the zone is named by its uuid), and nothing was run.
    let r = n.hull(&["trace", "-e", "BEGIN { printf(\"ran\\n\"); exit(); }"]);
    assert!(r.code == 0 && r.stdout.contains("ran"), "{} {}", r.stdout, r.stderr);
    assert!(!mark.exists());
    // Two zones of one alias: -z by that alias is refused, not guessed.
    zone(&n, &img, "twin", json!({}));
    zone(&n, &img, "twin", json!({}));
    let r = n.hull(&["trace", "-z", "twin", "-e", "BEGIN { exit(); }"]);
    assert!(r.code == 2 && r.stderr.contains("names 2 zones"), "{}", r.stderr);
}

#[test]
fn an_alias_made_to_forge_series_stays_one_escaped_label_in_metrics() {
    let n = TestNode::new("256M");
    let img = n.busybox();
    // (vmadm refuses control characters in an alias; quotes, braces and backslashes pass.)
    let alias = "x\"} 1 hull_vms{state=\"forged\"} 99 \\";
    let u = zone(&n, &img, alias, json!({"autoboot": false}));
    let api = Server::start(&n, &[], &[]);
    let text = match api.call("GET", "/metrics", None) {
        (200, Value::String(s)) => s,
        other => panic!("/metrics: {other:?}"),
    };
    assert!(!text.lines().any(|l| l.starts_with("hull_vms{state=\"forged\"}")), "{text}");
    assert!(text.contains(r#"alias="x\"} 1 hull_vms{state=\"forged\"} 99 \\""#), "escaped once, in its label: {text}");
    assert_eq!(text.matches("# TYPE hull_vms ").count(), 1, "{text}");
    assert!(text.lines().any(|l| l.starts_with("container_spec_memory_limit_bytes{") && l.contains(&u)), "{text}");
    let f = n.root().join("metrics.txt");
    std::fs::write(&f, &text).expect("write");
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&f).expect("open"))
        .output()
        .expect("promtool");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
