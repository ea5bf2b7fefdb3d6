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
use std::os::fd::AsFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
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
    /// `var/hull/mdata` (written when missing or different), the socket made later by
    /// zoneadmd. Returns the directory.
    pub(crate) fn zone_control(&self, uuid: &str) -> Result<PathBuf> {
        let shared = self.node.var_dir().join("mdata");
        let tool = shared.join("mdata");
        std::fs::create_dir_all(&shared).map_err(io(uuid, "create directory", &shared))?;
        if std::fs::read(&tool).ok().as_deref() != Some(hull_mdata::TOOLS) {
            hull_exec::write_atomic(&tool, hull_mdata::TOOLS).map_err(io(uuid, "write", &tool))?;
        }
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).map_err(io(uuid, "chmod", &tool))?;
        let dir = control_dir(&self.run_dir(uuid));
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).map_err(io(uuid, "create directory", &bin))?;
        for d in [&dir, &bin] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).map_err(io(uuid, "chmod", d))?;
        }
        for name in hull_mdata::TOOL_NAMES {
            let link = bin.join(name);
            let _ = std::fs::remove_file(&link);
            if std::fs::hard_link(&tool, &link).is_err() {
                std::fs::copy(&tool, &link).map_err(io(uuid, "copy", &link))?;
            }
        }
        Ok(dir)
    }
}

/// Where the host's SMBIOS identity is in sysfs; a zone sees its own there.
pub const DMI_DIR: &str = "/sys/devices/virtual/dmi/id";

