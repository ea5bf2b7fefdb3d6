//! vmadm: VMs composed from an image, a dataset and a zone.
//!
//! A VM is the dataset `zones/<uuid>` (cloned from its image's `@final`) holding
//! `config/vm.json` (its properties, written atomically, so the VM travels with its dataset)
//! and `root/` (the zone's root filesystem). While it runs, `$ROOT/var/hull/z/<uuid>/` holds
//! its supervisor's files (see `hull_zone::supervisor`). One verb per file; every multi-step
//! verb registers each step's undo on a [`revert::Revert`] stack.
//!
//! States, as vmadm reports them:
//!
//! ```text
//!   create ──> stopped ──start──> running ──stop/kill/init exits──> stopped
//!                 │                                                    │
//!                 └────────────── delete (stops first) <───────────────┘
//!   failed: a create whose boot failed; it can be deleted or started again
//! ```

mod create;
mod delete;
pub mod host;
mod image;
mod kvm;
pub mod metadata;
pub mod network;
mod query;
pub mod revert;
pub mod send;
mod snapshot;
mod start;
pub mod stats;
mod stop;
mod update;

#[cfg(test)]
mod tests;

pub use create::validate;
pub use query::{VmState, node_uuid};
pub use start::BootAll;
pub use stop::AfterExit;
pub use update::UpdateReport;

