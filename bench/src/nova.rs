//! bench/nova: spawn to running through Nova's driver (`nova_hull.HullDriver.spawn`, in
//! Nova 34's Python, over the node API's unix socket) against `vmadm create` of the same
//! image (the CLI, which returns once the zone runs), interleaved in one run. Target: the
//! driver adds at most 20 % (`driver_over_vmadm` ≤ 1.2).
//!
//! The driver runs in a Python process of its own (`python -m nova_hull.bench`), timed there
//! around `spawn` only, so Python's start is not counted. Needs root, `target/release/hull`
//! and the Nova environment `.ci/deps` makes (`NOVA_HULL_VENV`, /var/cache/hull/nova-venv).
//! `HULL_BENCH_SPAWNS` (20) scales it. Prints one JSON line.

use hull_bench::{Hull, env_n, pct};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

fn main() {
    match bench() {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("bench/nova: {e}");
            std::process::exit(1);
        }
    }
}

/// The Python side: one line asked, one answered.
struct Driver {
    child: Child,
    w: ChildStdin,
    r: BufReader<ChildStdout>,
}

impl Driver {
    fn start(sock: &Path, image: &str) -> Result<Driver, String> {
        let venv =
            PathBuf::from(std::env::var("NOVA_HULL_VENV").unwrap_or_else(|_| "/var/cache/hull/nova-venv".into()));
        let pkg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../openstack/nova-hull");
        let mut child = Command::new(venv.join("bin/python"))
            .args(["-m", "nova_hull.bench"])
            .arg(sock)
            .arg(image)
            .env("PYTHONPATH", &pkg)
            // Nova imports eventlet, which warns that it is deprecated on every start.
            .env("PYTHONWARNINGS", "ignore")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}/bin/python (make it with .ci/deps): {e}", venv.display()))?;
        let w = child.stdin.take().ok_or("no stdin")?;
        let r = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        Ok(Driver { child, w, r })
    }

    fn ask(&mut self, what: &str) -> Result<String, String> {
        writeln!(self.w, "{what}").map_err(|e| format!("the driver's process: {e}"))?;
        let mut l = String::new();
        self.r.read_line(&mut l).map_err(|e| e.to_string())?;
        if l.is_empty() {
            return Err(format!("the driver's process ended at {what:?} (its error is above)"));
        }
        Ok(l.trim().to_string())
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bench() -> Result<String, String> {
    let bin = hull_bench::hull_bin()?;
    let dir = tempfile::Builder::new().prefix("hull-bench-nova-").tempdir_in("/var/tmp").map_err(|e| e.to_string())?;
    let h = Hull { bin, root: dir.path().to_path_buf(), netns: None, node: "hbench".into() };
    h.run(&["pool", "create", "--size", "2G"])?;
    let sock = h.root.join("var/run/hull/api.sock");
    let result = h.serve_api(&sock).and_then(|mut server| {
        let r = measure(&h, &sock);
        let _ = server.kill();
        let _ = server.wait();
        r
    });
    h.remove_all();
    result
}

fn measure(h: &Hull, sock: &Path) -> Result<String, String> {
    let spawns = env_n("HULL_BENCH_SPAWNS", 20);
    let image = h.build_install(&["--busybox"], "bb")?;
    let mut driver = Driver::start(sock, &image)?;
    // The payload the driver sends for its flavor (64 MiB, one vCPU, joyent-minimal).
    let payload = serde_json::json!({"brand": "joyent-minimal", "image_uuid": image, "max_physical_memory": 64,
                                     "cpu_cap": 100, "alias": "direct", "autoboot": true, "nics": []});
    // One of each first, untimed: caches, the API's first job.
    driver.ask("spawn")?;
    driver.ask("destroy")?;
    let (uuid, _) = h.create(&payload)?;
    h.run(&["vmadm", "delete", &uuid])?;
    let (mut via_driver, mut via_vmadm) = (Vec::new(), Vec::new());
    for _ in 0..spawns {
        let took: f64 = driver.ask("spawn")?.parse().map_err(|e| format!("the driver answered: {e}"))?;
        via_driver.push(took);
        driver.ask("destroy")?;
        let (uuid, took) = h.create(&payload)?;
        via_vmadm.push(took);
        h.run(&["vmadm", "delete", &uuid])?;
    }
    let d = pct(&mut via_driver, 0.5);
    let v = pct(&mut via_vmadm, 0.5);
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    Ok(serde_json::json!({
        "spawns": spawns,
        "driver_spawn_p50_ms": r(d),
        "driver_spawn_p99_ms": r(pct(&mut via_driver, 0.99)),
        "vmadm_create_p50_ms": r(v),
        "vmadm_create_p99_ms": r(pct(&mut via_vmadm, 0.99)),
        "driver_over_vmadm": r(d / v),
    })
    .to_string())
}
