//! vmadm get, list and the state every verb reads.

use crate::{Result, VmError, Vmadm};
use serde_json::{Map, Value, json};

/// What a VM is doing now.
#[derive(Debug, Clone, PartialEq)]
pub struct VmState {
    pub state: hull_spec::State,
    pub pid: Option<i32>,
    pub exit_status: Option<i32>,
}

impl Vmadm {
    /// The VM's state, from its supervisor's record and the kernel.
    pub fn state(&self, uuid: &str, cfg: &Map<String, Value>) -> VmState {
        let rec = hull_zone::supervisor::read_record(&self.run_dir(uuid));
        let mut init = rec
            .as_ref()
            .filter(|r| r.state == "running")
            .and_then(|r| r.init_pid)
            .filter(|p| hull_zone::supervisor::alive(*p));
        if init.is_none() && rec.as_ref().is_none_or(|r| r.state != "stopped") {
            // No record, or one that cannot be read (corrupt, truncated): the runtime's own
            // state says whether an init runs. Taking it as stopped started a second init.
            init = match self.rt.status(uuid) {
                Some((hull_zone::runtime::Status::Running, Some(p))) if hull_zone::supervisor::alive(p) => Some(p),
                _ => None,
            };
        }
        let state = if init.is_some() {
            hull_spec::State::Running
        } else if cfg.get("failed").and_then(Value::as_bool).unwrap_or(false) {
            hull_spec::State::Failed
        } else {
            hull_spec::State::Stopped
        };
        VmState { state, pid: init, exit_status: rec.and_then(|r| r.exit_status) }
    }

    /// The VM's state, or [`VmError::WrongState`] when `verb` cannot act on a VM in it
    /// (`what` names the verb in the message).
    pub(crate) fn require(&self, uuid: &str, verb: hull_spec::Verb, what: &'static str) -> Result<VmState> {
        let cfg = self.load(uuid)?;
        let st = self.state(uuid, &cfg);
        if st.state.allows(verb) {
            Ok(st)
        } else {
            Err(VmError::WrongState { vm: uuid.into(), state: st.state, verb: what })
        }
    }