use hull_spec::ValidationErrors;
use hull_storage::{DatasetName, Node, Pool};
use serde_json::{Map, Value};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{0}")]
    Invalid(ValidationErrors),
    #[error("VM {vm}: invalid nics: {}", problems.join("; "))]
    Nics { vm: String, problems: Vec<String> },
    #[error(transparent)]
    Net(#[from] hull_net::NetError),
    #[error("VM {0} not found")]
    NotFound(String),
    #[error("VM {0} already exists")]
    Exists(String),
    #[error("image {image} for VM {vm}: {reason}")]
    Image { vm: String, image: String, reason: String },
    #[error("VM {vm} is {state}: cannot {verb}")]
    WrongState { vm: String, state: hull_spec::State, verb: &'static str },
    #[error("VM {0} is busy with another command; try again")]
    Busy(String),
    /// zlogin's command is not in the zone (a shell's 127).
    #[error("{cmd}: command not found in VM {vm}")]
    NoCommand { vm: String, cmd: String },
    /// hull will not do what was asked of this VM, and says why (a rule, not a failure:
    /// nothing below failed, so there is no source to carry).
    #[error("VM {vm}: {reason}")]
    Refused { vm: String, reason: String },
    /// `update_disks` / `remove_disks` name a disk the VM does not have.
    #[error("VM {vm}: {verb}: the VM has no disk with path {path:?}")]
    NoDisk { vm: String, verb: &'static str, path: String },
    /// The zone's supervisor said why it could not boot the zone, or died first.
    #[error("VM {vm}: boot failed: {why}")]
    Boot { vm: String, why: String },
    /// An `indestructible_*` flag is set.
    #[error("VM {vm}: {flag} is set, cannot delete")]
    Indestructible { vm: String, flag: &'static str },
    /// The VM was made and stored, and its first boot failed (it is marked `failed`).
    #[error("VM {vm}: created, but failed to boot")]
    BootFailed {
        vm: String,
        #[source]
        source: Box<VmError>,
    },
    #[error("VM {vm}: qemu's monitor")]
    Qmp {
        vm: String,
        #[source]
        source: hull_qemu::QemuError,
    },
    #[error("VM {vm}: its image's manifest")]
    Manifest {
        vm: String,
        #[source]
        source: hull_spec::manifest::ManifestError,
    },
    #[error("VM {vm} has no snapshot {name}")]
    NoSnapshot { vm: String, name: String },
    #[error("VM {vm} already has a snapshot {name}")]
    SnapshotExists { vm: String, name: String },
    /// A validated update payload that does not fit the update type (a validation gap).
    #[error("VM {vm}: the update payload")]
    Payload {
        vm: String,
        #[source]
        source: hull_spec::vm::ModelError,
    },
    /// A stored config that is not a JSON object.
    #[error("VM {vm}: {} is corrupt", path.display())]
    Corrupt {
        vm: String,
        path: PathBuf,
        #[source]
        source: Option<serde_json::Error>,
    },
    /// Waiting for a process of the VM failed.
    #[error("VM {vm}: wait for {what}")]
    Wait {
        vm: String,
        what: &'static str,
        #[source]
        source: nix::Error,
    },
    /// A stored config that does not fit the VM model (edited by hand, or corrupt).
    #[error("VM {vm}: its stored config")]
    Config {
        vm: String,
        #[source]
        source: hull_spec::vm::ModelError,
    },
    /// A VM stream (`vmadm send`'s) that this node does not take, and why.
    #[error("the VM stream: {0}")]
    Stream(String),
    #[error(transparent)]
    Storage(#[from] hull_storage::StorageError),
    #[error(transparent)]
    Img(#[from] hull_img::ImgError),
    #[error(transparent)]
    Zone(#[from] hull_zone::ZoneError),
    #[error("VM {vm}: {op} {}", path.display())]
    Io {
        vm: String,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = VmError> = std::result::Result<T, E>;

impl From<hull_spec::stream::StreamError> for VmError {
    fn from(e: hull_spec::stream::StreamError) -> VmError {
        VmError::Stream(e.0)
    }
}

/// A config map, typed; what does not fit names the VM and the property.
pub(crate) fn typed(uuid: &str, cfg: &Map<String, Value>) -> Result<hull_spec::Vm> {
    hull_spec::Vm::from_map(cfg).map_err(|source| VmError::Config { vm: uuid.into(), source })
}

/// The vmadm of one node.
pub struct Vmadm {
    node: Node,
    img: hull_img::Imgadm,
    rt: hull_zone::runtime::Runtime,
    /// zoneadmd, namespaces and links ([`host::NodeHost`]), or a test's fake.
    host: Box<dyn host::Host>,
}

impl Vmadm {
    /// Opens the node's vmadm and repairs what a crashed command left (see [`Vmadm::repair`]).
    pub fn open(node: &Node, exe: PathBuf) -> Result<Vmadm> {
        Vmadm::with_host(node, Box::new(host::NodeHost { node: node.clone(), exe }))
    }

    /// Opens the node's vmadm for a command on one VM (`uuid`), or one that makes a VM
    /// (None): what interrupted creates and receives left goes, and that VM, when its
    /// zone's supervisor died, gets a new one. Not the sweep of every running zone that
    /// [`Vmadm::open`] makes (at the node's boot, and when the API starts): a command's cost
    /// does not grow with the zones that run.
    pub fn open_for(node: &Node, exe: PathBuf, uuid: Option<&str>) -> Result<Vmadm> {
        let v = Vmadm::open_to_read(node, exe)?;
        if let Some(u) = uuid {
            v.heal(u)?;
        }
        Ok(v)
    }

    /// Opens the node's vmadm to read it (`list`, `get`, `lookup`), repairing nothing: a
    /// reader changes nothing, and a listing of many VMs does not also read every running
    /// zone's record. What a crash left shows as it is (a running zone whose supervisor
    /// died is still running) until the next command that acts.
    pub fn open_to_read(node: &Node, exe: PathBuf) -> Result<Vmadm> {
        let v = Vmadm::unrepaired(node, Box::new(host::NodeHost { node: node.clone(), exe }));
        // What an interrupted create or receive left is not a VM, and goes (one look at the
        // pool's directory).
        v.repair_remains()?;
        Ok(v)
    }

    /// A vmadm whose host effects go through `host` (a test's fake).
    pub fn with_host(node: &Node, host: Box<dyn host::Host>) -> Result<Vmadm> {
        let v = Vmadm::unrepaired(node, host);
        v.repair()?;
        Ok(v)
    }

    fn unrepaired(node: &Node, host: Box<dyn host::Host>) -> Vmadm {
        Vmadm {
            node: node.clone(),
            img: hull_img::Imgadm::new(node),
            rt: hull_zone::runtime::Runtime::new(&node.var_dir()),
            host,
        }
    }

    pub fn pool(&self) -> Result<&dyn Pool> {
        Ok(self.img.pool()?)
    }

    pub(crate) fn run_dir(&self, uuid: &str) -> PathBuf {
        self.node.var_dir().join("z").join(uuid)
    }

    pub(crate) fn config_path(&self, uuid: &str) -> Result<PathBuf> {
        Ok(self.pool()?.dataset_path(&ds(uuid)?).join("config/vm.json"))
    }

    fn cgroup(&self, uuid: &str) -> String {
        format!("/{}-{uuid}", self.node.prefix())
    }

    fn lock_path(&self, uuid: &str) -> PathBuf {
        self.node.lock_path(&format!("vm.{uuid}"))
    }

    fn lock(&self, uuid: &str) -> Result<hull_storage::lock::LockGuard> {
        hull_storage::lock::try_lock(&self.lock_path(uuid))?.ok_or_else(|| VmError::Busy(uuid.to_string()))
    }

    /// The VM's lock, waiting for whoever holds it.
    fn lock_wait(&self, uuid: &str) -> Result<hull_storage::lock::LockGuard> {
        Ok(hull_storage::lock::lock(&self.lock_path(uuid))?)
    }

    /// A VM's stored properties.
    pub fn load(&self, uuid: &str) -> Result<Map<String, Value>> {
        Ok(self.load_stamped(uuid)?.0)
    }

    /// [`Vmadm::load`], with when the config was last written (from the open file, not a
    /// second lookup of its path).
    pub(crate) fn load_stamped(&self, uuid: &str) -> Result<(Map<String, Value>, Option<std::time::SystemTime>)> {
        self.load_with(uuid, |text| serde_json::from_slice(text))
    }

    /// [`Vmadm::load_stamped`] keeping only the top-level properties in `keys` and those a
    /// VM's computed properties are made from.
    pub(crate) fn load_picked(
        &self,
        uuid: &str,
        keys: &std::collections::BTreeSet<String>,
    ) -> Result<(Map<String, Value>, Option<std::time::SystemTime>)> {
        use serde::de::DeserializeSeed;
        self.load_with(uuid, |text| {
            let mut de = serde_json::Deserializer::from_slice(text);
            let m = Pick(keys).deserialize(&mut de)?;
            de.end()?;
            Ok(Value::Object(m))
        })
    }

    fn load_with(
        &self,
        uuid: &str,
        parse: impl Fn(&[u8]) -> serde_json::Result<Value>,
    ) -> Result<(Map<String, Value>, Option<std::time::SystemTime>)> {
        use std::io::Read;
        let p = self.config_path(uuid)?;
        let io = |p: &std::path::Path| {
            let (vm, path) = (uuid.to_string(), p.to_path_buf());
            move |e: std::io::Error| match e.kind() {
                std::io::ErrorKind::NotFound => VmError::NotFound(vm),
                _ => VmError::Io { vm, op: "read", path, source: e },
            }
        };
        let mut f = std::fs::File::open(&p).map_err(io(&p))?;
        let modified = f.metadata().and_then(|m| m.modified()).ok();
        let mut text = Vec::new();
        f.read_to_end(&mut text).map_err(io(&p))?;
        match parse(&text) {
            Ok(Value::Object(m)) => Ok((m, modified)),
            Ok(_) => Err(VmError::Corrupt { vm: uuid.into(), path: p, source: None }),
            Err(e) => Err(VmError::Corrupt { vm: uuid.into(), path: p, source: Some(e) }),
        }
    }

    /// A VM's stored config, typed.
    pub fn load_vm(&self, uuid: &str) -> Result<hull_spec::Vm> {
        typed(uuid, &self.load(uuid)?)
    }

    fn save(&self, uuid: &str, cfg: &Map<String, Value>) -> Result<()> {
        write_config(uuid, &self.config_path(uuid)?, cfg)
    }

    /// Uuids of every VM on the node.
    pub fn uuids(&self) -> Result<Vec<String>> {
        let pool = self.pool()?;
        let mut out = self.candidates()?;
        out.retain(|n| pool.mountpoint().join(n).join("config/vm.json").is_file());
        Ok(out)
    }

    /// The pool's datasets named by a uuid alone, sorted: every VM, and any whose create or
    /// delete is under way (its config may be gone); one look at the pool's directory.
    pub(crate) fn candidates(&self) -> Result<Vec<String>> {
        let pool = self.pool()?;
        let rd = match std::fs::read_dir(pool.mountpoint()) {
            Ok(rd) => rd,
            Err(_) => return Ok(Vec::new()),
        };
        // A VM's dataset is named by its uuid alone: `<uuid>-provisioning` (a create in
        // progress, with its config already written) and images' datasets are not VMs.
        let mut out: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<uuid::Uuid>().is_ok_and(|u| u.to_string() == *n))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Finishes what crashed commands left: a `<uuid>-provisioning` dataset (a create that
    /// died before its VM was whole) is destroyed; a running zone whose supervisor died gets a new
    /// one; a zone whose init is gone is cleaned up. Only VMs whose lock is free are touched.
    pub fn repair(&self) -> Result<()> {
        self.repair_remains()?;
        self.repair_supervisors()
    }

    /// Destroys what interrupted creates and receives left.
    fn repair_remains(&self) -> Result<()> {
        let pool = self.pool()?;
        let Ok(rd) = std::fs::read_dir(pool.mountpoint()) else { return Ok(()) };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(d) = name.strip_suffix(send::RECEIVING) {
                self.repair_receiving(pool, d, &name)?;
                continue;
            }
            let Some(uuid) = name.strip_suffix(PROVISIONING) else { continue };
            if let Ok(_g) = self.lock(uuid) {
                // Seen before the lock was taken: the create it belonged to may have finished
                // (renamed it) and let go of the lock in between. Only what is still there
                // under the lock is a remain.
                let part = ds(&name)?;
                if !pool.exists(&part) {
                    continue;
                }
                tracing::info!(vm = %uuid, "removing the remains of an interrupted create");
                match hull_storage::destroy(pool, &part, true) {
                    Ok(_) | Err(hull_storage::StorageError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// A running zone whose supervisor died gets a new one; one whose init is gone too is
    /// cleaned up.
    fn repair_supervisors(&self) -> Result<()> {
        // Only VMs that have run have a run directory (and a record): not a read of every
        // VM's config.
        let runs = std::fs::read_dir(self.node.var_dir().join("z")).into_iter().flatten().flatten();
        let mut ran: Vec<String> = runs
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<uuid::Uuid>().is_ok_and(|u| u.to_string() == *n))
            .collect();
        ran.sort();
        for uuid in ran {
            self.heal(&uuid)?;
        }
        Ok(())
    }

    /// [`Vmadm::repair_supervisors`] for one VM (one that is not a VM's uuid is left alone).
    fn heal(&self, uuid: &str) -> Result<()> {
        if uuid.parse::<uuid::Uuid>().map_or(true, |u| u.to_string() != uuid) {
            return Ok(());
        }
        let dir = self.run_dir(uuid);
        let Some(rec) = hull_zone::supervisor::read_record(&dir) else { return Ok(()) };
        if rec.state != "running" || hull_zone::supervisor::alive(rec.zoneadmd) {
            return Ok(());
        }
        let Ok(_g) = self.lock(uuid) else { return Ok(()) };
        if rec.init_pid.is_some_and(hull_zone::supervisor::alive) {
            tracing::info!(vm = %uuid, "the zone's supervisor died: attaching a new one");
            self.host.boot(uuid, true)?;
        } else {
            self.rt.delete(uuid, &self.cgroup(uuid))?;
            self.host.net_down(uuid)?;
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(())
    }
}

impl Vmadm {
    /// Removes a staging dataset that a receive which died left: one whose VM is neither
    /// being received by a migration (its reservation) nor locked by a live receive.
    fn repair_receiving(&self, pool: &dyn Pool, dataset: &str, name: &str) -> Result<()> {
        let uuid = dataset.get(..36).unwrap_or(dataset);
        if uuid.parse::<uuid::Uuid>().is_err() || send::reservation_path(&self.node, uuid).exists() {
            return Ok(());
        }
        let Ok(_g) = self.lock(uuid) else { return Ok(()) };
        let part = ds(name)?;
        if pool.exists(&part) && !send::reservation_path(&self.node, uuid).exists() {
            tracing::info!(vm = %uuid, "removing the remains of an interrupted receive");
            match hull_storage::destroy(pool, &part, true) {
                Ok(_) | Err(hull_storage::StorageError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// A config's top-level object with only some of its properties: what the computed ones
/// need (brand, memory, failed, uuid, alias) and those named; the others are parsed past.
struct Pick<'a>(&'a std::collections::BTreeSet<String>);

/// What every row's computed properties are made from.
const ALWAYS_PICKED: &[&str] = &["uuid", "alias", "brand", "max_physical_memory", "failed"];

impl<'de> serde::de::DeserializeSeed<'de> for Pick<'_> {
    type Value = Map<String, Value>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Pick<'_> {
    type Value = Map<String, Value>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a VM's config (a JSON object)")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if self.0.contains(&k) || ALWAYS_PICKED.contains(&k.as_str()) {
                let v: Value = map.next_value()?;
                out.insert(k, v);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}

/// Writes a VM's config atomically (it travels with the dataset).
pub(crate) fn write_config(uuid: &str, path: &std::path::Path, cfg: &Map<String, Value>) -> Result<()> {
    hull_exec::write_atomic(path, &serde_json::to_vec_pretty(cfg).unwrap_or_default()).map_err(|e| VmError::Io {
        vm: uuid.to_string(),
        op: "write",
        path: path.to_path_buf(),
        source: e,
    })
}

/// A VM is made in `zones/<uuid>-provisioning` and renamed to `zones/<uuid>` once whole.
pub(crate) const PROVISIONING: &str = "-provisioning";

/// A time as SmartOS writes it in a VM's properties: `2026-12-02T14:23:13.000Z`.
pub(crate) fn iso8601(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// [`iso8601`] of seconds since the epoch.
pub(crate) fn iso8601_secs(secs: i64) -> String {
    iso8601(std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

pub(crate) fn ds(uuid: &str) -> Result<DatasetName> {
    Ok(DatasetName::parse(uuid)?)
}
