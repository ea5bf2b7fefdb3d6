//! imgadm: images installed into the pool as datasets with an `@final` snapshot, which new
//! instances clone.
//!
//! Install is crash-safe by construction: the image is unpacked into `<uuid>-partial`,
//! snapshotted `@final`, its manifest recorded, and only then renamed to `<uuid>`; every
//! command first removes partials that no live command holds the lock of. An image whose
//! manifest names an `origin` is a clone of the origin's `@final` with its own layer on top.

mod archive;
pub mod build;
pub mod db;
mod error;
pub mod guest;
pub mod progress;
pub mod serve;
pub mod source;

pub use error::{ImgError, Result};

pub use db::SourceTls;
use db::{Db, Record, Source};
use hull_spec::Manifest;
use hull_storage::{DatasetName, Node, Pool, SnapshotName, StorageError, lock};
use sha1::Digest;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use uuid::Uuid;

pub const FINAL: &str = "final";
/// A zvol image's disk, in its dataset (and in every clone of it).
pub const ZVOL_FILE: &str = "disk.raw";

/// Unpacks an image file's bytes into `dst`, as `install` does after verifying them. Public
/// for the fuzzers; installs go through [`Imgadm::install`].
pub fn unpack_image_file(
    compression: hull_spec::Compression,
    data: impl Read,
    dst: &Path,
) -> std::result::Result<(), String> {
    archive::decoder(compression, data).and_then(|r| archive::unpack(r, dst)).map_err(|e| format!("{e:?}"))
}
const PARTIAL: &str = "-partial";
/// How deep an origin chain `import` follows.
pub const MAX_ORIGIN_DEPTH: usize = 16;

/// An installed image: its manifest and what depends on it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Image {
    pub manifest: Manifest,
    pub zpool: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Datasets cloned from its `@final` (instances and child images), `zones/<name>`.
    #[serde(rename = "cloneNames")]
    pub clone_names: Vec<String>,
    pub clones: usize,
}

/// What `import` did.
#[derive(Debug)]
pub enum Imported {
    Installed(Vec<Image>),
    AlreadyInstalled(Box<Image>),
}

pub struct Imgadm {
    node: Node,
    db: Db,
    pool: OnceLock<Box<dyn Pool>>,
}

fn ds(uuid: &Uuid) -> DatasetName {
    // A uuid's text is always a valid dataset name.
    DatasetName::parse(&uuid.to_string()).unwrap_or_else(|_| unreachable!("uuid {uuid} is a valid dataset name"))
}

fn partial(uuid: &Uuid) -> DatasetName {
    DatasetName::parse(&format!("{uuid}{PARTIAL}"))
        .unwrap_or_else(|_| unreachable!("uuid {uuid} is a valid dataset name"))
}

fn final_snap(uuid: &Uuid) -> SnapshotName {
    SnapshotName { dataset: ds(uuid), snap: FINAL.to_string() }
}

/// sha1 and length of everything `r` yields.
fn sha1_of(mut r: impl Read, path: &Path) -> Result<(String, u64)> {
    let mut h = sha1::Sha1::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf).map_err(|e| ImgError::io("read", path, e))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

impl Imgadm {
    pub fn new(node: &Node) -> Imgadm {
        Imgadm { node: node.clone(), db: Db::new(node.root()), pool: OnceLock::new() }
    }

    /// The node's pool (made or mounted on first use), after stale partial installs and
    /// orphaned records are cleared.
    pub fn pool(&self) -> Result<&dyn Pool> {
        if let Some(p) = self.pool.get() {
            return Ok(p.as_ref());
        }
        let pool = self.node.pool()?;
        pool.repair()?;
        self.clean_partials(pool.as_ref())?;
        Ok(self.pool.get_or_init(|| pool).as_ref())
    }

    fn image_lock(&self, uuid: &Uuid) -> Result<lock::LockGuard> {
        lock::try_lock(&self.node.lock_path(&format!("img.{uuid}")))
            .map_err(ImgError::from)?
            .ok_or(ImgError::Busy(*uuid))
    }

