//! vmadm start, and the zoneadmd it leaves behind.

use crate::{Result, VmError, Vmadm, ds};
use hull_zone::{Limits, ZoneConfig};
use serde_json::{Map, Value};

fn num(cfg: &Map<String, Value>, k: &str) -> Option<u64> {
    cfg.get(k).and_then(Value::as_u64)
}

/// The caps a VM's properties ask for.
pub(crate) fn limits(cfg: &Map<String, Value>) -> Limits {
    Limits {
        memory_mib: num(cfg, "max_physical_memory").filter(|v| *v > 0),
        swap_mib: num(cfg, "max_swap").filter(|v| *v > 0),
        locked_mib: num(cfg, "max_locked_memory").filter(|v| *v > 0),
        cpu_cap: num(cfg, "cpu_cap").filter(|v| *v > 0),
        cpu_shares: num(cfg, "cpu_shares").filter(|v| *v > 0),
        max_lwps: num(cfg, "max_lwps").filter(|v| *v > 0),
        io_priority: num(cfg, "zfs_io_priority").filter(|v| *v > 0),
    }
}

/// A regular file someone may run.
pub(crate) fn executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.is_file() && meta.permissions().mode() & 0o111 != 0
}

/// The name a zone gave itself in its `/etc/hostname` (its first line, of at most 253
/// bytes), when it is a valid hostname; the file is the tenant's, read through its tree
/// without following links and never more than a page of it.
fn zone_hostname(tree: &hull_exec::tree::Tree) -> Option<String> {
    use std::io::Read;
    let f = tree.open_file(std::path::Path::new("etc/hostname")).ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut buf = Vec::new();
    f.take(4096).read_to_end(&mut buf).ok()?;
    let text = String::from_utf8(buf).ok()?;
    let name = text.lines().next()?.trim();
    (name.len() <= 253 && hull_spec::vm::valid_hostname(name)).then(|| name.to_string())
}

impl Vmadm {
    pub(crate) fn zone_config(&self, uuid: &str, cfg: &Map<String, Value>) -> Result<ZoneConfig> {
        let root = self.pool()?.dataset_path(&ds(uuid)?).join("root");
        let vm = crate::typed(uuid, cfg)?;
        // An alias is free text; it names the host only when it is a valid hostname.
        let hostname = vm.hostname().unwrap_or(uuid).to_string();
        let init = vm.init_name.unwrap_or_else(|| "/sbin/init".into());
        // The zone's /proc answers with its own caps while the node's lxcfs runs, and then
        // so does sysinfo(2): busybox's free reads both, and must not mix the two.
        let binds = hull_zone::lxcfs::binds(&hull_zone::lxcfs::mountpoint(&self.node.var_dir()));
        let sysinfo = !binds.is_empty();
        Ok(ZoneConfig {
            id: uuid.to_string(),
            rootfs: root,
            hostname,
            init: vec![init],
            cgroup: self.cgroup(uuid),
            limits: limits(cfg),
            tmpfs_mib: num(cfg, "tmpfs"),
            terminal: true,
            netns: None,
            binds,
            devices: Vec::new(),
            relays: Vec::new(),
            idmap: None,
            sysinfo,
        })
    }

