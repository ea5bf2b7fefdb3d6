//! What a node serves of its installed images to other nodes (the node API's IMGAPI paths,
//! which `imgadm import` on another node reads).
//!
//! No copy of an image's file is kept after install, and the file an image came in is not
//! what its dataset holds any more (an origin's layer, a compression). So the node serves a
//! file made from the image's read-only `@final` snapshot as it streams: a tar of `root/`
//! (for an image with an origin, the layer over the origin's `@final`, with whiteouts, as
//! `imgadm create -i` writes it), or a zvol image's disk, compressed with zstd. The stream is
//! the same bytes every time for the same snapshot (entries in name order, no times but
//! mtimes, single-threaded zstd at a fixed level), so its sha1 and size, which the served
//! manifest must carry before the file is asked for, are computed once, by making the
//! stream into a hasher, and kept in `var/imgadm/served/<pool>-<uuid>.json` until the image
//! is deleted or installed again. The importing node checks them as every import does.

use crate::{FINAL, ImgError, Imgadm, Result, ZVOL_FILE, archive, ds, final_snap};
use hull_spec::manifest::{ImageFile, ImageType};
use hull_spec::{Compression, Manifest};
use serde::{Deserialize, Serialize};
use sha1::Digest as _;
use std::io::Write;
use std::path::PathBuf;
use uuid::Uuid;

/// How served files are compressed.
pub const SERVED_COMPRESSION: Compression = Compression::Zstd;

/// A served file's digest, and what it was computed for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Served {
    /// hull's version (the stream's writer) and the installed file's sha1.
    key: String,
    sha1: String,
    size: u64,
}

/// Counts and hashes, writing nowhere.
struct Hasher {
    sha1: sha1::Sha1,
    len: u64,
}

impl Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.sha1.update(buf);
        self.len += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn key(m: &Manifest) -> String {
    let sha1 = m.file().map(|f| f.sha1.as_str()).unwrap_or("");
    format!("{}:{sha1}", env!("CARGO_PKG_VERSION"))
}

impl Imgadm {
    fn served_path(&self, pool: &str, uuid: &Uuid) -> PathBuf {
        self.node.root().join("var/imgadm/served").join(format!("{pool}-{uuid}.json"))
    }

    /// Forgets a served file's digest (the image is going, or coming again).
    pub(crate) fn forget_served(&self, pool: &str, uuid: &Uuid) {
        let _ = std::fs::remove_file(self.served_path(pool, uuid));
    }

    /// The manifest this node serves for an installed image: its own, with `files` saying
    /// what [`Imgadm::write_served`] streams. The first call for an image makes the stream
    /// once to learn its digest.
    pub fn served_manifest(&self, uuid: &Uuid) -> Result<Manifest> {
        let pool = self.pool()?;
        let mut m = self.manifest(uuid)?;
        let path = self.served_path(pool.name(), uuid);
        let want = key(&m);
        let cached: Option<Served> =
            std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).filter(|s: &Served| s.key == want);
        let served = match cached {
            Some(s) => s,
            None => {
                let mut h = Hasher { sha1: sha1::Sha1::new(), len: 0 };
                self.write_served(uuid, &mut h)?;
                let s = Served { key: want, sha1: hex::encode(h.sha1.finalize()), size: h.len };
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| ImgError::io("create directory", dir, e))?;
                }
                crate::db::write_atomic(&path, &serde_json::to_vec(&s).unwrap_or_default())?;
                s
            }
        };
        m.files = vec![ImageFile {
            sha1: served.sha1,
            size: served.size,
            compression: SERVED_COMPRESSION,
            dataset_guid: None,
            stor: None,
            digest: None,
            uncompressed_digest: None,
        }];
        Ok(m)
    }

    /// Streams the file that [`Imgadm::served_manifest`] describes into `w`, from the
    /// image's `@final` (and its origin's), without a copy on disk.
    pub fn write_served(&self, uuid: &Uuid, w: &mut dyn Write) -> Result<()> {
        let pool = self.pool()?;
        let m = self.manifest(uuid)?;
        let unsupported =
            || ImgError::Build(format!("pool {} shows no snapshot as a directory: cannot serve images", pool.name()));
        let snap = pool.snapshot_path(&final_snap(uuid)).ok_or_else(unsupported)?;
        let fail = |e: std::io::Error| ImgError::io("serve image", &snap, e);
        let enc = archive::encoder(SERVED_COMPRESSION, w).map_err(fail)?;
        let enc = if m.image_type == ImageType::Zvol {
            let disk = snap.join(ZVOL_FILE);
            let mut f = std::fs::File::open(&disk).map_err(|e| ImgError::io("open", &disk, e))?;
            let mut enc = enc;
            std::io::copy(&mut f, &mut enc).map_err(fail)?;
            enc
        } else {
            let origin = match m.origin {
                Some(o) => {
                    let p = pool
                        .snapshot_path(&ds(&o).snapshot(FINAL).map_err(ImgError::from)?)
                        .ok_or_else(unsupported)?
                        .join("root");
                    Some(p)
                }
                None => None,
            };
            let shared = pool.backend() != hull_storage::PoolBackend::Dir;
            let mut tar = tar::Builder::new(enc);
            tar.follow_symlinks(false);
            tar.mode(tar::HeaderMode::Complete);
            crate::build::write_tree(&mut tar, &snap.join("root"), origin.as_deref(), shared).map_err(fail)?;
            tar.into_inner().map_err(fail)?
        };
        enc.finish().map_err(fail)
    }
}
