//! The dir backend: datasets are plain directories and snapshots are copies, made with
//! reflinks where the filesystem has them (XFS, btrfs) and byte for byte otherwise. Correct
//! everywhere, slow on filesystems without reflinks, and it says so.
//!
//! ```text
//! <mnt>/<name>/                     the dataset
//! <mnt>/<name>/.hull.json           its identity: uuid, origin snapshot's uuid, snapshots
//! <mnt>/<name>/.snapshots/<snap>/   a snapshot
//! ```

use crate::{Caps, DatasetInfo, DatasetKind, DatasetName, Pool, PoolUsage, Result, SnapshotName, StorageError};
use hull_exec::{CommandLine, tool};
use hull_spec::PoolBackend;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const META: &str = ".hull.json";
const SNAPDIR: &str = ".snapshots";

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    uuid: String,
    #[serde(default)]
    origin: Option<String>,
    creation: i64,
    #[serde(default)]
    snapshots: BTreeMap<String, SnapMeta>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SnapMeta {
    uuid: String,
    creation: i64,
}

pub struct DirPool {
    name: String,
    mnt: PathBuf,
    reflink: bool,
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Whether `cp --reflink=always` works in `dir`.
pub fn probe_reflink(dir: &Path) -> bool {
    let a = dir.join(".reflink-probe");
    let b = dir.join(".reflink-probe.copy");
    let ok = std::fs::write(&a, b"x").is_ok()
        && CommandLine::new(tool("cp")).arg("--reflink=always").arg(&a).arg(&b).run().is_ok();
    let _ = std::fs::remove_file(&a);
    let _ = std::fs::remove_file(&b);
    ok
}

/// Bytes allocated under `path`, hard links counted once, `.snapshots` skipped at the top.
fn du(path: &Path, top: bool, seen: &mut std::collections::HashSet<(u64, u64)>) -> u64 {
    let Ok(rd) = std::fs::read_dir(path) else {
        return 0;
    };
    let mut total = 0;
    for entry in rd.flatten() {
        if top && (entry.file_name() == SNAPDIR || entry.file_name() == META) {
            continue;
        }
        let Ok(m) = entry.metadata() else { continue };
        if m.nlink() > 1 && !m.is_dir() && !seen.insert((m.dev(), m.ino())) {
            continue;
        }
        total += m.blocks() * 512;
        if m.is_dir() {
            total += du(&entry.path(), false, seen);
        }
    }
    total
}

impl DirPool {
    pub fn new(name: &str, mountpoint: &Path) -> Self {
        let reflink = probe_reflink(mountpoint);
        DirPool { name: name.to_string(), mnt: mountpoint.to_path_buf(), reflink }
    }

    fn full(&self, n: impl std::fmt::Display) -> String {
        format!("{}/{}", self.name, n)
    }

    fn read_meta(&self, ds: &str) -> Result<Meta> {
        let p = self.mnt.join(ds).join(META);
        let text = std::fs::read_to_string(&p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StorageError::NotFound(self.full(ds)),
            _ => StorageError::io("read", &p, e),
        })?;
        serde_json::from_str(&text).map_err(|e| StorageError::Pool(format!("{} is corrupt: {e}", p.display())))
    }

    fn write_meta(&self, ds: &str, meta: &Meta) -> Result<()> {
        let p = self.mnt.join(ds).join(META);
        let text = serde_json::to_vec_pretty(meta).map_err(|e| StorageError::Pool(e.to_string()))?;
        hull_exec::write_atomic(&p, &text).map_err(|e| StorageError::io("write", &p, e))
    }

    /// Copies the entries of `src` (but hull's own) into the existing directory `dst`.
    fn copy_tree(&self, src: &Path, dst: &Path) -> Result<()> {
        if !self.reflink {
            tracing::warn!(pool = %self.name, "dir backend without reflinks: copying {} byte for byte (slow)", src.display());
        }
        let rd = std::fs::read_dir(src).map_err(|e| StorageError::io("read directory", src, e))?;
        let mut entries = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| StorageError::io("read directory", src, e))?;
            if entry.file_name() != SNAPDIR && entry.file_name() != META {
                entries.push(entry.path());
            }
        }
        if entries.is_empty() {
            return Ok(());
        }
        CommandLine::new(tool("cp"))
            .args(["-a", "--reflink=auto", "-t"])
            .arg(dst)
            .args(entries)
            .run()
            .map(drop)
            .map_err(|e| {
                if e.stderr().contains("No space left") {
                    StorageError::NoSpace { pool: self.name.clone(), op: "copy", path: dst.to_path_buf() }
                } else {
                    e.into()
                }
            })
    }

    fn mkdir(&self, path: &Path, name: String) -> Result<()> {
        std::fs::create_dir(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => StorageError::Exists(name),
            _ => StorageError::io("create directory", path, e),
        })
    }
}