    /// Writes what the zone reads at boot: its hostname and resolvers. The zone owns its
    /// root, so every name in it is resolved without following links (`hull_exec::tree`):
    /// a planted link is replaced, never written through.
    ///
    /// The hostname: hull writes `/etc/hostname` at the first boot and whenever the VM's
    /// hostname changes (`vmadm update`); between those, the zone's own `/etc/hostname`
    /// names it at boot, as a machine's does. A zone cannot set its name while it runs (it
    /// has no CAP_SYS_ADMIN), so a name it writes there (cloud-init's set_hostname, an
    /// operator in the zone) is its name from its next boot. What the zone wrote is read
    /// bounded and taken only when it is a valid hostname.
    fn prepare_root(&self, uuid: &str, z: &mut ZoneConfig, vm: &hull_spec::Vm) -> Result<()> {
        let refuse = |reason: String| VmError::Refused { vm: uuid.into(), reason };
        let dataset = z.rootfs.parent().unwrap_or(&z.rootfs);
        let tree = hull_exec::tree::Tree::open(dataset)
            .and_then(|t| t.subtree(std::path::Path::new("root")))
            .map_err(|e| refuse(format!("{} is not a zone root: {e}", z.rootfs.display())))?;
        let etc = std::path::Path::new("etc");
        let io = |op, p: &std::path::Path| {
            let (vm, path) = (uuid.to_string(), z.rootfs.join(p));
            move |e| VmError::Io { vm, op, path, source: e }
        };
        match tree.kind(etc).map_err(io("inspect", etc))? {
            Some(k) if k.is_dir() => {}
            Some(_) => {
                return Err(refuse(format!(
                    "{} is not a directory; refusing to write through it",
                    z.rootfs.join(etc).display()
                )));
            }
            None => tree.mkdir_all(etc, 0o755).map_err(io("create directory", etc))?,
        }
        let put = |name: &str, text: String| -> Result<()> {
            let p = etc.join(name);
            tree.replace_file(&p, text.as_bytes(), 0o644).map_err(io("write", &p))
        };
        let written = self.run_dir(uuid).join("hostname");
        if std::fs::read_to_string(&written).ok().as_deref() != Some(z.hostname.as_str()) {
            put("hostname", format!("{}\n", z.hostname))?;
            hull_exec::write_replace(&written, z.hostname.as_bytes()).map_err(|e| VmError::Io {
                vm: uuid.into(),
                op: "write",
                path: written.clone(),
                source: e,
            })?;
        } else if let Some(own) = zone_hostname(&tree) {
            z.hostname = own;
        }
        if let Some(list) = vm.resolvers.as_ref().filter(|l| !l.is_empty()) {
            let mut text = String::new();
            if let Some(d) = &vm.dns_domain {
                text.push_str(&format!("search {d}\n"));
            }
            for r in list {
                text.push_str(&format!("nameserver {r}\n"));
            }
            put("resolv.conf", text)?;
        }
        self.check_init(uuid, z)
    }

    /// Refuses to boot a zone whose init is not an executable file in its root: the error
    /// comes from `vmadm start` then, not from a zone that dies a moment after it ran. The
    /// path is resolved as the zone would (its links followed inside its root only).
    fn check_init(&self, uuid: &str, z: &ZoneConfig) -> Result<()> {
        let Some(init) = z.init.first() else { return Ok(()) };
        let refuse = |why: String| VmError::Refused { vm: uuid.into(), reason: format!("init_name {init}: {why}") };
        let meta = hull_exec::tree::Tree::open_scoped(&z.rootfs)
            .and_then(|t| t.metadata(std::path::Path::new(init)))
            .map_err(|e| refuse(format!("not found in the zone's root ({e})")))?;
        if !executable(&meta) {
            return Err(refuse("not an executable file in the zone's root".into()));
        }
        Ok(())
    }

    /// Starts a stopped VM; returns once its init runs.
    pub fn start(&self, uuid: &str) -> Result<()> {
        hull_exec::probes::vm_verb("start", uuid, || self.start_untraced(uuid))
    }