    /// Removes `<uuid>-partial` datasets, records without a dataset, and downloads, where no
    /// running command holds the image's lock.
    fn clean_partials(&self, pool: &dyn Pool) -> Result<()> {
        let Ok(rd) = std::fs::read_dir(pool.mountpoint()) else {
            return Ok(());
        };
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(uuid) = name.strip_suffix(PARTIAL).and_then(|u| u.parse::<Uuid>().ok()) else {
                continue;
            };
            let Ok(_guard) = self.image_lock(&uuid) else {
                continue;
            };
            let p = partial(&uuid);
            if pool.exists(&p) {
                tracing::info!(image = %uuid, "removing the remains of an interrupted install");
                hull_storage::destroy(pool, &p, true)?;
            }
        }
        // Records of images whose dataset is gone (a crash before the rename).
        for uuid in self.db.uuids(pool.name())? {
            if !pool.exists(&ds(&uuid))
                && let Ok(_guard) = self.image_lock(&uuid)
            {
                self.db.remove(pool.name(), &uuid)?;
            }
        }
        if let Ok(rd) = std::fs::read_dir(self.db.cache_dir()) {
            for entry in rd.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(uuid) = name.split('.').next().and_then(|u| u.parse::<Uuid>().ok()) else {
                    continue;
                };
                if let Ok(_guard) = self.image_lock(&uuid) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }

    fn installed(&self, pool: &dyn Pool, uuid: &Uuid) -> bool {
        pool.exists(&ds(uuid))
    }

    fn to_image(&self, rec: Record, all: &[hull_storage::DatasetInfo]) -> Image {
        let clone_names: Vec<String> = hull_storage::dependent_clones(all, &rec.manifest.uuid.to_string())
            .into_iter()
            .map(|n| format!("{}/{n}", rec.zpool))
            .collect();
        Image { clones: clone_names.len(), clone_names, manifest: rec.manifest, zpool: rec.zpool, source: rec.source }
    }

    /// Every installed image.
    pub fn list(&self) -> Result<Vec<Image>> {
        let pool = self.pool()?;
        let all = pool.list()?;
        let finals: std::collections::HashSet<&str> =
            all.iter().filter_map(|d| d.name.strip_suffix("@final")).collect();
        let mut out = Vec::new();
        for uuid in self.db.uuids(pool.name())? {
            if !finals.contains(uuid.to_string().as_str()) {
                continue;
            }
            // One unreadable record hides that image (with a warning naming it), not the
            // rest: `imgadm get` of it still says what is wrong.
            match self.db.read(pool.name(), &uuid) {
                Ok(Some(rec)) => out.push(self.to_image(rec, &all)),
                Ok(None) => {}
                Err(e) => tracing::warn!(image = %uuid, "skipping: {e}"),
            }
        }
        Ok(out)
    }

    /// An installed image's manifest, without listing the pool (what `vmadm create` needs).
    pub fn manifest(&self, uuid: &Uuid) -> Result<Manifest> {
        let pool = self.pool()?;
        if !self.installed(pool, uuid) {
            return Err(ImgError::NotInstalled(*uuid));
        }
        Ok(self.db.read(pool.name(), uuid)?.ok_or(ImgError::NotInstalled(*uuid))?.manifest)
    }

    /// One installed image; [`ImgError::NotInstalled`] otherwise.
    pub fn get(&self, uuid: &Uuid) -> Result<Image> {
        let pool = self.pool()?;
        if !self.installed(pool, uuid) {
            return Err(ImgError::NotInstalled(*uuid));
        }
        let rec = self.db.read(pool.name(), uuid)?.ok_or(ImgError::NotInstalled(*uuid))?;
        Ok(self.to_image(rec, &pool.list()?))
    }

    /// Installs an image from a manifest file and an image file on this machine.
    pub fn install(&self, manifest_path: &Path, file: &Path) -> Result<Image> {
        let text =
            std::fs::read_to_string(manifest_path).map_err(|e| ImgError::io("read manifest", manifest_path, e))?;
        let manifest = Manifest::parse(&text)
            .map_err(|source| ImgError::Manifest { path: manifest_path.to_path_buf(), source })?;
        let _guard = self.image_lock(&manifest.uuid)?;
        self.install_locked(&manifest, file, None)?;
        self.get(&manifest.uuid)
    }

    /// Checks the file against the manifest: size first (cheap), then sha1.
    fn verify(&self, manifest: &Manifest, file: &Path) -> Result<()> {
        let uuid = manifest.uuid;
        let want = manifest.file().ok_or(ImgError::NoFile(uuid))?;
        let meta = std::fs::metadata(file).map_err(|e| ImgError::io("open image file", file, e))?;
        let mismatch = |what, expected: String, actual: String| ImgError::FileMismatch {
            uuid,
            path: file.to_path_buf(),
            what,
            expected,
            actual,
        };
        if meta.len() != want.size {
            return Err(mismatch("size", want.size.to_string(), meta.len().to_string()));
        }
        let f = std::fs::File::open(file).map_err(|e| ImgError::io("open image file", file, e))?;
        let pb = progress::bytes(Some(want.size), "verifying");
        let (sha1, _) = sha1_of(pb.wrap_read(f), file)?;
        pb.finish_and_clear();
        if !sha1.eq_ignore_ascii_case(&want.sha1) {
            return Err(mismatch("sha1", want.sha1.clone(), sha1));
        }
        Ok(())
    }

