//! A node per test: its own root in a temporary directory, its own pool, removed on drop even
//! when the test fails. Tests run as root.
#![allow(dead_code)]

use hull::api::jobs::{Execution, Job};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const HULL: &str = env!("CARGO_BIN_EXE_hull");
/// Debian packages kept between the tests' debootstrap builds (`imgadm build --cache-dir`;
/// `.ci/deps` fills it, so a slow mirror does not eat a test's time).
#[allow(dead_code)]
pub const DEB_CACHE: &str = "/var/cache/hull/debs";

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

    /// Installs a zvol image whose disk's first sector prints `HULL-BOOT-OK` and halts, `mib`
    /// large; returns its uuid.
    pub fn boot_sector_image(&self, mib: u64) -> String {
        let disk = self.root().join("bootsector.raw");
        let mut b = hull_qemu::probe::boot_sector();
        b.resize(512, 0);
        std::fs::write(&disk, &b).expect("write");
        std::fs::OpenOptions::new().write(true).open(&disk).expect("open").set_len(mib << 20).expect("size");
        let (m, f, uuid) = self.build(&["--disk", &disk.to_string_lossy()], "bootsector");
        self.hull(&["imgadm", "install", "-m", &m.to_string_lossy(), "-f", &f.to_string_lossy()]).ok();
        uuid
    }

    /// `vmadm create` of a payload; returns the VM's uuid.
    pub fn create_vm(&self, payload: &serde_json::Value) -> String {
        let f = tempfile::NamedTempFile::new_in(self.root()).expect("payload file");
        std::fs::write(f.path(), payload.to_string()).expect("write payload");
        let out = self.hull(&["vmadm", "create", "-j", "-f", &f.path().to_string_lossy()]).ok();
        let v: serde_json::Value = serde_json::from_str(&out).expect("vm json");
        v["uuid"].as_str().expect("uuid").to_string()
    }

    /// `vmadm get` of a VM.
    pub fn vm(&self, uuid: &str) -> serde_json::Value {
        serde_json::from_str(&self.hull(&["vmadm", "get", uuid]).ok()).expect("vmadm get json")
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

/// A running `hull api serve` of a test node, killed and reaped on drop.
pub struct Server {
    pub child: Child,
    pub sock: PathBuf,
}

impl Server {
    pub fn start(n: &TestNode, args: &[&str], env: &[(&str, &str)]) -> Server {
        let sock = n.root().join("var/run/hull/api.sock");
        let mut c = n.cmd();
        c.args(["api", "serve"]).args(args).stdout(Stdio::null()).stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("start hull api serve");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            if let Ok(Some(st)) = child.try_wait() {
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(child.stderr.as_mut().expect("stderr"), &mut err);
                panic!("hull api serve exited ({st}) before listening: {err}");
            }
            assert!(Instant::now() < deadline, "hull api serve did not listen on {}", sock.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, sock }
    }

    /// One request with curl; (status, body as JSON or as a string).
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        self.call_as(&[], method, path, body)
    }

    pub fn call_as(&self, prefix: &[&str], method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let mut c = Command::new(prefix.first().copied().unwrap_or("curl"));
        if !prefix.is_empty() {
            c.args(&prefix[1..]).arg("curl");
        }
        c.args(["-sS", "--max-time", "300", "--unix-socket"]).arg(&self.sock).args(["-X", method]);
        // The body from a file: a large one would not fit on a command line.
        let file = tempfile::NamedTempFile::new().expect("body file");
        if let Some(b) = body {
            std::fs::write(file.path(), b).expect("write body");
            std::fs::set_permissions(file.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .expect("chmod body");
            c.args(["-H", "content-type: application/json", "--data-binary"])
                .arg(format!("@{}", file.path().display()));
        }
        c.args(["-w", "\n%{http_code}"]).arg(format!("http://hull{path}"));
        let out = c.output().expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let code: u16 = code.trim().parse().unwrap_or_else(|_| panic!("curl said {text:?} {:?}", out.stderr));
        (code, serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string())))
    }

    /// GETs `path` into the file `out` (curl fails on an HTTP error).
    pub fn download(&self, path: &str, out: &Path) {
        let st = Command::new("curl")
            .args(["-sSf", "--unix-socket"])
            .arg(&self.sock)
            .arg("-o")
            .arg(out)
            .arg(format!("http://hull{path}"))
            .status()
            .expect("curl");
        assert!(st.success(), "GET {path} failed");
    }

    /// Waits for a job to finish and returns it.
    pub fn wait(&self, job: &str) -> Job {
        let (code, j) = self.call("GET", &format!("/jobs/{job}/wait?timeout=240"), None);
        assert_eq!(code, 200, "{j}");
        let j: Job = serde_json::from_value(j.clone()).unwrap_or_else(|e| panic!("not a Job: {e}: {j}"));
        assert!(j.execution.done(), "job not done: {j:?}");
        j
    }

    /// Asks for a change; checks the 202 and waits for its job, which must succeed.
    pub fn change(&self, method: &str, path: &str, body: Option<&str>) -> Job {
        let (code, v) = self.call(method, path, body);
        assert_eq!(code, 202, "{method} {path}: {v}");
        let job = self.wait(v["job_uuid"].as_str().expect("job_uuid"));
        assert_eq!(job.execution, Execution::Succeeded, "{method} {path}: {job:?}");
        job
    }

    /// The events a stream gives within `secs` (curl stops it).
    pub fn events(&self, query: &str, secs: &str) -> Vec<Value> {
        let out = Command::new("curl")
            .args(["-sSN", "--max-time", secs, "--unix-socket"])
            .arg(&self.sock)
            .arg(format!("http://hull/events{query}"))
            .output()
            .expect("curl events");
        lines(&String::from_utf8_lossy(&out.stdout))
    }
}

