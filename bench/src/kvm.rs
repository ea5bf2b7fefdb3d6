//! bench/kvm: a KVM VM's start, its cost on the host, and how fast its disk is cloned.
//!
//! In one run, with the node's accelerator (TCG on machines where KVM makes no progress):
//! - a 2 GB zvol image whose first sector prints a marker is built and installed;
//! - `vmadm create` clones its disk `HULL_BENCH_CLONES` (20) times, timed by the clone
//!   alone (the pool's clone of the image's @final, as vmadm makes it);
//! - `vmadm start` to the marker on the serial console, `HULL_BENCH_STARTS` (5) times,
//!   beside plain qemu with the same arguments (same disk, same accelerator) to the same
//!   marker, alternating; and the same for the kernel guest of `imgadm build
//!   --guest-kernel` (3 times), when /var/cache/hull/guest has a kernel;
//! - at the first start, the VM's host memory: qemu's and its zoneadmd's Pss (the boot
//!   sector touches almost none of the guest's RAM).
//!
//! Prints one JSON line. Needs root, qemu and `target/release/hull`.

use hull_bench::{Hull, env_n, ms, pct};
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};

fn main() {
    match bench() {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("bench/kvm: {e}");
            std::process::exit(1);
        }
    }
}

fn pss_kb(pid: i64) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("Pss:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn wait_file(path: &std::path::Path, marker: &str, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if std::fs::read_to_string(path).is_ok_and(|s| s.contains(marker)) {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// Plain qemu, the same guest and accelerator, serial on stdout; ms to the marker.
fn plain_qemu(disk: &std::path::Path, accel: &str) -> Result<f64, String> {
    plain_qemu_to(disk, accel, hull_qemu::probe::MARKER, 128)
}

fn plain_qemu_to(disk: &std::path::Path, accel: &str, marker: &str, ram: u64) -> Result<f64, String> {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", accel, "-m", &ram.to_string(), "-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", "stdio", "-drive"])
        .arg(format!("file={},if=none,id=disk0,format=raw,cache=none,snapshot=on", disk.display()))
        .args(["-device", "virtio-blk-pci,drive=disk0,bootindex=1"]);
    hull_qemu::probe::until_marker(cmd, marker, Duration::from_secs(60)).map(|d| d.as_secs_f64() * 1000.0)
}

fn bench() -> Result<String, String> {
    let clones = env_n("HULL_BENCH_CLONES", 20);
    let starts = env_n("HULL_BENCH_STARTS", 5);
    let bin = hull_bench::hull_bin()?;
    let dir = tempfile::Builder::new().prefix("hull-bench-kvm-").tempdir().map_err(|e| e.to_string())?;
    let h = Hull { bin, root: dir.path().to_path_buf(), netns: None, node: "hbench".into() };
    h.run(&["pool", "create", "--size", "4G"])?;
    let result = measure(&h, dir.path(), clones, starts);
    if let Ok(list) = h.run(&["vmadm", "list", "-H", "-o", "uuid"]) {
        for u in list.lines() {
            let _ = h.run(&["vmadm", "delete", u]);
        }
    }
    let _ = h.run(&["pool", "destroy"]);
    result
}

fn measure(h: &Hull, dir: &std::path::Path, clones: usize, starts: usize) -> Result<String, String> {
    // A 2 GB disk: the boot sector, then nothing (sparse).
    let disk = dir.join("disk.raw");
    let mut b = hull_qemu::probe::boot_sector();
    b.resize(512, 0);
    std::fs::write(&disk, &b).map_err(|e| e.to_string())?;
    std::fs::OpenOptions::new().write(true).open(&disk).and_then(|f| f.set_len(2 << 30)).map_err(|e| e.to_string())?;
    let img = h.build_install(&["--disk", &disk.to_string_lossy(), "-c", "zstd"], "bench-disk")?;
    // The clone as vmadm makes it, through the pool (the same call, without the CLI around it).
    let node = hull_storage::Node::new(dir, "hbench").map_err(|e| e.to_string())?;
    let pool = node.pool().map_err(|e| e.to_string())?;
    let src = hull_storage::DatasetName::parse(&img)
        .map_err(|e| e.to_string())?
        .snapshot("final")
        .map_err(|e| e.to_string())?;
    let mut clone_ms = Vec::new();
    for i in 0..clones {
        let target = hull_storage::DatasetName::parse(&format!("bench-clone-{i}")).map_err(|e| e.to_string())?;
        let t = Instant::now();
        pool.clone_snapshot(&src, &target).map_err(|e| e.to_string())?;
        clone_ms.push(ms(t));
    }
    for i in 0..clones {
        let target = hull_storage::DatasetName::parse(&format!("bench-clone-{i}")).map_err(|e| e.to_string())?;
        let _ = hull_storage::destroy(pool.as_ref(), &target, true);
    }
    let payload = json!({"brand": "kvm", "ram": 128, "autoboot": false, "disks": [{"image_uuid": img, "boot": true}]});
    let (uuid, _) = h.create(&payload)?;
    // The node's accelerator, as its probe found it at the first start.
    let node_accel = || {
        std::fs::read_to_string(dir.join("var/hull/accel.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["accel"].as_str().map(String::from))
            .unwrap_or_else(|| "tcg".into())
    };
    let log = dir.join("var/hull/z").join(&uuid).join("console.log");
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    let mut mem: Option<(u64, u64)> = None;
    for _ in 0..starts {
        let _ = std::fs::remove_file(&log);
        let t = Instant::now();
        h.run(&["vmadm", "start", &uuid])?;
        wait_file(&log, hull_qemu::probe::MARKER, Duration::from_secs(60)).ok_or("no marker from the VM")?;
        ours.push(ms(t));
        if mem.is_none() {
            std::thread::sleep(Duration::from_millis(300));
            let v: Value = serde_json::from_str(&h.run(&["vmadm", "get", &uuid])?).map_err(|e| e.to_string())?;
            let rec: Value = serde_json::from_str(
                &std::fs::read_to_string(dir.join("var/hull/z").join(&uuid).join("zoneadmd.json"))
                    .map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?;
            mem = Some((pss_kb(v["pid"].as_i64().unwrap_or(0)), pss_kb(rec["zoneadmd"].as_i64().unwrap_or(0))));
        }
        h.run(&["vmadm", "stop", "-F", &uuid])?;
        peer.push(plain_qemu(&disk, &node_accel())?);
    }
    let (o50, p50) = (pct(&mut ours, 0.5), pct(&mut peer, 0.5));
    // The kernel guest from imgadm build: a real boot, from its disk, to its init's marker.
    let guest = std::path::Path::new("/var/cache/hull/guest");
    let (mut k_ours, mut k_peer) = (Vec::new(), Vec::new());
    if guest.join("vmlinuz").exists() {
        let gimg = h.build_install(
            &["--guest-kernel", &guest.join("vmlinuz").to_string_lossy(), "--guest-modules", &guest.to_string_lossy()],
            "bench-guest",
        )?;
        let (g, _) = h.create(
            &json!({"brand": "kvm", "ram": 256, "autoboot": false, "disks": [{"image_uuid": gimg, "boot": true}]}),
        )?;
        let glog = dir.join("var/hull/z").join(&g).join("console.log");
        let gdisk = dir.join("zones").join(&gimg).join("disk.raw");
        for _ in 0..starts.min(3) {
            let _ = std::fs::remove_file(&glog);
            let t = Instant::now();
            h.run(&["vmadm", "start", &g])?;
            wait_file(&glog, hull_img::guest::MARKER, Duration::from_secs(120))
                .ok_or("no marker from the kernel guest")?;
            k_ours.push(ms(t));
            h.run(&["vmadm", "stop", "-F", &g])?;
            k_peer.push(plain_qemu_to(&gdisk, &node_accel(), hull_img::guest::MARKER, 256)?);
        }
    }
    let (k50, kp50) = (pct(&mut k_ours, 0.5), pct(&mut k_peer, 0.5));
    let (qemu_pss, zoneadmd_pss) = mem.unwrap_or_default();
    Ok(json!({
        "accel": node_accel(),
        "start_to_marker_p50_ms": (o50 * 10.0).round() / 10.0,
        "peer_plain_qemu_p50_ms": (p50 * 10.0).round() / 10.0,
        "start_over_plain_qemu": (o50 / p50 * 100.0).round() / 100.0,
        "kernel_guest_start_p50_ms": (k50 * 10.0).round() / 10.0,
        "kernel_guest_peer_plain_qemu_p50_ms": (kp50 * 10.0).round() / 10.0,
        "kernel_guest_start_over_plain_qemu": (k50 / kp50 * 100.0).round() / 100.0,
        "clone_2g_p50_ms": (pct(&mut clone_ms.clone(), 0.5) * 100.0).round() / 100.0,
        "clone_2g_p99_ms": (pct(&mut clone_ms, 0.99) * 100.0).round() / 100.0,
        "qemu_pss_kb": qemu_pss,
        "zoneadmd_pss_kb": zoneadmd_pss,
        // The boot-sector guest touches almost none of its 128 MB: what is here is qemu's
        // and the supervisor's own.
        "guest_ram_mb": 128,
        "host_pss_kb_per_vm": qemu_pss + zoneadmd_pss,
        "starts": starts,
    })
    .to_string())
}
