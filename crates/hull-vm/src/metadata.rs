//! The metadata service of one running VM (SmartOS's mdata protocol, hull-mdata), run by
//! its zoneadmd: no process of its own.
//!
//! - An OS zone sees it at `/.zonecontrol/metadata.sock`, with the tools beside it in
//!   `/.zonecontrol/bin`: a read-only bind of the host's `var/hull/z/UUID/zonecontrol`,
//!   which only host root can write (the zone may unmount its view of it; that changes
//!   nothing on the host).
//! - A KVM or bhyve guest sees it on its second serial port (ttyS1, COM2), as on SmartOS:
//!   qemu listens on `mdata.sock` in the VM's run directory and zoneadmd connects to it
//!   (through the tree resolver: the qemu zone can write that directory), again whenever
//!   qemu drops the link.
//!
//! GET and KEYS read the VM's stored config at each request, so `vmadm update
//! set_customer_metadata` is seen by the next GET. PUT and DELETE go through `vmadm update`
//! (`set_customer_metadata`, or `set_internal_metadata` for `_pw` keys and operator-script),
//! so they are validated, stored atomically, and shown by `vmadm get` and the event log.

use crate::{Result, VmError, Vmadm};
use hull_mdata::{Session, Store};
use serde_json::{Map, Value, json};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Connections one zone may hold at once; more are closed at once. A tenant cannot make its
/// zoneadmd start threads without end.
pub const MAX_CONNECTIONS: usize = 16;

/// The zone's control directory on the host.
pub fn control_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("zonecontrol")
}

fn io(uuid: &str, op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> VmError {
    let (vm, path) = (uuid.to_string(), path.to_path_buf());
    move |source| VmError::Io { vm, op, path, source }
}

impl Vmadm {
    /// Makes the zone's control directory: the tools as hard links to one copy of them in
    /// `var/hull/mdata` (written when missing or different), `lib/libhull-brandz.so` and
    /// `cloud-init.env` (what makes cloud-init take the zone for an LX zone: see
    /// docs/metadata.md), the socket made later by zoneadmd. Returns the directory.
    pub(crate) fn zone_control(&self, uuid: &str) -> Result<PathBuf> {
        let shared = self.node.var_dir().join("mdata");
        std::fs::create_dir_all(&shared).map_err(io(uuid, "create directory", &shared))?;
        // The node's copies of the tools, rewritten when the stamp beside them does not name
        // this build's (not read and compared at each boot: the tools are a megabyte).
        let stamp = shared.join(".build");
        let current = std::fs::read_to_string(&stamp).is_ok_and(|s| s == hull_mdata::BUILD_SUMS);
        let shared_copy = |name: &str, bytes: &[u8]| -> Result<PathBuf> {
            let p = shared.join(name);
            if !current || !p.is_file() {
                hull_exec::write_atomic(&p, bytes).map_err(io(uuid, "write", &p))?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).map_err(io(uuid, "chmod", &p))?;
            }
            Ok(p)
        };
        let tool = shared_copy("mdata", hull_mdata::TOOLS)?;
        let brandz = shared_copy("libhull-brandz.so", hull_mdata::BRANDZ)?;
        if !current {
            hull_exec::write_atomic(&stamp, hull_mdata::BUILD_SUMS.as_bytes()).map_err(io(uuid, "write", &stamp))?;
        }
        let dir = control_dir(&self.run_dir(uuid));
        let (bin, lib) = (dir.join("bin"), dir.join("lib"));
        for d in [&dir, &bin, &lib] {
            std::fs::create_dir_all(d).map_err(io(uuid, "create directory", d))?;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).map_err(io(uuid, "chmod", d))?;
        }
        let link = |from: &Path, to: PathBuf| -> Result<()> {
            let _ = std::fs::remove_file(&to);
            if std::fs::hard_link(from, &to).is_err() {
                std::fs::copy(from, &to).map_err(io(uuid, "copy", &to))?;
            }
            Ok(())
        };
        for name in hull_mdata::TOOL_NAMES {
            link(&tool, bin.join(name))?;
        }
        link(&brandz, lib.join("libhull-brandz.so"))?;
        let env = dir.join("cloud-init.env");
        let text = "LD_PRELOAD=/.zonecontrol/lib/libhull-brandz.so\n";
        if std::fs::read(&env).ok().as_deref() != Some(text.as_bytes()) {
            hull_exec::write_atomic_mode(&env, text.as_bytes(), 0o644).map_err(io(uuid, "write", &env))?;
        }
        Ok(dir)
    }
}

