//! Moving snapshots between pools with btrfs's own send streams (`btrfs send`, `btrfs
//! receive` from btrfs-progs), as Incus moves btrfs instances.
//!
//! A stream received here may have been crafted. `btrfs receive` runs confined to the
//! directory it receives into (`--chroot`), and every command passes [`Check`] before
//! `btrfs receive` sees it: the stream makes one subvolume, named as a snapshot may be
//! named, and takes blocks only from itself or from a parent the caller allows. Without
//! that, a stream could name any subvolume of the pool (another tenant's) as its parent or
//! as the source of a clone, and copy its blocks.

use super::{BtrfsPool, SNAPDIR, ioctl, is_subvolume};
use crate::{DatasetName, Result, SnapshotName, StorageError};
use std::io::{Read, Write};
use std::process::{Command, Stdio};

const MAGIC: &[u8; 13] = b"btrfs-stream\0";
const CMD_SUBVOL: u16 = 1;
const CMD_SNAPSHOT: u16 = 2;
const CMD_CLONE: u16 = 16;
const CMD_END: u16 = 21;
/// The last command of version 1 (`UPDATE_EXTENT`).
const CMD_MAX_V1: u16 = 22;
const ATTR_UUID: u16 = 1;
const ATTR_PATH: u16 = 15;
const ATTR_CLONE_UUID: u16 = 20;
/// A command's header: length, command, crc.
const CMD_HEADER: usize = 10;
/// The most a version 1 command can hold (btrfs's `BTRFS_SEND_BUF_SIZE_V1`).
const MAX_CMD: usize = 64 << 10;

/// What a checked stream makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The snapshot's name.
    pub name: String,
    /// Its uuid on the sending pool (here, its `received_uuid`).
    pub uuid: [u8; 16],
}

/// Follows a send stream as it passes, command by command, and stops at the first thing
/// this node does not take.
pub struct Check {
    buf: Vec<u8>,
    header: bool,
    allowed_parents: Vec<[u8; 16]>,
    made: Option<Received>,
    ended: bool,
}

impl Check {
    /// A check of a stream whose parent (an incremental stream's) must be one of
    /// `allowed_parents` (sending uuids of snapshots already received beside it).
    pub fn new(allowed_parents: Vec<[u8; 16]>) -> Check {
        Check { buf: Vec::new(), header: false, allowed_parents, made: None, ended: false }
    }

    /// Takes the next bytes of the stream.
    pub fn feed(&mut self, data: &[u8]) -> std::result::Result<(), String> {
        if self.ended && !data.is_empty() {
            return Err("bytes after the stream's end".into());
        }
        self.buf.extend_from_slice(data);
        let mut at = 0;
        if !self.header {
            if self.buf.len() < MAGIC.len() + 4 {
                return Ok(());
            }
            if &self.buf[..MAGIC.len()] != MAGIC {
                return Err("not a btrfs send stream".into());
            }
            let v = u32::from_le_bytes(self.buf[13..17].try_into().unwrap_or_default());
            if v != 1 {
                return Err(format!("btrfs send stream version {v}; this node takes version 1"));
            }
            self.header = true;
            at = 17;
        }
        while self.buf.len() - at >= CMD_HEADER {
            let h = &self.buf[at..at + CMD_HEADER];
            let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
            let cmd = u16::from_le_bytes([h[4], h[5]]);
            if len > MAX_CMD {
                return Err(format!("a command of {len} bytes (at most {MAX_CMD})"));
            }
            if self.buf.len() - at < CMD_HEADER + len {
                break;
            }
            let attrs = std::mem::take(&mut self.buf);
            let r = self.command(cmd, &attrs[at + CMD_HEADER..at + CMD_HEADER + len]);
            self.buf = attrs;
            r?;
            at += CMD_HEADER + len;
        }
        self.buf.drain(..at);
        Ok(())
    }

