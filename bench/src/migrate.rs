//! bench/migrate: a running zone moved between two nodes on this machine, beside the floor
//! and what others fall back to, in one run.
//!
//! - hull: a zone holding `HULL_BENCH_MIB` (1024) MiB of data migrates from node A to node B
//!   (`hull migrate --phase` begin, sync, sync, switch; B's API over TLS on 127.0.0.1) while
//!   10 MiB of its data are rewritten during the first sync. Reported: total time (begin to
//!   running on B), downtime (stopped on A to running on B, from switch), the zone's own
//!   shutdown before it (`stop_ms`: busybox's init takes its time), bytes sent.
//! - floor: `btrfs send` of a snapshot of the same dataset into `btrfs receive` on B's pool
//!   over a TCP connection on 127.0.0.1 (plain TCP: hull's stream goes through TLS as well).
//!   Also reported: the floor's writeback (`sync -f` right after it), which hull's second
//!   sync pays for its first (btrfs receive's snapshot of the parent writes it back).
//! - rsync -aHAX of the same zone root into B's pool (rsync's two processes over a pipe, as
//!   a local copy runs them).
//!
//! Prints one JSON line. Needs root, rsync, and `target/release/hull`.

use hull_bench::{Hull, env_n, hull_bin};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

fn main() {
    match run() {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("bench/migrate: {e}");
            std::process::exit(1);
        }
    }
}

fn node(dir: &Path, name: &str, size: &str) -> Result<Hull, String> {
    let root = dir.join(name);
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    let h = Hull { bin: hull_bin()?, root, netns: None, node: format!("hbm{name}") };
    h.run(&["pool", "create", "--size", size])?;
    Ok(h)
}

/// Writes `mib` MiB that do not compress into `path`.
fn fill(path: &Path, mib: usize) -> Result<(), String> {
    let mut f = std::fs::File::create(path).map_err(|e| e.to_string())?;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for c in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
        }
        f.write_all(&buf).map_err(|e| e.to_string())?;
    }
    f.sync_all().map_err(|e| e.to_string())
}

/// Rewrites `mib` MiB in the middle of `path`, in place.
fn rewrite(path: &Path, mib: u64) -> Result<(), String> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::OpenOptions::new().write(true).open(path).map_err(|e| e.to_string())?;
    f.seek(SeekFrom::Start(64 << 20)).map_err(|e| e.to_string())?;
    f.write_all(&vec![0x5a; (mib << 20) as usize]).map_err(|e| e.to_string())?;
    f.sync_all().map_err(|e| e.to_string())
}

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The floor: `btrfs send SNAP` into a TCP connection, `btrfs receive DIR` from it.
fn floor(snap: &Path, into: &Path) -> Result<(f64, u64), String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let into = into.to_path_buf();
    let t = Instant::now();
    let recv = std::thread::spawn(move || -> Result<u64, String> {
        let (mut s, _) = l.accept().map_err(|e| e.to_string())?;
        let mut child = Command::new("btrfs")
            .args(["receive", "-q", "-e"])
            .arg(&into)
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        let n = std::io::copy(&mut s, &mut stdin).map_err(|e| e.to_string())?;
        drop(stdin);
        if !child.wait().map_err(|e| e.to_string())?.success() {
            return Err("btrfs receive failed".into());
        }
        Ok(n)
    });
    let mut sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let mut send = Command::new("btrfs")
        .args(["send", "-q"])
        .arg(snap)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut out = send.stdout.take().ok_or("no stdout")?;
    std::io::copy(&mut out, &mut sock).map_err(|e| e.to_string())?;
    drop(sock);
    if !send.wait().map_err(|e| e.to_string())?.success() {
        return Err("btrfs send failed".into());
    }
    let n = recv.join().map_err(|_| "receiver panicked")??;
    Ok((t.elapsed().as_secs_f64(), n))
}

fn run() -> Result<String, String> {
    let mib = env_n("HULL_BENCH_MIB", 1024);
    let size = format!("{}M", mib * 3 + 512);
    let dir = tempfile::Builder::new().prefix("hull-bench-migrate-").tempdir().map_err(|e| e.to_string())?;
    let a = node(dir.path(), "a", &size)?;
    let b = match node(dir.path(), "b", &size) {
        Ok(b) => b,
        Err(e) => {
            a.remove_all();
            return Err(e);
        }
    };
    let mut api = None;
    let res = measure(dir.path(), &a, &b, mib, &mut api);
    if let Some(mut c) = api {
        let _ = c.kill();
        let _ = c.wait();
    }
    a.remove_all();
    b.remove_all();
    res
}

