//! What imgadm keeps beside the pool: a manifest per installed image and the sources.
//!
//! ```text
//! $ROOT/var/imgadm/images/<pool>-<uuid>.json   {"manifest": {...}, "zpool": "zones", "source": URL}
//! $ROOT/var/imgadm/imgadm.conf                 {"sources": [{"url": URL, "type": "imgapi"}]}
//! $ROOT/var/imgadm/cache/                      downloads in progress
//! ```
//!
//! An image is installed when its dataset has an `@final` snapshot and its manifest is here.

use crate::{ImgError, Result};
use hull_spec::Manifest;
use serde::{Deserialize, Serialize};
use sha1::Digest;
use std::path::{Path, PathBuf};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub manifest: Manifest,
    pub zpool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub url: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// A client certificate to show the source (another hull node's API asks for one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<SourceTls>,
}

/// The files a source's TLS needs, copied under `var/imgadm/tls/` when the source is added
/// (root's only), so the source keeps working when the originals go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceTls {
    /// The client's certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA the source's server certificate must chain to (PEM); only it is trusted.
    pub ca: PathBuf,
}

impl SourceTls {
    /// Copies the three files into `dir` (made root's only, 0700; the files 0600) and
    /// returns where they now are.
    pub fn keep_in(&self, dir: &Path) -> Result<SourceTls> {
        std::fs::create_dir_all(dir).map_err(|e| ImgError::io("create directory", dir, e))?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| ImgError::io("chmod", dir, e))?;
        let kept = SourceTls { cert: dir.join("client.crt"), key: dir.join("client.key"), ca: dir.join("ca.crt") };
        for (from, to) in [(&self.cert, &kept.cert), (&self.key, &kept.key), (&self.ca, &kept.ca)] {
            let data = std::fs::read(from).map_err(|e| ImgError::io("read", from, e))?;
            hull_exec::write_atomic_mode(to, &data, 0o600).map_err(|e| ImgError::io("write", to, e))?;
        }
        Ok(kept)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    #[serde(default)]
    sources: Vec<Source>,
}

pub struct Db {
    dir: PathBuf,
}

pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    hull_exec::write_atomic(path, data).map_err(|e| ImgError::io("write", path, e))
}

impl Db {
    pub fn new(root: &Path) -> Db {
        Db { dir: root.join("var/imgadm") }
    }

    fn record_path(&self, pool: &str, uuid: &Uuid) -> PathBuf {
        self.dir.join("images").join(format!("{pool}-{uuid}.json"))
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }

    pub fn read(&self, pool: &str, uuid: &Uuid) -> Result<Option<Record>> {
        let p = self.record_path(pool, uuid);
        match std::fs::read_to_string(&p) {
            Ok(text) => {
                let rec = serde_json::from_str(&text).map_err(|e| ImgError::Manifest {
                    path: p.clone(),
                    source: hull_spec::ManifestError::Syntax(e.to_string()),
                })?;
                Ok(Some(rec))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ImgError::io("read", p, e)),
        }
    }

    pub fn write(&self, rec: &Record) -> Result<()> {
        let text = serde_json::to_vec_pretty(rec).map_err(|e| ImgError::Build(e.to_string()))?;
        write_atomic(&self.record_path(&rec.zpool, &rec.manifest.uuid), &text)
    }

    pub fn remove(&self, pool: &str, uuid: &Uuid) -> Result<()> {
        let p = self.record_path(pool, uuid);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ImgError::io("remove", p, e)),
        }
    }

    /// Uuids of every record for `pool`.
    pub fn uuids(&self, pool: &str) -> Result<Vec<Uuid>> {
        let dir = self.dir.join("images");
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ImgError::io("read directory", dir, e)),
        };
        let prefix = format!("{pool}-");
        Ok(rd
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.strip_prefix(&prefix)?.strip_suffix(".json")?.parse().ok()
            })
            .collect())
    }

    /// Where a source's TLS files are kept.
    pub fn tls_dir(&self, url: &str) -> PathBuf {
        let h = sha1::Sha1::digest(url.as_bytes());
        self.dir.join("tls").join(&hex::encode(h)[..16])
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.join("imgadm.conf")
    }

    pub fn sources(&self) -> Result<Vec<Source>> {
        let p = self.conf_path();
        match std::fs::read_to_string(&p) {
            Ok(text) => serde_json::from_str::<Conf>(&text)
                .map(|c| c.sources)
                .map_err(|e| ImgError::Build(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(ImgError::io("read", p, e)),
        }
    }

    pub fn set_sources(&self, sources: Vec<Source>) -> Result<()> {
        let text = serde_json::to_vec_pretty(&Conf { sources }).map_err(|e| ImgError::Build(e.to_string()))?;
        write_atomic(&self.conf_path(), &text)
    }
}