    fn command(&mut self, cmd: u16, attrs: &[u8]) -> std::result::Result<(), String> {
        if self.ended {
            return Err("a command after the stream's end".into());
        }
        if cmd == 0 || cmd > CMD_MAX_V1 {
            return Err(format!("unknown command {cmd}"));
        }
        let attr = |want: u16| -> std::result::Result<Option<&[u8]>, String> {
            let mut i = 0;
            while i < attrs.len() {
                if attrs.len() - i < 4 {
                    return Err("a truncated attribute".into());
                }
                let t = u16::from_le_bytes([attrs[i], attrs[i + 1]]);
                let l = u16::from_le_bytes([attrs[i + 2], attrs[i + 3]]) as usize;
                if attrs.len() - i - 4 < l {
                    return Err("an attribute longer than its command".into());
                }
                if t == want {
                    return Ok(Some(&attrs[i + 4..i + 4 + l]));
                }
                i += 4 + l;
            }
            Ok(None)
        };
        let uuid = |a: Option<&[u8]>, what: &str| -> std::result::Result<[u8; 16], String> {
            a.and_then(|u| <[u8; 16]>::try_from(u).ok()).ok_or_else(|| format!("{what} without a uuid"))
        };
        match cmd {
            CMD_SUBVOL | CMD_SNAPSHOT => {
                if self.made.is_some() {
                    return Err("a second subvolume in one stream".into());
                }
                let path = attr(ATTR_PATH)?.ok_or("a subvolume without a name")?;
                let name = std::str::from_utf8(path).map_err(|_| "a subvolume name that is not UTF-8")?;
                SnapshotName::parse(&format!("x@{name}")).map_err(|e| format!("subvolume name {name:?}: {e}"))?;
                let own = uuid(attr(ATTR_UUID)?, "a subvolume")?;
                if cmd == CMD_SNAPSHOT {
                    let parent = uuid(attr(ATTR_CLONE_UUID)?, "a snapshot")?;
                    if !self.allowed_parents.contains(&parent) {
                        return Err(format!(
                            "its parent {} is not a snapshot received beside it",
                            uuid::Uuid::from_bytes(parent)
                        ));
                    }
                }
                self.made = Some(Received { name: name.to_string(), uuid: own });
            }
            _ if self.made.is_none() => return Err("a command before the subvolume".into()),
            CMD_CLONE => {
                let from = uuid(attr(ATTR_CLONE_UUID)?, "a clone")?;
                let own = self.made.as_ref().map(|m| m.uuid);
                if Some(from) != own && !self.allowed_parents.contains(&from) {
                    return Err(format!("a clone from {}, outside the stream", uuid::Uuid::from_bytes(from)));
                }
            }
            CMD_END => self.ended = true,
            _ => {}
        }
        Ok(())
    }

    /// What the stream made, once it ended whole.
    pub fn finish(self) -> std::result::Result<Received, String> {
        if !self.ended || !self.buf.is_empty() {
            return Err("the stream is cut short".into());
        }
        self.made.ok_or_else(|| "the stream makes no subvolume".into())
    }
}

/// Pipes to and from btrfs send and receive hold this much: fewer switches between the
/// processes (a pipe holds 64 KiB by default); where the kernel refuses, the default stays.
const PIPE_SIZE: i32 = 1 << 20;

fn widen(fd: &impl std::os::fd::AsFd) {
    let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
}

/// Start writing back what a receive wrote every this many bytes.
const WRITEBACK_EVERY: u64 = 128 << 20;

/// Writes back, in the background, what a long receive has written so far: left in the page
/// cache, a gigabyte received is written back all at once by the next snapshot of it (the
/// next part's parent, or the dataset made at the end), which then waits seconds; written
/// back as it comes, the disk works while the stream still arrives.
struct Writeback {
    dir: Option<std::os::fd::OwnedFd>,
    busy: std::sync::Arc<std::sync::atomic::AtomicBool>,
    since: u64,
}

impl Writeback {
    fn new(dir: &std::path::Path) -> Writeback {
        Writeback { dir: ioctl::open_dir(dir).ok(), busy: Default::default(), since: 0 }
    }

    fn wrote(&mut self, n: u64) {
        use std::sync::atomic::Ordering;
        self.since += n;
        if self.since < WRITEBACK_EVERY {
            return;
        }
        let Some(fd) = self.dir.as_ref().and_then(|d| d.try_clone().ok()) else { return };
        if self.busy.swap(true, Ordering::AcqRel) {
            return; // the last one still runs: it takes this too
        }
        self.since = 0;
        let busy = self.busy.clone();
        std::thread::spawn(move || {
            let _ = nix::unistd::syncfs(&fd);
            busy.store(false, Ordering::Release);
        });
    }
}