    fn start_untraced(&self, uuid: &str) -> Result<()> {
        let mut ph = hull_exec::phase::Phases::new("start", uuid);
        let _lock = self.lock(uuid)?;
        self.require(uuid, hull_spec::Verb::Start, "start")?;
        let mut cfg = self.load(uuid)?;
        if let Some(to) = cfg.get("migrated") {
            let to = to.get("to").and_then(Value::as_str).unwrap_or("another node");
            return Err(VmError::Refused {
                vm: uuid.into(),
                reason: format!("it was migrated to {to}: it runs there now"),
            });
        }
        let vm = crate::typed(uuid, &cfg)?;
        let hvm = vm.brand.is_hvm();
        let mut z = if hvm { self.kvm_zone(uuid, &cfg)? } else { self.zone_config(uuid, &cfg)? };
        ph.mark("load");
        if !hvm {
            self.prepare_root(uuid, &mut z, &vm)?;
            ph.mark("hostname, resolvers, init");
            // The metadata socket and the mdata tools, at /.zonecontrol as on SmartOS.
            z.binds.push(hull_zone::Bind {
                source: self.zone_control(uuid)?,
                destination: "/.zonecontrol".into(),
                writable: false,
            });
            ph.mark("zone control");
            if !vm.privileged.unwrap_or(false) {
                z.idmap = Some(hull_zone::Idmap {
                    base: hull_zone::idmap::base(self.idmap_slot(uuid)?),
                    userns: crate::network::userns_path(&self.node, uuid),
                });
            }
        }
        ph.mark("id range");
        let dir = self.run_dir(uuid);
        std::fs::create_dir_all(&dir).map_err(|e| VmError::Io {
            vm: uuid.into(),
            op: "create directory",
            path: dir.clone(),
            source: e,
        })?;
        z.netns = Some(self.net_up(uuid, &cfg, z.idmap.as_ref().map(|m| m.base))?);
        ph.mark("network");
        let zone_json = dir.join("zone.json");
        if let Err(e) = hull_exec::write_replace(&zone_json, &serde_json::to_vec_pretty(&z).unwrap_or_default()) {
            let _ = self.host.net_down(uuid);
            return Err(VmError::Io { vm: uuid.into(), op: "write", path: zone_json, source: e });
        }
        hull_exec::failpoint("vm-start-prepared");
        let _ = std::fs::remove_file(dir.join("stopping"));
        if let Err(e) = self.host.boot(uuid, false) {
            // zoneadmd takes the network down when it started the zone; not when it did not.
            if self.rt.status(uuid).is_none() {
                let _ = self.host.net_down(uuid);
            }
            return Err(e);
        }
        ph.mark("zoneadmd boots the zone");
        // As SmartOS's: a VM started by hand comes back when the node boots.
        let autoboot = cfg.insert("autoboot".into(), Value::Bool(true));
        if cfg.remove("failed").is_some() || autoboot != Some(Value::Bool(true)) {
            self.save(uuid, &cfg)?;
        }
        Ok(())
    }

    /// The VM's slot of host ids for its user namespace ([`hull_zone::idmap`]): claimed the
    /// first time it boots and kept until it is deleted, so that no two VMs share a range.
    /// A claim is a file `var/hull/idmap/SLOT` holding the VM's uuid, made with `O_EXCL`
    /// (two starts racing for a slot cannot both win it), and `var/hull/idmap/UUID`
    /// holding the slot. Called with the VM's lock held.
    fn idmap_slot(&self, uuid: &str) -> Result<u32> {
        let dir = self.node.var_dir().join("idmap");
        let io = |op: &'static str, path: &std::path::Path| {
            let (vm, path) = (uuid.to_string(), path.to_path_buf());
            move |source| VmError::Io { vm, op, path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
        let mine = dir.join(uuid);
        if let Some(slot) = std::fs::read_to_string(&mine).ok().and_then(|t| t.trim().parse::<u32>().ok())
            && std::fs::read_to_string(dir.join(slot.to_string())).is_ok_and(|o| o == uuid)
        {
            return Ok(slot);
        }
        let slots = hull_zone::idmap::SLOTS;
        let start = u32::from_str_radix(uuid.get(..8).unwrap_or("0"), 16).unwrap_or(0) % slots;
        for i in 0..slots {
            let slot = (start + i) % slots;
            let p = dir.join(slot.to_string());
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&p) {
                Ok(mut f) => {
                    std::io::Write::write_all(&mut f, uuid.as_bytes()).map_err(io("write", &p))?;
                    hull_exec::write_atomic(&mine, slot.to_string().as_bytes()).map_err(io("write", &mine))?;
                    return Ok(slot);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io("create", &p)(e)),
            }
        }
        Err(VmError::Refused { vm: uuid.into(), reason: format!("every one of the node's {slots} id ranges is taken") })
    }

