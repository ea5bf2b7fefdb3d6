//! The zfs backend, over the `zfs` command (no ZFS on the build machines: the parsers are
//! tested on captured output and the commands on a recording runner).
//!
//! `zones/<name>` maps to `<zpool>/<name>`, where `<zpool>` is the pool or dataset the
//! operator handed over; its mountpoint is set to `$ROOT/zones` so children mount below it.

use crate::{Caps, DatasetInfo, DatasetKind, DatasetName, Pool, PoolUsage, Result, SnapshotName, StorageError};
use hull_exec::{CommandLine, ExecError, tool};
use hull_spec::PoolBackend;
use std::path::{Path, PathBuf};

/// Runs `zfs` with arguments; the seam for tests.
pub trait ZfsRunner: Send + Sync {
    fn zfs(&self, args: &[String]) -> Result<String, ExecError>;
}

/// The host's `zfs` command.
pub struct HostZfs;

impl ZfsRunner for HostZfs {
    fn zfs(&self, args: &[String]) -> Result<String, ExecError> {
        CommandLine::new(tool("zfs")).args(args).run()
    }
}

pub struct ZfsPool {
    name: String,
    zpool: String,
    mnt: PathBuf,
    runner: Box<dyn ZfsRunner>,
}

/// The columns `list` asks for, in order.
pub const LIST_COLUMNS: &str = "name,type,used,referenced,origin,quota,mountpoint,creation";

/// Parses `zfs list -H -p -o name,type,used,referenced,origin,quota,mountpoint,creation
/// -t filesystem,snapshot -r <zpool>`: tab-separated, `-` for unset, quota 0 for none.
/// Rows are returned relative to `zpool`; the zpool's own row and deeper datasets are skipped.
pub fn parse_list(zpool: &str, text: &str) -> Result<Vec<DatasetInfo>, String> {
    let mut out = Vec::new();
    let prefix = format!("{zpool}/");
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 8 {
            return Err(format!("expected 8 columns in zfs list row {line:?}"));
        }
        let Some(name) = f[0].strip_prefix(&prefix) else {
            continue;
        };
        if name.split('@').next().is_some_and(|d| d.contains('/')) {
            continue;
        }
        let num = |s: &str| s.parse::<u64>().map_err(|_| format!("bad number {s:?} in zfs list row {line:?}"));
        let kind = match f[1] {
            "filesystem" | "volume" => DatasetKind::Filesystem,
            "snapshot" => DatasetKind::Snapshot,
            other => return Err(format!("unknown dataset type {other:?}")),
        };
        let origin = match f[4] {
            "-" => None,
            o => Some(o.strip_prefix(&prefix).unwrap_or(o).to_string()),
        };
        let quota = match f[5] {
            "-" | "0" => None,
            q => Some(num(q)?),
        };
        out.push(DatasetInfo {
            name: name.to_string(),
            kind,
            used: num(f[2])?,
            referenced: num(f[3])?,
            origin,
            quota,
            mountpoint: match f[6] {
                "-" | "none" | "legacy" => None,
                m => Some(PathBuf::from(m)),
            },
            creation: f[7].parse().map_err(|_| format!("bad creation {:?}", f[7]))?,
        });
    }
    Ok(out)
}

impl ZfsPool {
    pub fn new(name: &str, zpool: &str, mountpoint: &Path, runner: Box<dyn ZfsRunner>) -> Self {
        ZfsPool { name: name.to_string(), zpool: zpool.to_string(), mnt: mountpoint.to_path_buf(), runner }
    }

    fn run(&self, subject: String, args: &[&str]) -> Result<String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        self.runner.zfs(&args).map_err(|e| {
            let err = e.stderr();
            if err.contains("does not exist") {
                StorageError::NotFound(subject)
            } else if err.contains("already exists") {
                StorageError::Exists(subject)
            } else if err.contains("out of space") {
                StorageError::NoSpace { pool: self.name.clone(), op: "zfs", path: self.mnt.clone() }
            } else {
                e.into()
            }
        })
    }

    fn z(&self, n: impl std::fmt::Display) -> String {
        format!("{}/{}", self.zpool, n)
    }

    fn full(&self, n: impl std::fmt::Display) -> String {
        format!("{}/{}", self.name, n)
    }
}

