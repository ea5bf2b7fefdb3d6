//! The one way hull touches a tree that a tenant or an image controls.
//!
//! A zone's root, an image being unpacked and an origin's clone are written by people we do
//! not trust: any name in them may be a symlink planted to make the host act on a path of
//! the attacker's choosing. Every host-side path inside such a tree is resolved through a
//! [`Tree`]: libpathrs's `Root` (openat2 with `RESOLVE_IN_ROOT`, with a checked userspace
//! fallback) with `RESOLVE_NO_SYMLINKS`, so that a symlink anywhere on the way is an error,
//! never followed. The last component is never followed either: a planted link is replaced,
//! not written through. Metadata is set on the opened descriptor (`fchown`, `fchmod`),
//! never by path.

use pathrs::flags::{OpenFlags, ResolverFlags};
use pathrs::{InodeType, Root};
use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// A directory tree whose contents are not trusted; its top is.
#[derive(Debug)]
pub struct Tree {
    root: Root,
    top: PathBuf,
}

fn io_err(e: pathrs::error::Error) -> io::Error {
    // libpathrs keeps the errno where there is one; say all of it, and say the usual
    // refusal plainly.
    let text = crate::error_chain(&e);
    match e.kind() {
        pathrs::error::ErrorKind::OsError(Some(n)) if n == rustix::io::Errno::LOOP.raw_os_error() => {
            io::Error::new(io::ErrorKind::InvalidInput, format!("the path goes through a symbolic link ({text})"))
        }
        pathrs::error::ErrorKind::OsError(Some(n)) => io::Error::new(io::Error::from_raw_os_error(n).kind(), text),
        _ => io::Error::other(text),
    }
}

/// Connects to the unix socket at `path`, whose directory is the host's but whose last name
/// a tenant may have replaced (a VM's run directory is bound into its zone): the socket
/// itself is reached, never where a link in its place points ([`Tree::connect_unix`]).
pub fn connect_socket(path: &Path) -> io::Result<std::os::unix::net::UnixStream> {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => Tree::open(dir)?.connect_unix(Path::new(name)),
        _ => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a socket path", path.display()))),
    }
}

/// A path made only of plain names (no `..`, no root); `.` is allowed and ignored.
pub fn plain_relative(p: &Path) -> bool {
    p.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

fn check(rel: &Path) -> io::Result<()> {
    if plain_relative(rel) {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} leaves its tree", rel.display())))
    }
}