    /// Installs with the image's lock held by the caller.
    fn install_locked(&self, manifest: &Manifest, file: &Path, source: Option<&str>) -> Result<()> {
        let uuid = manifest.uuid;
        let pool = self.pool()?;
        if self.installed(pool, &uuid) {
            return Err(ImgError::AlreadyInstalled(uuid));
        }
        let want = manifest.file().ok_or(ImgError::NoFile(uuid))?;
        // Refuse what cannot be unpacked before reading anything.
        archive::decoder(want.compression, std::io::empty())
            .map_err(|_| ImgError::UnsupportedCompression { uuid, compression: want.compression.as_str() })?;
        if let Some(origin) = manifest.origin
            && !pool.exists(&ds(&origin))
        {
            return Err(ImgError::OriginNotInstalled { uuid, origin });
        }
        self.verify(manifest, file)?;

        let part = partial(&uuid);
        if pool.exists(&part) {
            hull_storage::destroy(pool, &part, true)?; // stale: we hold the lock
        }
        match manifest.origin {
            Some(origin) => pool.clone_snapshot(&final_snap(&origin), &part)?,
            None => pool.create(&part)?,
        }
        // Only root on the host goes into an image's dataset (its clones inherit the mode):
        // the image's set-id files and device nodes are not for host users.
        let top = pool.dataset_path(&part);
        if let Err(e) = std::fs::set_permissions(&top, std::os::unix::fs::PermissionsExt::from_mode(0o700)) {
            let _ = hull_storage::destroy(pool, &part, true);
            return Err(ImgError::io("chmod", &top, e));
        }
        let done = self.fill_partial(pool, manifest, file, &part, source);
        if done.is_err() {
            if let Err(e) = hull_storage::destroy(pool, &part, true) {
                tracing::warn!(image = %uuid, "could not remove {part} after a failed install: {e}");
            }
            let _ = self.db.remove(pool.name(), &uuid);
        }
        done
    }

    fn fill_partial(
        &self,
        pool: &dyn Pool,
        manifest: &Manifest,
        file: &Path,
        part: &DatasetName,
        source: Option<&str>,
    ) -> Result<()> {
        let uuid = manifest.uuid;
        let want = manifest.file().ok_or(ImgError::NoFile(uuid))?;
        let f = std::fs::File::open(file).map_err(|e| ImgError::io("open image file", file, e))?;
        let pb = progress::bytes(Some(want.size), "installing");
        let reader = std::io::BufReader::with_capacity(1 << 20, pb.wrap_read(f));
        let corrupt = |reason: String| ImgError::Corrupt {
            uuid,
            path: file.to_path_buf(),
            compression: want.compression.as_str(),
            reason,
        };
        let unpacked = archive::decoder(want.compression, reader).and_then(|r| {
            if manifest.image_type == hull_spec::manifest::ImageType::Zvol {
                archive::write_disk(r, &pool.dataset_path(part).join(ZVOL_FILE))
            } else {
                archive::unpack(r, &pool.dataset_path(part))
            }
        });
        pb.finish_and_clear();
        match unpacked {
            Ok(()) => {}
            Err(archive::UnpackError::NoSpace) => return Err(ImgError::NoSpace { uuid }),
            Err(archive::UnpackError::Corrupt(reason)) => return Err(corrupt(reason)),
            Err(archive::UnpackError::Unsupported(c)) => {
                return Err(ImgError::UnsupportedCompression { uuid, compression: c });
            }
        }
        if manifest.image_type != hull_spec::manifest::ImageType::Zvol {
            // A zone runs on `root/`: it must be a directory of this dataset, not a link
            // that would put a zone (and hull's writes) on a host path.
            let top = pool.dataset_path(part);
            let kind = hull_exec::tree::Tree::open(&top).and_then(|t| t.kind(Path::new("root")));
            match kind {
                Ok(Some(k)) if k.is_dir() => {}
                Ok(Some(_)) => return Err(corrupt("its root is not a directory (a link or a file)".into())),
                Ok(None) => return Err(corrupt("it has no root directory".into())),
                Err(e) => return Err(corrupt(format!("its root: {e}"))),
            }
        }
        hull_exec::failpoint("img-install-unpacked");
        pool.snapshot(&part.snapshot(FINAL)?).map_err(|e| match e {
            StorageError::NoSpace { .. } => ImgError::NoSpace { uuid },
            e => e.into(),
        })?;
        hull_exec::failpoint("img-install-snapshotted");
        self.forget_served(pool.name(), &uuid);
        self.db.write(&Record {
            manifest: manifest.clone(),
            zpool: pool.name().to_string(),
            source: source.map(Into::into),
        })?;
        hull_exec::failpoint("img-install-recorded");
        pool.rename(part, &ds(&uuid))?;
        Ok(())
    }

