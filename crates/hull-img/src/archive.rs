//! Image files: a tar stream of a dataset's contents, compressed with gzip, zstd or none.
//!
//! Unpacking takes untrusted input: every name is resolved inside the destination without
//! following a symlink (`hull_exec::tree`), and OCI-style whiteouts let an incremental image remove what
//! its origin had: `.wh.NAME` removes `NAME`, `.wh..wh..opq` empties its directory.

use hull_exec::tree::{Tree, plain_relative};
use hull_spec::Compression;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Why unpacking stopped.
#[derive(Debug)]
pub enum UnpackError {
    /// The archive is malformed (truncated, bad header, bad compression).
    Corrupt(String),
    /// The destination is full or over its quota.
    NoSpace,
    Unsupported(&'static str),
}

pub fn decoder<'a, R: Read + 'a>(c: Compression, r: R) -> Result<Box<dyn Read + 'a>, UnpackError> {
    Ok(match c {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(r).map_err(|e| UnpackError::Corrupt(e.to_string()))?)
        }
        Compression::None => Box::new(r),
        Compression::Bzip2 | Compression::Xz => return Err(UnpackError::Unsupported(c.as_str())),
    })
}

pub fn encoder<'a, W: Write + 'a>(c: Compression, w: W) -> io::Result<Box<dyn FinishWrite + 'a>> {
    Ok(match c {
        Compression::Gzip => Box::new(flate2::write::GzEncoder::new(w, flate2::Compression::default())),
        Compression::Zstd => Box::new(zstd::stream::write::Encoder::new(w, 3)?),
        Compression::None => Box::new(Plain(w)),
        Compression::Bzip2 | Compression::Xz => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("compression {} is not supported", c.as_str()),
            ));
        }
    })
}

/// A writer that must be told when the stream ends (compressors write their trailer then).
pub trait FinishWrite: Write {
    fn finish(self: Box<Self>) -> io::Result<()>;
}

impl<W: Write> FinishWrite for flate2::write::GzEncoder<W> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        (*self).finish()?.flush()
    }
}

impl<W: Write> FinishWrite for zstd::stream::write::Encoder<'_, W> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        (*self).finish()?.flush()
    }
}

/// An uncompressed stream.
struct Plain<W>(W);

impl<W: Write> Write for Plain<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> FinishWrite for Plain<W> {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.0.flush()
    }
}

fn classify(e: io::Error) -> UnpackError {
    match e.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => UnpackError::NoSpace,
        _ => {
            // The tar crate wraps the cause; say all of it.
            UnpackError::Corrupt(hull_exec::error_chain(&e))
        }
    }
}

/// Writes a zvol image's raw disk to `dst`, sparse: runs of zeros become holes, so a 2 GB
/// disk with little on it takes little space. A qcow2 stream is converted to raw with
/// `qemu-img convert`, so every clone of the image is a plain raw disk.
pub fn write_disk<R: Read>(mut reader: R, dst: &Path) -> Result<(), UnpackError> {
    use std::io::{Seek, SeekFrom};
    let io = |e: io::Error| {
        if matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded) {
            UnpackError::NoSpace
        } else {
            UnpackError::Corrupt(e.to_string())
        }
    };
    let mut out = std::fs::File::create(dst).map_err(io)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut total: u64 = 0;
    let mut first = true;
    loop {
        let mut n = 0;
        while n < buf.len() {
            match reader.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(UnpackError::Corrupt(e.to_string())),
            }
        }
        if n == 0 {
            break;
        }
        if first && n >= 4 && &buf[..4] == b"QFI\xfb" {
            // qcow2: kept as it came, then converted to the raw disk clones share.
            drop(out);
            return write_qcow2(&buf[..n], reader, dst);
        }
        first = false;
        if buf[..n].iter().all(|b| *b == 0) {
            out.seek(SeekFrom::Current(n as i64)).map_err(io)?;
        } else {
            out.write_all(&buf[..n]).map_err(io)?;
        }
        total += n as u64;
    }
    out.set_len(total).map_err(io)?;
    out.sync_all().map_err(io)?;
    Ok(())
}

