//! A node: one directory tree (`$ROOT`) and the objects it owns, named under its prefix.

use crate::host::{self, PoolSpec};
use crate::{Pool, Result, StorageError, lock};
use hull_spec::NodeConfig;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Node {
    root: PathBuf,
    prefix: String,
}

impl Node {
    /// A node rooted at `root` whose kernel objects are named `prefix...`.
    pub fn new(root: &Path, prefix: &str) -> Result<Node> {
        if prefix.is_empty() || prefix.len() > 8 || !prefix.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(StorageError::Pool(format!(
                "invalid node prefix {prefix:?}: 1 to 8 letters or digits (kernel link names are short)"
            )));
        }
        // Absolute, once: a relative root stored in the node's config (the pool's file)
        // would name another place from another directory; `pool destroy` run elsewhere
        // deleted a different file and left the pool.
        let root = std::path::absolute(root)
            .map_err(|e| StorageError::Pool(format!("invalid node root {}: {e}", root.display())))?;
        Ok(Node { root, prefix: prefix.to_string() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join("etc/hull/node.json")
    }

    /// `$ROOT/var/hull`: runtime state, locks, the default pool's file.
    pub fn var_dir(&self) -> PathBuf {
        self.root.join("var/hull")
    }

    pub fn lock_path(&self, name: &str) -> PathBuf {
        self.var_dir().join("locks").join(format!("{name}.lock"))
    }

    /// The pool's mountpoint, `$ROOT/zones`.
    pub fn zones_dir(&self) -> PathBuf {
        self.root.join("zones")
    }

    pub fn default_pool_file(&self) -> PathBuf {
        self.var_dir().join("zones.img")
    }

    pub fn load_config(&self) -> Result<NodeConfig> {
        let p = self.config_path();
        match std::fs::read_to_string(&p) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| StorageError::Pool(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NodeConfig::default()),
            Err(e) => Err(StorageError::io("read", &p, e)),
        }
    }

    /// Writes the config atomically.
    pub fn save_config(&self, cfg: &NodeConfig) -> Result<()> {
        let p = self.config_path();
        let text = serde_json::to_vec_pretty(cfg).map_err(|e| StorageError::Pool(e.to_string()))?;
        hull_exec::write_atomic(&p, &text).map_err(|e| StorageError::io("write", &p, e))
    }

    /// Creates the pool that `spec` describes and records it.
    pub fn create_pool(&self, spec: &PoolSpec) -> Result<hull_spec::PoolConfig> {
        let _lock = lock::lock(&self.lock_path("pool"))?;
        let mut cfg = self.load_config()?;
        if let Some(p) = &cfg.pool {
            return Err(StorageError::Pool(format!("this node already has a pool ({} backend)", p.backend)));
        }
        let pool = host::create(spec, &self.zones_dir(), &self.default_pool_file())?;
        cfg.pool = Some(pool.clone());
        if let Err(e) = self.save_config(&cfg) {
            let _ = host::destroy(&pool, &self.zones_dir());
            return Err(e);
        }
        Ok(pool)
    }

    /// The node's pool, ready to use: made with the embedded default when the node has none
    /// yet, mounted again when it was configured but is not mounted (after a reboot).
    pub fn pool(&self) -> Result<Box<dyn Pool>> {
        let cfg = self.load_config()?;
        let pool = match cfg.pool {
            Some(p) => {
                if !host::is_imported(&p, &self.zones_dir()) {
                    let _lock = lock::lock(&self.lock_path("pool"))?;
                    host::import(&p, &self.zones_dir())?;
                }
                p
            }
            None => {
                let made = self.create_pool(&PoolSpec::default());
                match made {
                    Ok(p) => {
                        tracing::info!(file = %self.default_pool_file().display(), "created the default pool");
                        p
                    }
                    // Another command made it while we waited for the lock.
                    Err(e) => match self.load_config()?.pool {
                        Some(p) => p,
                        None => return Err(e),
                    },
                }
            }
        };
        host::open(&pool, &self.zones_dir())
    }

    /// The pool if one is configured and mounted; never creates or mounts.
    pub fn existing_pool(&self) -> Result<Option<Box<dyn Pool>>> {
        match self.load_config()?.pool {
            Some(p) if host::is_imported(&p, &self.zones_dir()) => Ok(Some(host::open(&p, &self.zones_dir())?)),
            _ => Ok(None),
        }
    }

    pub fn import_pool(&self) -> Result<hull_spec::PoolConfig> {
        let _lock = lock::lock(&self.lock_path("pool"))?;
        let cfg = self.load_config()?.pool.ok_or_else(|| StorageError::Pool("this node has no pool".into()))?;
        host::import(&cfg, &self.zones_dir())?;
        Ok(cfg)
    }

    pub fn destroy_pool(&self) -> Result<()> {
        let _lock = lock::lock(&self.lock_path("pool"))?;
        let mut cfg = self.load_config()?;
        let pool = cfg.pool.take().ok_or_else(|| StorageError::Pool("this node has no pool".into()))?;
        host::destroy(&pool, &self.zones_dir())?;
        self.save_config(&cfg)
    }
}