    /// Where an installed image's dataset is, when it is a zvol image: its disk.
    pub fn zvol_disk(&self, uuid: &Uuid) -> Result<PathBuf> {
        Ok(self.pool()?.dataset_path(&ds(uuid)).join(ZVOL_FILE))
    }

    /// Deletes an installed image; refused while anything is cloned from it.
    pub fn delete(&self, uuid: &Uuid) -> Result<()> {
        let pool = self.pool()?;
        let _guard = self.image_lock(uuid)?;
        if !self.installed(pool, uuid) {
            return Err(ImgError::NotInstalled(*uuid));
        }
        let all = pool.list()?;
        let clones: Vec<String> = hull_storage::dependent_clones(&all, &uuid.to_string())
            .into_iter()
            .map(|n| format!("{}/{n}", pool.name()))
            .collect();
        if !clones.is_empty() {
            return Err(ImgError::HasClones { uuid: *uuid, clones });
        }
        // Never recursive: a clone made since the check above must stop the delete, not go
        // with it. @final goes first, so a crash half way leaves a dataset that `list` does
        // not show and that the next delete finishes.
        match hull_storage::destroy_snapshot(pool, &final_snap(uuid), false) {
            Ok(_) | Err(StorageError::NotFound(_)) => {}
            Err(StorageError::HasClones { clones, .. }) => return Err(ImgError::HasClones { uuid: *uuid, clones }),
            Err(e) => return Err(e.into()),
        }
        self.forget_served(pool.name(), uuid);
        self.db.remove(pool.name(), uuid)?;
        hull_storage::destroy(pool, &ds(uuid), false)?;
        Ok(())
    }

    /// Images that nothing is cloned from, counting images that would go first; deleted
    /// unless `dry_run`.
    pub fn vacuum(&self, dry_run: bool) -> Result<Vec<Image>> {
        let images = self.list()?;
        let mut gone: Vec<Image> = Vec::new();
        loop {
            let gone_names: Vec<String> = gone.iter().map(|i| format!("{}/{}", i.zpool, i.manifest.uuid)).collect();
            let next: Vec<&Image> = images
                .iter()
                .filter(|i| !gone.iter().any(|g| g.manifest.uuid == i.manifest.uuid))
                .filter(|i| i.clone_names.iter().all(|c| gone_names.contains(c)))
                .collect();
            if next.is_empty() {
                break;
            }
            gone.extend(next.into_iter().cloned());
        }
        if !dry_run {
            for img in &gone {
                self.delete(&img.manifest.uuid)?;
            }
        }
        Ok(gone)
    }

    pub fn sources(&self) -> Result<Vec<Source>> {
        self.db.sources()
    }

    /// Adds a source at the end; false when it was there already. `tls` is a client
    /// certificate, its key and the source's CA (PEM files), for a source that asks for one
    /// (another hull node's API); they are copied, and tried before the source is added.
    pub fn add_source(&self, url: &str, tls: Option<&SourceTls>) -> Result<bool> {
        let url = source::check_url(url)?;
        let _guard = lock::lock(&self.node.lock_path("imgadm-conf"))?;
        let mut list = self.db.sources()?;
        if list.iter().any(|s| s.url == url) {
            return Ok(false);
        }
        let tls = match tls {
            Some(t) => {
                if !url.starts_with("https://") {
                    return Err(ImgError::BadSourceUrl {
                        url,
                        reason: "a client certificate is for https:// sources".into(),
                    });
                }
                source::Client::new(&url, Some(t))?;
                let kept = t.keep_in(&self.db.tls_dir(&url))?;
                Some(kept)
            }
            None => None,
        };
        list.push(Source { url, kind: "imgapi".into(), tls });
        self.db.set_sources(list)?;
        Ok(true)
    }

    /// Removes a source; false when it was not there.
    pub fn del_source(&self, url: &str) -> Result<bool> {
        let url = url.trim_end_matches('/');
        let _guard = lock::lock(&self.node.lock_path("imgadm-conf"))?;
        let mut list = self.db.sources()?;
        let before = list.len();
        list.retain(|s| s.url != url);
        if list.len() == before {
            return Ok(false);
        }
        let _ = std::fs::remove_dir_all(self.db.tls_dir(url));
        self.db.set_sources(list)?;
        Ok(true)
    }