fn write_qcow2<R: Read>(head: &[u8], mut reader: R, dst: &Path) -> Result<(), UnpackError> {
    let tmp = dst.with_extension("qcow2");
    let copied = (|| -> io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(head)?;
        io::copy(&mut reader, &mut f)?;
        f.sync_all()
    })();
    let converted = copied.map_err(|e| UnpackError::Corrupt(e.to_string())).and_then(|()| {
        hull_exec::CommandLine::new(hull_exec::tool("qemu-img"))
            .arg("convert")
            .args(["-f", "qcow2", "-O", "raw"])
            .arg(&tmp)
            .arg(dst)
            .run()
            .map(drop)
            .map_err(|e| UnpackError::Corrupt(format!("qcow2 to raw: {e}")))
    });
    let _ = std::fs::remove_file(&tmp);
    converted
}

/// Unpacks a tar stream into `dst`, keeping owners, modes, times and xattrs.
///
/// Every name is resolved through [`Tree`], never following a symlink: not one the archive
/// made a moment ago, not one the origin image holds. An entry whose parent is a link, a
/// whiteout reaching through one, a hard link leaving the tree: each makes the image corrupt,
/// and nothing outside `dst` is read, written, chowned or removed. Device nodes are made as
/// the image has them: a zone cannot open them (its device cgroup allows only its own short
/// list, and its `/dev` is a tmpfs), and the host keeps datasets at mode 0700, so no host
/// user reaches them either.
pub fn unpack<R: Read>(reader: R, dst: &Path) -> Result<(), UnpackError> {
    let tree = Tree::open(dst).map_err(classify)?;
    let mut ar = tar::Archive::new(reader);
    let mut count = 0usize;
    let mut dir_times: Vec<(PathBuf, u64)> = Vec::new();
    for entry in ar.entries().map_err(classify)? {
        let mut entry = entry.map_err(classify)?;
        let path = entry.path().map_err(classify)?.into_owned();
        count += 1;
        let bad = |why: &str| UnpackError::Corrupt(format!("entry {}: {why}", path.display()));
        if !plain_relative(&path) {
            return Err(bad("points outside the image"));
        }
        if path.components().all(|c| c == Component::CurDir) {
            continue; // "./": the destination itself
        }
        let in_tree = |e: io::Error| match classify(e) {
            UnpackError::Corrupt(why) => bad(&why),
            other => other,
        };
        let parent = path.parent().unwrap_or(Path::new(""));
        if let Some(name) = path.file_name().and_then(|n| n.to_str())
            && name.starts_with(WHITEOUT)
        {
            whiteout(&tree, parent, name).map_err(in_tree)?;
            continue;
        }
        tree.mkdir_all(parent, 0o755).map_err(in_tree)?;
        let h = entry.header();
        let kind = h.entry_type();
        let mode = h.mode().map_err(classify)? & 0o7777;
        let owner = (h.uid().map_err(classify)?, h.gid().map_err(classify)?);
        let mtime = h.mtime().map_err(classify)?;
        let ids = (
            u32::try_from(owner.0).map_err(|_| bad("uid out of range"))?,
            u32::try_from(owner.1).map_err(|_| bad("gid out of range"))?,
        );
        use tar::EntryType as T;
        match kind {
            T::Regular | T::Continuous | T::GNUSparse => {
                let xattrs = xattrs_of(&mut entry).map_err(classify)?;
                let mut f = tree.create_file(&path, 0o600).map_err(in_tree)?;
                io::copy(&mut entry, &mut f).map_err(classify)?;
                finish(&f, ids, mode, mtime, &xattrs).map_err(in_tree)?;
            }
            T::Directory => {
                let xattrs = xattrs_of(&mut entry).map_err(classify)?;
                // A directory that is there stays (an incremental image's entry for a
                // directory its origin has); anything else in the way goes.
                if !tree.kind(&path).map_err(in_tree)?.is_some_and(|k| k.is_dir()) {
                    tree.remove_all(&path).map_err(in_tree)?;
                    tree.mkdir_all(&path, 0o700).map_err(in_tree)?;
                }
                let d = tree.open_dir(&path).map_err(in_tree)?;
                finish(&d, ids, mode, mtime, &xattrs).map_err(in_tree)?;
                dir_times.push((path.clone(), mtime));
            }
            T::Symlink => {
                let target = entry.link_name().map_err(classify)?.ok_or_else(|| bad("a symlink without a target"))?;
                tree.symlink(&path, &target).map_err(in_tree)?;
                tree.chown(&path, ids.0, ids.1).map_err(in_tree)?;
                let dir = tree.open_dir(parent).map_err(in_tree)?;
                if let Some(name) = path.file_name() {
                    rustix::fs::utimensat(&dir, name, &times(mtime), rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| in_tree(e.into()))?;
                }
            }
            T::Link => {
                let target = entry.link_name().map_err(classify)?.ok_or_else(|| bad("a hard link without a target"))?;
                if !plain_relative(&target) {
                    return Err(bad("a hard link to outside the image"));
                }
                tree.remove_all(&path).map_err(in_tree)?;
                tree.root()
                    .create(&path, &pathrs::InodeType::Hardlink(target.into_owned()))
                    .map_err(|e| bad(&format!("hard link: {e}")))?;
            }
            T::Fifo | T::Char | T::Block => {
                let perm = std::fs::Permissions::from_mode(mode & 0o777);
                let dev = || -> Result<u64, UnpackError> {
                    let major = h.device_major().map_err(classify)?.unwrap_or(0);
                    let minor = h.device_minor().map_err(classify)?.unwrap_or(0);
                    Ok(rustix::fs::makedev(major, minor))
                };
                let inode = match kind {
                    T::Char => pathrs::InodeType::CharacterDevice(perm, dev()?),
                    T::Block => pathrs::InodeType::BlockDevice(perm, dev()?),
                    _ => pathrs::InodeType::Fifo(perm),
                };
                tree.remove_all(&path).map_err(in_tree)?;
                tree.root().create(&path, &inode).map_err(|e| bad(&format!("{kind:?}: {e}")))?;
                tree.chown(&path, ids.0, ids.1).map_err(in_tree)?;
            }
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => {}
            other => return Err(bad(&format!("entry type {other:?} is not supported"))),
        }
    }
    if count == 0 {
        return Err(UnpackError::Corrupt("the archive holds no entries".into()));
    }
    // Directories' times last: writing into them moved their mtime.
    for (path, mtime) in dir_times.into_iter().rev() {
        if let Ok(d) = tree.open_dir(&path) {
            let _ = rustix::fs::futimens(&d, &times(mtime));
        }
    }
    Ok(())
}