    /// The last `max` bytes of what the VM's console printed (`console.log` in its run
    /// directory: a zone's console, a guest's serial port), empty when it never ran. A KVM
    /// VM's qemu zone can write that directory, so the file is opened without following
    /// links and read only when it is a regular file.
    pub fn console_tail(&self, uuid: &str, max: u64) -> Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        self.load(uuid)?;
        let dir = self.run_dir(uuid);
        let io = |op: &'static str| {
            let (vm, path) = (uuid.to_string(), dir.join("console.log"));
            move |source| VmError::Io { vm, op, path, source }
        };
        let Ok(tree) = hull_exec::tree::Tree::open(&dir) else { return Ok(Vec::new()) };
        let mut f = match tree.open_file(std::path::Path::new("console.log")) {
            Ok(f) => f,
            // None, or not a regular file (a link, a FIFO): nothing to show.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidInput) => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(io("open")(e)),
        };
        let meta = f.metadata().map_err(io("inspect"))?;
        f.seek(SeekFrom::Start(meta.len().saturating_sub(max))).map_err(io("seek"))?;
        let mut out = Vec::new();
        f.take(max).read_to_end(&mut out).map_err(io("read"))?;
        Ok(out)
    }

    /// The VM as `vmadm get` prints it: its properties and its state.
    pub fn get(&self, uuid: &str) -> Result<Map<String, Value>> {
        let all = self.pool()?.list()?;
        self.get_with(uuid, Some(&all))
    }

    /// `get` without `snapshots`: a VM just made has none, and listing them costs a walk of
    /// the whole pool (the API's create answers with this).
    pub fn get_unlisted(&self, uuid: &str) -> Result<Map<String, Value>> {
        let mut v = self.get_with(uuid, None)?;
        v.insert("snapshots".into(), json!([]));
        Ok(v)
    }

    /// `get`, given the pool's listing (one listing serves a whole `list`).
    fn get_with(&self, uuid: &str, all: Option<&[hull_storage::DatasetInfo]>) -> Result<Map<String, Value>> {
        self.get_picked(uuid, all, None)
    }

    /// [`Vmadm::get_with`], with only the stored properties `pick` names (and those its
    /// computed ones need) taken from the config: the rest is skipped by the parser, not
    /// built. Of the computed properties, state, type and ram are always there, the others
    /// only when named.
    fn get_picked(
        &self,
        uuid: &str,
        all: Option<&[hull_storage::DatasetInfo]>,
        pick: Option<&std::collections::BTreeSet<String>>,
    ) -> Result<Map<String, Value>> {
        let (mut cfg, modified) = match pick {
            None => self.load_stamped(uuid)?,
            Some(keys) => self.load_picked(uuid, keys)?,
        };
        let st = self.state(uuid, &cfg);
        cfg.insert("state".into(), json!(st.state));
        cfg.insert("zone_state".into(), json!(st.state.zone_state()));
        if let Some(p) = st.pid {
            cfg.insert("pid".into(), json!(p));
        }
        if let Some(s) = st.exit_status {
            cfg.insert("exit_status".into(), json!(s));
        }
        let brand = hull_spec::Brand::of(&cfg);
        let hvm = brand.is_hvm();
        // vmadm(8): OS for joyent*, LX, KVM, BHYVE.
        let ty = match brand {
            hull_spec::Brand::Lx => "LX",
            hull_spec::Brand::Kvm => "KVM",
            hull_spec::Brand::Bhyve => "BHYVE",
            hull_spec::Brand::Joyent | hull_spec::Brand::JoyentMinimal => "OS",
        };
        cfg.insert("type".into(), json!(ty));
        if let Some(all) = all {
            cfg.insert("snapshots".into(), crate::snapshot::snapshots_in(uuid, all, &self.snapshot_times(uuid)));
        }
        if !hvm {
            cfg.insert("ram".into(), cfg.get("max_physical_memory").cloned().unwrap_or(Value::Null));
        }
        // What SmartOS's get always shows (test-defaults.js): empty collections rather than
        // absent ones, the VM object's version, and times as ISO 8601. With a pick (a
        // table's), only what it names is made: at 10,000 VMs the dates and strings nobody
        // shows cost a listing a tenth of its time.
        let want = |k: &str| pick.is_none_or(|p| p.contains(k));
        for (k, empty) in [
            ("customer_metadata", json!({})),
            ("internal_metadata", json!({})),
            ("tags", json!({})),
            ("routes", json!({})),
            ("nics", json!([])),
            ("firewall_enabled", json!(false)),
            ("init_restarts", json!(0)),
        ] {
            if want(k) {
                cfg.entry(k.to_string()).or_insert(empty);
            }
        }
        if hvm && want("disks") {
            cfg.entry("disks".to_string()).or_insert(json!([]));
        }
        if want("v") {
            cfg.insert("v".into(), json!(1));
        }
        if want("hvm") {
            cfg.insert("hvm".into(), json!(hvm));
        }
        if want("last_modified")
            && let Some(t) = modified
        {
            cfg.insert("last_modified".into(), json!(crate::iso8601(t)));
        }
        if want("boot_timestamp")
            && st.state.is_running()
            && let Some(rec) = hull_zone::supervisor::read_record(&self.run_dir(uuid))
        {
            cfg.insert("boot_timestamp".into(), json!(crate::iso8601_secs(rec.started)));
        }
        if want("server_uuid") {
            cfg.insert("server_uuid".into(), json!(self.node_uuid()));
        }
        if want("platform_buildstamp") {
            cfg.insert("platform_buildstamp".into(), json!(concat!("hull-", env!("CARGO_PKG_VERSION"))));
        }
        Ok(cfg)
    }

    /// The node's uuid ([`node_uuid`]), as SmartOS's `server_uuid`.
    pub(crate) fn node_uuid(&self) -> String {
        node_uuid()
    }

    /// Every VM, as `get` shows it; `snapshots` only when asked for (it costs a listing of
    /// the pool, where the rest is one small file a VM).
    ///
    /// The VMs are read by as many threads as the machine has CPUs (each VM is a few small
    /// files: the time is in the kernel's lookups and the JSON, not in waiting).
    pub fn list(&self, snapshots: bool) -> Result<Vec<Map<String, Value>>> {
        self.list_picked(snapshots, None)
    }

    /// [`Vmadm::list`] with only the properties `pick` names (the top-level names a table's
    /// columns, sort keys and filters use) read from each config; of the computed ones,
    /// state, type and ram always, the others when named. A listing of many VMs spends its
    /// time building the
    /// properties nobody asked to see.
    pub fn list_picked(
        &self,
        snapshots: bool,
        pick: Option<&std::collections::BTreeSet<String>>,
    ) -> Result<Vec<Map<String, Value>>> {
        let all = if snapshots { Some(self.pool()?.list()?) } else { None };
        // Named like a VM; one whose config is gone (a delete in progress) is skipped below.
        let uuids = self.candidates()?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
        let per = uuids.len().div_ceil(threads).max(64);
        let read = |chunk: &[String]| -> Vec<Map<String, Value>> {
            let mut out = Vec::with_capacity(chunk.len());
            for uuid in chunk {
                match self.get_picked(uuid, all.as_deref(), pick) {
                    Ok(v) => out.push(v),
                    Err(VmError::NotFound(_)) => {}
                    Err(e) => tracing::warn!(vm = %uuid, "skipping: {e}"),
                }
            }
            out
        };
        if uuids.len() <= per {
            return Ok(read(&uuids));
        }
        Ok(std::thread::scope(|s| {
            let parts: Vec<_> = uuids.chunks(per).map(|c| s.spawn(move || read(c))).collect();
            // A reader that panicked lost its part; the others are still shown.
            parts.into_iter().flat_map(|p| p.join().unwrap_or_default()).collect()
        }))
    }

    /// Runs a command in a running zone with this process's stdio; returns its exit status.
    pub fn zlogin(&self, uuid: &str, args: Vec<String>) -> Result<i32> {
        self.require(uuid, hull_spec::Verb::Zlogin, "zlogin")?;
        let cfg = self.load(uuid)?;
        let hvm = hull_spec::Brand::of(&cfg).is_hvm();
        let args = if hvm { args } else { self.zone_command(uuid, &cfg, args)? };
        let pid = self.rt.exec(uuid, args)?;
        hull_zone::supervisor::wait_exit(pid).map_err(|source| crate::VmError::Wait {
            vm: uuid.into(),
            what: "the command",
            source,
        })
    }

    /// What zlogin runs in an OS zone: with no command, root's login shell from the zone's
    /// `/etc/passwd` (`/bin/sh` when it names none), as SmartOS's zlogin does; a command
    /// that is not in the zone (looked up in the zone's PATH, inside its root) is
    /// [`VmError::NoCommand`] rather than a runtime's error.
    fn zone_command(&self, uuid: &str, cfg: &Map<String, Value>, mut args: Vec<String>) -> Result<Vec<String>> {
        let root = self.zone_config(uuid, cfg)?.rootfs;
        let Ok(tree) = hull_exec::tree::Tree::open_scoped(&root) else { return Ok(args) };
        let meta = |p: &str| tree.metadata(std::path::Path::new(p)).ok();
        if args.is_empty() {
            let passwd = tree.read_to_string(std::path::Path::new("etc/passwd")).unwrap_or_default();
            let shell = passwd
                .lines()
                .find(|l| l.starts_with("root:"))
                .and_then(|l| l.split(':').nth(6))
                .map(str::trim)
                .filter(|s| s.starts_with('/') && meta(s).is_some_and(|m| m.is_file()))
                .unwrap_or("/bin/sh")
                .to_string();
            return Ok(vec![shell, "-l".into()]);
        }
        let cmd = args[0].clone();
        // hull's own bind (the mdata tools) is not in the zone's root on disk.
        let control = crate::metadata::control_dir(&self.run_dir(uuid));
        let in_control = |rest: &str| {
            hull_exec::tree::Tree::open(&control).and_then(|t| t.metadata(std::path::Path::new(rest))).is_ok()
        };
        // An executable, or the image's link to one of hull's tools (/usr/sbin/mdata-get).
        let executable = |p: &str| {
            meta(p).is_some_and(|m| crate::start::executable(&m))
                || tree
                    .readlink(std::path::Path::new(p))
                    .ok()
                    .is_some_and(|t| t.to_str().and_then(|t| t.strip_prefix("/.zonecontrol/")).is_some_and(in_control))
        };
        if let Some(rest) = cmd.strip_prefix("/.zonecontrol/") {
            if !in_control(rest) {
                return Err(VmError::NoCommand { vm: uuid.into(), cmd });
            }
        } else if cmd.contains('/') {
            if meta(&cmd).is_none() {
                return Err(VmError::NoCommand { vm: uuid.into(), cmd });
            }
        } else {
            // The zone's PATH (the runtime's env for every zlogin'd command).
            match ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
                .iter()
                .map(|d| format!("{d}/{cmd}"))
                .find(|p| executable(p))
            {
                Some(p) => args[0] = p,
                None => return Err(VmError::NoCommand { vm: uuid.into(), cmd }),
            }
        }
        Ok(args)
    }

    /// Where a running zone's console is served.
    pub fn console_socket(&self, uuid: &str) -> Result<std::path::PathBuf> {
        self.require(uuid, hull_spec::Verb::Console, "attach to the console of")?;
        let cfg = self.load(uuid)?;
        // A KVM guest's console is its serial port, which qemu serves itself.
        let hvm = hull_spec::Brand::of(&cfg).is_hvm();
        Ok(self.run_dir(uuid).join(if hvm { "serial.sock" } else { "console.sock" }))
    }
}

/// The node's uuid, as SmartOS's sysinfo `UUID` and every VM's `server_uuid` give it: the
/// machine's DMI product uuid where the firmware gives one, else its machine id made a uuid.
pub fn node_uuid() -> String {
    // Read once a process: `vmadm list` asks for each VM.
    static ONCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ONCE.get_or_init(read_node_uuid).clone()
}

fn read_node_uuid() -> String {
    let dmi = std::fs::read_to_string("/sys/class/dmi/id/product_uuid").ok().map(|s| s.trim().to_ascii_lowercase());
    if let Some(u) = dmi.filter(|u| uuid::Uuid::parse_str(u).is_ok()) {
        return u;
    }
    std::fs::read_to_string("/etc/machine-id")
        .ok()
        .and_then(|m| uuid::Uuid::parse_str(m.trim()).ok())
        .map(|u| u.to_string())
        .unwrap_or_else(|| uuid::Uuid::nil().to_string())
}