impl Pool for ZfsPool {
    fn backend(&self) -> PoolBackend {
        PoolBackend::Zfs
    }

    fn caps(&self) -> Caps {
        Caps { instant_clone: true, quota: true, space_accounting: true }
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn mountpoint(&self) -> &Path {
        &self.mnt
    }

    fn snapshot_path(&self, snap: &SnapshotName) -> Option<PathBuf> {
        Some(self.dataset_path(&snap.dataset).join(".zfs/snapshot").join(&snap.snap))
    }

    fn exists(&self, ds: &DatasetName) -> bool {
        self.run(self.full(ds), &["list", "-H", "-o", "name", &self.z(ds)]).is_ok()
    }

    fn create(&self, ds: &DatasetName) -> Result<()> {
        self.run(self.full(ds), &["create", &self.z(ds)]).map(drop)
    }

    fn snapshot(&self, snap: &SnapshotName) -> Result<()> {
        self.run(self.full(snap), &["snapshot", &self.z(snap)]).map(drop)
    }

    fn clone_snapshot(&self, snap: &SnapshotName, target: &DatasetName) -> Result<()> {
        self.run(self.full(target), &["clone", &self.z(snap), &self.z(target)]).map(drop)
    }

    fn rename(&self, from: &DatasetName, to: &DatasetName) -> Result<()> {
        self.run(self.full(from), &["rename", &self.z(from), &self.z(to)]).map(drop)
    }

    fn destroy_dataset(&self, ds: &DatasetName) -> Result<()> {
        self.run(self.full(ds), &["destroy", &self.z(ds)]).map(drop)
    }

    fn destroy_snapshot(&self, snap: &SnapshotName) -> Result<()> {
        self.run(self.full(snap), &["destroy", &self.z(snap)]).map(drop)
    }

    fn rollback(&self, snap: &SnapshotName) -> Result<()> {
        // -r: ZFS can only roll back to the latest snapshot, so later ones go (unlike btrfs).
        self.run(self.full(snap), &["rollback", "-r", &self.z(snap)]).map(drop)
    }

    fn list(&self) -> Result<Vec<DatasetInfo>> {
        let text = self.run(
            self.name.clone(),
            &["list", "-H", "-p", "-o", LIST_COLUMNS, "-t", "filesystem,snapshot", "-r", &self.zpool],
        )?;
        parse_list(&self.zpool, &text).map_err(StorageError::Pool)
    }

    fn set_quota(&self, ds: &DatasetName, quota: Option<u64>) -> Result<()> {
        let value = format!("quota={}", quota.map(|q| q.to_string()).unwrap_or_else(|| "none".into()));
        self.run(self.full(ds), &["set", &value, &self.z(ds)]).map(drop)
    }

    fn usage(&self) -> Result<PoolUsage> {
        let text = self.run(self.name.clone(), &["get", "-H", "-p", "-o", "value", "used,available", &self.zpool])?;
        let v: Vec<u64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        match v.as_slice() {
            [used, avail] => Ok(PoolUsage { size: used + avail, used: *used, free: *avail }),
            _ => Err(StorageError::Pool(format!("unexpected zfs get output {text:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    // zfs list -H -p -o name,type,used,referenced,origin,quota,mountpoint,creation \
    //     -t filesystem,snapshot -r tank/hull
    const LIST: &str = "tank/hull\tfilesystem\t524451840\t98304\t-\t0\t/var/tmp/n1/zones\t1764110000
tank/hull/c02a2044-c1bd-11e4-bd8c-dfc1db8b0182\tfilesystem\t524353536\t524304384\t-\t0\t/var/tmp/n1/zones/c02a2044-c1bd-11e4-bd8c-dfc1db8b0182\t1764110010
tank/hull/c02a2044-c1bd-11e4-bd8c-dfc1db8b0182@final\tsnapshot\t0\t524304384\t-\t-\t-\t1764110011
tank/hull/vm1\tfilesystem\t73728\t524304384\ttank/hull/c02a2044-c1bd-11e4-bd8c-dfc1db8b0182@final\t10737418240\t/var/tmp/n1/zones/vm1\t1764110020
tank/hull/vm1/data\tfilesystem\t24576\t24576\t-\t0\t/var/tmp/n1/zones/vm1/data\t1764110021
";

    #[test]
    fn parses_captured_list() {
        let rows = parse_list("tank/hull", LIST).expect("parse");
        assert_eq!(rows.len(), 3, "pool row and nested datasets are skipped");
        let vm = &rows[2];
        assert_eq!(vm.name, "vm1");
        assert_eq!(vm.origin.as_deref(), Some("c02a2044-c1bd-11e4-bd8c-dfc1db8b0182@final"));
        assert_eq!(vm.quota, Some(10 << 30));
        assert_eq!(rows[1].kind, DatasetKind::Snapshot);
        assert_eq!(rows[1].mountpoint, None);
    }

    #[test]
    fn rejects_short_rows() {
        assert!(parse_list("tank", "tank/a\tfilesystem\t1").is_err());
        assert!(parse_list("tank", "tank/a\tfilesystem\tx\t1\t-\t0\t/m\t1").is_err());
    }

    /// Records each command and answers from a script.
    struct Recorder {
        calls: Arc<Mutex<Vec<String>>>,
        fail_with: Option<&'static str>,
    }

    impl ZfsRunner for Recorder {
        fn zfs(&self, args: &[String]) -> Result<String, ExecError> {
            self.calls.lock().expect("calls").push(args.join(" "));
            match self.fail_with {
                None => Ok(String::new()),
                Some(stderr) => Err(ExecError::Failed {
                    command: format!("zfs {}", args.join(" ")),
                    status: std::os::unix::process::ExitStatusExt::from_raw(256),
                    stdout: String::new(),
                    stderr: stderr.to_string(),
                }),
            }
        }
    }

    fn pool(fail_with: Option<&'static str>) -> (ZfsPool, Arc<Mutex<Vec<String>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let r = Recorder { calls: calls.clone(), fail_with };
        (ZfsPool::new("zones", "tank/hull", Path::new("/n/zones"), Box::new(r)), calls)
    }

    #[test]
    fn maps_operations_to_commands() {
        let (p, calls) = pool(None);
        let img = DatasetName::parse("img").expect("name");
        let snap = SnapshotName::parse("img@final").expect("name");
        let vm = DatasetName::parse("vm").expect("name");
        p.create(&img).expect("create");
        p.snapshot(&snap).expect("snapshot");
        p.clone_snapshot(&snap, &vm).expect("clone");
        p.set_quota(&vm, Some(1024)).expect("quota");
        p.set_quota(&vm, None).expect("quota");
        p.rename(&vm, &img).expect("rename");
        p.destroy_snapshot(&snap).expect("destroy");
        assert_eq!(
            *calls.lock().expect("calls"),
            vec![
                "create tank/hull/img",
                "snapshot tank/hull/img@final",
                "clone tank/hull/img@final tank/hull/vm",
                "set quota=1024 tank/hull/vm",
                "set quota=none tank/hull/vm",
                "rename tank/hull/vm tank/hull/img",
                "destroy tank/hull/img@final",
            ]
        );
    }

    #[test]
    fn maps_zfs_errors() {
        // zfs create tank/hull/img  (when it exists)
        let (p, _) = pool(Some("cannot create 'tank/hull/img': dataset already exists\n"));
        let err = p.create(&DatasetName::parse("img").expect("name")).expect_err("exists");
        assert!(matches!(err, StorageError::Exists(ref n) if n == "zones/img"), "{err}");
        let (p, _) = pool(Some("cannot open 'tank/hull/x': dataset does not exist\n"));
        let err = p.destroy_dataset(&DatasetName::parse("x").expect("name")).expect_err("missing");
        assert!(matches!(err, StorageError::NotFound(_)), "{err}");
    }
}
