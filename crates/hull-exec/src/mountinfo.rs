//! Reads `/proc/self/mountinfo`.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mountpoint: PathBuf,
    pub fstype: String,
    pub source: String,
    /// The filesystem's own options (`rw,memory`, `rw,name=systemd`).
    pub super_options: String,
}

/// Undoes the kernel's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text: `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw`.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mountpoint = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let source = r.next()?;
            let super_options = r.next().unwrap_or("");
            Some(Mount {
                mountpoint: PathBuf::from(unescape(mountpoint)),
                fstype: fstype.into(),
                source: unescape(source),
                super_options: super_options.into(),
            })
        })
        .collect()
}

/// Every mount this process sees.
pub fn mounts() -> Vec<Mount> {
    parse(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

/// Whether `path` (links followed) is the root of a mount. One statx, however many mounts
/// the host has: reading mountinfo costs more with every zone that runs (each has a few),
/// and the paths a create or a boot checks are hull's own. What cannot be looked at is not
/// a mountpoint.
pub fn is_mountpoint(path: &Path) -> bool {
    use rustix::fs::{AtFlags, CWD, StatxAttributes, StatxFlags, statx};
    match statx(CWD, path, AtFlags::empty(), StatxFlags::BASIC_STATS) {
        Ok(st) => {
            let attr = st.stx_attributes;
            let mask = st.stx_attributes_mask;
            if mask.contains(StatxAttributes::MOUNT_ROOT) {
                attr.contains(StatxAttributes::MOUNT_ROOT)
            } else {
                // A kernel before 5.8 does not say: ask mountinfo.
                mount_at(path).is_some()
            }
        }
        Err(_) => false,
    }
}

/// The type of the filesystem at `path` (statfs's magic number), if it can be looked at.
pub fn fs_magic(path: &Path) -> Option<i64> {
    // f_type is i64 here and narrower on other targets.
    #[allow(clippy::unnecessary_cast)]
    rustix::fs::statfs(path).ok().map(|s| s.f_type as i64)
}

/// The topmost mount at `path`, if `path` is a mountpoint.
pub fn mount_at(path: &Path) -> Option<Mount> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let path = std::fs::canonicalize(path).ok()?;
    parse(&text).into_iter().rev().find(|m| m.mountpoint == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountpoints_are_told_by_statx() {
        assert!(is_mountpoint(Path::new("/")));
        assert!(is_mountpoint(Path::new("/proc")));
        let d = tempfile::tempdir().expect("tempdir");
        assert!(!is_mountpoint(d.path()));
        assert!(!is_mountpoint(&d.path().join("missing")));
        assert_eq!(fs_magic(Path::new("/proc")), Some(0x9fa0), "procfs's magic");
    }

    #[test]
    fn parses_lines_with_optional_fields_and_escapes() {
        // cat /proc/self/mountinfo (two lines of it, one path with a space)
        let text = "\
36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
120 29 0:52 / /tmp/hull\\040x/zones rw,relatime shared:70 - btrfs /dev/loop3 rw,space_cache=v2
";
        let m = parse(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mountpoint, PathBuf::from("/mnt2"));
        assert_eq!(m[1].mountpoint, PathBuf::from("/tmp/hull x/zones"));
        assert_eq!(m[1].fstype, "btrfs");
        assert_eq!(m[1].source, "/dev/loop3");
        assert_eq!(m[1].super_options, "rw,space_cache=v2");
    }
}