/// One connection's view of the VM's metadata.
struct ZoneStore {
    node: hull_storage::Node,
    exe: PathBuf,
    uuid: String,
    config: PathBuf,
    server_uuid: String,
    /// Opened at the first PUT or DELETE.
    vm: Option<Vmadm>,
    /// The VM's changes, shared by its connections.
    pace: Arc<std::sync::Mutex<Pace>>,
}

/// A token bucket: [`Pace::RATE`] changes a second, bursts of [`Pace::BURST`]. A tenant
/// that writes faster is slowed down, not refused.
#[derive(Debug)]
pub struct Pace {
    tokens: f64,
    at: std::time::Instant,
}

impl Pace {
    pub const RATE: f64 = 20.0;
    pub const BURST: f64 = 40.0;

    pub fn new(now: std::time::Instant) -> Pace {
        Pace { tokens: Self::BURST, at: now }
    }

    /// Takes one change; how long to wait before making it.
    pub fn take(&mut self, now: std::time::Instant) -> std::time::Duration {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * Self::RATE).min(Self::BURST) - 1.0;
        self.at = now;
        if self.tokens >= 0.0 {
            std::time::Duration::ZERO
        } else {
            std::time::Duration::from_secs_f64(-self.tokens / Self::RATE)
        }
    }
}

impl ZoneStore {
    /// The VM as the metadata agent sees it: its stored config, running, on this server.
    fn vm(&self) -> std::result::Result<Map<String, Value>, String> {
        let text = std::fs::read(&self.config).map_err(|e| format!("the VM's config: {e}"))?;
        let mut cfg: Map<String, Value> = serde_json::from_slice(&text).map_err(|e| format!("the VM's config: {e}"))?;
        cfg.insert("state".into(), json!("running"));
        cfg.entry("server_uuid").or_insert(json!(self.server_uuid));
        // What `vmadm get` always shows, as the agent's VM object has it.
        for (k, empty) in [("nics", json!([])), ("routes", json!({})), ("tags", json!({})), ("resolvers", json!([]))] {
            cfg.entry(k).or_insert(empty);
        }
        Ok(cfg)
    }

