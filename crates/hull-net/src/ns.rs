//! Network namespaces that outlive their processes: a zone's namespace is made, bind-mounted
//! at a file and given its NICs before the zone's init runs, and removed when the zone stops.

use crate::{NetError, Result};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use std::path::Path;

fn io(op: &str, path: &Path, e: impl std::fmt::Display) -> NetError {
    NetError::Netns { op: op.to_string(), path: path.to_path_buf(), reason: e.to_string() }
}

/// Whether `path` holds a namespace (an nsfs bind mount) rather than a plain file.
pub fn exists(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == NSFS_MAGIC)
}

/// Makes a new, empty network namespace kept alive by a bind mount at `path`, with its
/// loopback up. An existing one is left as it is.
pub fn create(path: &Path) -> Result<()> {
    if exists(path) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("create directory", dir, e))?;
    }
    std::fs::File::create(path).map_err(|e| io("create", path, e))?;
    let target = path.to_path_buf();
    // unshare(2) moves only the calling thread; a thread of our own keeps the caller where it was.
    let made = std::thread::spawn(move || -> Result<()> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| io("unshare the network namespace for", &target, e))?;
        mount(Some("/proc/thread-self/ns/net"), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| io("bind-mount the network namespace at", &target, e))?;
        let mut nl = crate::nl::Netlink::open()?;
        if let Some(lo) = nl.link("lo")? {
            nl.set_up(lo.index, true)?;
        }
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| Err(io("make the namespace", path, "thread panicked")));
    if made.is_err() {
        let _ = remove(path);
    }
    made
}

/// Unmounts and removes the namespace at `path`; its links go with it once no process is
/// left inside. A missing one is fine.
pub fn remove(path: &Path) -> Result<()> {
    if exists(path) {
        umount2(path, MntFlags::MNT_DETACH).map_err(|e| io("unmount", path, e))?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", path, e)),
        _ => Ok(()),
    }
}

/// Makes `cmd` run inside the namespace `ns` (an open namespace file, which must stay open
/// until the command has started).
pub fn exec_in(cmd: &mut std::process::Command, ns: &std::fs::File) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = ns.as_raw_fd();
    // SAFETY: the hook runs in the child between fork and exec; setns is async-signal-safe
    // and uses only the fd, which the caller keeps open.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs `f` on a thread inside the namespace at `path` (a bind mount or `/proc/PID/ns/net`).
pub fn run_in<T: Send + 'static>(path: &Path, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let file = std::fs::File::open(path).map_err(|e| io("open", path, e))?;
    let p = path.to_path_buf();
    std::thread::spawn(move || {
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| io("enter", &p, e))?;
        f()
    })
    .join()
    .unwrap_or_else(|_| Err(io("work in", path, "thread panicked")))
}
