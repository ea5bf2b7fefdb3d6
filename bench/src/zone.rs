//! bench/zone: how fast a zone is made and booted, how many a node makes a second, what it
//! costs to keep one running, and how fast vmadm lists many.
//!
//! In one run, on one busybox image, interleaved one of each in turn: `vmadm create` with
//! autoboot (clone, config, start until init runs), `runc run -d` of the same rootfs copied
//! ahead, and LXC's `lxc-copy -s -B btrfs` + `lxc-start -d` (a snapshot on a btrfs lxcpath,
//! returning once RUNNING), each ending with the image's /sbin/init running under a 64 MiB
//! cap, LXC's and hull's in a user namespace; p50 and p99. Then the provisioning rate:
//! `HULL_BENCH_PARALLEL` (4) creators making `HULL_BENCH_BATCH` (40) zones at 10, 100 and 1000
//! existing VMs (at most `HULL_BENCH_RUNNING` of them running, the rest stopped). With the
//! zones running: host memory per zone beyond the zones' own processes. Last, `vmadm list`
//! of `HULL_BENCH_DEFINED` VMs. Prints one JSON line. Needs root, runc, lxc and
//! `target/release/hull` (cargo build --release). `HULL_BENCH_ZONES` (100),
//! `HULL_BENCH_RUNNING` (200) and `HULL_BENCH_DEFINED` (1000) scale it down. LXC needs root's
//! ids in /etc/subuid and /etc/subgid: the bench adds its line for the run and removes it.

use hull_bench::{Hull, env_n, ms, pct};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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

/// runc, given the same rootfs (copied once, ahead) and the same init; each run's container
/// is deleted once measured.
struct Runc {
    bin: PathBuf,
    bundle: PathBuf,
    state: PathBuf,
    err: PathBuf,
    n: usize,
}

impl Runc {
    fn new(rootfs: &Path, work: &Path) -> Result<Runc, String> {
        let bin = hull_exec::tool("runc");
        if !bin.is_absolute() {
            return Err("runc is not installed (apt-get install runc)".into());
        }
        let bundle = work.join("runc-bundle");
        std::fs::create_dir_all(&bundle).map_err(|e| e.to_string())?;
        let st =
            Command::new("cp").arg("-a").arg(rootfs).arg(bundle.join("rootfs")).status().map_err(|e| e.to_string())?;
        if !st.success() {
            return Err("copying the rootfs for runc failed".into());
        }
        let out = Command::new(&bin).arg("spec").current_dir(&bundle).output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("runc spec: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let cfg_path = bundle.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&cfg_path).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        cfg["process"]["terminal"] = false.into();
        // The zone's own init, as hull and LXC run it.
        cfg["process"]["args"] = serde_json::json!(["/sbin/init"]);
        cfg["linux"]["resources"]["memory"] = serde_json::json!({"limit": 64 << 20});
        std::fs::write(&cfg_path, cfg.to_string()).map_err(|e| e.to_string())?;
        Ok(Runc { bin, bundle, state: work.join("runc-state"), err: work.join("runc.err"), n: 0 })
    }

    /// `runc run -d` until it returns (init started); milliseconds.
    fn run(&mut self) -> Result<f64, String> {
        let id = format!("hbench-runc-{}", self.n);
        self.n += 1;
        let t = Instant::now();
        let out = Command::new(&self.bin)
            .arg("--root")
            .arg(&self.state)
            .args(["run", "-d", &id])
            .current_dir(&self.bundle)
            // Not pipes: the container keeps what it inherits open, and a pipe would never end.
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.err).map_err(|e| e.to_string())?)
            .status()
            .map_err(|e| e.to_string())?;
        let took = ms(t);
        if !out.success() {
            return Err(format!("runc run -d: {}", std::fs::read_to_string(&self.err).unwrap_or_default()));
        }
        let _ = Command::new(&self.bin).arg("--root").arg(&self.state).args(["delete", "-f", &id]).output();
        Ok(took)
    }

    fn clean(&self) {
        for i in 0..self.n {
            let _ = Command::new(&self.bin)
                .arg("--root")
                .arg(&self.state)
                .args(["delete", "-f", &format!("hbench-runc-{i}")])
                .output();
        }
    }
}