fn measure(
    dir: &Path,
    a: &Hull,
    b: &Hull,
    mib: usize,
    api: &mut Option<std::process::Child>,
) -> Result<String, String> {
    // B serves its API over TLS; A holds a certificate B signed.
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
    let url = format!("https://127.0.0.1:{port}");
    let child = Command::new(&b.bin)
        .arg("--root")
        .arg(&b.root)
        .arg("--node")
        .arg(&b.node)
        .args(["api", "serve", "--tls", &format!("127.0.0.1:{port}")])
        .env("HULL_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    *api = Some(child);
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if t.elapsed().as_secs() > 30 {
            return Err("B's API did not listen".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let creds = dir.join("creds");
    b.run(&["api", "trust", "add", "node-a", "--out", &creds.to_string_lossy()])?;
    let c = |f: &str| creds.join(f).to_string_lossy().into_owned();
    a.run(&["peer", "add", &url, "--cert", &c("node-a.crt"), "--key", &c("node-a.key"), "--ca", &c("ca.crt")])?;
    b.run(&["nictagadm", "add", "-l", "t0"]).ok();
    let img = a.build_install(&["--busybox"], "bb")?;
    let (vm, _) = a.create(&serde_json::json!({
        "brand": "joyent-minimal", "image_uuid": img, "max_physical_memory": 128, "quota": 0
    }))?;
    let data = a.root.join("zones").join(&vm).join("root/data");
    fill(&data, mib)?;

    // hull: begin, sync while 10 MiB are rewritten, sync, switch.
    let t = Instant::now();
    let mut bytes = 0u64;
    a.run(&["migrate", &vm, "--to", &url, "--phase", "begin", "-j"])?;
    let mut writer = Some({
        let data = data.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            rewrite(&data, 10)
        })
    });
    let mut syncs = Vec::new();
    let mut sync_secs = Vec::new();
    for _ in 0..2 {
        let out = a.run(&["migrate", &vm, "--phase", "sync", "-j"])?;
        let v = json_lines(&out).pop().ok_or("no sync line")?;
        bytes += v["bytes"].as_u64().unwrap_or(0);
        syncs.push(v["bytes"].as_u64().unwrap_or(0));
        sync_secs.push(v["secs"].as_f64().unwrap_or(0.0));
        // The rewrite ends before the second sync, which carries it.
        if let Some(w) = writer.take() {
            w.join().map_err(|_| "the writer panicked")??;
        }
    }
    let out = a.run(&["migrate", &vm, "--phase", "switch", "-j"])?;
    let sw = json_lines(&out).pop().ok_or("no switch line")?;
    let total = t.elapsed().as_secs_f64();
    bytes += sw["bytes"].as_u64().unwrap_or(0);
    let downtime_ms = sw["downtime_ms"].as_u64().ok_or("no downtime")?;
    let stop_ms = sw["stop_ms"].as_u64().unwrap_or(0);
    let state: serde_json::Value = serde_json::from_str(&b.run(&["vmadm", "get", &vm])?).map_err(|e| e.to_string())?;
    if state["state"] != "running" {
        return Err(format!("the zone is {} on B", state["state"]));
    }

    // The floor, on the same dataset: a snapshot on A, sent over TCP into B's pool.
    let snapdir = a.root.join("zones").join(&vm).join(".snapshots");
    std::fs::create_dir_all(&snapdir).ok();
    let snap = snapdir.join("floor");
    let st = Command::new("btrfs")
        .args(["subvolume", "snapshot", "-r"])
        .arg(a.root.join("zones").join(&vm))
        .arg(&snap)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    if !st.success() {
        return Err("btrfs subvolume snapshot failed".into());
    }
    let into = b.root.join("zones/.floor");
    std::fs::create_dir_all(&into).map_err(|e| e.to_string())?;
    let (floor_secs, floor_bytes) = floor(&snap, &into)?;
    // What the floor leaves in the page cache, written out: hull's second sync pays this
    // for the first one (btrfs receive's snapshot of its parent writes it back first).
    let t = Instant::now();
    let st = Command::new("sync").arg("-f").arg(&into).status().map_err(|e| e.to_string())?;
    if !st.success() {
        return Err("sync -f failed".into());
    }
    let floor_writeback = t.elapsed().as_secs_f64();
    let _ = Command::new("btrfs").args(["subvolume", "delete", "-c"]).arg(into.join("floor")).output();
    let _ = Command::new("btrfs").args(["subvolume", "delete"]).arg(&snap).output();

    // rsync -aHAX of the zone's root into B's pool.
    let rs_into = b.root.join("zones/.rsync");
    let t = Instant::now();
    let st = Command::new("rsync")
        .args(["-aHAX", "--inplace"])
        .arg(format!("{}/", a.root.join("zones").join(&vm).join("root").display()))
        .arg(&rs_into)
        .status()
        .map_err(|e| e.to_string())?;
    let rsync_secs = t.elapsed().as_secs_f64();
    if !st.success() {
        return Err("rsync failed".into());
    }
    let _ = std::fs::remove_dir_all(&rs_into);

    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    Ok(serde_json::json!({
        "data_mib": mib,
        "rewritten_mib": 10,
        "total_s": r(total),
        "downtime_ms": downtime_ms,
        "stop_ms": stop_ms,
        "bytes": bytes,
        "sync_bytes": syncs,
        "switch_bytes": sw["bytes"],
        "sync_s": sync_secs.iter().map(|x| r(*x)).collect::<Vec<_>>(),
        "peer_floor_btrfs_send_tcp_s": r(floor_secs),
        "peer_floor_bytes": floor_bytes,
        "peer_floor_writeback_s": r(floor_writeback),
        "moving_over_floor_with_writeback": r((total - stop_ms as f64 / 1000.0) / (floor_secs + floor_writeback)),
        "peer_rsync_s": r(rsync_secs),
        "total_over_floor": r(total / floor_secs),
        // Without the zone's own shutdown, which no copy of the data can shorten.
        "moving_over_floor": r((total - stop_ms as f64 / 1000.0) / floor_secs),
        "total_over_rsync": r(total / rsync_secs),
    })
    .to_string())
}