impl Tree {
    /// Opens `top`, which must be a real directory (not a symlink): the caller's trusted
    /// handle on the tree.
    pub fn open(top: &Path) -> io::Result<Tree> {
        let m = std::fs::symlink_metadata(top)?;
        if !m.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory (a link or a file)", top.display()),
            ));
        }
        let root = Root::open(top).map_err(io_err)?.with_resolver_flags(ResolverFlags::NO_SYMLINKS);
        Ok(Tree { root, top: top.to_path_buf() })
    }

    /// Opens `top` to read it as the zone whose root it is would: links inside are followed
    /// the zone's way (an absolute target starts at `top`, `..` stops there), so nothing
    /// outside `top` is reached. For reading only; writes use [`Tree::open`]'s stricter rule.
    pub fn open_scoped(top: &Path) -> io::Result<Tree> {
        let t = Tree::open(top)?;
        Ok(Tree { root: t.root.with_resolver_flags(ResolverFlags::empty()), top: t.top })
    }

    /// What is at `rel`, resolved by this tree's rule (a scoped tree follows its links
    /// inside it; a strict one refuses them).
    pub fn metadata(&self, rel: &Path) -> io::Result<std::fs::Metadata> {
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        check(rel)?;
        let h = self.root.resolve(rel).map_err(io_err)?;
        File::from(std::os::fd::OwnedFd::from(h)).metadata()
    }

    /// Reads the regular file at `rel`, resolved by this tree's rule (a scoped tree follows
    /// its links inside it).
    pub fn read_to_string(&self, rel: &Path) -> io::Result<String> {
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        check(rel)?;
        let mut f = self.root.resolve(rel).and_then(|h| h.reopen(OpenFlags::O_RDONLY)).map_err(io_err)?;
        if !f.metadata()?.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a file", rel.display())));
        }
        let mut s = String::new();
        std::io::Read::read_to_string(&mut f, &mut s)?;
        Ok(s)
    }

    /// The target of the link at `rel`.
    pub fn readlink(&self, rel: &Path) -> io::Result<PathBuf> {
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        check(rel)?;
        self.root.readlink(rel).map_err(io_err)
    }

    /// Opens the subdirectory `rel` as a tree of its own, refusing links on the way to it and
    /// at it.
    pub fn subtree(&self, rel: &Path) -> io::Result<Tree> {
        check(rel)?;
        let h = self.root.resolve_nofollow(rel).map_err(io_err)?;
        let f = h.reopen(OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY).map_err(|e| {
            io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory: {}", self.top.join(rel).display(), io_err(e)),
            )
        })?;
        drop(f);
        let root = Root::from_fd(std::os::fd::OwnedFd::from(h)).with_resolver_flags(ResolverFlags::NO_SYMLINKS);
        Ok(Tree { root, top: self.top.join(rel) })
    }

    /// Where the tree is, for messages.
    pub fn path(&self) -> &Path {
        &self.top
    }

    /// The libpathrs root, for callers that create inodes of other kinds.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// What is at `rel`, without following a link there: `None` when nothing is.
    pub fn kind(&self, rel: &Path) -> io::Result<Option<std::fs::FileType>> {
        check(rel)?;
        match self.root.resolve_nofollow(rel) {
            Ok(h) => {
                let f = File::from(std::os::fd::OwnedFd::from(h));
                Ok(Some(f.metadata()?.file_type()))
            }
            Err(e) => {
                let e = io_err(e);
                if e.kind() == io::ErrorKind::NotFound { Ok(None) } else { Err(e) }
            }
        }
    }

    /// Makes `rel` and its missing parents as directories of mode `mode`.
    pub fn mkdir_all(&self, rel: &Path, mode: u32) -> io::Result<()> {
        check(rel)?;
        if rel.components().all(|c| c == Component::CurDir) {
            return Ok(());
        }
        self.root.mkdir_all(rel, &Permissions::from_mode(mode)).map(drop).map_err(io_err)
    }

    /// Opens the directory `rel` for reading (listing, `fchown`).
    pub fn open_dir(&self, rel: &Path) -> io::Result<File> {
        check(rel)?;
        self.root
            .resolve_nofollow(rel)
            .and_then(|h| h.reopen(OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY))
            .map_err(io_err)
    }

    /// Opens the regular file `rel` for reading; a link there is an error.
    pub fn open_file(&self, rel: &Path) -> io::Result<File> {
        self.open_regular(rel, OpenFlags::O_RDONLY)
    }

    /// Opens the regular file `rel` for reading and writing (to resize a disk the tree's
    /// owner can reach); a link anywhere on the way, there included, is an error.
    pub fn open_file_rw(&self, rel: &Path) -> io::Result<File> {
        self.open_regular(rel, OpenFlags::O_RDWR)
    }

    fn open_regular(&self, rel: &Path, mode: OpenFlags) -> io::Result<File> {
        check(rel)?;
        let h = self.root.resolve_nofollow(rel).map_err(io_err)?;
        // The type from the path handle, before any open: a link is not a file, and a FIFO
        // or a device is never opened (opening a FIFO waits for a writer that may never come).
        let kind = rustix::fs::FileType::from_raw_mode(rustix::fs::fstat(&h)?.st_mode);
        if kind != rustix::fs::FileType::RegularFile {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a file", rel.display())));
        }
        h.reopen(mode | OpenFlags::O_NOFOLLOW).map_err(io_err)
    }

    /// Removes `rel` and everything below it; a link is removed, never followed. Nothing
    /// there is fine.
    pub fn remove_all(&self, rel: &Path) -> io::Result<()> {
        check(rel)?;
        match self.kind(rel)? {
            None => Ok(()),
            Some(_) => self.root.remove_all(rel).map_err(io_err),
        }
    }

    /// Creates a new regular file at `rel` (whatever was there is removed first) and returns
    /// it open for writing.
    pub fn create_file(&self, rel: &Path, mode: u32) -> io::Result<File> {
        check(rel)?;
        self.remove_all(rel)?;
        self.root
            .create_file(
                rel,
                OpenFlags::O_WRONLY | OpenFlags::O_EXCL | OpenFlags::O_NOFOLLOW,
                &Permissions::from_mode(mode),
            )
            .map_err(io_err)
    }

    /// Replaces `rel` with a file holding `data`: written beside it, synced, renamed over it,
    /// so the tree's owner sees the old file or the new one, never a half.
    pub fn write_file(&self, rel: &Path, data: &[u8], mode: u32) -> io::Result<()> {
        self.write_renamed(rel, data, mode, true)
    }

    /// [`Tree::write_file`] without waiting for the disk: for a file hull writes again
    /// whenever it is lost (a zone's `/etc/hostname` and `/etc/resolv.conf` at boot).
    pub fn replace_file(&self, rel: &Path, data: &[u8], mode: u32) -> io::Result<()> {
        self.write_renamed(rel, data, mode, false)
    }

    fn write_renamed(&self, rel: &Path, data: &[u8], mode: u32, durable: bool) -> io::Result<()> {
        check(rel)?;
        let name = rel.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        let tmp = rel.with_file_name(format!(".{}.hull-tmp.{}", name.to_string_lossy(), std::process::id()));
        let mut f = self.create_file(&tmp, mode)?;
        let written = f.write_all(data).and_then(|()| {
            rustix::fs::fchmod(&f, rustix::fs::Mode::from_raw_mode(mode))?;
            if durable { f.sync_all() } else { Ok(()) }
        });
        drop(f);
        let done = written.and_then(|()| {
            // A directory in the way cannot be renamed over.
            if self.kind(rel)?.is_some_and(|k| k.is_dir()) {
                self.remove_all(rel)?;
            }
            self.root.rename(&tmp, rel, pathrs::flags::RenameFlags::empty()).map_err(io_err)
        });
        if done.is_err() {
            let _ = self.remove_all(&tmp);
        }
        done
    }

    /// Renames `from` to `to` within the tree; a link on either path's way is an error (a
    /// link at `from` itself is moved, not followed).
    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        check(from)?;
        check(to)?;
        self.root.rename(from, to, pathrs::flags::RenameFlags::empty()).map_err(io_err)
    }

    /// Creates a symlink at `rel` pointing to `target` (not checked: it is never followed
    /// by the host).
    pub fn symlink(&self, rel: &Path, target: &Path) -> io::Result<()> {
        check(rel)?;
        self.remove_all(rel)?;
        self.root.create(rel, &InodeType::Symlink(target.to_path_buf())).map_err(io_err)
    }

    /// Sets the owner of whatever is at `rel` (a link itself, not what it points to).
    pub fn chown(&self, rel: &Path, uid: u32, gid: u32) -> io::Result<()> {
        let fd = self.handle(rel)?;
        rustix::fs::chownat(
            &fd,
            "",
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            rustix::fs::AtFlags::EMPTY_PATH | rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    }

    /// Connects to the unix socket `rel` in this tree: the socket itself, never where a link
    /// in its place points. A zone that can write the directory of a socket hull connects to
    /// (qemu's monitor, a console, a relayed VNC socket) could otherwise send hull to any
    /// socket on the host (another VM's monitor, a container engine's).
    pub fn connect_unix(&self, rel: &Path) -> io::Result<std::os::unix::net::UnixStream> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::FileTypeExt;
        let fd = self.handle(rel)?;
        let meta = File::from(fd.try_clone()?).metadata()?;
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a socket", rel.display())));
        }
        // connect(2) through the descriptor's magic link reaches the inode it holds.
        std::os::unix::net::UnixStream::connect(format!("/proc/self/fd/{}", fd.as_raw_fd()))
    }

    /// Opens whatever is at `rel` as an `O_PATH` descriptor, without following it.
    pub fn handle(&self, rel: &Path) -> io::Result<std::os::fd::OwnedFd> {
        check(rel)?;
        self.root.resolve_nofollow(rel).map(std::os::fd::OwnedFd::from).map_err(io_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_rename_goes_through_no_link() {
        let host = tempfile::tempdir().expect("tempdir");
        let zone = tempfile::tempdir().expect("tempdir");
        std::fs::write(host.path().join("disk2.raw"), b"host").expect("host file");
        // The zone made its disks directory a link to a host directory.
        symlink(host.path(), zone.path().join("disks")).expect("link");
        let t = Tree::open(zone.path()).expect("tree");
        assert!(t.rename(Path::new("disks/disk2.raw"), Path::new("disks/disk1.raw")).is_err());
        assert!(host.path().join("disk2.raw").exists() && !host.path().join("disk1.raw").exists());
        std::fs::create_dir(zone.path().join("real")).expect("dir");
        std::fs::write(zone.path().join("real/a"), b"a").expect("a");
        t.rename(Path::new("real/a"), Path::new("real/b")).expect("rename inside");
        assert!(zone.path().join("real/b").exists());
    }

    #[test]
    fn a_socket_is_reached_only_where_it_is() {
        let host = tempfile::tempdir().expect("tempdir");
        let zone = tempfile::tempdir().expect("tempdir");
        // A host socket the zone must not reach, and the zone's own.
        let _host_sock = std::os::unix::net::UnixListener::bind(host.path().join("engine.sock")).expect("bind");
        let own = std::os::unix::net::UnixListener::bind(zone.path().join("qmp.sock")).expect("bind");
        symlink(host.path().join("engine.sock"), zone.path().join("vnc.sock")).expect("link");
        std::fs::write(zone.path().join("file.sock"), b"").expect("file");
        let t = Tree::open(zone.path()).expect("tree");
        t.connect_unix(Path::new("qmp.sock")).expect("its own socket");
        assert!(own.accept().is_ok());
        assert!(t.connect_unix(Path::new("vnc.sock")).is_err(), "followed a link to a host socket");
        assert!(t.connect_unix(Path::new("file.sock")).is_err());
        assert!(t.connect_unix(Path::new("../x.sock")).is_err());
    }

    #[test]
    fn links_are_never_followed() {
        let host = tempfile::tempdir().expect("tempdir");
        let victim = host.path().join("victim");
        std::fs::create_dir(&victim).expect("mkdir");
        std::fs::write(victim.join("file"), b"host").expect("write");
        let top = host.path().join("tree");
        std::fs::create_dir(&top).expect("mkdir");
        symlink(&victim, top.join("dirlink")).expect("symlink");
        symlink(victim.join("file"), top.join("filelink")).expect("symlink");
        symlink("../victim", top.join("rel")).expect("symlink");
        let t = Tree::open(&top).expect("open");

        assert!(t.write_file(Path::new("dirlink/file"), b"tenant", 0o644).is_err());
        assert!(t.write_file(Path::new("rel/file"), b"tenant", 0o644).is_err());
        assert!(t.remove_all(Path::new("dirlink/file")).is_err());
        assert!(t.open_file(Path::new("filelink")).is_err());
        assert!(t.mkdir_all(Path::new("dirlink/sub"), 0o755).is_err());
        assert!(t.subtree(Path::new("dirlink")).is_err());
        assert!(t.write_file(Path::new("../victim/file"), b"x", 0o644).is_err());
        // The last component is replaced, not written through.
        t.write_file(Path::new("filelink"), b"tenant", 0o644).expect("replace");
        t.remove_all(Path::new("dirlink")).expect("remove link");
        assert_eq!(std::fs::read(victim.join("file")).expect("read"), b"host");
        assert!(victim.is_dir());
        assert!(!top.join("dirlink").exists());
        assert_eq!(std::fs::read(top.join("filelink")).expect("read"), b"tenant");
        // Read the zone's way: an absolute link stays inside.
        std::fs::create_dir_all(top.join("usr/sbin")).expect("mkdir");
        symlink("usr/sbin", top.join("sbin")).expect("symlink");
        symlink("/lib/systemd/systemd", top.join("usr/sbin/init")).expect("symlink");
        let z = Tree::open_scoped(&top).expect("open");
        assert_eq!(z.readlink(Path::new("/sbin/init")).expect("readlink"), Path::new("/lib/systemd/systemd"));
        assert!(z.readlink(Path::new("dirlink/file")).is_err());
        // A link as the top itself is refused.
        assert!(Tree::open(&top.join("rel")).is_err());
    }
}