/// The ids LXC maps an unprivileged container's root to (below hull's ranges, which start at 10^9). LXC insists that root's own
/// ranges be in /etc/subuid and /etc/subgid when newuidmap exists (Debian's does); the bench
/// adds this line for its run and takes it out again.
const LXC_IDS: &str = "root:900000000:65536";

/// LXC on a btrfs lxcpath: a base container whose rootfs is a subvolume holding the same
/// files, `lxc-copy -s -B btrfs` (a snapshot) then `lxc-start -d` (which returns once the
/// container is RUNNING, its init started), unprivileged in a user namespace as hull's
/// zones are, with the same memory cap. Each run's container is destroyed once measured.
struct Lxc {
    path: PathBuf,
    n: usize,
    added_ids: Vec<PathBuf>,
}

fn run_ok(c: &mut Command) -> Result<(), String> {
    let out = c.stdin(Stdio::null()).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{:?}: {}", c.get_program(), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Lxc {
    fn new(rootfs: &Path, pool: &Path) -> Result<Lxc, String> {
        if !hull_exec::tool("lxc-start").is_absolute() {
            return Err("lxc is not installed (apt-get install lxc)".into());
        }
        let mut lxc = Lxc { path: pool.join("hbench-lxc"), n: 0, added_ids: Vec::new() };
        for f in ["/etc/subuid", "/etc/subgid"] {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            if !text.lines().any(|l| l == LXC_IDS) {
                let mut t = text.clone();
                if !t.is_empty() && !t.ends_with('\n') {
                    t.push('\n');
                }
                t.push_str(LXC_IDS);
                t.push('\n');
                std::fs::write(f, t).map_err(|e| format!("{f}: {e}"))?;
                lxc.added_ids.push(f.into());
            }
        }
        let base = lxc.path.join("base");
        run_ok(Command::new("btrfs").args(["subvolume", "create"]).arg(&lxc.path))?;
        std::fs::create_dir_all(&base).map_err(|e| e.to_string())?;
        run_ok(Command::new("btrfs").args(["subvolume", "create"]).arg(base.join("rootfs")))?;
        run_ok(Command::new("cp").args(["-a", "--reflink=auto"]).arg(rootfs.join(".")).arg(base.join("rootfs")))?;
        let first = LXC_IDS.split(':').nth(1).unwrap_or_default();
        let config = format!(
            "lxc.uts.name = base\n\
             lxc.rootfs.path = btrfs:{}\n\
             lxc.init.cmd = /sbin/init\n\
             lxc.net.0.type = empty\n\
             lxc.apparmor.profile = unconfined\n\
             lxc.cgroup.memory.limit_in_bytes = 67108864\n\
             lxc.mount.auto = proc:mixed sys:mixed cgroup:mixed\n\
             lxc.tty.max = 0\n\
             lxc.console.path = none\n\
             lxc.idmap = u 0 {first} 65536\n\
             lxc.idmap = g 0 {first} 65536\n",
            base.join("rootfs").display()
        );
        std::fs::write(base.join("config"), config).map_err(|e| e.to_string())?;
        Ok(lxc)
    }

    /// `lxc-copy -s` then `lxc-start -d`; milliseconds.
    fn run(&mut self) -> Result<f64, String> {
        let name = format!("c{}", self.n);
        self.n += 1;
        let t = Instant::now();
        run_ok(
            Command::new("lxc-copy").arg("-P").arg(&self.path).args(["-n", "base", "-N", &name, "-s", "-B", "btrfs"]),
        )?;
        run_ok(Command::new("lxc-start").arg("-P").arg(&self.path).args(["-n", &name, "-d"]))?;
        let took = ms(t);
        self.remove(&name);
        Ok(took)
    }

    fn remove(&self, name: &str) {
        let _ = Command::new("lxc-stop").arg("-P").arg(&self.path).args(["-k", "-n", name]).output();
        let _ = Command::new("lxc-destroy").arg("-P").arg(&self.path).args(["-f", "-n", name]).output();
    }

    fn clean(&self) {
        for i in 0..self.n {
            self.remove(&format!("c{i}"));
        }
        let _ = Command::new("lxc-destroy").arg("-P").arg(&self.path).args(["-f", "-n", "base"]).output();
        let _ = Command::new("btrfs").args(["subvolume", "delete"]).arg(self.path.join("base/rootfs")).output();
        let _ = Command::new("btrfs").args(["subvolume", "delete"]).arg(&self.path).output();
        for f in &self.added_ids {
            if let Ok(text) = std::fs::read_to_string(f) {
                let kept: String = text.lines().filter(|l| *l != LXC_IDS).map(|l| format!("{l}\n")).collect();
                let _ = std::fs::write(f, kept);
            }
        }
    }
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
    // Zones in user namespaces must reach their roots through it.
    let _ = std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755));
    let h = Hull { bin, root: dir.path().to_path_buf(), netns: None, node: "hbench".into() };
    h.run(&["pool", "create", "--size", "12G"])?;
    let mut peers = (None, None);
    let result = measure(&h, zones, running, defined, &mut peers);
    // Leave nothing behind, whatever happened.
    if let Some(r) = &peers.0 {
        r.clean();
    }
    if let Some(l) = &peers.1 {
        l.clean();
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

/// Zones per second with `parallel` creators making `n` zones (booted when `boot`) at once.
fn rate(
    h: &Hull,
    n: usize,
    parallel: usize,
    payload: &(dyn Fn(usize, bool) -> serde_json::Value + Sync),
    first: usize,
    boot: bool,
) -> Result<f64, String> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..parallel)
            .map(|w| {
                let next = &next;
                s.spawn(move || -> Result<(), String> {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= n {
                            return Ok(());
                        }
                        h.create_from(&payload(first + i, boot), &format!("payload.{w}.json"))?;
                    }
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| w.join().unwrap_or_else(|_| Err("a creator panicked".into())))
    })?;
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