pub fn lines(text: &str) -> Vec<Value> {
    text.lines().filter(|l| !l.is_empty()).map(|l| serde_json::from_str(l).expect("an event is JSON")).collect()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A hash of a file tree: names, types, modes, owners, sizes, files' mtimes, link targets
/// and contents (directories' times are left out: unpacking sets them as it goes).
pub fn tree_hash(root: &Path) -> String {
    let script = r#"cd "$1" && {
        find . -mindepth 1 \( -type d -printf '%P d %m %U %G\n' \) -o \( ! -type d -printf '%P %y %m %U %G %s %T@ %l\n' \) | LC_ALL=C sort
        find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha1sum
    } | sha1sum"#;
    let out = Command::new("sh").args(["-c", script, "sh"]).arg(root).output().expect("hash a tree");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

/// A TCP port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// Nodes on this machine that are each a machine of their own: a root, a prefix, a pool and
/// a network namespace, joined by an underlay (a bridge in a namespace of its own, a veth
/// into each node, 10.99.0.N/24), each serving its API over TLS there and trusting the
/// others as peers. Torn down on drop.
pub struct Fleet {
    pub nodes: Vec<TestNode>,
    pub apis: Vec<Server>,
    pub urls: Vec<String>,
    underlay: String,
}

/// The API port every node of a fleet listens on (each in its own namespace).
pub const FLEET_PORT: u16 = 8443;

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("run");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Fleet {
    pub fn up(n: usize) -> Fleet {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..6];
        let underlay = format!("hu{id}");
        sh(&["ip", "netns", "add", &underlay]);
        let mut f = Fleet { nodes: Vec::new(), apis: Vec::new(), urls: Vec::new(), underlay: underlay.clone() };
        sh(&["ip", "-n", &underlay, "link", "add", "br0", "type", "bridge"]);
        sh(&["ip", "-n", &underlay, "link", "set", "br0", "up"]);
        for i in 0..n {
            let node = TestNode::in_netns("768M");
            let ns = format!("--net={}", node.netns_path().display());
            let port = format!("u{id}{i}");
            sh(&[
                "nsenter", &ns, "ip", "link", "add", "uplink0", "type", "veth", "peer", "name", &port, "netns",
                &underlay,
            ]);
            let addr = format!("10.99.0.{}", i + 1);
            sh(&["nsenter", &ns, "ip", "addr", "add", &format!("{addr}/24"), "dev", "uplink0"]);
            sh(&["nsenter", &ns, "ip", "link", "set", "uplink0", "up"]);
            sh(&["nsenter", &ns, "ip", "link", "set", "lo", "up"]);
            sh(&["ip", "-n", &underlay, "link", "set", &port, "master", "br0", "up"]);
            let api = Server::start(&node, &["--tls", &format!("{addr}:{FLEET_PORT}")], &[]);
            f.urls.push(format!("https://{addr}:{FLEET_PORT}"));
            f.apis.push(api);
            f.nodes.push(node);
        }
        // Every node a peer (and an image source) of every other.
        for (i, from) in f.nodes.iter().enumerate() {
            for (j, to) in f.nodes.iter().enumerate() {
                if i == j {
                    continue;
                }
                let dir = from.root().join(format!("peer-{j}"));
                let d = dir.to_string_lossy().into_owned();
                to.hull(&["api", "trust", "add", &format!("node{i}"), "--out", &d]).ok();
                let (crt, key, ca) = (format!("{d}/node{i}.crt"), format!("{d}/node{i}.key"), format!("{d}/ca.crt"));
                from.hull(&["peer", "add", &f.urls[j], "--cert", &crt, "--key", &key, "--ca", &ca]).ok();
                from.hull(&["imgadm", "sources", "-a", &f.urls[j], "--cert", &crt, "--key", &key, "--ca", &ca]).ok();
            }
        }
        f
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // The servers first (they hold the nodes' pools), then the nodes, then the underlay.
        self.apis.clear();
        self.nodes.clear();
        let _ = Command::new("ip").args(["netns", "delete", &self.underlay]).status();
    }
}

/// The node's lxcfs (`hull node lxcfs`, the service's method), stopped and unmounted on drop.
#[allow(dead_code)]
pub struct Lxcfs {
    child: Child,
    at: std::path::PathBuf,
}

impl Lxcfs {
    #[allow(dead_code)]
    pub fn start(n: &TestNode) -> Lxcfs {
        let child = n
            .cmd()
            .args(["node", "lxcfs"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("lxcfs");
        let at = n.root().join("var/hull/lxcfs");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !at.join("proc/meminfo").exists() {
            assert!(std::time::Instant::now() < deadline, "lxcfs did not mount at {}", at.display());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Lxcfs { child, at }
    }
}

impl Drop for Lxcfs {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        let _ = nix::mount::umount2(&self.at, nix::mount::MntFlags::MNT_DETACH);
    }
}
