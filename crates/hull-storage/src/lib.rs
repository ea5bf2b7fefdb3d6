//! Copy-on-write storage for a hull node: the pool, its datasets, snapshots and clones.
//!
//! Datasets are named as on SmartOS: the pool is `zones`, a dataset is `zones/<name>`
//! mounted at `$ROOT/zones/<name>`, and a snapshot is `zones/<name>@<snap>`. Inside this
//! crate names are given without the pool (`<name>`, `<name>@<snap>`); the tools add it.
//!
//! [`Pool`] is the contract every backend keeps; [`Caps`] says what a backend can do, so
//! callers ask for a capability and never test a backend's name. The policy that is the same
//! everywhere (what `destroy` may remove, which datasets are clones of what) lives in this
//! module over the backends' primitives.
//!
//! Backends: [`btrfs::BtrfsPool`] (the kernel's subvolume ioctls; the default),
//! [`dir::DirPool`] (plain directories, reflink copies when the filesystem has them) and
//! [`zfs::ZfsPool`] (the `zfs` command).

pub mod btrfs;
pub mod dir;
mod graph;
pub mod host;
pub mod lock;
pub use hull_exec::mountinfo;
pub mod name;
pub mod node;
pub mod zfs;

use std::path::{Path, PathBuf};

pub use btrfs::send::Received;
pub use hull_spec::PoolBackend;
pub use name::{DatasetName, SnapshotName};
pub use node::Node;

/// What a backend can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Caps {
    /// Snapshots and clones take constant time and share blocks.
    pub instant_clone: bool,
    /// Quotas on datasets are enforced.
    pub quota: bool,
    /// `used` and `referenced` are tracked by the filesystem, not by walking files.
    pub space_accounting: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    Filesystem,
    Snapshot,
}

/// One row of `zfs list`: a dataset or a snapshot.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DatasetInfo {
    /// `<name>` or `<name>@<snap>`, without the pool.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: DatasetKind,
    /// Bytes this dataset would free if destroyed with its snapshots (ZFS's `used`).
    pub used: u64,
    /// Bytes reachable from this dataset (ZFS's `referenced`).
    pub referenced: u64,
    /// The snapshot this dataset was cloned from, `<name>@<snap>`.
    pub origin: Option<String>,
    pub quota: Option<u64>,
    pub mountpoint: Option<PathBuf>,
    /// Creation time, seconds since the epoch.
    pub creation: i64,
}

