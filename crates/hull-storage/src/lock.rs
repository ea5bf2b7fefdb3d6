//! Advisory locks on files (flock). The kernel drops a lock when its holder dies, so a crash
//! never leaves a stale lock behind.

use crate::{Result, StorageError};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// A held lock; released on drop.
#[derive(Debug)]
pub struct LockGuard {
    _lock: Flock<File>,
    path: PathBuf,
}

impl LockGuard {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn open(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io("create lock directory", dir, e))?;
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| StorageError::io("open lock", path, e))
}

/// Takes the lock if nobody holds it; `Ok(None)` when another process does.
pub fn try_lock(path: &Path) -> Result<Option<LockGuard>> {
    match Flock::lock(open(path)?, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(LockGuard { _lock: lock, path: path.to_path_buf() })),
        Err((_, nix::Error::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(StorageError::errno("lock", path, e)),
    }
}

/// Waits for the lock.
pub fn lock(path: &Path) -> Result<LockGuard> {
    match Flock::lock(open(path)?, FlockArg::LockExclusive) {
        Ok(lock) => Ok(LockGuard { _lock: lock, path: path.to_path_buf() }),
        Err((_, e)) => Err(StorageError::errno("lock", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("locks/x.lock");
        let first = try_lock(&p).expect("lock").expect("free");
        // flock locks belong to the open file description: a second open conflicts.
        assert!(try_lock(&p).expect("lock").is_none());
        drop(first);
        assert!(try_lock(&p).expect("lock").is_some());
    }
}
