//! A node per test: its own root in a temporary directory, its own pool, removed on drop even
//! when the test fails. Tests run as root.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub const HULL: &str = env!("CARGO_BIN_EXE_hull");

pub struct TestNode {
    pub dir: tempfile::TempDir,
    /// The node's own network namespace, when the test asked for one: every hull command
    /// of the node runs in it.
    pub netns: Option<std::fs::File>,
    /// The node's prefix (`--node`), its own: the cgroups, links, nftables tables and service
    /// contracts named after it are this test's alone.
    pub prefix: String,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts success and returns what the command said on stderr, then stdout (vmadm
    /// update's report of what applied when goes to stderr; stdout is SmartOS's one line).
    pub fn said(self) -> String {
        assert_eq!(self.code, 0, "failed ({}):\nstdout: {}\nstderr: {}", self.code, self.stdout, self.stderr);
        format!("{}{}", self.stderr, self.stdout)
    }

    /// Asserts success and returns stdout.
    pub fn ok(self) -> String {
        assert_eq!(self.code, 0, "failed ({}):\nstdout: {}\nstderr: {}", self.code, self.stdout, self.stderr);
        self.stdout
    }
}

/// Runs a command to its end, for at most `HULL_TEST_DEADLINE` seconds (300 by default):
/// a command that hangs fails its test with its name and what it said, rather than holding
/// the whole suite. Its output must end within ten seconds of its exit: a process it left
/// behind holding the caller's stdout (a daemon that kept the pipe) is a defect of its own.
pub fn bounded(c: &mut Command) -> Run {
    use std::io::Read;
    use std::time::{Duration, Instant};
    let what = format!("{:?}", c);
    let limit = std::env::var("HULL_TEST_DEADLINE").ok().and_then(|s| s.parse().ok()).unwrap_or(300u64);
    let mut child = c
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let (tx, rx) = std::sync::mpsc::channel();
    for (i, mut pipe) in [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .enumerate()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send((i, buf));
        });
    }
    drop(tx);
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() < Duration::from_secs(limit) => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                let said: Vec<String> = rx.try_iter().map(|(_, b)| String::from_utf8_lossy(&b).into_owned()).collect();
                panic!("{what} ran past {limit} s and was killed; it said: {said:?}\n{}", processes());
            }
        }
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok((0, b)) => stdout = b,
            Ok((_, b)) => stderr = b,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("{what} exited ({status}) but something it started still holds its output\n{}", processes())
            }
        }
    }
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// The host's processes with their state and where they wait, for a failure's report.
fn processes() -> String {
    Command::new("ps")
        .args(["-eo", "pid,ppid,stat,wchan:24,args"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl TestNode {
    /// A node with a loop-backed btrfs pool of `size` (e.g. "512M").
    pub fn new(size: &str) -> TestNode {
        let n = TestNode::bare();
        n.hull(&["pool", "create", "--size", size]).ok();
        n
    }

    /// A node with no pool yet.
    pub fn bare() -> TestNode {
        let dir = tempfile::Builder::new().prefix("hull-test-").tempdir().expect("tempdir");
        let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..7]);
        TestNode { dir, netns: None, prefix }
    }

    /// A node with a pool, living in a network namespace of its own.
    pub fn in_netns(size: &str) -> TestNode {
        let mut n = TestNode::bare();
        let ns = n.netns_path();
        hull_net::ns::create(&ns).expect("node netns");
        n.netns = Some(std::fs::File::open(&ns).expect("open netns"));
        n.hull(&["pool", "create", "--size", size]).ok();
        n
    }

    /// Where the node's namespace is mounted (when it has one).
    pub fn netns_path(&self) -> PathBuf {
        self.root().join("node.netns")
    }

    /// Runs `f` on a thread inside the node's namespace.
    pub fn in_node<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        hull_net::ns::run_in(&self.netns_path(), move || Ok(f())).expect("enter the node")
    }

    /// A running VM's network namespace.
    pub fn zone_netns(&self, uuid: &str) -> PathBuf {
        self.root().join("var/hull/netns").join(uuid)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn zones(&self) -> PathBuf {
        self.root().join("zones")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(HULL);
        c.env("HULL_ROOT", self.root()).env("HULL_NODE", &self.prefix).env_remove("HULL_FAILPOINT");
        if let Some(ns) = &self.netns {
            hull_net::ns::exec_in(&mut c, ns);
        }
        c
    }

    pub fn hull(&self, args: &[&str]) -> Run {
        bounded(self.cmd().args(args))
    }

    pub fn hull_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = self.cmd();
        for (k, v) in env {
            c.env(k, v);
        }
        bounded(c.args(args))
    }

    /// Dataset names in the pool (without `zones/`), snapshots included.
    pub fn datasets(&self) -> Vec<String> {
        self.hull(&["dataset", "list", "-H", "-t", "all", "-o", "name"])
            .ok()
            .lines()
            .map(|l| l.trim_start_matches("zones/").to_string())
            .collect()
    }

    /// Builds an image with `imgadm build` and returns (manifest, file, uuid).
    pub fn build(&self, args: &[&str], name: &str) -> (PathBuf, PathBuf, String) {
        let out = self.root().join("images");
        let out_s = out.to_string_lossy().into_owned();
        let mut all = vec!["imgadm", "build", "-n", name, "-o", &out_s, "-j"];
        all.extend_from_slice(args);
        let text = self.hull(&all).ok();
        let v: serde_json::Value = serde_json::from_str(&text).expect("build json");
        (
            PathBuf::from(v["manifest_path"].as_str().expect("manifest_path")),
            PathBuf::from(v["file_path"].as_str().expect("file_path")),
            v["manifest"]["uuid"].as_str().expect("uuid").to_string(),
        )
    }

    /// Builds and installs the busybox image; returns its uuid.
    pub fn busybox(&self) -> String {
        let (m, f, uuid) = self.build(&["--busybox"], "bb");
        self.hull(&["imgadm", "install", "-m", &m.to_string_lossy(), "-f", &f.to_string_lossy()]).ok();
        uuid
    }

    /// Nobody holds the image's lock.
    pub fn lock_is_free(&self, uuid: &str) -> bool {
        let p = self.root().join(format!("var/hull/locks/img.{uuid}.lock"));
        if !p.exists() {
            return true;
        }
        let f = std::fs::File::open(&p).expect("open lock");
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        // Zones first: a running zone holds the pool busy and outlives the test otherwise.
        if self.root().join("etc/hull/node.json").exists() && self.zones().exists() {
            let list = self.hull(&["vmadm", "list", "-H", "-o", "uuid"]);
            for uuid in list.stdout.lines() {
                let _ = self.hull(&["vmadm", "delete", uuid]);
            }
        }
        let _ = self.hull(&["net", "destroy"]);
        let r = self.hull(&["pool", "destroy"]);
        if r.code != 0 && !r.stderr.contains("no pool") {
            let _ = Command::new("umount").arg("-l").arg(self.zones()).status();
        }
        if self.netns.take().is_some() {
            let _ = hull_net::ns::remove(&self.netns_path());
        }
    }
}

/// Writes `n` bytes that do not compress.
pub fn random_file(path: &Path, n: usize) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("create");
    let mut x: u64 = 0x9E3779B97F4A7C15 ^ n as u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = n;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        let k = left.min(buf.len());
        f.write_all(&buf[..k]).expect("write");
        left -= k;
    }
}

pub fn sha1_hex(path: &Path) -> String {
    let out = Command::new("sha1sum").arg(path).output().expect("sha1sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

/// Rewrites a manifest's JSON with `f`.
pub fn edit_manifest(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
    f(&mut v);
    std::fs::write(path, serde_json::to_vec_pretty(&v).expect("json")).expect("write");
}
