//! The backends on real filesystems: a loop-backed btrfs pool and a dir pool, each in its own
//! temporary node. Needs root.

use hull_storage::host::PoolSpec;
use hull_storage::{DatasetKind, DatasetName, Node, Pool, PoolBackend, SnapshotName, StorageError};
use std::path::Path;

/// A node in a temporary directory whose pool is destroyed on drop, even after a failure.
struct TestNode {
    node: Node,
    dir: tempfile::TempDir,
}

impl TestNode {
    fn new(spec: PoolSpec) -> TestNode {
        let dir = tempfile::Builder::new().prefix("hull-storage-").tempdir().expect("tempdir");
        let node = Node::new(dir.path(), "hst").expect("node");
        node.create_pool(&spec).expect("create pool");
        TestNode { node, dir }
    }

    fn pool(&self) -> Box<dyn Pool> {
        self.node.pool().expect("pool")
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if self.node.destroy_pool().is_err() {
            let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path().join("zones")).status();
        }
    }
}

fn btrfs() -> TestNode {
    TestNode::new(PoolSpec { size: Some(512 << 20), ..Default::default() })
}

fn ds(n: &str) -> DatasetName {
    DatasetName::parse(n).expect("name")
}

fn snap(n: &str) -> SnapshotName {
    SnapshotName::parse(n).expect("name")
}

fn write(path: &Path, bytes: usize) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let data: Vec<u8> = (0..bytes).map(|i| (i * 7 + i / 4096) as u8).collect();
    std::fs::write(path, data).expect("write");
}

/// The same life cycle on any backend: snapshot, clone, dependent clones refused, rename,
/// recursive destroy.
fn lifecycle(pool: &dyn Pool) {
    pool.create(&ds("img")).expect("create");
    assert!(matches!(pool.create(&ds("img")), Err(StorageError::Exists(_))));
    write(&pool.dataset_path(&ds("img")).join("root/etc/data"), 1 << 20);
    pool.snapshot(&snap("img@final")).expect("snapshot");
    assert!(matches!(pool.snapshot(&snap("img@final")), Err(StorageError::Exists(_))));
    pool.clone_snapshot(&snap("img@final"), &ds("vm1")).expect("clone");
    pool.clone_snapshot(&snap("img@final"), &ds("vm2")).expect("clone");
    assert!(matches!(pool.clone_snapshot(&snap("img@nope"), &ds("vm3")), Err(StorageError::NotFound(_))));

    // A clone sees the snapshot's files, and writes to it stay its own.
    let vm1 = pool.dataset_path(&ds("vm1"));
    assert_eq!(std::fs::metadata(vm1.join("root/etc/data")).expect("file").len(), 1 << 20);
    std::fs::write(vm1.join("root/etc/data"), b"changed").expect("write");
    assert_eq!(std::fs::metadata(pool.dataset_path(&ds("vm2")).join("root/etc/data")).expect("file").len(), 1 << 20);
    // A clone's snapshot directory is at most an empty placeholder, never the origin's.
    assert!(std::fs::read_dir(vm1.join(".snapshots")).map(|mut d| d.next().is_none()).unwrap_or(true));

    // Snapshots of clones, and clones of those.
    pool.snapshot(&snap("vm1@s1")).expect("snapshot clone");
    pool.clone_snapshot(&snap("vm1@s1"), &ds("vm1b")).expect("clone of clone");

    let list = pool.list().expect("list");
    let get = |n: &str| list.iter().find(|d| d.name == n).unwrap_or_else(|| panic!("{n} missing from {list:?}"));
    assert_eq!(get("vm1").origin.as_deref(), Some("img@final"));
    assert_eq!(get("vm1b").origin.as_deref(), Some("vm1@s1"));
    assert_eq!(get("img").origin, None);
    assert_eq!(get("img@final").kind, DatasetKind::Snapshot);

    // Destroy is refused while clones depend on the image, and removes them when recursive.
    match hull_storage::destroy(pool, &ds("img"), false) {
        Err(StorageError::HasClones { clones, .. }) => {
            assert_eq!(clones, vec!["zones/vm1", "zones/vm2"])
        }
        other => panic!("expected HasClones, got {other:?}"),
    }
    match hull_storage::destroy(pool, &ds("vm2"), false) {
        Ok(gone) => assert_eq!(gone, vec!["zones/vm2"]),
        other => panic!("plain destroy of a clone: {other:?}"),
    }

    // Rename carries snapshots, and clones follow the new name.
    pool.rename(&ds("vm1"), &ds("vm1-renamed")).expect("rename");
    assert!(matches!(pool.rename(&ds("vm1-renamed"), &ds("img")), Err(StorageError::Exists(_))));
    let list = pool.list().expect("list");
    let vm1b = list.iter().find(|d| d.name == "vm1b").expect("vm1b");
    assert_eq!(vm1b.origin.as_deref(), Some("vm1-renamed@s1"));

    let gone = hull_storage::destroy(pool, &ds("img"), true).expect("destroy -r");
    assert_eq!(gone, vec!["zones/vm1b", "zones/vm1-renamed@s1", "zones/vm1-renamed", "zones/img@final", "zones/img"]);
    assert!(pool.list().expect("list").is_empty());
}

