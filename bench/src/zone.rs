//! bench/zone: how fast a zone is made and booted, what it costs to keep one running, and
//! how fast vmadm lists many.
//!
//! In one run, on one busybox image: `vmadm create` with autoboot (clone, config, start until
//! init runs) over 100 zones, p50 and p99; `runc run -d` of the same rootfs already copied
//! (the peer); with 200 zones running, host memory per zone beyond the zones' own processes
//! and each supervisor's proportional memory; `vmadm list` with 200 running and 1000 defined
//! VMs. Prints one JSON line. Needs root and `target/release/hull` (cargo build --release).
//! `HULL_BENCH_ZONES` (100), `HULL_BENCH_RUNNING` (200) and `HULL_BENCH_DEFINED` (1000)
//! scale it down.

use hull_bench::{Hull, env_n, ms, pct};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// kB of a /proc/meminfo field (`Slab:`).
fn meminfo(field: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// Pss of a process, kB.
fn pss(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("Pss:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// Pids of processes whose command line holds all of `words`.
fn pids_with(words: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).into_owned())
            .unwrap_or_default();
        if words.iter().all(|w| cmd.contains(w)) {
            out.push(name);
        }
    }
    out
}

/// Memory charged to the zones' own cgroups (their processes), kB.
fn zone_memory_kb() -> u64 {
    let mut total = 0;
    for base in ["/sys/fs/cgroup/memory", "/sys/fs/cgroup"] {
        for e in std::fs::read_dir(base).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with("hbench-") {
                let usage = std::fs::read_to_string(e.path().join("memory.usage_in_bytes"))
                    .or_else(|_| std::fs::read_to_string(e.path().join("memory.current")));
                total += usage.ok().and_then(|u| u.trim().parse::<u64>().ok()).unwrap_or(0) / 1024;
            }
        }
        if total > 0 {
            break;
        }
    }
    total
}

fn runc_peer(rootfs: &Path, work: &Path, n: usize) -> Result<Vec<f64>, String> {
    let runc = hull_exec::tool("runc");
    if !runc.is_absolute() {
        return Err("runc is not installed (apt-get install runc)".into());
    }
    let bundle = work.join("runc-bundle");
    std::fs::create_dir_all(&bundle).map_err(|e| e.to_string())?;
    let st = Command::new("cp").arg("-a").arg(rootfs).arg(bundle.join("rootfs")).status().map_err(|e| e.to_string())?;
    if !st.success() {
        return Err("copying the rootfs for runc failed".into());
    }
    let out = Command::new(&runc).arg("spec").current_dir(&bundle).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("runc spec: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    cfg["process"]["terminal"] = false.into();
    cfg["process"]["args"] = serde_json::json!(["/bin/busybox", "sleep", "600"]);
    std::fs::write(&cfg_path, cfg.to_string()).map_err(|e| e.to_string())?;
    let state = work.join("runc-state");
    let mut lat = Vec::new();
    for i in 0..n {
        let id = format!("hbench-runc-{i}");
        let t = Instant::now();
        let out = Command::new(&runc)
            .arg("--root")
            .arg(&state)
            .args(["run", "-d", &id])
            .current_dir(&bundle)
            // Not pipes: the container keeps what it inherits open, and a pipe would never end.
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(work.join("runc.err")).map_err(|e| e.to_string())?)
            .status()
            .map_err(|e| e.to_string())?;
        lat.push(ms(t));
        if !out.success() {
            return Err(format!("runc run -d: {}", std::fs::read_to_string(work.join("runc.err")).unwrap_or_default()));
        }
        let _ = Command::new(&runc).arg("--root").arg(&state).args(["delete", "-f", &id]).output();
    }
    Ok(lat)
}

fn main() {
    match bench() {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("bench/zone: {e}");
            std::process::exit(1);
        }
    }
}

fn bench() -> Result<String, String> {
    let zones = env_n("HULL_BENCH_ZONES", 100);
    let running = env_n("HULL_BENCH_RUNNING", 200).max(zones);
    let defined = env_n("HULL_BENCH_DEFINED", 1000).max(running);
    let bin = hull_bench::hull_bin()?;
    let dir = tempfile::Builder::new().prefix("hull-bench-zone-").tempdir_in("/var/tmp").map_err(|e| e.to_string())?;
    let h = Hull { bin, root: dir.path().to_path_buf(), netns: None, node: "hbench".into() };
    h.run(&["pool", "create", "--size", "8G"])?;
    let result = measure(&h, zones, running, defined);
    // Leave nothing behind, whatever happened.
    let runc_state = h.root.join("runc-state");
    if runc_state.exists() {
        for i in 0..20 {
            let _ = Command::new(hull_exec::tool("runc"))
                .arg("--root")
                .arg(&runc_state)
                .args(["delete", "-f", &format!("hbench-runc-{i}")])
                .output();
        }
    }
    if let Ok(list) = h.run(&["vmadm", "list", "-H", "-o", "uuid"]) {
        for u in list.lines() {
            let _ = h.run(&["vmadm", "delete", u]);
        }
    }
    if h.run(&["pool", "destroy"]).is_err() {
        let _ = Command::new("umount").arg("-l").arg(dir.path().join("zones")).status();
    }
    result
}

