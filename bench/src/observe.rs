//! bench/observe: what watching costs, in one run.
//!
//! - `hull trace` overhead: a syscall-heavy loop in a zone (busybox `dd bs=1`, two calls a
//!   byte) timed alone, under `hull trace -z ZONE` counting syscalls by zone and process,
//!   and under bare bpftrace counting every process's calls by name (the peer: the same
//!   probe without hull's scoping), three rounds interleaved; syscalls per second;
//! - /metrics with `HULL_BENCH_ZONES` (50) running zones: one scrape's time (p50 of
//!   `HULL_BENCH_SCRAPES`, 20), beside prometheus-node-exporter's /metrics on the same
//!   machine, scraped the same way (HTTP/1.1 GET, body read to its end), interleaved.
//!
//! Prints one JSON line. Needs root, bpftrace, prometheus-node-exporter and
//! `target/release/hull`.

use hull_bench::{Hull, env_n, ms, pct};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    match bench() {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("bench/observe: {e}");
            std::process::exit(1);
        }
    }
}

fn bench() -> Result<String, String> {
    let bin = hull_bench::hull_bin()?;
    let dir = tempfile::Builder::new().prefix("hull-bench-obs-").tempdir_in("/var/tmp").map_err(|e| e.to_string())?;
    let h = Hull { bin, root: dir.path().to_path_buf(), netns: None, node: "hbobs".into() };
    h.run(&["pool", "create", "--size", "4G"])?;
    let mut children: Vec<Child> = Vec::new();
    let result = measure(&h, &mut children);
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    h.remove_all();
    result
}

/// `dd` of `n` single bytes in the zone; seconds.
fn dd(h: &Hull, zone: &str, n: usize) -> Result<f64, String> {
    let t = Instant::now();
    h.run(&["zlogin", zone, "dd", "if=/dev/zero", "of=/dev/null", "bs=1", &format!("count={n}")])?;
    Ok(t.elapsed().as_secs_f64())
}

/// `hull trace` running a syscall counter on the zone (or, with `bare`, bpftrace counting
/// every process's calls, unscoped), once it attached.
fn tracer(h: &Hull, zone: &str, bare: bool) -> Result<Child, String> {
    let mut cmd = if bare {
        let mut c = Command::new("bpftrace");
        c.args(["-e", "tracepoint:raw_syscalls:sys_enter { @[comm] = count(); }"]);
        c
    } else {
        let mut c = Command::new(&h.bin);
        c.arg("--root").arg(&h.root).arg("--node").arg(&h.node);
        c.args(["trace", "-z", zone, "-e", "tracepoint:raw_syscalls:sys_enter { @[zonename, comm] = count(); }"]);
        c
    };
    let mut c = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().map_err(|e| e.to_string())?;
    let mut out = c.stdout.take().ok_or("no stdout")?;
    let mut seen = Vec::new();
    let mut b = [0u8; 1];
    let deadline = Instant::now() + Duration::from_secs(60);
    while !String::from_utf8_lossy(&seen).contains("Attaching") {
        if Instant::now() > deadline || out.read(&mut b).map_err(|e| e.to_string())? == 0 {
            let _ = c.kill();
            return Err(format!("hull trace did not attach: {}", String::from_utf8_lossy(&seen)));
        }
        seen.push(b[0]);
    }
    // Keep reading so that bpftrace never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    Ok(c)
}

fn stop(mut c: Child) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGINT);
    let _ = c.wait();
}

/// One HTTP/1.1 GET with `Connection: close` over `s`; the body's length.
fn get(mut s: impl Read + Write, path: &str) -> Result<usize, String> {
    write!(s, "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut all = Vec::new();
    s.read_to_end(&mut all).map_err(|e| e.to_string())?;
    if !all.starts_with(b"HTTP/1.1 200") {
        return Err(format!("GET {path}: {}", String::from_utf8_lossy(&all[..all.len().min(200)])));
    }
    Ok(all.len())
}

fn measure(h: &Hull, children: &mut Vec<Child>) -> Result<String, String> {
    let zones = env_n("HULL_BENCH_ZONES", 50);
    let scrapes = env_n("HULL_BENCH_SCRAPES", 20);
    let bytes = env_n("HULL_BENCH_DD_BYTES", 200_000);
    let image = h.build_install(&["--busybox"], "bb")?;
    let payload = serde_json::json!({"brand": "joyent-minimal", "image_uuid": image, "max_physical_memory": 64});
    let (zone, _) = h.create(&payload)?;

    // Trace overhead, three rounds interleaved.
    dd(h, &zone, bytes / 10)?;
    let (mut plain, mut traced, mut bare) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        plain.push(dd(h, &zone, bytes)?);
        for (v, b) in [(&mut traced, false), (&mut bare, true)] {
            let t = tracer(h, &zone, b)?;
            let r = dd(h, &zone, bytes);
            stop(t);
            v.push(r?);
        }
    }
    let calls = 2.0 * bytes as f64;
    let rate = |v: &mut Vec<f64>| calls / pct(v, 0.5);
    let (plain_rate, traced_rate, bare_rate) = (rate(&mut plain), rate(&mut traced), rate(&mut bare));

    // /metrics with `zones` zones running, beside node-exporter.
    for _ in 1..zones {
        h.create(&payload)?;
    }
    let sock = h.root.join("var/run/hull/api.sock");
    children.push(h.serve_api(&sock)?);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        l.local_addr().map_err(|e| e.to_string())?.port()
    };
    let ne = Command::new("prometheus-node-exporter")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("prometheus-node-exporter: {e}"))?;
    children.push(ne);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("node-exporter did not listen".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let scrape_hull = |p: &Path| -> Result<(f64, usize), String> {
        let t = Instant::now();
        let n = get(std::os::unix::net::UnixStream::connect(p).map_err(|e| e.to_string())?, "/metrics")?;
        Ok((ms(t), n))
    };
    let scrape_ne = || -> Result<(f64, usize), String> {
        let t = Instant::now();
        let n = get(std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?, "/metrics")?;
        Ok((ms(t), n))
    };
    scrape_hull(&sock)?;
    scrape_ne()?;
    let (mut hull_ms, mut ne_ms, mut hull_bytes, mut ne_bytes) = (Vec::new(), Vec::new(), 0, 0);
    for _ in 0..scrapes {
        let (t, n) = scrape_hull(&sock)?;
        hull_ms.push(t);
        hull_bytes = n;
        let (t, n) = scrape_ne()?;
        ne_ms.push(t);
        ne_bytes = n;
    }
    let r = |v: f64| (v * 1000.0).round() / 1000.0;
    let (h50, n50) = (pct(&mut hull_ms, 0.5), pct(&mut ne_ms, 0.5));
    Ok(serde_json::json!({
        "syscalls_per_s": r(plain_rate),
        "syscalls_per_s_traced": r(traced_rate),
        "trace_overhead": r(1.0 - traced_rate / plain_rate),
        "peer_bpftrace_unscoped_syscalls_per_s": r(bare_rate),
        "peer_bpftrace_unscoped_overhead": r(1.0 - bare_rate / plain_rate),
        "zones": zones,
        "metrics_scrape_p50_ms": r(h50),
        "metrics_bytes": hull_bytes,
        "peer_node_exporter_scrape_p50_ms": r(n50),
        "peer_node_exporter_bytes": ne_bytes,
        "scrape_over_node_exporter": r(h50 / n50),
    })
    .to_string())
}