    /// A change through vmadm update, waiting out another command that holds the VM.
    fn change(&mut self, payload: Value) -> std::result::Result<(), String> {
        // Each change writes the VM's config and the event log: paced per VM.
        let wait = self.pace.lock().map(|mut b| b.take(std::time::Instant::now())).unwrap_or_default();
        std::thread::sleep(wait);
        if self.vm.is_none() {
            self.vm = Some(Vmadm::open(&self.node, self.exe.clone()).map_err(|e| e.to_string())?);
        }
        let Some(vm) = &self.vm else { return Err("no vmadm".into()) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match vm.update(&self.uuid, &payload) {
                Ok(_) => return Ok(()),
                Err(VmError::Busy(_)) if std::time::Instant::now() < deadline => {
                    // Another PUT or a vmadm command holds the VM for a few milliseconds.
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

impl Store for ZoneStore {
    fn get(&mut self, key: &str) -> std::result::Result<Option<String>, String> {
        let r = self.vm().and_then(|vm| hull_mdata::keys::get(&vm, key));
        let answer = match &r {
            Ok(Some(_)) => "SUCCESS",
            Ok(None) => "NOTFOUND",
            Err(_) => "FAILURE",
        };
        hull_exec::probes::mdata_request(&self.uuid, "GET", key, answer);
        r
    }

    fn keys(&mut self) -> std::result::Result<Vec<String>, String> {
        let r = self.vm().map(|vm| hull_mdata::keys::keys(&vm));
        hull_exec::probes::mdata_request(&self.uuid, "KEYS", "", if r.is_ok() { "SUCCESS" } else { "FAILURE" });
        r
    }

    fn put(&mut self, key: &str, value: &str) -> std::result::Result<(), String> {
        let r = self
            .vm()
            .and_then(|vm| hull_mdata::keys::check_put(&vm, key, value))
            .and_then(|which| self.change(json!({ format!("set_{which}"): { key: value } })));
        hull_exec::probes::mdata_request(&self.uuid, "PUT", key, if r.is_ok() { "SUCCESS" } else { "FAILURE" });
        r
    }

    fn delete(&mut self, key: &str) -> std::result::Result<(), String> {
        let r = self
            .vm()
            .and_then(|vm| hull_mdata::keys::writable(&vm, key))
            .and_then(|which| self.change(json!({ format!("remove_{which}"): [key] })));
        hull_exec::probes::mdata_request(&self.uuid, "DELETE", key, if r.is_ok() { "SUCCESS" } else { "FAILURE" });
        r
    }
}

/// Answers what comes in on `conn` until the other end goes away.
fn converse(conn: &mut std::os::unix::net::UnixStream, store: &mut ZoneStore) {
    let mut session = Session::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let out = session.feed(&buf[..n], store);
        if !out.is_empty() && conn.write_all(&out).is_err() {
            return;
        }
    }
}

/// Serves the VM's metadata until the process ends (zoneadmd runs it on a thread): on the
/// OS zone's socket, or on the guest's serial port.
pub fn serve(node: &hull_storage::Node, exe: PathBuf, uuid: &str) -> Result<()> {
    let vm = Vmadm::open(node, exe.clone())?;
    let run = vm.run_dir(uuid);
    let dir = control_dir(&run);
    let sock = dir.join("metadata.sock");
    let config = vm.config_path(uuid)?;
    let server_uuid = vm.node_uuid();
    let hvm = vm.load_vm(uuid)?.brand.is_hvm();
    drop(vm);
    let pace = Arc::new(std::sync::Mutex::new(Pace::new(std::time::Instant::now())));
    let store = |_: ()| ZoneStore {
        node: node.clone(),
        exe: exe.clone(),
        uuid: uuid.to_string(),
        config: config.clone(),
        server_uuid: server_uuid.clone(),
        vm: None,
        pace: Arc::clone(&pace),
    };
    if hvm {
        serve_serial(&run.join("mdata.sock"), store(()));
        return Ok(());
    }
    if !dir.exists() {
        return Ok(());
    }
    let _ = std::fs::remove_file(&sock);
    let listener = std::os::unix::net::UnixListener::bind(&sock).map_err(io(uuid, "bind", &sock))?;
    // The zone's root is not the host's: anyone may connect; what a connection can reach is
    // this VM's metadata and nothing else.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).map_err(io(uuid, "chmod", &sock))?;
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            tracing::warn!(vm = uuid, "metadata: {MAX_CONNECTIONS} connections already; one refused");
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let mut store = store(());
        let active = Arc::clone(&active);
        std::thread::spawn(move || {
            converse(&mut conn, &mut store);
            active.fetch_sub(1, Ordering::SeqCst);
        });
    }
    Ok(())
}

/// The guest's serial port: one long conversation with whatever the guest sends, over the
/// socket qemu serves. A guest that powers off or reboots drops it; zoneadmd connects again
/// while the socket is there, and stops trying when zoneadmd itself ends.
fn serve_serial(sock: &Path, mut store: ZoneStore) {
    loop {
        if let Ok(mut conn) = hull_exec::tree::connect_socket(sock) {
            converse(&mut conn, &mut store);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::Pace;
    use std::time::{Duration, Instant};

    #[test]
    fn a_burst_is_free_then_changes_are_paced() {
        let t0 = Instant::now();
        let mut p = Pace::new(t0);
        for _ in 0..Pace::BURST as usize {
            assert_eq!(p.take(t0), Duration::ZERO);
        }
        // The next waits its share; after a second at rest, RATE more are free.
        let w = p.take(t0);
        assert!(w > Duration::from_millis(40) && w < Duration::from_millis(60), "{w:?}");
        let later = t0 + Duration::from_secs(3);
        for _ in 0..Pace::RATE as usize {
            assert_eq!(p.take(later), Duration::ZERO);
        }
    }
}
