//! A zone in its own user namespace: zone root is an unprivileged host id.
//!
//! The zone's ids 0..65536 map to the host's `base..base+65536`, a range no other VM on the
//! node holds. Its root filesystem stays as the image wrote it (root-owned files stay uid 0 on
//! disk): the zone sees it through an idmapped mount (`open_tree` + `mount_setattr` with
//! `MOUNT_ATTR_IDMAP`), which shows the on-disk ids shifted into the zone's range and
//! writes the zone's ids back unshifted. Nothing is rewritten at clone or at boot, and the
//! range can differ from one boot to the next.
//!
//! The user namespace is made by the host with the zone's network namespace, which it owns
//! (`hull_net::ns::create_with_userns`): a user namespace may join only a network namespace
//! it owns, and one it owns lets the zone mount its own sysfs. The zone's runtime joins it
//! by path; the idmapped root takes its mapping from it, and is mounted by the host in the
//! zone's bundle, unmounted when the zone stops.
//!
//! The syscalls are called through `libc::syscall`: `rustix` (already in the tree) has
//! `open_tree` and `move_mount` but not `mount_setattr`, and the three belong together.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Ids per zone: the 16-bit range a Linux distribution expects (nobody is 65534).
pub const SIZE: u32 = 65536;
/// The first host id handed to zones, and how many zones can have a range at once: host
/// ids from 1,000,000,000 up (`/etc/subuid` ranges and LXC/Incus's usually sit far below),
/// ending below 2^31.
pub const FIRST: u32 = 1_000_000_000;
pub const SLOTS: u32 = (i32::MAX as u32 - FIRST) / SIZE;

/// The `uid_map` line of the range whose zone root is host id `base`.
pub fn map(base: u32) -> String {
    format!("0 {base} {SIZE}\n")
}

/// The host id of zone root in slot `slot`.
pub fn base(slot: u32) -> u32 {
    FIRST + slot * SIZE
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Mounts `src` at `dest` (a directory) with its ids shifted as `userns` maps them.
pub fn mount_idmapped(src: &Path, dest: &Path, userns: impl AsFd) -> io::Result<()> {
    let s = cpath(src)?;
    let d = cpath(dest)?;
    // SAFETY: open_tree takes a NUL-terminated path and flags; it returns a new descriptor
    // that OwnedFd then owns.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            s.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a descriptor open_tree just returned to us alone.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_fd().as_raw_fd() as u64,
    };
    let empty = c"";
    // SAFETY: mount_setattr reads `attr` (its size given) on the detached tree's descriptor.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: move_mount attaches the detached tree (by descriptor) at the NUL-terminated
    // destination.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            d.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unmounts whatever is mounted at `dest` (detached, so a busy mount goes once its last user
/// does); nothing there is fine.
pub fn unmount(dest: &Path) {
    while hull_exec::mountinfo::is_mountpoint(dest) {
        if nix::mount::umount2(dest, nix::mount::MntFlags::MNT_DETACH).is_err() {
            break;
        }
    }
}

/// Hands zone root what it needs of the zone's cgroups: in the hierarchies without
/// controllers (systemd's own tree in `name=systemd`, the hybrid `unified`) the directory and
/// the files that move processes and make children, as systemd delegates a subtree; in
/// those with controllers only the files that move processes (`zlogin`'s runtime, once in
/// the zone's user namespace, places the command there itself). The controllers' files stay
/// the host's: a zone cannot raise its own caps.
pub fn delegate_cgroups(cgroup: &str, base: u32) -> io::Result<()> {
    let rel = cgroup.trim_start_matches('/');
    let own = |p: &Path| match std::os::unix::fs::chown(p, Some(base), Some(base)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    };
    for h in crate::cgroup::hierarchies() {
        let dir = h.mountpoint.join(rel);
        std::fs::create_dir_all(&dir)?;
        for f in ["cgroup.procs", "tasks"] {
            own(&dir.join(f))?;
        }
        if !h.controllers {
            own(&dir)?;
            for f in ["cgroup.subtree_control", "cgroup.threads", "notify_on_release"] {
                own(&dir.join(f))?;
            }
        }
    }
    Ok(())
}

/// Moves this process into the zone's user namespace (a zlogin'd command's runtime, which
/// joins the zone's other namespaces itself but not that one). It must have no threads.
pub fn enter(userns: &Path) -> io::Result<()> {
    let f = std::fs::File::open(userns)?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWUSER).map_err(io::Error::from)
}