impl BtrfsPool {
    fn snap_path(&self, s: &SnapshotName) -> std::path::PathBuf {
        self.snapdir(&s.dataset).join(&s.snap)
    }

    /// Writes a send stream of `snap` into `out` (an incremental one from `parent`, a
    /// snapshot the receiver has); returns the bytes written.
    pub fn send(&self, snap: &SnapshotName, parent: Option<&SnapshotName>, out: &mut dyn Write) -> Result<u64> {
        let path = self.snap_path(snap);
        if !is_subvolume(&path) {
            return Err(StorageError::NotFound(self.full(snap)));
        }
        let mut c = Command::new(hull_exec::tool("btrfs"));
        c.args(["send", "-q"]);
        if let Some(p) = parent {
            let pp = self.snap_path(p);
            if !is_subvolume(&pp) {
                return Err(StorageError::NotFound(self.full(p)));
            }
            c.arg("-p").arg(pp);
        }
        c.arg(&path).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|e| StorageError::io("run btrfs send for", &path, e))?;
        let mut stdout = child.stdout.take().ok_or_else(|| StorageError::Pool("btrfs send: no stdout".into()))?;
        widen(&stdout);
        // In 1 MiB reads: std's copy reads 8 KiB at a time, a read per btrfs command.
        let copied = (|| -> std::io::Result<u64> {
            let mut buf = vec![0u8; PIPE_SIZE as usize];
            let mut n = 0u64;
            loop {
                let k = stdout.read(&mut buf)?;
                if k == 0 {
                    return Ok(n);
                }
                out.write_all(&buf[..k])?;
                n += k as u64;
            }
        })();
        if copied.is_err() {
            let _ = child.kill();
        }
        let done = child.wait_with_output().map_err(|e| StorageError::io("wait for btrfs send of", &path, e))?;
        let n = copied.map_err(|e| StorageError::io("send", &path, e))?;
        if !done.status.success() {
            return Err(StorageError::Pool(format!(
                "btrfs send {}: {}",
                self.full(snap),
                String::from_utf8_lossy(&done.stderr).trim()
            )));
        }
        Ok(n)
    }

    /// Makes `staging`, an empty dataset whose snapshot directory receives streams.
    pub fn receive_begin(&self, staging: &DatasetName) -> Result<()> {
        crate::Pool::create(self, staging)?;
        let fd = self.open("open dataset", self.full(staging), &self.mnt.join(staging.as_str()))?;
        ioctl::create_subvolume(&fd, SNAPDIR)
            .map_err(|e| self.fail("create subvolume", self.full(staging), &self.snapdir(staging), e))
    }

    /// Sending uuids of the snapshots received into `staging` so far, by name.
    pub fn received(&self, staging: &DatasetName) -> Result<Vec<(String, [u8; 16])>> {
        let mut out = Vec::new();
        for name in self.subvol_entries(&self.snapdir(staging))? {
            let path = self.snapdir(staging).join(&name);
            let fd = self.open("open snapshot", format!("{}@{name}", self.full(staging)), &path)?;
            let info = ioctl::subvol_info(&fd).map_err(|e| StorageError::errno("read subvolume info", &path, e))?;
            if info.received_uuid != [0; 16] {
                out.push((name, info.received_uuid));
            }
        }
        Ok(out)
    }

    /// Receives one send stream from `input` as a snapshot of `staging`; its parent, if it
    /// has one, must be a snapshot received there before. A stream that fails any check,
    /// or that `btrfs receive` refuses, leaves nothing.
    pub fn receive(&self, staging: &DatasetName, input: &mut dyn Read) -> Result<Received> {
        let dir = self.snapdir(staging);
        let allowed: Vec<[u8; 16]> = self.received(staging)?.into_iter().map(|(_, u)| u).collect();
        let mut check = Check::new(allowed);
        let mut child = Command::new(hull_exec::tool("btrfs"))
            .args(["receive", "-q", "-e", "--chroot"])
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| StorageError::io("run btrfs receive into", &dir, e))?;
        let bad = |why: String| StorageError::Pool(format!("a send stream for {}: {why}", self.full(staging)));
        let fed = (|| -> Result<()> {
            let mut stdin = child.stdin.take().ok_or_else(|| bad("btrfs receive has no stdin".into()))?;
            widen(&stdin);
            let mut buf = vec![0u8; 256 << 10];
            let mut writeback = Writeback::new(&dir);
            loop {
                let k = input.read(&mut buf).map_err(|e| bad(format!("reading it: {e}")))?;
                if k == 0 {
                    return Ok(());
                }
                check.feed(&buf[..k]).map_err(bad)?;
                stdin.write_all(&buf[..k]).map_err(|e| bad(format!("btrfs receive stopped taking it: {e}")))?;
                writeback.wrote(k as u64);
            }
        })();
        let fed = fed.and_then(|()| std::mem::replace(&mut check, Check::new(Vec::new())).finish().map_err(bad));
        if fed.is_err() {
            let _ = child.kill();
        }
        let out = child.wait_with_output().map_err(|e| StorageError::io("wait for btrfs receive into", &dir, e))?;
        let made = match (fed, out.status.success()) {
            (Ok(m), true) => return Ok(m),
            (Ok(m), false) => {
                let e = bad(format!("btrfs receive: {}", String::from_utf8_lossy(&out.stderr).trim()));
                (Some(m), e)
            }
            (Err(e), _) => (None, e),
        };
        // Whatever btrfs receive made of it goes.
        let (m, e) = made;
        let names: Vec<String> = match m {
            Some(m) => vec![m.name],
            None => self.subvol_entries(&dir)?,
        };
        let known: Vec<String> = self.received(staging)?.into_iter().map(|(n, _)| n).collect();
        for n in names {
            if !known.contains(&n) || !self.is_received_whole(&dir.join(&n)) {
                let _ = self.destroy_received(&dir, &n);
            }
        }
        Err(e)
    }

    /// A received snapshot is whole once `btrfs receive` made it read-only.
    fn is_received_whole(&self, path: &std::path::Path) -> bool {
        ioctl::open_dir(path)
            .ok()
            .and_then(|fd| ioctl::subvol_info(&fd).ok())
            .is_some_and(|i| i.flags & ioctl::SUBVOL_RDONLY != 0 && i.received_uuid != [0; 16])
    }

    fn destroy_received(&self, dir: &std::path::Path, name: &str) -> Result<()> {
        if !is_subvolume(&dir.join(name)) {
            return Ok(());
        }
        let fd = self.open("open snapshot directory", name.to_string(), dir)?;
        ioctl::destroy_subvolume(&fd, name).map_err(|e| StorageError::errno("destroy", dir.join(name), e))
    }

    /// Makes `target` from what `staging` received: a writable snapshot of `last`, holding
    /// every received snapshot as its own; `staging` goes.
    pub fn receive_finish(&self, staging: &DatasetName, last: &str, target: &DatasetName) -> Result<()> {
        let src = self.snapdir(staging).join(last);
        if !is_subvolume(&src) {
            return Err(StorageError::NotFound(format!("{}@{last}", self.full(staging))));
        }
        let dst = self.mnt.join(target.as_str());
        if dst.exists() {
            return Err(StorageError::Exists(self.full(target)));
        }
        let source = self.open("open snapshot", format!("{}@{last}", self.full(staging)), &src)?;
        let top = self.open("open pool", self.name.clone(), &self.mnt)?;
        ioctl::snapshot(&source, &top, target.as_str(), false)
            .map_err(|e| self.fail("snapshot", self.full(target), &dst, e))?;
        let placeholder = dst.join(SNAPDIR);
        if placeholder.exists() {
            std::fs::remove_dir(&placeholder).map_err(|e| StorageError::io("remove placeholder", &placeholder, e))?;
        }
        crate::rename_noreplace(&self.snapdir(staging), &placeholder)
            .map_err(|e| StorageError::errno("move snapshots", self.snapdir(staging), e))?;
        crate::Pool::destroy_dataset(self, staging)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(c: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (t, d) in attrs {
            body.extend_from_slice(&t.to_le_bytes());
            body.extend_from_slice(&(d.len() as u16).to_le_bytes());
            body.extend_from_slice(d);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&c.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend(body);
        out
    }

    fn stream(cmds: &[Vec<u8>]) -> Vec<u8> {
        let mut s = MAGIC.to_vec();
        s.extend_from_slice(&1u32.to_le_bytes());
        for c in cmds {
            s.extend_from_slice(c);
        }
        s
    }

    fn run(allowed: Vec<[u8; 16]>, s: &[u8], step: usize) -> std::result::Result<Received, String> {
        let mut c = Check::new(allowed);
        for chunk in s.chunks(step.max(1)) {
            c.feed(chunk)?;
        }
        c.finish()
    }

    const OWN: [u8; 16] = [1; 16];
    const PARENT: [u8; 16] = [2; 16];
    const OTHER: [u8; 16] = [3; 16];

    #[test]
    fn a_whole_stream_passes_in_any_chunks() {
        let s = stream(&[
            cmd(CMD_SNAPSHOT, &[(ATTR_PATH, b"s2"), (ATTR_UUID, &OWN), (ATTR_CLONE_UUID, &PARENT)]),
            cmd(CMD_CLONE, &[(ATTR_PATH, b"f"), (ATTR_CLONE_UUID, &PARENT)]),
            cmd(CMD_CLONE, &[(ATTR_PATH, b"g"), (ATTR_CLONE_UUID, &OWN)]),
            cmd(CMD_END, &[]),
        ]);
        for step in [1, 3, 7, 1000] {
            assert_eq!(run(vec![PARENT], &s, step), Ok(Received { name: "s2".into(), uuid: OWN }));
        }
    }

    #[test]
    fn streams_that_reach_outside_are_refused() {
        let parent_elsewhere =
            stream(&[cmd(CMD_SNAPSHOT, &[(ATTR_PATH, b"s"), (ATTR_UUID, &OWN), (ATTR_CLONE_UUID, &OTHER)])]);
        assert!(run(vec![PARENT], &parent_elsewhere, 5).is_err_and(|e| e.contains("parent")));
        let clone_elsewhere = stream(&[
            cmd(CMD_SUBVOL, &[(ATTR_PATH, b"s"), (ATTR_UUID, &OWN)]),
            cmd(CMD_CLONE, &[(ATTR_PATH, b"f"), (ATTR_CLONE_UUID, &OTHER)]),
        ]);
        assert!(run(vec![], &clone_elsewhere, 5).is_err_and(|e| e.contains("clone")));
        for name in [&b"../x"[..], b"a/b", b".hidden", b""] {
            let s = stream(&[cmd(CMD_SUBVOL, &[(ATTR_PATH, name), (ATTR_UUID, &OWN)]), cmd(CMD_END, &[])]);
            assert!(run(vec![], &s, 4).is_err(), "{name:?} taken");
        }
        let two = stream(&[
            cmd(CMD_SUBVOL, &[(ATTR_PATH, b"s"), (ATTR_UUID, &OWN)]),
            cmd(CMD_SUBVOL, &[(ATTR_PATH, b"t"), (ATTR_UUID, &OTHER)]),
        ]);
        assert!(run(vec![], &two, 9).is_err());
    }

    #[test]
    fn cut_unknown_and_foreign_streams_are_refused() {
        let whole = stream(&[cmd(CMD_SUBVOL, &[(ATTR_PATH, b"s"), (ATTR_UUID, &OWN)]), cmd(CMD_END, &[])]);
        for cut in 0..whole.len() {
            assert!(run(vec![], &whole[..cut], 3).is_err(), "cut at {cut} taken");
        }
        let mut v2 = whole.clone();
        v2[13] = 2;
        assert!(run(vec![], &v2, 100).is_err_and(|e| e.contains("version 2")));
        assert!(run(vec![], b"tar-stream\0\0\0\0\0\0\0\0", 100).is_err());
        let unknown = stream(&[cmd(CMD_SUBVOL, &[(ATTR_PATH, b"s"), (ATTR_UUID, &OWN)]), cmd(99, &[])]);
        assert!(run(vec![], &unknown, 100).is_err());
        let mut after = whole.clone();
        after.extend_from_slice(&cmd(CMD_END, &[]));
        assert!(run(vec![], &after, 100).is_err());
    }
}