fn measure(h: &Hull, zones: usize, running: usize, defined: usize) -> Result<String, String> {
    let out_dir = h.root.join("img");
    let built = h.run(&["imgadm", "build", "--busybox", "-n", "bench", "-o", &out_dir.to_string_lossy(), "-j"])?;
    let v: serde_json::Value = serde_json::from_str(&built).map_err(|e| e.to_string())?;
    let (m, f) = (v["manifest_path"].as_str().unwrap_or_default(), v["file_path"].as_str().unwrap_or_default());
    h.run(&["imgadm", "install", "-m", m, "-f", f])?;
    let image = v["manifest"]["uuid"].as_str().unwrap_or_default().to_string();
    let payload = |i: usize, boot: bool| serde_json::json!({"brand": "joyent-minimal", "image_uuid": image, "alias": format!("b{i}"), "max_physical_memory": 64, "autoboot": boot});

    // The peer first, on a quiet node, as our first creates are.
    let rootfs = h.root.join("zones").join(&image).join("root");
    let mut runc = runc_peer(&rootfs, &h.root, 20)?;
    let runc_p50 = pct(&mut runc, 0.5);
    eprintln!("runc run -d: p50 {runc_p50:.1} ms");

    let kernel = || meminfo("Slab:") + meminfo("KernelStack:") + meminfo("PageTables:");
    let kernel_before = kernel();
    let mut lat = Vec::new();
    for i in 0..zones {
        lat.push(h.create(&payload(i, true))?.1);
    }
    let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
    eprintln!("vmadm create (boot) over {zones}: p50 {p50:.1} ms, p99 {p99:.1} ms");
    for i in zones..running {
        h.create(&payload(i, true))?;
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    let kernel_per_zone_kb = kernel().saturating_sub(kernel_before) as f64 / running as f64;
    let own_per_zone_kb = zone_memory_kb() as f64 / running as f64;
    let sup = pids_with(&["zoneadmd", "hbench"]);
    let sup_pss: u64 = sup.iter().map(|p| pss(p)).sum();
    let sup_per_zone_kb = sup_pss as f64 / sup.len().max(1) as f64;
    // Beyond the zone's own processes: its supervisor, and what the kernel keeps for it
    // (slab, kernel stacks, page tables: namespaces, cgroups, mounts, the pty).
    let host_per_zone_kb = sup_per_zone_kb + kernel_per_zone_kb;
    eprintln!(
        "{running} running: beyond each zone's own {own_per_zone_kb:.0} kB, {host_per_zone_kb:.0} kB per zone (zoneadmd Pss {sup_per_zone_kb:.0} kB, kernel {kernel_per_zone_kb:.0} kB; {} supervisors)",
        sup.len()
    );
    for i in running..defined {
        h.create(&payload(i, false))?;
    }
    let mut list = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let out = h.run(&["vmadm", "list", "-H"])?;
        list.push(ms(t));
        if out.lines().count() != defined {
            return Err(format!("vmadm list shows {} VMs, not {defined}", out.lines().count()));
        }
    }
    let list_p50 = pct(&mut list, 0.5);
    eprintln!("vmadm list of {defined} ({running} running): p50 {list_p50:.0} ms");
    Ok(serde_json::json!({
        "bench": "zone",
        "zones": zones,
        "create_boot_p50_ms": p50,
        "create_boot_p99_ms": p99,
        "peer_runc_run_d_p50_ms": runc_p50,
        "create_boot_p50_over_runc": p50 / runc_p50,
        "running": running,
        "kernel_kb_per_zone": kernel_per_zone_kb,
        "zone_own_cgroup_kb_each": own_per_zone_kb,
        "host_kb_per_zone_beyond_own": host_per_zone_kb,
        "zoneadmd_pss_kb_each": sup_per_zone_kb,
        "defined": defined,
        "vmadm_list_p50_ms": list_p50,
    })
    .to_string())
}