/// `.wh.NAME` removes `NAME` from `parent`; `.wh..wh..opq` empties `parent`. Neither
/// follows a link: a parent that is one is an error, a `NAME` that is one is removed itself.
fn whiteout(tree: &Tree, parent: &Path, name: &str) -> io::Result<()> {
    let corrupt = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    if name == OPAQUE {
        match tree.kind(parent)? {
            None => return Ok(()),
            Some(k) if !k.is_dir() => {
                return Err(corrupt(format!("opaque whiteout in {}, which is not a directory", parent.display())));
            }
            Some(_) => {}
        }
        let dir = tree.open_dir(parent)?;
        let mut names = Vec::new();
        for e in rustix::fs::Dir::read_from(&dir)? {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(std::ffi::OsStr::from_bytes(n).to_os_string());
            }
        }
        for n in names {
            tree.remove_all(&parent.join(n))?;
        }
        return Ok(());
    }
    let victim = &name[WHITEOUT.len()..];
    if victim.is_empty() || victim == "." || victim == ".." || victim.contains('/') {
        return Err(corrupt(format!("bad whiteout {name}")));
    }
    tree.remove_all(&parent.join(victim))
}

fn times(mtime: u64) -> rustix::fs::Timestamps {
    let t = rustix::fs::Timespec { tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX), tv_nsec: 0 };
    rustix::fs::Timestamps { last_access: t, last_modification: t }
}