    /// Gives the VM's id range back (at delete).
    pub(crate) fn release_idmap_slot(&self, uuid: &str) {
        let dir = self.node.var_dir().join("idmap");
        let mine = dir.join(uuid);
        if let Some(slot) = std::fs::read_to_string(&mine).ok().and_then(|t| t.trim().parse::<u32>().ok()) {
            let p = dir.join(slot.to_string());
            if std::fs::read_to_string(&p).is_ok_and(|o| o == uuid) {
                let _ = std::fs::remove_file(&p);
            }
        }
        let _ = std::fs::remove_file(&mine);
    }
}

/// What `boot_all` did.
#[derive(Debug, Default)]
pub struct BootAll {
    pub started: Vec<String>,
    /// Each VM that failed to boot, with why.
    pub failed: Vec<(String, VmError)>,
}

impl Vmadm {
    /// Stops every running VM, the most recently started first (the node's shutdown);
    /// returns the ones stopped and the ones that failed. One VM that cannot be read or
    /// stopped does not keep the others running.
    pub fn stop_all(&self, timeout: std::time::Duration) -> Result<BootAll> {
        let mut running: Vec<(i64, String)> = Vec::new();
        let mut failed = Vec::new();
        for uuid in self.uuids()? {
            match self.load(&uuid) {
                Ok(cfg) if self.state(&uuid, &cfg).state.is_running() => {
                    let started =
                        hull_zone::supervisor::read_record(&self.run_dir(&uuid)).map(|r| r.started).unwrap_or(0);
                    running.push((started, uuid));
                }
                Ok(_) => {}
                Err(e) => failed.push((uuid, e)),
            }
        }
        running.sort();
        let mut stopped = Vec::new();
        for (_, uuid) in running.into_iter().rev() {
            match self.shutdown(&uuid, timeout) {
                Ok(()) => stopped.push(uuid),
                Err(e) => failed.push((uuid, e)),
            }
        }
        Ok(BootAll { started: stopped, failed })
    }

    /// Starts every stopped VM whose `autoboot` is true (the node's boot). Each VM stands
    /// alone: one that cannot be read or fails to boot is marked `failed` and reported, and
    /// the others boot regardless.
    pub fn boot_all(&self) -> Result<BootAll> {
        let (mut started, mut failed) = (Vec::new(), Vec::new());
        for uuid in self.uuids()? {
            let cfg = match self.load(&uuid) {
                Ok(cfg) => cfg,
                Err(e) => {
                    failed.push((uuid, e));
                    continue;
                }
            };
            let autoboot = cfg.get("autoboot").and_then(Value::as_bool).unwrap_or(false);
            if !autoboot || self.state(&uuid, &cfg).state.is_running() {
                continue;
            }
            match self.start(&uuid) {
                Ok(()) => started.push(uuid),
                Err(e) => {
                    self.mark_failed(&uuid);
                    failed.push((uuid, e));
                }
            }
        }
        Ok(BootAll { started, failed })
    }

    /// Records that a VM's boot failed (`vmadm list` shows it `failed`; start clears it).
    fn mark_failed(&self, uuid: &str) {
        // Waits for the lock: the failed start's zoneadmd may hold it for a moment yet (it
        // shares the lock's file description until it execs), and a busy answer here left
        // the VM unmarked.
        let Ok(_lock) = self.lock_wait(uuid) else { return };
        if let Ok(cfg) = self.load(uuid)
            && !self.state(uuid, &cfg).state.is_running()
            && let Err(e) = self.set_failed(uuid)
        {
            tracing::warn!(vm = uuid, "could not mark the VM failed: {e}");
        }
    }

    /// Records that the VM is down after a failure (`vmadm list` shows `failed`; a start
    /// clears it). The caller holds the VM's lock.
    pub(crate) fn set_failed(&self, uuid: &str) -> Result<()> {
        let mut cfg = self.load(uuid)?;
        cfg.insert("failed".into(), Value::Bool(true));
        self.save(uuid, &cfg)
    }
}
