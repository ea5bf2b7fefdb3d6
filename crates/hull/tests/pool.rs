//! hull pool and hull dataset from the command line.

mod common;
use common::*;

fn loops_of(file: &std::path::Path) -> usize {
    let out = std::process::Command::new("losetup").arg("-j").arg(file).output().expect("losetup");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn pool_create_status_import_destroy() {
    let n = TestNode::bare();
    n.hull(&["pool", "create", "--size", "300M"]).ok();
    let s: serde_json::Value = serde_json::from_str(&n.hull(&["pool", "status", "-j"]).ok()).expect("json");
    assert_eq!(s["backend"], "btrfs");
    assert_eq!(s["name"], "zones");
    assert_eq!(s["datasets"], 0);
    let size = s["size"].as_u64().expect("size");
    assert!(size > 250 << 20 && size <= 300 << 20, "size {size}");
    assert!(s["used"].as_u64().expect("used") + s["free"].as_u64().expect("free") <= size);
    let file = n.root().join("var/hull/zones.img");
    assert_eq!(loops_of(&file), 1);

    let r = n.hull(&["pool", "create"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("already has a pool"), "{}", r.stderr);

    // After an unmount (a reboot), import mounts it again with its data.
    n.hull(&["dataset", "create", "zones/keep"]).ok();
    assert!(std::process::Command::new("umount").arg(n.zones()).status().expect("umount").success());
    assert_eq!(loops_of(&file), 0, "the loop device goes with the mount");
    n.hull(&["pool", "import"]).ok();
    assert_eq!(n.datasets(), vec!["keep"]);

    let text = n.hull(&["pool", "status"]).ok();
    assert!(text.contains("backend:   btrfs") && text.contains("datasets:  1 (0 snapshots)"), "{text}");
    n.hull(&["pool", "destroy"]).ok();
    assert!(!file.exists());
    assert!(!n.zones().exists());
    assert_eq!(loops_of(&file), 0);
    let r = n.hull(&["pool", "status"]);
    assert!(r.stderr.contains("no pool"), "{}", r.stderr);
}

#[test]
fn the_embedded_default_is_made_on_first_use() {
    let n = TestNode::bare();
    assert_eq!(n.hull(&["imgadm", "list", "-H"]).ok(), "");
    let s: serde_json::Value = serde_json::from_str(&n.hull(&["pool", "status", "-j"]).ok()).expect("json");
    assert_eq!(s["backend"], "btrfs");
    assert_eq!(s["file"], n.root().join("var/hull/zones.img").to_string_lossy().as_ref());
    // Sparse: the file takes far less than its size.
    let meta = std::fs::metadata(n.root().join("var/hull/zones.img")).expect("file");
    assert!(std::os::unix::fs::MetadataExt::blocks(&meta) * 512 < 64 << 20);
}

#[test]
fn datasets_from_the_command_line() {
    let n = TestNode::new("256M");
    n.hull(&["dataset", "create", "zones/base"]).ok();
    std::fs::write(n.zones().join("base/data"), vec![5u8; 4 << 20]).expect("write");
    n.hull(&["dataset", "snapshot", "zones/base@s1"]).ok();
    n.hull(&["dataset", "clone", "zones/base@s1", "zones/c1"]).ok();
    assert_eq!(n.datasets(), vec!["base", "base@s1", "c1"]);
    assert_eq!(
        n.hull(&["dataset", "list", "-H", "-o", "name,origin"]).ok(),
        "zones/base\t-\nzones/c1\tzones/base@s1\n"
    );
    assert_eq!(n.hull(&["dataset", "list", "-H", "-t", "snapshot", "-o", "name"]).ok(), "zones/base@s1\n");
    let list = n.hull(&["dataset", "list"]).ok();
    assert!(list.starts_with("NAME"), "{list}");
    let j: serde_json::Value = serde_json::from_str(&n.hull(&["dataset", "list", "-j"]).ok()).expect("json");
    let c1 = j.as_array().expect("array").iter().find(|d| d["name"] == "zones/c1").expect("c1").clone();
    assert!(c1["referenced"].as_u64().expect("refer") >= 4 << 20);
    assert!(c1["used"].as_u64().expect("used") < 1 << 20, "{c1}");

    // quota
    n.hull(&["dataset", "set", "quota=10M", "zones/c1"]).ok();
    assert_eq!(n.hull(&["dataset", "get", "-p", "quota", "zones/c1"]).ok(), format!("{}\n", 10 << 20));
    n.hull(&["dataset", "set", "quota=none", "zones/c1"]).ok();
    assert_eq!(n.hull(&["dataset", "get", "quota", "zones/c1"]).ok(), "-\n");
    assert_eq!(n.hull(&["dataset", "set", "quota=lots", "zones/c1"]).code, 1);
    assert_eq!(n.hull(&["dataset", "set", "compression=on", "zones/c1"]).code, 1);

    // destroy refuses with dependents, -r takes them
    let r = n.hull(&["dataset", "destroy", "zones/base"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("dependent clones (zones/c1)"), "{}", r.stderr);
    let r = n.hull(&["dataset", "destroy", "zones/base@s1"]);
    assert!(r.stderr.contains("dependent clones"), "{}", r.stderr);
    n.hull(&["dataset", "rename", "zones/c1", "zones/c2"]).ok();
    assert_eq!(
        n.hull(&["dataset", "destroy", "-r", "zones/base"]).ok(),
        "destroyed zones/c2\ndestroyed zones/base@s1\ndestroyed zones/base\n"
    );
    assert!(n.datasets().is_empty());

    // bad names
    for (args, want) in [
        (vec!["dataset", "create", "tank/x"], "datasets are named zones/NAME"),
        (vec!["dataset", "create", "zones/a b"], "may not contain ' '"),
        (vec!["dataset", "create", "zones/.hidden"], "may not start with '.'"),
        (vec!["dataset", "snapshot", "zones/nope@s"], "zones/nope does not exist"),
        (vec!["dataset", "clone", "zones/nope@s", "zones/x"], "zones/nope@s does not exist"),
        (vec!["dataset", "destroy", "zones/nope"], "zones/nope does not exist"),
    ] {
        let r = n.hull(&args);
        assert_eq!(r.code, 1, "{args:?}");
        assert!(r.stderr.contains(want), "{args:?}: {}", r.stderr);
    }
    assert!(n.datasets().is_empty());
}

#[test]
fn dir_backend_from_the_command_line() {
    let n = TestNode::bare();
    let dir = n.root().join("pooldir");
    n.hull(&["pool", "create", "--backend", "dir", "--dir", &dir.to_string_lossy()]).ok();
    let uuid = n.busybox();
    n.hull(&["dataset", "clone", &format!("zones/{uuid}@final"), "zones/vm"]).ok();
    assert!(n.zones().join("vm/root/bin/busybox").exists());
    assert_eq!(n.hull(&["dataset", "get", "origin", "zones/vm"]).ok(), format!("zones/{uuid}@final\n"));
    let r = n.hull(&["dataset", "set", "quota=1G", "zones/vm"]);
    assert!(r.stderr.contains("the dir backend does not support quotas"), "{}", r.stderr);
    n.hull(&["pool", "destroy"]).ok();
    assert!(!n.zones().exists());
}
