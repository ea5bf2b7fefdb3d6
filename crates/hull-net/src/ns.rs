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

/// Makes a user namespace whose ids are `map` (`/proc/PID/uid_map`'s format, used for gids
/// too) and a network namespace owned by it, kept by bind mounts at `userns` and `netns`:
/// a zone with its own user namespace can join a network namespace only if its user
/// namespace owns it. The loopback is brought up. Existing ones are replaced.
///
/// A child unshares both at once (the kernel makes the user namespace first, and the network
/// namespace belongs to it) and waits; this process writes its maps, binds its namespaces and
/// lets it go. A child, not a thread: a process with threads cannot enter a user namespace.
pub fn create_with_userns(netns: &Path, userns: &Path, map: &str) -> Result<()> {
    remove(netns)?;
    remove(userns)?;
    for p in [netns, userns] {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io("create directory", dir, e))?;
        }
        std::fs::File::create(p).map_err(|e| io("create", p, e))?;
    }
    let made = (|| {
        let (rd, wr) = nix::unistd::pipe().map_err(|e| io("pipe for", netns, e))?;
        let (rd2, wr2) = nix::unistd::pipe().map_err(|e| io("pipe for", netns, e))?;
        // SAFETY: the child calls only unshare, write, read and _exit.
        match unsafe { nix::unistd::fork() }.map_err(|e| io("fork for", netns, e))? {
            nix::unistd::ForkResult::Child => {
                drop(rd);
                drop(wr2);
                let ok = unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET).is_ok();
                let _ = nix::unistd::write(&wr, if ok { b"1" } else { b"0" });
                let mut b = [0u8; 1];
                let _ = nix::unistd::read(&rd2, &mut b);
                // SAFETY: ends the child without the parent's destructors.
                unsafe { libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(wr);
                drop(rd2);
                let r = (|| {
                    let mut b = [0u8; 1];
                    if nix::unistd::read(&rd, &mut b).map_err(|e| io("wait for", netns, e))? != 1 || b[0] != b'1' {
                        return Err(io("unshare the namespaces for", netns, "refused"));
                    }
                    let proc = std::path::PathBuf::from(format!("/proc/{child}"));
                    for (f, text) in [("uid_map", map), ("setgroups", "deny"), ("gid_map", map)] {
                        std::fs::write(proc.join(f), text).map_err(|e| io("write", &proc.join(f), e))?;
                    }
                    for (ns, target) in [("ns/user", userns), ("ns/net", netns)] {
                        mount(Some(&proc.join(ns)), target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                            .map_err(|e| io("bind-mount the namespace at", target, e))?;
                    }
                    Ok(())
                })();
                drop(wr2);
                let _ = nix::sys::wait::waitpid(child, None);
                r
            }
        }
    })();
    let made = made.and_then(|()| {
        run_in(netns, || {
            let mut nl = crate::nl::Netlink::open()?;
            if let Some(lo) = nl.link("lo")? {
                nl.set_up(lo.index, true)?;
            }
            Ok(())
        })
    });
    if made.is_err() {
        let _ = remove(netns);
        let _ = remove(userns);
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