impl Vmadm {
    /// The SMBIOS identity an OS zone sees in place of the host's (`/sys/class/dmi/id`):
    /// SmartOS's for its KVM guests (`Joyent`, `SmartDC HVM`, the VM's uuid as serial and
    /// uuid), written to `var/hull/z/UUID/dmi` and bound read-only over the zone's view.
    /// cloud-init's SmartOS datasource selects itself by that product name (then talks to
    /// `/dev/ttyS1`); the zone no longer reads the host's make and model either. None on a
    /// host without DMI in sysfs (there is nothing to bind over).
    pub(crate) fn zone_identity(&self, uuid: &str) -> Result<Option<PathBuf>> {
        if !Path::new(DMI_DIR).is_dir() {
            return Ok(None);
        }
        let dir = self.run_dir(uuid).join("dmi");
        std::fs::create_dir_all(&dir).map_err(io(uuid, "create directory", &dir))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).map_err(io(uuid, "chmod", &dir))?;
        for (name, value) in [
            ("sys_vendor", "Joyent"),
            ("product_name", "SmartDC HVM"),
            ("product_version", env!("CARGO_PKG_VERSION")),
            ("product_family", "Virtual Machine"),
            ("product_serial", uuid),
            ("product_uuid", uuid),
            ("chassis_vendor", "Joyent"),
            ("bios_vendor", "Joyent"),
        ] {
            let p = dir.join(name);
            hull_exec::write_atomic_mode(&p, format!("{value}\n").as_bytes(), 0o444).map_err(io(uuid, "write", &p))?;
        }
        Ok(Some(dir))
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
        hull_mdata::keys::get(&self.vm()?, key)
    }

    fn keys(&mut self) -> std::result::Result<Vec<String>, String> {
        Ok(hull_mdata::keys::keys(&self.vm()?))
    }

    fn put(&mut self, key: &str, value: &str) -> std::result::Result<(), String> {
        let which = hull_mdata::keys::check_put(&self.vm()?, key, value)?;
        self.change(json!({ format!("set_{which}"): { key: value } }))
    }

    fn delete(&mut self, key: &str) -> std::result::Result<(), String> {
        let which = hull_mdata::keys::writable(&self.vm()?, key)?;
        self.change(json!({ format!("remove_{which}"): [key] }))
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

/// An OS zone's second serial port: a pseudo-terminal whose far end is the zone's
/// `/dev/ttyS1` (a bind of its host-side slave, owned by the zone's root), served by
/// zoneadmd as a KVM guest's ttyS1 is. With the SMBIOS identity [`Vmadm::start`] gives a
/// zone, this is what makes an unmodified cloud-init take the zone for a SmartOS instance:
/// its SmartOS datasource reads `/sys/class/dmi/id/product_name` (`SmartDC HVM`) and then
/// talks to `/dev/ttyS1`, and Linux cannot show it the `uname -v` of an LX zone.
pub struct ZoneSerial {
    master: std::os::fd::OwnedFd,
    /// Held open so that the master never reads end-of-file between the zone's clients.
    slave: std::os::fd::OwnedFd,
    /// The slave on the host (`/dev/pts/N`): the source of the zone's bind.
    pub path: PathBuf,
}

impl ZoneSerial {
    /// Makes the port for the OS zone `uuid` (none for a KVM or bhyve VM), its slave owned
    /// by `owner` (the zone's root on the host) and nobody else.
    pub fn open(node: &hull_storage::Node, exe: PathBuf, uuid: &str, owner: u32) -> Result<Option<ZoneSerial>> {
        use nix::fcntl::OFlag;
        use nix::sys::termios;
        let vm = Vmadm::open(node, exe)?;
        if vm.load_vm(uuid)?.brand.is_hvm() {
            return Ok(None);
        }
        let fail = |op: &'static str| {
            let vm = uuid.to_string();
            move |e: nix::Error| VmError::Io {
                vm,
                op,
                path: PathBuf::from("/dev/ptmx"),
                source: std::io::Error::from(e),
            }
        };
        let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
            .map_err(fail("open a pseudo-terminal"))?;
        nix::pty::grantpt(&master).map_err(fail("grantpt"))?;
        nix::pty::unlockpt(&master).map_err(fail("unlockpt"))?;
        let path = PathBuf::from(nix::pty::ptsname_r(&master).map_err(fail("ptsname"))?);
        let slave: std::os::fd::OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(&path)
            .map_err(io(uuid, "open", &path))?
            .into();
        nix::unistd::fchown(&slave, Some(owner.into()), Some(owner.into())).map_err(fail("chown the slave"))?;
        nix::sys::stat::fchmod(&slave, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(fail("chmod the slave"))?;
        let mut t = termios::tcgetattr(&slave).map_err(fail("tcgetattr"))?;
        termios::cfmakeraw(&mut t);
        termios::tcsetattr(&slave, termios::SetArg::TCSANOW, &t).map_err(fail("tcsetattr"))?;
        // Never blocks on a zone that does not read its answers (see serve_pty).
        nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .map_err(fail("make the master non-blocking"))?;
        Ok(Some(ZoneSerial { master: master.into(), slave, path }))
    }
}

/// Serves the VM's metadata until the process ends (zoneadmd runs it on a thread): on the
/// OS zone's socket (and on its serial port, when zoneadmd made one), or on the guest's
/// serial port.
pub fn serve(node: &hull_storage::Node, exe: PathBuf, uuid: &str, serial: Option<ZoneSerial>) -> Result<()> {
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
    if let Some(serial) = serial {
        let store = store(());
        std::thread::spawn(move || serve_pty(serial, store));
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

/// The zone's serial port: one long conversation, as with a guest's. The zone owns the
/// terminal's settings: the mode is put back to raw after each read, so a zone that turns on
/// echo does not set zoneadmd answering its own answers. An answer the zone does not read
/// within a few seconds is dropped with what is queued for the zone, so that a zone cannot
/// hold this thread.
fn serve_pty(serial: ZoneSerial, mut store: ZoneStore) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::termios;
    let mut raw = termios::tcgetattr(&serial.slave).ok();
    if let Some(t) = raw.as_mut() {
        termios::cfmakeraw(t);
    }
    let mut session = Session::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut fds = [PollFd::new(serial.master.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            std::thread::sleep(std::time::Duration::from_millis(100));
            continue;
        }
        let n = match nix::unistd::read(&serial.master, &mut buf) {
            Ok(0) => {
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
            Ok(n) => n,
            Err(nix::Error::EAGAIN | nix::Error::EINTR) => continue,
            Err(e) => {
                tracing::warn!(vm = store.uuid, "metadata serial port: {e}");
                return;
            }
        };
        if let Some(t) = &raw {
            let _ = termios::tcsetattr(&serial.master, termios::SetArg::TCSANOW, t);
        }
        let out = session.feed(&buf[..n], &mut store);
        let mut rest = &out[..];
        while !rest.is_empty() {
            let mut fds = [PollFd::new(serial.master.as_fd(), PollFlags::POLLOUT)];
            if !matches!(poll(&mut fds, PollTimeout::from(5000u16)), Ok(1..)) {
                // Nobody reads: drop this answer and what is queued before it.
                let _ = termios::tcflush(&serial.slave, termios::FlushArg::TCIFLUSH);
                break;
            }
            match nix::unistd::write(&serial.master, rest) {
                Ok(k) => rest = &rest[k..],
                Err(nix::Error::EAGAIN | nix::Error::EINTR) => {}
                Err(_) => break,
            }
        }
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
