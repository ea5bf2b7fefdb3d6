//! Making, mounting and removing the pool itself.
//!
//! The embedded default is a sparse file `$ROOT/var/hull/zones.img` formatted btrfs and
//! mounted (through a loop device the kernel frees on unmount) at `$ROOT/zones`.

use crate::btrfs::BtrfsPool;
use crate::dir::DirPool;
use crate::zfs::{HostZfs, ZfsPool};
use crate::{Pool, PoolUsage, Result, StorageError, mountinfo};
use hull_exec::{CommandLine, tool};
use hull_spec::{PoolBackend, PoolConfig};
use std::path::{Path, PathBuf};

pub const POOL_NAME: &str = "zones";
/// btrfs needs this much for a usable filesystem with its metadata duplicated.
pub const MIN_BTRFS_SIZE: u64 = 128 << 20;
/// The embedded default's size, unless the host filesystem has less room.
pub const DEFAULT_SIZE: u64 = 64 << 30;

/// What the operator asked for in `hull pool create`.
#[derive(Debug, Clone, Default)]
pub struct PoolSpec {
    pub backend: Option<PoolBackend>,
    pub file: Option<PathBuf>,
    pub size: Option<u64>,
    pub device: Option<PathBuf>,
    pub dir: Option<PathBuf>,
    pub zpool: Option<String>,
}

pub fn statvfs_usage(path: &Path) -> Result<PoolUsage> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| StorageError::errno("statvfs", path, e))?;
    let frsize = st.fragment_size();
    let size = st.blocks() * frsize;
    let free = st.blocks_available() * frsize;
    let used = size.saturating_sub(st.blocks_free() * frsize);
    Ok(PoolUsage { size, used, free })
}

fn mount(args: &[&str], source: &Path, target: &Path) -> Result<()> {
    CommandLine::new(tool("mount")).args(args).arg(source).arg(target).run().map(drop).map_err(Into::into)
}

fn unmount(target: &Path) -> Result<()> {
    if mountinfo::mount_at(target).is_none() {
        return Ok(());
    }
    CommandLine::new(tool("umount")).arg(target).run().map(drop).map_err(Into::into)
}

/// Opens a pool that is mounted.
pub fn open(cfg: &PoolConfig, mnt: &Path) -> Result<Box<dyn Pool>> {
    Ok(match cfg.backend {
        PoolBackend::Btrfs => Box::new(BtrfsPool::new(&cfg.name, mnt)),
        PoolBackend::Dir => Box::new(DirPool::new(&cfg.name, mnt)),
        PoolBackend::Zfs => {
            let zpool =
                cfg.zpool.as_deref().ok_or_else(|| StorageError::Pool("zfs pool config has no zpool".into()))?;
            Box::new(ZfsPool::new(&cfg.name, zpool, mnt, Box::new(HostZfs)))
        }
    })
}

/// Whether the pool is mounted at `mnt`.
pub fn is_imported(cfg: &PoolConfig, mnt: &Path) -> bool {
    match cfg.backend {
        PoolBackend::Zfs | PoolBackend::Btrfs => mountinfo::is_mountpoint(mnt),
        PoolBackend::Dir => cfg.dir.is_none() || mountinfo::is_mountpoint(mnt),
    }
}