impl Pool for DirPool {
    fn backend(&self) -> PoolBackend {
        PoolBackend::Dir
    }

    fn caps(&self) -> Caps {
        Caps { instant_clone: self.reflink, quota: false, space_accounting: false }
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn mountpoint(&self) -> &Path {
        &self.mnt
    }

    fn exists(&self, ds: &DatasetName) -> bool {
        self.mnt.join(ds.as_str()).join(META).is_file()
    }

    fn create(&self, ds: &DatasetName) -> Result<()> {
        let path = self.mnt.join(ds.as_str());
        self.mkdir(&path, self.full(ds))?;
        let meta =
            Meta { uuid: uuid::Uuid::new_v4().to_string(), origin: None, creation: now(), snapshots: BTreeMap::new() };
        self.write_meta(ds.as_str(), &meta).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&path);
        })
    }

    fn snapshot(&self, snap: &SnapshotName) -> Result<()> {
        let ds = snap.dataset.as_str();
        let mut meta = self.read_meta(ds)?;
        if meta.snapshots.contains_key(&snap.snap) {
            return Err(StorageError::Exists(self.full(snap)));
        }
        let dir = self.mnt.join(ds).join(SNAPDIR);
        std::fs::create_dir_all(&dir).map_err(|e| StorageError::io("create directory", &dir, e))?;
        let tmp = dir.join(format!(".{}.partial", snap.snap));
        let _ = std::fs::remove_dir_all(&tmp);
        self.mkdir(&tmp, self.full(snap))?;
        let done = self.copy_tree(&self.mnt.join(ds), &tmp).and_then(|()| {
            std::fs::rename(&tmp, dir.join(&snap.snap)).map_err(|e| StorageError::io("rename", &tmp, e))
        });
        if let Err(e) = done {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        meta.snapshots.insert(snap.snap.clone(), SnapMeta { uuid: uuid::Uuid::new_v4().to_string(), creation: now() });
        self.write_meta(ds, &meta)
    }

    fn clone_snapshot(&self, snap: &SnapshotName, target: &DatasetName) -> Result<()> {
        let meta = self.read_meta(snap.dataset.as_str())?;
        let origin = meta.snapshots.get(&snap.snap).ok_or_else(|| StorageError::NotFound(self.full(snap)))?;
        let dst = self.mnt.join(target.as_str());
        self.mkdir(&dst, self.full(target))?;
        let src = self.mnt.join(snap.dataset.as_str()).join(SNAPDIR).join(&snap.snap);
        let made = self.copy_tree(&src, &dst).and_then(|()| {
            let meta = Meta {
                uuid: uuid::Uuid::new_v4().to_string(),
                origin: Some(origin.uuid.clone()),
                creation: now(),
                snapshots: BTreeMap::new(),
            };
            self.write_meta(target.as_str(), &meta)
        });
        made.inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&dst);
        })
    }

    fn rename(&self, from: &DatasetName, to: &DatasetName) -> Result<()> {
        if !self.exists(from) {
            return Err(StorageError::NotFound(self.full(from)));
        }
        let (src, dst) = (self.mnt.join(from.as_str()), self.mnt.join(to.as_str()));
        crate::rename_noreplace(&src, &dst).map_err(|e| match e {
            nix::Error::EEXIST => StorageError::Exists(self.full(to)),
            e => StorageError::errno("rename", &src, e),
        })
    }

    fn destroy_dataset(&self, ds: &DatasetName) -> Result<()> {
        let meta = self.read_meta(ds.as_str())?;
        if !meta.snapshots.is_empty() {
            return Err(StorageError::HasSnapshots {
                dataset: self.full(ds),
                snapshots: meta.snapshots.keys().map(|s| self.full(format!("{ds}@{s}"))).collect(),
            });
        }
        let path = self.mnt.join(ds.as_str());
        // Drop the identity first: a crash half way leaves a directory that is no dataset.
        std::fs::remove_file(path.join(META)).map_err(|e| StorageError::io("remove", path.join(META), e))?;
        std::fs::remove_dir_all(&path).map_err(|e| StorageError::io("remove", &path, e))
    }

    fn destroy_snapshot(&self, snap: &SnapshotName) -> Result<()> {
        let ds = snap.dataset.as_str();
        let mut meta = self.read_meta(ds)?;
        if meta.snapshots.remove(&snap.snap).is_none() {
            return Err(StorageError::NotFound(self.full(snap)));
        }
        self.write_meta(ds, &meta)?;
        let path = self.mnt.join(ds).join(SNAPDIR).join(&snap.snap);
        std::fs::remove_dir_all(&path).map_err(|e| StorageError::io("remove", &path, e))
    }

    fn rollback(&self, snap: &SnapshotName) -> Result<()> {
        let ds = snap.dataset.as_str();
        let meta = self.read_meta(ds)?;
        if !meta.snapshots.contains_key(&snap.snap) {
            return Err(StorageError::NotFound(self.full(snap)));
        }
        let path = self.mnt.join(ds);
        let fresh = self.mnt.join(format!(".rollback-{ds}"));
        let _ = std::fs::remove_dir_all(&fresh);
        self.mkdir(&fresh, self.full(snap))?;
        self.copy_tree(&path.join(SNAPDIR).join(&snap.snap), &fresh)?;
        // Identity and snapshots move over; then the two swap.
        for keep in [SNAPDIR, META] {
            std::fs::rename(path.join(keep), fresh.join(keep))
                .map_err(|e| StorageError::io("move", path.join(keep), e))?;
        }
        let old = self.mnt.join(format!(".rolledback-{ds}"));
        std::fs::rename(&path, &old).map_err(|e| StorageError::io("rename", &path, e))?;
        std::fs::rename(&fresh, &path).map_err(|e| StorageError::io("rename", &fresh, e))?;
        std::fs::remove_dir_all(&old).map_err(|e| StorageError::io("remove", &old, e))
    }

    fn list(&self) -> Result<Vec<DatasetInfo>> {
        let rd = std::fs::read_dir(&self.mnt).map_err(|e| StorageError::io("read directory", &self.mnt, e))?;
        let mut names: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.') && self.mnt.join(n).join(META).is_file())
            .collect();
        names.sort();
        let mut by_uuid = std::collections::HashMap::new();
        let mut metas = Vec::new();
        for n in names {
            let Ok(meta) = self.read_meta(&n) else {
                continue;
            };
            for (s, sm) in &meta.snapshots {
                by_uuid.insert(sm.uuid.clone(), format!("{n}@{s}"));
            }
            metas.push((n, meta));
        }
        let mut out = Vec::new();
        for (n, meta) in metas {
            let path = self.mnt.join(&n);
            let referenced = du(&path, true, &mut Default::default());
            let mut snap_total = 0;
            for (s, sm) in &meta.snapshots {
                let size = du(&path.join(SNAPDIR).join(s), false, &mut Default::default());
                snap_total += size;
                out.push(DatasetInfo {
                    name: format!("{n}@{s}"),
                    kind: DatasetKind::Snapshot,
                    used: size,
                    referenced: size,
                    origin: None,
                    quota: None,
                    mountpoint: None,
                    creation: sm.creation,
                });
            }
            out.push(DatasetInfo {
                name: n.clone(),
                kind: DatasetKind::Filesystem,
                used: referenced + snap_total,
                referenced,
                origin: meta.origin.as_ref().and_then(|u| by_uuid.get(u).cloned()),
                quota: None,
                mountpoint: Some(path),
                creation: meta.creation,
            });
        }
        Ok(out)
    }

    fn set_quota(&self, _ds: &DatasetName, _quota: Option<u64>) -> Result<()> {
        Err(StorageError::Unsupported { backend: PoolBackend::Dir, what: "quotas" })
    }

    fn usage(&self) -> Result<PoolUsage> {
        crate::host::statvfs_usage(&self.mnt)
    }
}