/// Rollback puts contents back and keeps snapshots (later ones too) and clones.
fn rollback(pool: &dyn Pool) {
    pool.create(&ds("r")).expect("create");
    let p = pool.dataset_path(&ds("r"));
    std::fs::write(p.join("f"), b"one").expect("write");
    pool.snapshot(&snap("r@s1")).expect("snapshot");
    std::fs::write(p.join("f"), b"two").expect("write");
    std::fs::write(p.join("g"), b"new").expect("write");
    pool.snapshot(&snap("r@s2")).expect("snapshot");
    pool.clone_snapshot(&snap("r@s1"), &ds("rc")).expect("clone");
    pool.rollback(&snap("r@s1")).expect("rollback");
    assert_eq!(std::fs::read(p.join("f")).expect("read"), b"one");
    assert!(!p.join("g").exists());
    let names: Vec<String> = pool.list().expect("list").into_iter().map(|d| d.name).collect();
    for want in ["r", "r@s1", "r@s2", "rc"] {
        assert!(names.contains(&want.to_string()), "{want} missing from {names:?}");
    }
    assert_eq!(hull_storage::get(pool, "rc").expect("rc").origin.as_deref(), Some("r@s1"));
    assert!(matches!(pool.rollback(&snap("r@nope")), Err(StorageError::NotFound(_))));
    hull_storage::destroy(pool, &ds("r"), true).expect("destroy");
}

#[test]
fn btrfs_lifecycle() {
    let n = btrfs();
    let pool = n.pool();
    assert_eq!(pool.backend(), PoolBackend::Btrfs);
    lifecycle(pool.as_ref());
    rollback(pool.as_ref());
}

#[test]
fn dir_lifecycle() {
    let base = tempfile::tempdir().expect("tempdir");
    let n = TestNode::new(PoolSpec {
        backend: Some(PoolBackend::Dir),
        dir: Some(base.path().join("pool")),
        ..Default::default()
    });
    let pool = n.pool();
    assert_eq!(pool.backend(), PoolBackend::Dir);
    assert!(!pool.caps().quota);
    lifecycle(pool.as_ref());
    rollback(pool.as_ref());
    assert!(matches!(pool.set_quota(&ds("x"), Some(1)), Err(StorageError::Unsupported { .. })));
}

#[test]
fn btrfs_origins_match_the_kernel() {
    let n = btrfs();
    let pool = n.pool();
    pool.create(&ds("img")).expect("create");
    pool.snapshot(&snap("img@final")).expect("snapshot");
    pool.clone_snapshot(&snap("img@final"), &ds("c")).expect("clone");
    // Oracle: btrfs subvolume show prints the clone's parent UUID and the snapshot's UUID.
    let show = |p: &Path| {
        let out = std::process::Command::new("btrfs").arg("subvolume").arg("show").arg(p).output().expect("btrfs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let field = |text: &str, key: &str| {
        text.lines().find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_string())).expect(key)
    };
    let snap_uuid = field(&show(&pool.mountpoint().join("img/.snapshots/final")), "UUID:");
    let clone_parent = field(&show(&pool.mountpoint().join("c")), "Parent UUID:");
    assert_eq!(snap_uuid, clone_parent);
    let c = hull_storage::get(pool.as_ref(), "c").expect("get");
    assert_eq!(c.origin.as_deref(), Some("img@final"));
}