    fn clients(&self) -> Result<Vec<source::Client>> {
        let list = self.db.sources()?;
        if list.is_empty() {
            return Err(ImgError::NoSources);
        }
        list.iter().map(|s| source::Client::new(&s.url, s.tls.as_ref())).collect()
    }

    /// Images the sources offer, each with the source it came from; the first source that
    /// lists a uuid wins.
    pub fn avail(&self) -> Result<Vec<(Manifest, String)>> {
        let mut out: Vec<(Manifest, String)> = Vec::new();
        let mut errors = Vec::new();
        let clients = self.clients()?;
        for c in &clients {
            match c.list() {
                Ok(list) => {
                    for m in list {
                        if !out.iter().any(|(o, _)| o.uuid == m.uuid) {
                            out.push((m, c.url.clone()));
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if out.is_empty()
            && errors.len() == clients.len()
            && let Some(e) = errors.pop()
        {
            return Err(e);
        }
        for e in &errors {
            tracing::warn!("{e}");
        }
        Ok(out)
    }

    /// The manifest of an image from the first source that has it.
    pub fn show(&self, uuid: &Uuid) -> Result<(Manifest, String)> {
        let mut last = None;
        for c in self.clients()? {
            match c.manifest(uuid) {
                Ok(Some(m)) => return Ok((m, c.url.clone())),
                Ok(None) => {}
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(ImgError::NotInSources(*uuid)))
    }

    /// Imports an image from the sources, origins first.
    pub fn import(&self, uuid: &Uuid) -> Result<Imported> {
        let pool = self.pool()?;
        if self.installed(pool, uuid) {
            return Ok(Imported::AlreadyInstalled(Box::new(self.get(uuid)?)));
        }
        // Walk the origin chain to the first installed ancestor.
        let mut chain = Vec::new();
        let mut next = Some(*uuid);
        while let Some(u) = next {
            if self.installed(pool, &u) {
                break;
            }
            if chain.len() >= MAX_ORIGIN_DEPTH {
                return Err(ImgError::OriginTooDeep { uuid: *uuid, max: MAX_ORIGIN_DEPTH });
            }
            if chain.iter().any(|(m, _): &(Manifest, String)| m.uuid == u) {
                return Err(ImgError::Source {
                    url: String::new(),
                    reason: format!("origin chain of {uuid} loops at {u}"),
                });
            }
            let (m, src) = self.show(&u)?;
            next = m.origin;
            chain.push((m, src));
        }
        let mut done = Vec::new();
        for (m, src) in chain.into_iter().rev() {
            self.download_and_install(&m, &src)?;
            done.push(self.get(&m.uuid)?);
        }
        Ok(Imported::Installed(done))
    }

    fn download_and_install(&self, m: &Manifest, src: &str) -> Result<()> {
        let uuid = m.uuid;
        let _guard = self.image_lock(&uuid)?;
        if self.installed(self.pool()?, &uuid) {
            return Ok(()); // another command finished it while we fetched its ancestors
        }
        let want = m.file().ok_or(ImgError::NoFile(uuid))?;
        let cache = self.db.cache_dir();
        std::fs::create_dir_all(&cache).map_err(|e| ImgError::io("create directory", &cache, e))?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{uuid}.file."))
            .tempfile_in(&cache)
            .map_err(|e| ImgError::io("create download file in", &cache, e))?;
        let tls = self.db.sources()?.into_iter().find(|s| s.url == src).and_then(|s| s.tls);
        let client = source::Client::new(src, tls.as_ref())?;
        let (body, _len) = client.file(&uuid)?;
        let pb = progress::bytes(Some(want.size), &format!("{}@{}", m.name, m.version));
        // Never read more than the manifest promises (plus one byte, to notice).
        let mut limited = pb.wrap_read(body).take(want.size + 1);
        let mut out = std::io::BufWriter::new(tmp.as_file());
        let copied = std::io::copy(&mut limited, &mut out);
        pb.finish_and_clear();
        let n = copied
            .map_err(|e| ImgError::Source { url: src.to_string(), reason: format!("GET /images/{uuid}/file: {e}") })?;
        std::io::Write::flush(&mut out).map_err(|e| ImgError::io("write", tmp.path(), e))?;
        drop(out);
        if n != want.size {
            return Err(ImgError::FileMismatch {
                uuid,
                path: tmp.path().to_path_buf(),
                what: "size",
                expected: want.size.to_string(),
                actual: if n > want.size { format!("more than {}", want.size) } else { n.to_string() },
            });
        }
        self.install_locked(m, tmp.path(), Some(src))
    }
}