/// Makes a new pool and mounts it at `mnt`; undoes what it did when a step fails.
pub fn create(spec: &PoolSpec, mnt: &Path, default_file: &Path) -> Result<PoolConfig> {
    let backend = spec.backend.unwrap_or(if spec.dir.is_some() {
        PoolBackend::Dir
    } else if spec.zpool.is_some() {
        PoolBackend::Zfs
    } else {
        PoolBackend::Btrfs
    });
    if mountinfo::mount_at(mnt).is_some() {
        return Err(StorageError::Pool(format!("{} is already a mountpoint", mnt.display())));
    }
    let check = |ok: bool, what: &str| -> Result<()> {
        if ok { Ok(()) } else { Err(StorageError::Pool(format!("{what} does not apply to the {backend} backend"))) }
    };
    check(
        backend == PoolBackend::Btrfs || (spec.file.is_none() && spec.size.is_none() && spec.device.is_none()),
        "--file/--size/--device",
    )?;
    check(backend == PoolBackend::Dir || spec.dir.is_none(), "--dir")?;
    check(backend == PoolBackend::Zfs || spec.zpool.is_none(), "--zpool")?;
    std::fs::create_dir_all(mnt).map_err(|e| StorageError::io("create directory", mnt, e))?;
    let cfg = PoolConfig {
        backend,
        name: POOL_NAME.to_string(),
        file: None,
        device: None,
        dir: None,
        zpool: None,
        size: None,
    };
    let made = match backend {
        PoolBackend::Btrfs => create_btrfs(spec, mnt, default_file, cfg),
        PoolBackend::Dir => create_dir(spec, mnt, cfg),
        PoolBackend::Zfs => create_zfs(spec, mnt, cfg),
    };
    if made.is_err() {
        let _ = std::fs::remove_dir(mnt);
    }
    made
}

fn create_btrfs(spec: &PoolSpec, mnt: &Path, default_file: &Path, mut cfg: PoolConfig) -> Result<PoolConfig> {
    let (source, file) = match &spec.device {
        Some(dev) => {
            if spec.file.is_some() || spec.size.is_some() {
                return Err(StorageError::Pool("--device takes neither --file nor --size".into()));
            }
            (dev.clone(), None)
        }
        None => {
            let file = spec.file.clone().unwrap_or_else(|| default_file.to_path_buf());
            if file.exists() {
                return Err(StorageError::Pool(format!(
                    "{} already exists: use `hull pool import` to mount it, or remove it",
                    file.display()
                )));
            }
            let dir = file.parent().unwrap_or(Path::new("/"));
            std::fs::create_dir_all(dir).map_err(|e| StorageError::io("create directory", dir, e))?;
            let size = match spec.size {
                Some(s) => s,
                None => DEFAULT_SIZE.min(statvfs_usage(dir)?.free / 10 * 9),
            };
            if size < MIN_BTRFS_SIZE {
                return Err(StorageError::Pool(format!(
                    "pool size {} is below the btrfs minimum of {}",
                    hull_spec::size::format_size(size),
                    hull_spec::size::format_size(MIN_BTRFS_SIZE)
                )));
            }
            let f = std::fs::File::create_new(&file).map_err(|e| StorageError::io("create", &file, e))?;
            let sized = f.set_len(size).map_err(|e| StorageError::io("size", &file, e));
            if let Err(e) = sized {
                let _ = std::fs::remove_file(&file);
                return Err(e);
            }
            cfg.size = Some(size);
            (file.clone(), Some(file))
        }
    };
    let undo_file = || {
        if let Some(f) = &file {
            let _ = std::fs::remove_file(f);
        }
    };
    let made = (|| {
        // Without -f mkfs.btrfs refuses a device that already holds a filesystem.
        CommandLine::new(tool("mkfs.btrfs")).args(["-q", "-L", POOL_NAME]).arg(&source).run()?;
        mount(
            if file.is_some() { &["-t", "btrfs", "-o", "loop,noatime"] } else { &["-t", "btrfs", "-o", "noatime"] },
            &source,
            mnt,
        )?;
        if let Err(e) = crate::btrfs::enable_quotas(mnt) {
            let _ = unmount(mnt);
            return Err(e);
        }
        Ok(())
    })();
    if let Err(e) = made {
        undo_file();
        return Err(e);
    }
    cfg.file = file;
    cfg.device = spec.device.clone();
    Ok(cfg)
}

