//! bench/api: what the node API costs over the tools it wraps, in one run.
//!
//! - create to running: `POST /vms` and `GET /jobs/J/wait` against `vmadm create` (which
//!   boots and returns once the zone runs), interleaved, same image and payload;
//! - `GET /vms` with 100 VMs defined: one keep-alive connection per worker over the unix
//!   socket, requests per second and p99, beside `vmadm list -j` per call (a process each);
//! - the events stream: lines appended to the node's event log as fast as a writer can, and
//!   how many a client of `GET /events` receives per second.
//!
//! The load generator is this program's own HTTP/1.1 client over the unix socket: wrk (in
//! Debian) cannot connect to a unix socket, nor present a client certificate for the TLS
//! listener. Prints one JSON line. Needs root and `target/release/hull`.
//! `HULL_BENCH_CREATES` (20), `HULL_BENCH_VMS` (100), `HULL_BENCH_SECS` (5) scale it.

use hull_bench::{Hull, env_n, ms, pct};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One keep-alive HTTP/1.1 connection to the API's socket.
struct Conn {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Conn {
    fn open(sock: &Path) -> Result<Conn, String> {
        let s = UnixStream::connect(sock).map_err(|e| format!("{}: {e}", sock.display()))?;
        let w = s.try_clone().map_err(|e| e.to_string())?;
        Ok(Conn { r: BufReader::new(s), w })
    }

    /// A request; (status, body). Bodies are sent and read by Content-Length.
    fn call(&mut self, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: hull\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.w.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut line = String::new();
        self.r.read_line(&mut line).map_err(|e| e.to_string())?;
        let status: u16 =
            line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or(format!("bad status line {line:?}"))?;
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            self.r.read_line(&mut h).map_err(|e| e.to_string())?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().map_err(|_| format!("bad length {v}"))?;
            }
        }
        let mut buf = vec![0u8; len];
        self.r.read_exact(&mut buf).map_err(|e| e.to_string())?;
        Ok((status, String::from_utf8_lossy(&buf).into_owned()))
    }
}

fn json(s: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(s).map_err(|e| format!("{e}: {s}"))
}

/// Creates through the API and waits for the job; milliseconds.
fn api_create(sock: &Path, payload: &serde_json::Value) -> Result<f64, String> {
    let t = Instant::now();
    let mut c = Conn::open(sock)?;
    let (code, body) = c.call("POST", "/vms", &payload.to_string())?;
    if code != 202 {
        return Err(format!("POST /vms: {code} {body}"));
    }
    let job = json(&body)?["job_uuid"].as_str().unwrap_or_default().to_string();
    let (_, done) = c.call("GET", &format!("/jobs/{job}/wait?timeout=120"), "")?;
    let took = ms(t);
    let done = json(&done)?;
    if done["execution"] != "succeeded" || done["result"]["state"] != "running" {
        return Err(format!("create job: {done}"));
    }
    Ok(took)
}

fn main() {
    match bench() {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("bench/api: {e}");
            std::process::exit(1);
        }
    }
}

fn bench() -> Result<String, String> {
    let bin = hull_bench::hull_bin()?;
    let dir = tempfile::Builder::new().prefix("hull-bench-api-").tempdir_in("/var/tmp").map_err(|e| e.to_string())?;
    let h = Hull { bin, root: dir.path().to_path_buf(), netns: None, node: "hbench".into() };
    h.run(&["pool", "create", "--size", "4G"])?;
    let sock = h.root.join("var/run/hull/api.sock");
    let mut server = h.serve_api(&sock);
    let result = match &mut server {
        Ok(_) => measure(&h, &sock),
        Err(e) => Err(e.clone()),
    };
    if let Ok(s) = &mut server {
        let _ = s.kill();
        let _ = s.wait();
    }
    h.remove_all();
    result
}

