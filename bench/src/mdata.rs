//! bench/mdata: the metadata service of a running zone, from the host side of its socket.
//!
//! GET latency (protocol version 2, one connection each) over `HULL_BENCH_REQUESTS`
//! (10,000) requests with one client and with two at once; PUT latency within the VM's pace
//! (a tenant's changes are paced at 20 a second with bursts of 40: 30 PUTs, the bucket
//! refilled between phases), and the paced rate itself (100 PUTs back to back: the rate past
//! the burst); and the time from a `vmadm update set_customer_metadata` starting (a vmadm
//! process) to the zone reading the new value. No peer runs here: the line is the baseline.
//! Target: GET p50 under 0.5 ms. Needs root and `target/release/hull`.

use hull_bench::{Hull, env_n, ms, pct};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

struct Client {
    r: BufReader<UnixStream>,
    w: UnixStream,
    n: u32,
}

impl Client {
    fn open(sock: &Path) -> Result<Client, String> {
        let s = UnixStream::connect(sock).map_err(|e| format!("{}: {e}", sock.display()))?;
        let w = s.try_clone().map_err(|e| e.to_string())?;
        let mut c = Client { r: BufReader::new(s), w, n: 0 };
        c.w.write_all(b"NEGOTIATE V2\n").map_err(|e| e.to_string())?;
        let mut l = String::new();
        c.r.read_line(&mut l).map_err(|e| e.to_string())?;
        if l != "V2_OK\n" {
            return Err(format!("negotiation: {l:?}"));
        }
        Ok(c)
    }

    /// One request; the answer's code.
    fn call(&mut self, code: &str, payload: &str) -> Result<String, String> {
        self.n += 1;
        let frame = hull_mdata::proto::frame(&format!("{:08x} {code} {}", self.n, b64(payload.as_bytes())));
        self.w.write_all(frame.as_bytes()).map_err(|e| e.to_string())?;
        let mut l = String::new();
        self.r.read_line(&mut l).map_err(|e| e.to_string())?;
        Ok(l.split(' ').nth(4).unwrap_or("").trim().to_string())
    }
}

fn main() {
    match bench() {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("bench/mdata: {e}");
            std::process::exit(1);
        }
    }
}

fn bench() -> Result<String, String> {
    let bin = hull_bench::hull_bin()?;
    let dir = tempfile::Builder::new().prefix("hull-bench-mdata-").tempdir_in("/var/tmp").map_err(|e| e.to_string())?;
    let h = Hull { bin, root: dir.path().to_path_buf(), netns: None, node: "hbench".into() };
    h.run(&["pool", "create", "--size", "1G"])?;
    let result = measure(&h);
    h.remove_all();
    result
}

/// What one client saw: GET and PUT latencies (ms), and the instant each PUT ended.
struct Seen {
    gets: Vec<f64>,
    puts: Vec<f64>,
    put_ends: Vec<Instant>,
}

/// `gets` GETs, then `puts` PUTs, on one connection.
fn run_client(sock: PathBuf, gets: usize, puts: usize, tag: usize) -> Result<Seen, String> {
    let mut c = Client::open(&sock)?;
    let (mut g, mut p, mut ends) = (Vec::with_capacity(gets), Vec::with_capacity(puts), Vec::with_capacity(puts));
    for _ in 0..gets {
        let t = Instant::now();
        let code = c.call("GET", "sdc:uuid")?;
        g.push(ms(t));
        if code != "SUCCESS" {
            return Err(format!("GET: {code}"));
        }
    }
    // A PUT is a vmadm update (validated, stored atomically).
    for i in 0..puts {
        let kv = format!("{} {}", b64(format!("k{tag}").as_bytes()), b64(i.to_string().as_bytes()));
        let t = Instant::now();
        let code = c.call("PUT", &kv)?;
        p.push(ms(t));
        ends.push(Instant::now());
        if code != "SUCCESS" {
            return Err(format!("PUT: {code}"));
        }
    }
    Ok(Seen { gets: g, puts: p, put_ends: ends })
}

/// Long enough for the VM's pace to refill its burst (40 at 20 a second).
fn refill() {
    std::thread::sleep(Duration::from_millis(2200));
}

fn measure(h: &Hull) -> Result<String, String> {
    let n = env_n("HULL_BENCH_REQUESTS", 10_000);
    let image = h.build_install(&["--busybox"], "bb")?;
    let (uuid, _) =
        h.create(&serde_json::json!({"brand": "joyent-minimal", "image_uuid": image, "max_physical_memory": 64}))?;
    let sock = h.root.join(format!("var/hull/z/{uuid}/zonecontrol/metadata.sock"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&sock).is_err() {
        if Instant::now() > deadline {
            return Err("no metadata socket".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    refill();
    let Seen { gets: mut g1, puts: mut p1, .. } = run_client(sock.clone(), n, 30, 0)?;
    refill();
    let threads: Vec<_> = (0..2)
        .map(|i| {
            let sock = sock.clone();
            std::thread::spawn(move || run_client(sock, n / 2, 15, i + 1))
        })
        .collect();
    let (mut g2, mut p2) = (Vec::new(), Vec::new());
    for t in threads {
        let seen = t.join().map_err(|_| "a client panicked")??;
        g2.extend(seen.gets);
        p2.extend(seen.puts);
    }
    // The pace: past the burst, PUTs go at its rate.
    refill();
    let ends = run_client(sock.clone(), 0, 100, 3)?.put_ends;
    let paced = &ends[50..];
    let rate = (paced.len() - 1) as f64 / paced[paced.len() - 1].duration_since(paced[0]).as_secs_f64();
    // An operator's change, seen by the next GET.
    let mut c = Client::open(&sock)?;
    let mut seen = Vec::new();
    for i in 0..20 {
        // From the operator's command (a vmadm process) to the zone's read of the value.
        let t = Instant::now();
        h.update(&uuid, &serde_json::json!({"set_customer_metadata": {"op": format!("v{i}")}}))?;
        loop {
            c.n += 1;
            let frame = hull_mdata::proto::frame(&format!("{:08x} GET {}", c.n, b64(b"op")));
            c.w.write_all(frame.as_bytes()).map_err(|e| e.to_string())?;
            let mut l = String::new();
            c.r.read_line(&mut l).map_err(|e| e.to_string())?;
            if l.trim_end().ends_with(&b64(format!("v{i}").as_bytes())) {
                break;
            }
            if t.elapsed() > Duration::from_secs(5) {
                return Err("an update was not seen within 5 s".into());
            }
        }
        seen.push(ms(t));
    }
    let r = |v: f64| (v * 1000.0).round() / 1000.0;
    Ok(serde_json::json!({
        "requests": n,
        "get_1_client_p50_ms": r(pct(&mut g1, 0.5)),
        "get_1_client_p99_ms": r(pct(&mut g1, 0.99)),
        "put_1_client_p50_ms": r(pct(&mut p1, 0.5)),
        "put_1_client_p99_ms": r(pct(&mut p1, 0.99)),
        "get_2_clients_p50_ms": r(pct(&mut g2, 0.5)),
        "get_2_clients_p99_ms": r(pct(&mut g2, 0.99)),
        "put_2_clients_p50_ms": r(pct(&mut p2, 0.5)),
        "put_2_clients_p99_ms": r(pct(&mut p2, 0.99)),
        "put_paced_rate_per_s": r(rate),
        "update_to_seen_p50_ms": r(pct(&mut seen, 0.5)),
        "peer": "none on this machine: a baseline",
    })
    .to_string())
}