fn create_dir(spec: &PoolSpec, mnt: &Path, mut cfg: PoolConfig) -> Result<PoolConfig> {
    if let Some(dir) = &spec.dir {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io("create directory", dir, e))?;
        mount(&["--bind"], dir, mnt)?;
        cfg.dir = Some(dir.clone());
    }
    let pool = DirPool::new(POOL_NAME, mnt);
    if !pool.caps().instant_clone {
        tracing::warn!(
            "the dir backend on this filesystem has no reflinks: every snapshot and clone is a full copy (slow)"
        );
    }
    Ok(cfg)
}

fn create_zfs(spec: &PoolSpec, mnt: &Path, mut cfg: PoolConfig) -> Result<PoolConfig> {
    let zpool = spec.zpool.clone().ok_or_else(|| StorageError::Pool("the zfs backend needs --zpool NAME".into()))?;
    CommandLine::new(tool("zfs")).arg("set").arg(format!("mountpoint={}", mnt.display())).arg(&zpool).run()?;
    cfg.zpool = Some(zpool);
    Ok(cfg)
}

/// Mounts an existing pool again (after a reboot).
pub fn import(cfg: &PoolConfig, mnt: &Path) -> Result<()> {
    if is_imported(cfg, mnt) {
        return Ok(());
    }
    std::fs::create_dir_all(mnt).map_err(|e| StorageError::io("create directory", mnt, e))?;
    match cfg.backend {
        PoolBackend::Btrfs => match (&cfg.file, &cfg.device) {
            (Some(file), _) => mount(&["-t", "btrfs", "-o", "loop,noatime"], file, mnt),
            (None, Some(dev)) => mount(&["-t", "btrfs", "-o", "noatime"], dev, mnt),
            (None, None) => Err(StorageError::Pool("btrfs pool config names neither file nor device".into())),
        },
        PoolBackend::Dir => match &cfg.dir {
            Some(dir) => mount(&["--bind"], dir, mnt),
            None => Ok(()),
        },
        PoolBackend::Zfs => {
            let zpool = cfg.zpool.as_deref().unwrap_or_default();
            let top = zpool.split('/').next().unwrap_or(zpool);
            if CommandLine::new(tool("zpool")).args(["list", "-H", top]).run().is_err() {
                CommandLine::new(tool("zpool")).args(["import", top]).run()?;
            }
            CommandLine::new(tool("zfs")).args(["mount", "-a"]).run().map(drop).map_err(Into::into)
        }
    }
}

/// Unmounts the pool and removes what hull made for it: the loop file, the dir pool's
/// contents, the zfs backend's datasets. A block device is unmounted and left as it is.
pub fn destroy(cfg: &PoolConfig, mnt: &Path) -> Result<()> {
    match cfg.backend {
        PoolBackend::Btrfs => {
            unmount(mnt)?;
            if let Some(file) = &cfg.file {
                match std::fs::remove_file(file) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StorageError::io("remove", file, e)),
                }
            }
        }
        PoolBackend::Dir => {
            if is_imported(cfg, mnt) {
                let pool = DirPool::new(&cfg.name, mnt);
                for d in pool.list()?.iter().filter(|d| !d.name.contains('@')) {
                    crate::destroy(&pool, &crate::DatasetName::parse(&d.name)?, true).or_else(|e| match e {
                        StorageError::NotFound(_) => Ok(Vec::new()),
                        e => Err(e),
                    })?;
                }
            }
            if cfg.dir.is_some() {
                unmount(mnt)?;
            }
        }
        PoolBackend::Zfs => {
            let pool = open(cfg, mnt)?;
            for d in pool.list()?.iter().filter(|d| !d.name.contains('@')) {
                crate::destroy(pool.as_ref(), &crate::DatasetName::parse(&d.name)?, true).or_else(|e| match e {
                    StorageError::NotFound(_) => Ok(Vec::new()),
                    e => Err(e),
                })?;
            }
        }
    }
    match std::fs::remove_dir(mnt) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io("remove mountpoint", mnt, e)),
    }
}
