//! Helpers the benches share.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// The `p` quantile (0 to 1) of `v`, nearest rank; sorts `v`.
pub fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(f64::NAN)
}

/// Milliseconds since `t`.
pub fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// `target/release/hull`, beside the bench's own binary.
pub fn hull_bin() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = me.parent().map(|d| d.join("hull")).ok_or("no directory")?;
    if !bin.exists() {
        return Err(format!("{} is missing: cargo build --release -p hull", bin.display()));
    }
    Ok(bin)
}

/// A number from the environment, or the default.
pub fn env_n(k: &str, d: usize) -> usize {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

/// A bench's node: the hull binary, its root, and the network namespace it runs in, if any.
pub struct Hull {
    pub bin: PathBuf,
    pub root: PathBuf,
    pub netns: Option<std::fs::File>,
    /// Its prefix (`--node`): two nodes on one machine need two.
    pub node: String,
}

impl Hull {
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(&self.root).arg("--node").arg(&self.node).args(args).env("HULL_LOG", "error");
        if let Some(ns) = &self.netns {
            hull_net::ns::exec_in(&mut c, ns);
        }
        let out = c.output().map_err(|e| format!("{}: {e}", self.bin.display()))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("hull {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)))
        }
    }

    /// `vmadm create`; returns the uuid and the milliseconds it took.
    pub fn create(&self, payload: &serde_json::Value) -> Result<(String, f64), String> {
        self.create_from(payload, "payload.json")
    }

    /// [`Hull::create`] with the payload in `<root>/<file>` (one per parallel creator).
    pub fn create_from(&self, payload: &serde_json::Value, file: &str) -> Result<(String, f64), String> {
        let f = self.root.join(file);
        std::fs::write(&f, payload.to_string()).map_err(|e| e.to_string())?;
        let t = Instant::now();
        let out = self.run(&["vmadm", "create", "-f", &f.to_string_lossy()])?;
        let took = ms(t);
        let uuid = out.trim().rsplit(' ').next().unwrap_or_default().to_string();
        Ok((uuid, took))
    }

    /// `imgadm build ARGS -n NAME` into `<root>/img`, then `imgadm install`; the image's uuid.
    pub fn build_install(&self, args: &[&str], name: &str) -> Result<String, String> {
        let out = self.root.join("img");
        let out_s = out.to_string_lossy().into_owned();
        let mut all = vec!["imgadm", "build", "-n", name, "-o", &out_s, "-j"];
        all.extend_from_slice(args);
        let built: serde_json::Value = serde_json::from_str(&self.run(&all)?).map_err(|e| e.to_string())?;
        let field = |k: &str| built[k].as_str().unwrap_or_default().to_string();
        self.run(&["imgadm", "install", "-m", &field("manifest_path"), "-f", &field("file_path")])?;
        Ok(built["manifest"]["uuid"].as_str().unwrap_or_default().to_string())
    }

    /// Deletes every VM and destroys the pool (lazily unmounting it if that fails): what a
    /// bench leaves, whatever happened in it.
    pub fn remove_all(&self) {
        if let Ok(list) = self.run(&["vmadm", "list", "-H", "-o", "uuid"]) {
            for u in list.lines() {
                let _ = self.run(&["vmadm", "delete", u]);
            }
        }
        if self.run(&["pool", "destroy"]).is_err() {
            let _ = Command::new("umount").arg("-l").arg(self.root.join("zones")).status();
        }
    }

    /// `hull api serve` on the node's default socket `sock`, once it listens.
    pub fn serve_api(&self, sock: &std::path::Path) -> Result<std::process::Child, String> {
        let mut child = Command::new(&self.bin)
            .arg("--root")
            .arg(&self.root)
            .arg("--node")
            .arg(&self.node)
            .args(["api", "serve"])
            .env("HULL_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(sock).is_err() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("hull api serve did not listen".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(child)
    }

    /// `vmadm update UUID` with a payload; returns the milliseconds it took.
    pub fn update(&self, uuid: &str, payload: &serde_json::Value) -> Result<f64, String> {
        let f = self.root.join("update.json");
        std::fs::write(&f, payload.to_string()).map_err(|e| e.to_string())?;
        let t = Instant::now();
        self.run(&["vmadm", "update", uuid, "-f", &f.to_string_lossy()])?;
        Ok(ms(t))
    }
}