/// Size and use of the whole pool.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PoolUsage {
    pub size: u64,
    pub used: u64,
    pub free: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("dataset {0} does not exist")]
    NotFound(String),
    #[error("dataset {0} already exists")]
    Exists(String),
    #[error("invalid dataset name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("cannot destroy {dataset}: it has dependent clones ({}); use -r to destroy them too", .clones.join(", "))]
    HasClones { dataset: String, clones: Vec<String> },
    #[error("cannot destroy {dataset}: it has snapshots ({}); use -r to destroy them too", .snapshots.join(", "))]
    HasSnapshots { dataset: String, snapshots: Vec<String> },
    #[error("the {backend} backend does not support {what}")]
    Unsupported { backend: PoolBackend, what: &'static str },
    #[error("pool {pool} is out of space ({op} {path})")]
    NoSpace { pool: String, op: &'static str, path: PathBuf },
    #[error("quota of {dataset} exceeded ({op} {path})")]
    QuotaExceeded { dataset: String, op: &'static str, path: PathBuf },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Exec(#[from] hull_exec::ExecError),
    #[error("{0}")]
    Pool(String),
}

impl StorageError {
    pub(crate) fn io(op: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        StorageError::Io { op, path: path.as_ref().to_path_buf(), source }
    }

    pub(crate) fn errno(op: &'static str, path: impl AsRef<Path>, errno: nix::Error) -> Self {
        Self::io(op, path, std::io::Error::from_raw_os_error(errno as i32))
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Renames `src` to `dst` atomically, failing with `EEXIST` rather than replacing `dst`.
pub(crate) fn rename_noreplace(src: &Path, dst: &Path) -> nix::Result<()> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    renameat2(AT_FDCWD, src, AT_FDCWD, dst, RenameFlags::RENAME_NOREPLACE)
}

/// The primitives each backend provides. Names are validated before they reach a backend.
pub trait Pool: Send + Sync {
    fn backend(&self) -> PoolBackend;
    fn caps(&self) -> Caps;
    /// The pool's name as datasets carry it (`zones`).
    fn name(&self) -> &str;
    /// Where the pool is mounted (`$ROOT/zones`).
    fn mountpoint(&self) -> &Path;

    /// Where a dataset's files are.
    fn dataset_path(&self, ds: &DatasetName) -> PathBuf {
        self.mountpoint().join(ds.as_str())
    }

    /// Finishes work a crash interrupted inside the backend (a half-done rollback).
    fn repair(&self) -> Result<()> {
        Ok(())
    }

    /// Where a snapshot's files can be read, if the backend shows them as a directory.
    fn snapshot_path(&self, snap: &SnapshotName) -> Option<PathBuf> {
        Some(self.dataset_path(&snap.dataset).join(".snapshots").join(&snap.snap))
    }

    /// Creates an empty dataset.
    fn create(&self, ds: &DatasetName) -> Result<()>;
    /// Takes a read-only snapshot.
    fn snapshot(&self, snap: &SnapshotName) -> Result<()>;
    /// Makes a writable dataset from a snapshot.
    fn clone_snapshot(&self, snap: &SnapshotName, target: &DatasetName) -> Result<()>;
    /// Renames a dataset; its snapshots and clones follow.
    fn rename(&self, from: &DatasetName, to: &DatasetName) -> Result<()>;
    /// Removes one dataset that has no snapshots left.
    fn destroy_dataset(&self, ds: &DatasetName) -> Result<()>;
    /// Removes one snapshot.
    fn destroy_snapshot(&self, snap: &SnapshotName) -> Result<()>;
    /// Puts a dataset's contents back to a snapshot of it. Its snapshots, later ones
    /// included, and clones stay.
    fn rollback(&self, snap: &SnapshotName) -> Result<()>;
    /// Every dataset and snapshot, with space figures and origins.
    fn list(&self) -> Result<Vec<DatasetInfo>>;
    /// Sets (Some) or clears (None) the quota on what a dataset references.
    fn set_quota(&self, ds: &DatasetName, quota: Option<u64>) -> Result<()>;
    fn usage(&self) -> Result<PoolUsage>;
    /// Whether a dataset exists; cheaper than `list`.
    fn exists(&self, ds: &DatasetName) -> bool;

    /// Writes a send stream of a snapshot (incremental from `parent`, which the receiver
    /// has) into `out`; returns its length.
    fn send(&self, snap: &SnapshotName, parent: Option<&SnapshotName>, out: &mut dyn std::io::Write) -> Result<u64> {
        let _ = (snap, parent, out);
        Err(StorageError::Unsupported { backend: self.backend(), what: "send streams" })
    }

    /// Makes an empty dataset that streams are received into (see [`Pool::receive`]).
    fn receive_begin(&self, staging: &DatasetName) -> Result<()> {
        let _ = staging;
        Err(StorageError::Unsupported { backend: self.backend(), what: "send streams" })
    }

    /// The snapshots received into `staging` so far: names and sending uuids.
    fn received(&self, staging: &DatasetName) -> Result<Vec<(String, [u8; 16])>> {
        let _ = staging;
        Err(StorageError::Unsupported { backend: self.backend(), what: "send streams" })
    }

    /// Receives one stream into `staging` as a snapshot; its parent must have been received
    /// there before. A refused stream leaves nothing.
    fn receive(&self, staging: &DatasetName, input: &mut dyn std::io::Read) -> Result<Received> {
        let _ = (staging, input);
        Err(StorageError::Unsupported { backend: self.backend(), what: "send streams" })
    }

    /// Makes `target` a writable copy of `staging`'s snapshot `last`, with every received
    /// snapshot as its own; `staging` goes.
    fn receive_finish(&self, staging: &DatasetName, last: &str, target: &DatasetName) -> Result<()> {
        let _ = (staging, last, target);
        Err(StorageError::Unsupported { backend: self.backend(), what: "send streams" })
    }
}

/// The dataset or snapshot a name refers to.
pub fn get(pool: &dyn Pool, name: &str) -> Result<DatasetInfo> {
    pool.list()?
        .into_iter()
        .find(|d| d.name == name)
        .ok_or_else(|| StorageError::NotFound(format!("{}/{}", pool.name(), name)))
}

/// Destroys a dataset as `zfs destroy` does: refused while it has snapshots or dependent
/// clones, unless `recursive`, which removes those first (clones of clones included).
/// Returns the names destroyed, children first.
pub fn destroy(pool: &dyn Pool, ds: &DatasetName, recursive: bool) -> Result<Vec<String>> {
    if !pool.exists(ds) {
        return Err(StorageError::NotFound(format!("{}/{}", pool.name(), ds)));
    }
    let all = pool.list()?;
    let plan = graph::destroy_order(&all, ds.as_str());
    let full = |n: &str| format!("{}/{}", pool.name(), n);
    if !recursive {
        let snaps = graph::snapshots_of(&all, ds.as_str());
        let clones: Vec<String> =
            plan.iter().filter(|n| graph::is_clone_root(&all, n, ds.as_str())).map(|n| full(n)).collect();
        if !clones.is_empty() {
            return Err(StorageError::HasClones { dataset: full(ds.as_str()), clones });
        }
        if !snaps.is_empty() {
            return Err(StorageError::HasSnapshots {
                dataset: full(ds.as_str()),
                snapshots: snaps.iter().map(|n| full(n)).collect(),
            });
        }
    }
    for name in &plan {
        destroy_one(pool, name)?;
    }
    Ok(plan.into_iter().map(|n| full(&n)).collect())
}

/// Destroys one snapshot; refused while clones depend on it unless `recursive`.
pub fn destroy_snapshot(pool: &dyn Pool, snap: &SnapshotName, recursive: bool) -> Result<Vec<String>> {
    let all = pool.list()?;
    let key = snap.to_string();
    if !all.iter().any(|d| d.name == key) {
        return Err(StorageError::NotFound(format!("{}/{}", pool.name(), key)));
    }
    let plan = graph::destroy_order(&all, &key);
    let full = |n: &str| format!("{}/{}", pool.name(), n);
    if !recursive && plan.len() > 1 {
        let clones = all.iter().filter(|d| d.origin.as_deref() == Some(&key)).map(|d| full(&d.name)).collect();
        return Err(StorageError::HasClones { dataset: full(&key), clones });
    }
    for name in &plan {
        destroy_one(pool, name)?;
    }
    Ok(plan.into_iter().map(|n| full(&n)).collect())
}

fn destroy_one(pool: &dyn Pool, name: &str) -> Result<()> {
    if name.contains('@') {
        pool.destroy_snapshot(&SnapshotName::parse(name)?)
    } else {
        pool.destroy_dataset(&DatasetName::parse(name)?)
    }
}

/// Names of the datasets cloned from any snapshot of `ds`.
pub fn dependent_clones(all: &[DatasetInfo], ds: &str) -> Vec<String> {
    let prefix = format!("{ds}@");
    all.iter().filter(|d| d.origin.as_deref().is_some_and(|o| o.starts_with(&prefix))).map(|d| d.name.clone()).collect()
}