fn measure(
    h: &Hull,
    zones: usize,
    running: usize,
    defined: usize,
    peers: &mut (Option<Runc>, Option<Lxc>),
) -> Result<String, String> {
    let out_dir = h.root.join("img");
    let built = h.run(&["imgadm", "build", "--busybox", "-n", "bench", "-o", &out_dir.to_string_lossy(), "-j"])?;
    let v: serde_json::Value = serde_json::from_str(&built).map_err(|e| e.to_string())?;
    let (m, f) = (v["manifest_path"].as_str().unwrap_or_default(), v["file_path"].as_str().unwrap_or_default());
    h.run(&["imgadm", "install", "-m", m, "-f", f])?;
    let image = v["manifest"]["uuid"].as_str().unwrap_or_default().to_string();
    let payload = |i: usize, boot: bool| serde_json::json!({"brand": "joyent-minimal", "image_uuid": image, "alias": format!("b{i}"), "max_physical_memory": 64, "autoboot": boot});

    // Interleaved, one of each in turn, so that the machine's moods fall on all three alike:
    // hull's create-and-boot, runc's run of the same rootfs copied ahead, LXC's snapshot and
    // start. Each tool ends with the image's /sbin/init running under a 64 MiB cap.
    let rootfs = h.root.join("zones").join(&image).join("root");
    peers.0 = Some(Runc::new(&rootfs, &h.root)?);
    peers.1 = Some(Lxc::new(&rootfs, &h.root.join("zones"))?);
    let (runc, lxc) = (peers.0.as_mut().ok_or("runc")?, peers.1.as_mut().ok_or("lxc")?);
    let (mut lat, mut runc_lat, mut lxc_lat) = (Vec::new(), Vec::new(), Vec::new());
    let kernel = || meminfo("Slab:") + meminfo("KernelStack:") + meminfo("PageTables:");
    let kernel_before = kernel();
    for i in 0..zones {
        lat.push(h.create(&payload(i, true))?.1);
        runc_lat.push(runc.run()?);
        lxc_lat.push(lxc.run()?);
    }
    let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
    let (runc_p50, lxc_p50) = (pct(&mut runc_lat, 0.5), pct(&mut lxc_lat, 0.5));
    eprintln!(
        "create-and-boot over {zones}, interleaved: hull p50 {p50:.1} ms (p99 {p99:.1}), runc run -d {runc_p50:.1}, lxc-copy -s + lxc-start -d {lxc_p50:.1}"
    );

    // Provisioning rate: parallel creators, at 10, 100 and 1000 existing VMs (up to
    // `running` of them running, the rest stopped).
    let parallel = env_n("HULL_BENCH_PARALLEL", 4);
    let batch = env_n("HULL_BENCH_BATCH", 40);
    let mut made = zones;
    let mut rates = serde_json::Map::new();
    for level in [10usize, 100, 1000].into_iter().filter(|l| *l <= defined) {
        if made < level {
            let boot_to = running.saturating_sub(batch).clamp(made, level);
            if boot_to > made {
                rate(h, boot_to - made, parallel, &payload, made, true)?;
            }
            rate(h, level - boot_to, parallel, &payload, boot_to, false)?;
            made = level;
        }
        let r = rate(h, batch, parallel, &payload, made, true)?;
        made += batch;
        eprintln!("{batch} creates-and-boots by {parallel} at once, {level} VMs existing: {r:.1} zones/s");
        rates.insert(format!("rate_at_{level}_per_s"), r.into());
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    let sup = pids_with(&["zoneadmd", "hbench"]);
    let running_now = sup.len().max(1);
    let kernel_per_zone_kb = kernel().saturating_sub(kernel_before) as f64 / running_now as f64;
    let own_per_zone_kb = zone_memory_kb() as f64 / running_now as f64;
    let sup_pss: u64 = sup.iter().map(|p| pss(p)).sum();
    let sup_per_zone_kb = sup_pss as f64 / sup.len().max(1) as f64;
    // Beyond the zone's own processes: its supervisor, and what the kernel keeps for it
    // (slab, kernel stacks, page tables: namespaces, cgroups, mounts, the pty).
    let host_per_zone_kb = sup_per_zone_kb + kernel_per_zone_kb;
    eprintln!(
        "{} running: beyond each zone's own {own_per_zone_kb:.0} kB, {host_per_zone_kb:.0} kB per zone (zoneadmd Pss {sup_per_zone_kb:.0} kB, kernel {kernel_per_zone_kb:.0} kB)",
        sup.len()
    );
    if made < defined {
        rate(h, defined - made, parallel, &payload, made, false)?;
        made = defined;
    }
    let mut list = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let out = h.run(&["vmadm", "list", "-H"])?;
        list.push(ms(t));
        if out.lines().count() != made {
            return Err(format!("vmadm list shows {} VMs, not {made}", out.lines().count()));
        }
    }
    let list_p50 = pct(&mut list, 0.5);
    eprintln!("vmadm list of {made} ({} running): p50 {list_p50:.1} ms", sup.len());
    let mut out = serde_json::json!({
        "bench": "zone",
        "zones": zones,
        "create_boot_p50_ms": p50,
        "create_boot_p99_ms": p99,
        "peer_runc_run_d_p50_ms": runc_p50,
        "peer_lxc_copy_start_p50_ms": lxc_p50,
        "create_boot_p50_over_runc": p50 / runc_p50,
        "create_boot_p50_over_lxc": p50 / lxc_p50,
        "parallel": parallel,
        "running": sup.len(),
        "kernel_kb_per_zone": kernel_per_zone_kb,
        "zone_own_cgroup_kb_each": own_per_zone_kb,
        "host_kb_per_zone_beyond_own": host_per_zone_kb,
        "zoneadmd_pss_kb_each": sup_per_zone_kb,
        "defined": made,
        "vmadm_list_p50_ms": list_p50,
    });
    if let Some(o) = out.as_object_mut() {
        o.extend(rates);
    }
    Ok(out.to_string())
}
