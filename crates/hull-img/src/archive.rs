//! Image files: a tar stream of a dataset's contents, compressed with gzip, zstd or none.
//!
//! Unpacking takes untrusted input: entries stay inside the destination (`unpack_in` refuses
//! `..` and symlinked parents), and OCI-style whiteouts let an incremental image remove what
//! its origin had: `.wh.NAME` removes `NAME`, `.wh..wh..opq` empties its directory.

use hull_spec::Compression;
use std::io::{self, Read, Write};
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
            let mut text = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                text.push_str(": ");
                text.push_str(&s.to_string());
                src = s.source();
            }
            UnpackError::Corrupt(text)
        }
    }
}

/// A relative path with no `..`, no root, no prefix.
fn plain_relative(p: &Path) -> bool {
    p.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// `dst/rel` when every existing parent of it is a real directory inside `dst`.
fn resolve_inside(dst: &Path, rel: &Path) -> Option<PathBuf> {
    if !plain_relative(rel) {
        return None;
    }
    let mut cur = dst.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        if let Ok(m) = std::fs::symlink_metadata(&cur)
            && m.file_type().is_symlink()
            && cur != dst.join(rel)
        {
            return None;
        }
    }
    Some(cur)
}

fn remove_any(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Unpacks a tar stream into `dst`, keeping owners, modes, times and xattrs.
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

pub fn unpack<R: Read>(reader: R, dst: &Path) -> Result<(), UnpackError> {
    let mut ar = tar::Archive::new(reader);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_preserve_mtime(true);
    ar.set_unpack_xattrs(true);
    ar.set_overwrite(true);
    let mut count = 0usize;
    for entry in ar.entries().map_err(classify)? {
        let mut entry = entry.map_err(classify)?;
        let path = entry.path().map_err(classify)?.into_owned();
        count += 1;
        if let Some(name) = path.file_name().and_then(|n| n.to_str())
            && name.starts_with(WHITEOUT)
        {
            let parent = path.parent().unwrap_or(Path::new(""));
            let dir = resolve_inside(dst, parent)
                .ok_or_else(|| UnpackError::Corrupt(format!("whiteout {} points outside the image", path.display())))?;
            if name == OPAQUE {
                if let Ok(rd) = std::fs::read_dir(&dir) {
                    for e in rd.flatten() {
                        remove_any(&e.path()).map_err(classify)?;
                    }
                }
            } else {
                let victim = &name[WHITEOUT.len()..];
                if victim.is_empty() || victim == "." || victim == ".." {
                    return Err(UnpackError::Corrupt(format!("bad whiteout {}", path.display())));
                }
                remove_any(&dir.join(victim)).map_err(classify)?;
            }
            continue;
        }
        if !plain_relative(&path) {
            return Err(UnpackError::Corrupt(format!("entry {} points outside the image", path.display())));
        }
        if !entry.unpack_in(dst).map_err(classify)? {
            return Err(UnpackError::Corrupt(format!("entry {} points outside the image", path.display())));
        }
    }
    if count == 0 {
        return Err(UnpackError::Corrupt("the archive holds no entries".into()));
    }
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