/// `SCHILY.xattr.NAME` records of the entry's pax header.
fn xattrs_of<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            if let Ok(key) = ext.key()
                && let Some(name) = key.strip_prefix("SCHILY.xattr.")
            {
                out.push((name.to_string(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

/// Owner, then mode (chown clears set-id bits), xattrs and time, all on the open descriptor.
fn finish(f: &std::fs::File, ids: (u32, u32), mode: u32, mtime: u64, xattrs: &[(String, Vec<u8>)]) -> io::Result<()> {
    rustix::fs::fchown(f, Some(rustix::fs::Uid::from_raw(ids.0)), Some(rustix::fs::Gid::from_raw(ids.1)))?;
    rustix::fs::fchmod(f, rustix::fs::Mode::from_raw_mode(mode))?;
    for (name, value) in xattrs {
        if let Err(e) = rustix::fs::fsetxattr(f, name.as_str(), value, rustix::fs::XattrFlags::empty()) {
            // As tar does: an xattr the filesystem does not take is not worth failing for.
            tracing::debug!("xattr {name} not set: {e}");
        }
    }
    rustix::fs::futimens(f, &times(mtime))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            // set_path refuses `..`; write the raw name so hostile archives can be made.
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
        b.into_inner().expect("finish")
    }

    #[test]
    fn refuses_escapes() {
        let dst = tempfile::tempdir().expect("tempdir");
        let data = tar_of(&[("../evil", b"x")]);
        assert!(matches!(unpack(&data[..], dst.path()), Err(UnpackError::Corrupt(_))));
        assert!(!dst.path().parent().expect("parent").join("evil").exists());
        let data = tar_of(&[("a/../../.wh.victim", b"")]);
        assert!(matches!(unpack(&data[..], dst.path()), Err(UnpackError::Corrupt(_))));
    }

    #[test]
    fn whiteouts_remove_files_and_empty_dirs() {
        let dst = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dst.path().join("root/etc")).expect("mkdir");
        std::fs::create_dir_all(dst.path().join("root/opt/x")).expect("mkdir");
        std::fs::write(dst.path().join("root/etc/gone"), b"1").expect("write");
        std::fs::write(dst.path().join("root/etc/kept"), b"1").expect("write");
        let data = tar_of(&[("root/etc/.wh.gone", b""), ("root/opt/.wh..wh..opq", b""), ("root/opt/new", b"n")]);
        unpack(&data[..], dst.path()).expect("unpack");
        assert!(!dst.path().join("root/etc/gone").exists());
        assert!(dst.path().join("root/etc/kept").exists());
        assert!(!dst.path().join("root/opt/x").exists());
        assert!(dst.path().join("root/opt/new").exists());
    }

    /// An archive of (name, type, link target or data).
    fn hostile_tar(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, arg) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(if *kind == tar::EntryType::Directory { 0o777 } else { 0o4755 });
            h.set_uid(1234);
            h.set_gid(1234);
            h.set_mtime(0);
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            let data: &[u8] = match kind {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let l = &mut h.as_old_mut().linkname;
                    l[..arg.len()].copy_from_slice(arg.as_bytes());
                    b""
                }
                _ => arg.as_bytes(),
            };
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, data).expect("append");
        }
        b.into_inner().expect("finish")
    }

    /// A host directory with a file in it, and what it looked like.
    fn canary() -> (tempfile::TempDir, std::fs::Metadata) {
        let host = tempfile::tempdir().expect("tempdir");
        std::fs::write(host.path().join("victim"), b"host").expect("write");
        let m = std::fs::metadata(host.path()).expect("stat");
        (host, m)
    }

    fn canary_intact(host: &tempfile::TempDir, before: &std::fs::Metadata) {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::read(host.path().join("victim")).expect("victim still there"), b"host");
        assert_eq!(std::fs::read_dir(host.path()).expect("ls").count(), 1, "nothing added on the host");
        let now = std::fs::metadata(host.path()).expect("stat");
        assert_eq!((now.mode(), now.uid()), (before.mode(), before.uid()), "host directory's mode and owner");
    }

    #[test]
    fn links_in_the_archive_never_reach_the_host() {
        use tar::EntryType::{Directory, Link, Regular, Symlink};
        let (host, before) = canary();
        let h = host.path().to_str().expect("utf-8");
        let abs_victim = format!("{h}/victim");
        let attacks: Vec<Vec<(&str, tar::EntryType, &str)>> = vec![
            vec![("root/link", Symlink, h), ("root/link/.wh.victim", Regular, "")],
            vec![("root/link", Symlink, h), ("root/link/.wh..wh..opq", Regular, "")],
            vec![("root/link", Symlink, h), ("root/link/new", Regular, "x")],
            vec![("root/link", Symlink, h), ("root/link/victim", Regular, "tenant")],
            vec![("root/link", Symlink, h), ("root/link", Directory, "")],
            vec![("root/link", Symlink, h), ("root/link/sub", Directory, "")],
            vec![("root/rel", Symlink, "../../.."), ("root/rel/.wh.victim", Regular, "")],
            vec![("root/hard", Link, &abs_victim)],
            vec![("root/hard", Link, "../victim")],
        ];
        for (i, attack) in attacks.iter().enumerate() {
            let dst = tempfile::tempdir().expect("tempdir");
            let r = unpack(&hostile_tar(attack)[..], dst.path());
            canary_intact(&host, &before);
            // Replacing the archive's own link with a directory is fine; the rest is refused.
            assert!(r.is_err() || i == 4, "attack {i} was accepted");
        }
    }

    #[test]
    fn origin_links_are_not_followed_by_an_incremental_image() {
        let (host, before) = canary();
        let dst = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dst.path().join("root/var")).expect("mkdir");
        std::os::unix::fs::symlink(host.path(), dst.path().join("root/var/cache")).expect("symlink");
        for entry in ["root/var/cache/.wh.victim", "root/var/cache/.wh..wh..opq"] {
            let r = unpack(&hostile_tar(&[(entry, tar::EntryType::Regular, "")])[..], dst.path());
            assert!(matches!(r, Err(UnpackError::Corrupt(_))), "{entry}: {r:?}");
            canary_intact(&host, &before);
        }
        // Whiting out the link itself removes the link, not what it points to.
        unpack(&hostile_tar(&[("root/var/.wh.cache", tar::EntryType::Regular, "")])[..], dst.path()).expect("unpack");
        assert!(std::fs::symlink_metadata(dst.path().join("root/var/cache")).is_err());
        canary_intact(&host, &before);
    }

    #[test]
    fn owners_modes_and_links_are_kept() {
        use std::os::unix::fs::MetadataExt;
        use tar::EntryType::{Directory, Link, Regular, Symlink};
        let dst = tempfile::tempdir().expect("tempdir");
        let data = hostile_tar(&[
            ("root/", Directory, ""),
            ("root/bin/su", Regular, "binary"),
            ("root/bin/su2", Link, "root/bin/su"),
            ("root/etc", Symlink, "/somewhere/else"),
        ]);
        unpack(&data[..], dst.path()).expect("unpack");
        let m = std::fs::metadata(dst.path().join("root/bin/su")).expect("su");
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777, m.nlink()), (1234, 1234, 0o4755, 2));
        assert_eq!(std::fs::read_link(dst.path().join("root/etc")).expect("link"), Path::new("/somewhere/else"));
        assert_eq!(std::fs::symlink_metadata(dst.path().join("root/etc")).expect("link").uid(), 1234);
        assert_eq!(std::fs::metadata(dst.path().join("root")).expect("root").mode() & 0o7777, 0o777);
    }

    #[test]
    fn garbage_and_truncation_are_corrupt() {
        let dst = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            unpack(&b"this is no tar at all, not even close"[..], dst.path()),
            Err(UnpackError::Corrupt(_))
        ));
        let data = tar_of(&[("root/f", &[7u8; 4000])]);
        assert!(matches!(unpack(&data[..1000], dst.path()), Err(UnpackError::Corrupt(_))));
        let mut gz = Vec::new();
        let mut enc = encoder(Compression::Gzip, &mut gz).expect("enc");
        enc.write_all(&data).expect("write");
        enc.finish().expect("finish");
        let r = decoder(Compression::Gzip, &gz[..gz.len() / 2]).expect("dec");
        assert!(matches!(unpack(r, dst.path()), Err(UnpackError::Corrupt(_))));
    }

    proptest::proptest! {
        // Random bytes through every decoder and the tar reader: an error, never a panic,
        // and nothing written outside the destination.
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let dst = tempfile::tempdir().expect("tempdir");
            for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
                if let Ok(r) = decoder(c, &data[..]) {
                    let _ = unpack(r, dst.path());
                }
            }
        }
    }
}