fn measure(h: &Hull, sock: &Path) -> Result<String, String> {
    let creates = env_n("HULL_BENCH_CREATES", 20);
    let vms = env_n("HULL_BENCH_VMS", 100);
    let secs = env_n("HULL_BENCH_SECS", 5) as u64;
    let image = h.build_install(&["--busybox"], "bb")?;
    let payload = serde_json::json!({"brand": "joyent-minimal", "image_uuid": image, "max_physical_memory": 64});

    // Create to running, interleaved; each VM deleted before the next pair.
    let (mut cli, mut api) = (Vec::new(), Vec::new());
    for _ in 0..creates {
        let (uuid, t) = h.create(&payload)?;
        cli.push(t);
        h.run(&["vmadm", "delete", &uuid])?;
        api.push(api_create(sock, &payload)?);
        for u in h.run(&["vmadm", "list", "-H", "-o", "uuid"])?.lines() {
            h.run(&["vmadm", "delete", u])?;
        }
    }
    let (cli_p50, api_p50) = (pct(&mut cli, 0.5), pct(&mut api, 0.5));

    // GET /vms with `vms` VMs defined (not running: the listing is what is measured).
    let stopped = serde_json::json!({"brand": "joyent-minimal", "image_uuid": image, "autoboot": false});
    for _ in 0..vms {
        h.create(&stopped)?;
    }
    let mut one = Conn::open(sock)?;
    let (code, body) = one.call("GET", "/vms", "")?;
    let listed = json(&body)?.as_array().map(Vec::len).unwrap_or(0);
    if code != 200 || listed != vms {
        return Err(format!("GET /vms gave {code} with {listed} VMs, not {vms}"));
    }
    let workers = 4;
    let until = Instant::now() + Duration::from_secs(secs);
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let sock = sock.to_path_buf();
            std::thread::spawn(move || -> Result<Vec<f64>, String> {
                let mut c = Conn::open(&sock)?;
                let mut lat = Vec::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    let (code, _) = c.call("GET", "/vms", "")?;
                    if code != 200 {
                        return Err(format!("GET /vms: {code}"));
                    }
                    lat.push(ms(t));
                }
                Ok(lat)
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in threads {
        lat.extend(t.join().map_err(|_| "a load thread panicked")??);
    }
    let rps = lat.len() as f64 / secs as f64;
    let list_p99 = pct(&mut lat, 0.99);
    let list_p50 = pct(&mut lat, 0.5);
    let mut cli_list = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        h.run(&["vmadm", "list", "-j"])?;
        cli_list.push(ms(t));
    }
    let cli_list_p50 = pct(&mut cli_list, 0.5);

    // Events: a writer appends as fast as it can; a client counts what it is sent.
    let log: PathBuf = h.root.join("var/hull/events.jsonl");
    let start = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let n_events = 100_000usize;
    let mut reader = UnixStream::connect(sock).map_err(|e| e.to_string())?;
    write!(reader, "GET /events?since={start} HTTP/1.1\r\nHost: hull\r\n\r\n").map_err(|e| e.to_string())?;
    let t = Instant::now();
    let writer = std::thread::spawn(move || -> Result<(), String> {
        let mut f = std::fs::OpenOptions::new().append(true).create(true).open(&log).map_err(|e| e.to_string())?;
        for i in 0..n_events {
            let line = format!("{{\"type\":\"bench\",\"n\":{i}}}\n");
            f.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
        }
        Ok(())
    });
    let mut got = 0usize;
    let mut r = BufReader::new(reader.try_clone().map_err(|e| e.to_string())?);
    reader.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
    let mut line = String::new();
    while got < n_events {
        line.clear();
        if r.read_line(&mut line).map_err(|e| format!("events after {got}: {e}"))? == 0 {
            return Err(format!("the stream ended after {got} events"));
        }
        if line.contains("\"type\":\"bench\"") {
            got += 1;
        }
    }
    let events_per_s = got as f64 / t.elapsed().as_secs_f64();
    writer.join().map_err(|_| "the writer panicked")??;

    Ok(serde_json::json!({
        "creates": creates,
        "create_running_cli_p50_ms": (cli_p50 * 10.0).round() / 10.0,
        "create_running_api_p50_ms": (api_p50 * 10.0).round() / 10.0,
        "api_over_cli": (api_p50 / cli_p50 * 100.0).round() / 100.0,
        "vms_listed": vms,
        "list_workers": workers,
        "list_rps": rps.round(),
        "list_p50_ms": (list_p50 * 100.0).round() / 100.0,
        "list_p99_ms": (list_p99 * 100.0).round() / 100.0,
        "peer_vmadm_list_j_p50_ms": (cli_list_p50 * 10.0).round() / 10.0,
        "peer_vmadm_list_per_s": (1000.0 / cli_list_p50).round(),
        "events_per_s": events_per_s.round(),
    })
    .to_string())
}