#[test]
fn btrfs_space_is_shared_and_quota_enforced() {
    let n = btrfs();
    let pool = n.pool();
    pool.create(&ds("img")).expect("create");
    write(&pool.dataset_path(&ds("img")).join("root/blob"), 64 << 20);
    pool.snapshot(&snap("img@final")).expect("snapshot");
    let before = pool.usage().expect("usage").used;
    for i in 0..10 {
        pool.clone_snapshot(&snap("img@final"), &ds(&format!("c{i}"))).expect("clone");
    }
    nix::unistd::sync();
    let after = pool.usage().expect("usage").used;
    assert!(after - before < 16 << 20, "10 clones of 64 MiB took {} bytes", after - before);

    let list = pool.list().expect("list");
    let img = list.iter().find(|d| d.name == "img").expect("img");
    let c0 = list.iter().find(|d| d.name == "c0").expect("c0");
    assert!(img.referenced >= 64 << 20, "img referenced {}", img.referenced);
    assert!(img.used >= 64 << 20, "img used {}", img.used);
    assert!(c0.referenced >= 64 << 20, "clone referenced {}", c0.referenced);
    assert!(c0.used < 1 << 20, "clone used {}", c0.used);

    pool.set_quota(&ds("c1"), Some(8 << 20)).expect("quota");
    let c1 = hull_storage::get(pool.as_ref(), "c1").expect("get");
    assert_eq!(c1.quota, Some(8 << 20));
    // Writing past the quota fails with EDQUOT.
    let target = pool.dataset_path(&ds("c1")).join("more");
    let res = std::fs::write(&target, vec![1u8; 16 << 20]).and_then(|()| std::fs::File::open(&target)?.sync_all());
    let err = res.expect_err("quota must stop the write");
    assert_eq!(err.raw_os_error(), Some(libc::EDQUOT), "{err}");
    pool.set_quota(&ds("c1"), None).expect("clear quota");
    assert_eq!(hull_storage::get(pool.as_ref(), "c1").expect("get").quota, None);
}

#[test]
fn pool_import_after_unmount_and_status() {
    let n = btrfs();
    let pool = n.pool();
    pool.create(&ds("keep")).expect("create");
    std::fs::write(pool.dataset_path(&ds("keep")).join("f"), b"kept").expect("write");
    let mnt = n.node.zones_dir();
    assert!(std::process::Command::new("umount").arg(&mnt).status().expect("umount").success());
    assert!(!pool.exists(&ds("keep")));
    n.node.import_pool().expect("import");
    assert_eq!(std::fs::read(mnt.join("keep/f")).expect("read"), b"kept");
    let u = n.pool().usage().expect("usage");
    assert!(u.size > 400 << 20 && u.size <= 512 << 20, "size {}", u.size);
}

#[test]
fn pool_create_refuses_bad_requests_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::new(dir.path(), "hst").expect("node");
    let err = node.create_pool(&PoolSpec { size: Some(16 << 20), ..Default::default() }).expect_err("too small");
    assert!(err.to_string().contains("below the btrfs minimum"), "{err}");
    assert!(!node.default_pool_file().exists());
    assert!(!node.zones_dir().exists());
    assert!(node.load_config().expect("config").pool.is_none());
    let err = node
        .create_pool(&PoolSpec { backend: Some(PoolBackend::Dir), size: Some(1 << 30), ..Default::default() })
        .expect_err("size on dir");
    assert!(err.to_string().contains("does not apply"), "{err}");
    assert!(Node::new(dir.path(), "bad/prefix").is_err());
}
