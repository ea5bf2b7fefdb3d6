//! The KVM brand (and bhyve payloads, on the same engine): qemu inside a zone.
//!
//! The VM's dataset holds `config/vm.json`, `disks/diskN.raw` and an empty `root/`. At boot
//! the zone's root is that empty directory with the host's `/usr` bound read-only (and the
//! merged-usr links beside it), the dataset at `/vm`, the run directory (QMP and serial
//! sockets) at `/run/hull`, and `/dev/kvm` when KVM is in use. qemu is the zone's init:
//! it sees its own processes only, no host files but those, the zone's cgroup (capped at
//! `ram` plus overhead), and runs with its own seccomp sandbox on.

use crate::{Result, VmError, Vmadm, ds};
use hull_qemu::probe::{Accel, Probe};
use hull_zone::{Bind, Device, ZoneConfig};
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// qemu's own memory beyond the guest's, in MiB, for the zone's cap.
const OVERHEAD_MIB: u64 = 256;
const QEMU: &str = "/usr/bin/qemu-system-x86_64";

fn bad(vm: &str, problems: Vec<String>) -> VmError {
    VmError::Refused { vm: vm.to_string(), reason: format!("invalid KVM payload: {}", problems.join("; ")) }
}

fn mem_total_mib() -> Option<u64> {
    let t = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = t.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

impl Vmadm {
    /// Where a KVM VM's disks live: `<dataset>/disks/diskN.raw`.
    fn disk_paths(&self, uuid: &str, n: usize) -> Result<Vec<PathBuf>> {
        let base = self.pool()?.dataset_path(&ds(uuid)?).join("disks");
        Ok((0..n).map(|i| base.join(format!("disk{i}.raw"))).collect())
    }

    /// Checks a KVM payload beyond its types: models, media, one boot disk, sizes, the
    /// node's memory. Fills in SmartOS's defaults.
    pub(crate) fn check_kvm(&self, uuid: &str, cfg: &mut Map<String, Value>) -> Result<()> {
        let vm = crate::typed(uuid, cfg)?;
        let disks = vm.disks();
        let mut problems = Vec::new();
        for (i, d) in disks.iter().enumerate() {
            if let Some(img) = &d.image_uuid {
                match img.parse::<uuid::Uuid>().ok().map(|u| self.img.manifest(&u)) {
                    Some(Ok(m)) if m.image_type == hull_spec::manifest::ImageType::Zvol => {}
                    Some(Ok(m)) => problems.push(format!(
                        "disks.{i}.image_uuid: image {img} is a {} image, not a zvol image; it cannot be a disk",
                        m.image_type.as_str()
                    )),
                    _ => problems.push(format!("disks.{i}.image_uuid: image {img} is not installed")),
                }
            } else if d.is_disk() && d.size.is_none_or(|s| s == 0) {
                // A cdrom is its `path`; a disk needs a size (validation says so first).
                problems.push(format!("disks.{i}: needs a size (MiB) or an image_uuid"));
            }
        }
        // No disk marked boot is fine, as on SmartOS: the guest's firmware tries them in order.
        let ram = vm.ram.unwrap_or(256);
        if let Some(total) = mem_total_mib()
            && ram + OVERHEAD_MIB > total
        {
            problems.push(format!(
                "ram: {ram} MiB (plus {OVERHEAD_MIB} MiB for qemu) is more than this node's {total} MiB"
            ));
        }
        let paths = self.disk_paths(uuid, disks.len())?;
        if let Err(p) = hull_qemu::cmdline::parse(uuid, cfg, &paths) {
            problems.extend(p);
        }
        if !problems.is_empty() {
            return Err(bad(uuid, problems));
        }
        cfg.entry("ram".to_string()).or_insert(json!(ram));
        cfg.entry("vcpus".to_string()).or_insert(json!(1));
        // SmartOS's cap for a hardware VM: ram plus its brand's overhead (proptable.js's
        // KVM_MEM_OVERHEAD, BHYVE_MEM_OVERHEAD), unless the payload set one.
        let overhead = if hull_spec::Brand::of(cfg) == hull_spec::Brand::Bhyve { 1280 } else { 1024 };
        cfg.entry("max_physical_memory".to_string()).or_insert(json!(ram + overhead));
        cfg.entry("limit_priv".to_string())
            .or_insert(json!("default,-file_link_any,-net_access,-proc_fork,-proc_info,-proc_session"));
        Ok(())
    }

    /// A disk cloned from a zvol image lives in a dataset of its own beside the VM's.
    pub(crate) fn disk_dataset(uuid: &str, i: usize) -> String {
        format!("{uuid}-disk{i}")
    }

    /// Where hull keeps disk `i` of a VM, as (dataset directory, file within it): its
    /// clone's file for a disk from an image, else the VM's own `disks/diskI.raw`.
    pub(crate) fn disk_file(&self, uuid: &str, i: usize, from_image: bool) -> Result<(PathBuf, PathBuf)> {
        let pool = self.pool()?;
        Ok(if from_image {
            (pool.dataset_path(&ds(&Self::disk_dataset(uuid, i))?), hull_img::ZVOL_FILE.into())
        } else {
            (pool.dataset_path(&ds(uuid)?), Path::new("disks").join(format!("disk{i}.raw")))
        })
    }

    /// Clones the VM's image disks from their images' `@final`; returns the datasets made.
    pub(crate) fn clone_disks(
        &self,
        uuid: &str,
        cfg: &mut Map<String, Value>,
    ) -> Result<Vec<hull_storage::DatasetName>> {
        let pool = self.pool()?;
        let mut made = Vec::new();
        let mut vm = crate::typed(uuid, cfg)?;
        for (i, d) in vm.disks.iter_mut().flatten().enumerate() {
            let Some(img) = &d.image_uuid else { continue };
            let target = ds(&Self::disk_dataset(uuid, i))?;
            let r = ds(img).and_then(|i| Ok(pool.clone_snapshot(&i.snapshot(hull_img::FINAL)?, &target)?));
            if let Err(e) = r {
                for m in &made {
                    let _ = hull_storage::destroy(pool, m, true);
                }
                return Err(e);
            }
            d.rest.insert("zfs_filesystem".into(), json!(format!("{}/{target}", pool.name())));
            made.push(target);
        }
        if vm.disks.is_some() {
            cfg.insert("disks".into(), hull_spec::vm::model::value(&vm.disks));
        }
        Ok(made)
    }

    /// Makes a KVM VM's dataset: config, an empty zone root and its blank disks.
    pub(crate) fn create_kvm_dataset(
        &self,
        part: &hull_storage::DatasetName,
        cfg: &mut Map<String, Value>,
    ) -> Result<()> {
        let pool = self.pool()?;
        pool.create(part)?;
        let base = pool.dataset_path(part);
        let io = |op, p: &Path| {
            let (vm, path) = (part.to_string(), p.to_path_buf());
            move |e| VmError::Io { vm, op, path, source: e }
        };
        for d in ["config", "root", "disks"] {
            std::fs::create_dir_all(base.join(d)).map_err(io("create directory", &base.join(d)))?;
        }
        let mut vm = crate::typed(&part.to_string(), cfg)?;
        let uuid = vm.uuid.clone();
        for (i, d) in vm.disks.iter_mut().flatten().enumerate() {
            // An image disk's file is bound over this placeholder at boot.
            let size = if d.from_image() { 0 } else { d.size.unwrap_or(0) };
            let file = base.join("disks").join(format!("disk{i}.raw"));
            let f = std::fs::File::create(&file).map_err(io("create", &file))?;
            f.set_len(size << 20).map_err(io("size", &file))?;
            // The disk's file on the host (SmartOS's path is its zvol's device): the
            // VM's own dataset for a blank disk, the clone's for an image's.
            let (dir, rel) = self.disk_file(&uuid, i, d.from_image())?;
            let host = dir.join(rel);
            d.path = Some(host.to_string_lossy().into_owned());
            d.model.get_or_insert_with(|| "virtio".into());
            d.media.get_or_insert_with(|| "disk".into());
        }
        if vm.disks.is_some() {
            cfg.insert("disks".into(), hull_spec::vm::model::value(&vm.disks));
        }
        Ok(())
    }

    /// The accelerator this node uses: `HULL_ACCEL` (kvm or tcg) when the operator forces
    /// one, else the probe's finding, made once and kept in `$ROOT/var/hull/accel.json`.
    pub fn accel(&self) -> Probe {
        match std::env::var("HULL_ACCEL").as_deref() {
            Ok("kvm") => {
                return Probe { accel: Accel::Kvm, reason: "forced by HULL_ACCEL".into(), kvm_ms: None, tcg_ms: None };
            }
            Ok("tcg") => {
                return Probe { accel: Accel::Tcg, reason: "forced by HULL_ACCEL".into(), kvm_ms: None, tcg_ms: None };
            }
            _ => {}
        }
        let path = self.node.var_dir().join("accel.json");
        if let Some(p) = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str::<Probe>(&t).ok()) {
            return p;
        }
        let p = hull_qemu::probe::probe(Path::new(QEMU), None, &self.node.var_dir(), Duration::from_secs(20));
        let _ = hull_exec::write_atomic(&path, &serde_json::to_vec_pretty(&p).unwrap_or_default());
        p
    }

    /// The zone a KVM VM runs in, with qemu as its init.
    pub(crate) fn kvm_zone(&self, uuid: &str, cfg: &Map<String, Value>) -> Result<ZoneConfig> {
        let base = self.pool()?.dataset_path(&ds(uuid)?);
        let root = base.join("root");
        // Merged /usr: the zone's /bin, /lib... are links into the bound /usr.
        for (link, target) in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")] {
            let p = root.join(link);
            if std::fs::symlink_metadata(&p).is_err() {
                std::os::unix::fs::symlink(target, &p).map_err(|e| VmError::Io {
                    vm: uuid.into(),
                    op: "link",
                    path: p.clone(),
                    source: e,
                })?;
            }
        }
        let vm = crate::typed(uuid, cfg)?;
        let n = vm.disks().len();
        let inside: Vec<PathBuf> = (0..n).map(|i| PathBuf::from(format!("/vm/disks/disk{i}.raw"))).collect();
        let spec = hull_qemu::cmdline::parse(uuid, cfg, &inside).map_err(|p| bad(uuid, p))?;
        let accel = self.accel().accel;
        let sockets = hull_qemu::cmdline::Sockets {
            qmp: "/run/hull/qmp.sock".into(),
            serial: "/run/hull/serial.sock".into(),
            serial_log: Some("/run/hull/console.log".into()),
            vnc: Some("/run/hull/vnc.sock".into()),
            metadata: Some("/run/hull/mdata.sock".into()),
        };
        let mut init = vec![QEMU.to_string()];
        init.extend(hull_qemu::cmdline::args(&spec, accel, &sockets));
        let mut z = self.zone_config(uuid, cfg)?;
        z.rootfs = root;
        z.init = init;
        z.terminal = false;
        z.tmpfs_mib = None;
        z.binds = vec![
            Bind { source: "/usr".into(), destination: "/usr".into(), writable: false },
            Bind { source: base.clone(), destination: "/vm".into(), writable: true },
            Bind { source: self.run_dir(uuid), destination: "/run/hull".into(), writable: true },
        ];
        let pool = self.pool()?;
        for (i, d) in vm.disks().iter().enumerate() {
            if d.from_image() {
                let disk_ds = ds(&Self::disk_dataset(uuid, i))?;
                z.binds.push(Bind {
                    source: pool.dataset_path(&disk_ds).join(hull_img::ZVOL_FILE),
                    destination: format!("/vm/disks/disk{i}.raw").into(),
                    writable: true,
                });
            }
        }
        if let Some(port) = spec.vnc_port {
            z.relays.push(hull_zone::Relay { port, socket: self.run_dir(uuid).join("vnc.sock") });
        }
        if !vm.nics().is_empty() {
            z.devices.push(Device { path: "/dev/net/tun".into(), major: 10, minor: 200 });
        }
        if accel == Accel::Kvm {
            z.devices.push(Device { path: "/dev/kvm".into(), major: 10, minor: 232 });
        }
        Ok(z)
    }

    pub(crate) fn qmp(&self, uuid: &str) -> Result<hull_qemu::qmp::Qmp> {
        // The run directory is bound into the VM's zone, writable: the socket is reached
        // without following a link qemu could put in its place.
        let sock = self.run_dir(uuid).join("qmp.sock");
        let open = || hull_exec::tree::connect_socket(&sock);
        hull_qemu::qmp::Qmp::connect_with(&sock.display().to_string(), Duration::from_secs(5), &open)
            .map_err(|source| VmError::Qmp { vm: uuid.into(), source })
    }

    /// Asks the guest to power off (an ACPI power-button press).
    pub(crate) fn kvm_powerdown(&self, uuid: &str) -> Result<()> {
        self.qmp(uuid)?
            .execute("system_powerdown", None)
            .map(drop)
            .map_err(|source| VmError::Qmp { vm: uuid.into(), source })
    }

    /// `vmadm info UUID [TYPE...]`: what qemu reports, by QMP.
    pub fn info(&self, uuid: &str, types: &[String]) -> Result<Map<String, Value>> {
        let cfg = self.load(uuid)?;
        let brand = hull_spec::Brand::of(&cfg);
        if !brand.is_hvm() {
            return Err(VmError::Refused {
                vm: uuid.into(),
                reason: format!("info is not supported for brand {brand} (KVM VMs only)"),
            });
        }
        self.require(uuid, hull_spec::Verb::Info, "get info of")?;
        let all = ["version", "status", "block", "cpus", "vnc", "chardev", "accel"];
        let wanted: Vec<&str> = if types.is_empty() || types.iter().any(|t| t == "all") {
            all.to_vec()
        } else {
            types.iter().map(String::as_str).collect()
        };
        let mut q = self.qmp(uuid)?;
        let mut out = Map::new();
        for t in wanted {
            let cmd = match t {
                "version" => "query-version",
                "status" => "query-status",
                "block" => "query-block",
                "cpus" => "query-cpus-fast",
                "vnc" => "query-vnc",
                "chardev" => "query-chardev",
                "accel" => {
                    let kvm =
                        q.execute("query-kvm", None).map_err(|source| VmError::Qmp { vm: uuid.into(), source })?;
                    out.insert("accel".into(), json!({"kvm": kvm, "node": self.accel()}));
                    continue;
                }
                other => {
                    return Err(VmError::Refused {
                        vm: uuid.into(),
                        reason: format!("unknown info type {other:?} ({})", all.join(", ")),
                    });
                }
            };
            let mut v = q.execute(cmd, None).map_err(|source| VmError::Qmp { vm: uuid.into(), source })?;
            if t == "vnc"
                && let (Value::Object(o), Some(p)) = (&mut v, cfg.get("vnc_port").and_then(Value::as_u64))
            {
                // qemu serves a unix socket; the host's loopback port is zoneadmd's relay.
                o.insert("host".into(), json!("127.0.0.1"));
                o.insert("port".into(), json!(p));
            }
            out.insert(t.into(), v);
        }
        Ok(out)
    }
}
