//! imgadm on a real loop-backed btrfs pool.

mod common;
use common::*;

#[test]
fn install_list_get_clone_delete() {
    let n = TestNode::new("512M");
    let (m, f, uuid) = n.build(&["--busybox"], "bb");
    let out = n.hull(&["imgadm", "install", "-m", &m.to_string_lossy(), "-f", &f.to_string_lossy()]);
    assert_eq!(out.stderr, "", "nothing but the result when not on a terminal");
    assert_eq!(out.ok(), format!("Installed image {uuid} (bb@1.0.0)\n"));

    // The image is a dataset with @final, root/ holds busybox.
    assert_eq!(n.datasets(), vec![uuid.clone(), format!("{uuid}@final")]);
    let sh = n.zones().join(&uuid).join("root/bin/sh");
    assert_eq!(std::fs::read_link(&sh).expect("link"), std::path::Path::new("/bin/busybox"));

    let list = n.hull(&["imgadm", "list"]).ok();
    assert!(list.starts_with("UUID"), "{list}");
    assert!(list.contains(&format!("{uuid}  bb    1.0.0    linux  zone-dataset")), "{list}");
    assert_eq!(n.hull(&["imgadm", "list", "-H", "-o", "uuid,name,clones"]).ok(), format!("{uuid}\tbb\t0\n"));
    assert_eq!(n.hull(&["imgadm", "list", "-H", "-o", "name", "name=~nothere"]).ok(), "");
    assert_eq!(n.hull(&["imgadm", "list", "-H", "-o", "name", "os=linux"]).ok(), "bb\n");
    let j: serde_json::Value = serde_json::from_str(&n.hull(&["imgadm", "list", "-j"]).ok()).expect("json");
    assert_eq!(j[0]["manifest"]["uuid"], uuid.as_str());
    assert_eq!(j[0]["zpool"], "zones");

    let get: serde_json::Value = serde_json::from_str(&n.hull(&["imgadm", "get", &uuid]).ok()).expect("json");
    assert_eq!(get["manifest"]["name"], "bb");

    // A clone of @final makes the image undeletable until it goes.
    n.hull(&["dataset", "clone", &format!("zones/{uuid}@final"), "zones/inst1"]).ok();
    assert_eq!(n.hull(&["imgadm", "list", "-H", "-o", "clones"]).ok(), "1\n");
    let r = n.hull(&["imgadm", "delete", &uuid]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("dependent clones (zones/inst1)"), "{}", r.stderr);
    let r = n.hull(&["imgadm", "vacuum", "-f"]);
    assert_eq!(r.ok(), "Zero unused images to delete.\n");
    n.hull(&["dataset", "destroy", "zones/inst1"]).ok();
    assert_eq!(n.hull(&["imgadm", "delete", &uuid]).ok(), format!("Deleted image {uuid}\n"));
    assert!(n.datasets().is_empty());
    assert_eq!(n.hull(&["imgadm", "list", "-H"]).ok(), "");
}

#[test]
fn exit_codes() {
    let n = TestNode::new("256M");
    let missing = "2b3d4f5a-0000-4000-8000-000000000001";
    for verb in ["get", "delete"] {
        let r = n.hull(&["imgadm", verb, missing]);
        assert_eq!(r.code, 3, "{verb}: {}", r.stderr);
        assert!(r.stderr.contains(&format!("image {missing} is not installed")), "{}", r.stderr);
    }
    assert_eq!(n.hull(&["imgadm", "get", "not-a-uuid"]).code, 2);
    assert_eq!(n.hull(&["imgadm", "frobnicate"]).code, 2);
    assert_eq!(n.hull(&["imgadm", "install", "-m", "/nonexistent.json"]).code, 2);
    // --include takes Debian package names, and only for a Debian root; nothing is left.
    let out = n.root().join("out");
    let o = out.to_string_lossy();
    let r = n.hull(&["imgadm", "build", "--busybox", "--include", "cloud-init", "-n", "x", "-o", &o]);
    assert!(r.code != 0 && r.stderr.contains("--include"), "{}", r.stderr);
    for bad in ["bad;name", "../x", "Upper", "a"] {
        let r = n.hull(&["imgadm", "build", "--debootstrap", "--include", bad, "-n", "x", "-o", &o]);
        assert!(r.code != 0 && r.stderr.contains("invalid package name"), "{bad}: {}", r.stderr);
    }
    let left: Vec<_> =
        std::fs::read_dir(&out).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn runs_as_imgadm_through_a_link() {
    let n = TestNode::new("256M");
    let link = n.root().join("imgadm");
    std::os::unix::fs::symlink(HULL, &link).expect("symlink");
    let out = std::process::Command::new(&link).args(["list", "-H"]).env("HULL_ROOT", n.root()).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = std::process::Command::new(&link).args(["get", "x"]).env("HULL_ROOT", n.root()).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
}

/// The image, file and verdict of each bad install.
#[test]
fn bad_installs_leave_nothing() {
    let n = TestNode::new("512M");
    let (m, f, uuid) = n.build(&["--busybox"], "bb");
    let dir = n.root().join("bad");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let ms = m.to_string_lossy().into_owned();
    let fs = f.to_string_lossy().into_owned();

    let check = |manifest: &str, file: &str, want: &str| {
        let r = n.hull(&["imgadm", "install", "-m", manifest, "-f", file]);
        assert_eq!(r.code, 1, "expected failure for {want}: {}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains(want), "expected {want:?} in {:?}", r.stderr);
        assert!(n.datasets().is_empty(), "left {:?} after {want}", n.datasets());
        assert_eq!(n.hull(&["imgadm", "list", "-H"]).ok(), "");
        assert!(n.lock_is_free(&uuid));
    };

    // sha1 that does not match
    let m2 = dir.join("sha1.json");
    std::fs::copy(&m, &m2).expect("copy");
    edit_manifest(&m2, |v| v["files"][0]["sha1"] = "0000000000000000000000000000000000000000".into());
    check(&m2.to_string_lossy(), &fs, "has sha1");

    // size that does not match
    let m3 = dir.join("size.json");
    std::fs::copy(&m, &m3).expect("copy");
    edit_manifest(&m3, |v| v["files"][0]["size"] = 12.into());
    check(&m3.to_string_lossy(), &fs, "has size");

    // a truncated archive whose manifest matches it
    let trunc = dir.join("trunc.tar.gz");
    let bytes = std::fs::read(&f).expect("read");
    std::fs::write(&trunc, &bytes[..bytes.len() / 2]).expect("write");
    let m4 = dir.join("trunc.json");
    std::fs::copy(&m, &m4).expect("copy");
    let (sha, size) = (sha1_hex(&trunc), bytes.len() / 2);
    edit_manifest(&m4, |v| {
        v["files"][0]["sha1"] = sha.into();
        v["files"][0]["size"] = size.into();
    });
    check(&m4.to_string_lossy(), &trunc.to_string_lossy(), "is not a valid gzip image archive");

    // a file that is no archive at all
    let junk = dir.join("junk");
    random_file(&junk, 100_000);
    let m5 = dir.join("junk.json");
    std::fs::copy(&m, &m5).expect("copy");
    let sha = sha1_hex(&junk);
    edit_manifest(&m5, |v| {
        v["files"][0]["sha1"] = sha.into();
        v["files"][0]["size"] = 100_000.into();
    });
    check(&m5.to_string_lossy(), &junk.to_string_lossy(), "is not a valid gzip image archive");

    // manifests: unknown field, missing field, bad uuid, bad JSON
    let m6 = dir.join("unknown.json");
    std::fs::copy(&m, &m6).expect("copy");
    edit_manifest(&m6, |v| v["flavour"] = "mint".into());
    check(&m6.to_string_lossy(), &fs, "unknown field `flavour`");
    let m7 = dir.join("missing.json");
    std::fs::copy(&m, &m7).expect("copy");
    edit_manifest(&m7, |v| {
        v.as_object_mut().expect("object").remove("os");
    });
    check(&m7.to_string_lossy(), &fs, "missing field `os`");
    let m8 = dir.join("uuid.json");
    std::fs::copy(&m, &m8).expect("copy");
    edit_manifest(&m8, |v| v["uuid"] = "1234".into());
    check(&m8.to_string_lossy(), &fs, "uuid: ");
    let m9 = dir.join("broken.json");
    std::fs::write(&m9, "{\"v\": 2,").expect("write");
    check(&m9.to_string_lossy(), &fs, "invalid manifest");

    // an origin that is not installed
    let m10 = dir.join("origin.json");
    std::fs::copy(&m, &m10).expect("copy");
    edit_manifest(&m10, |v| v["origin"] = "6f0a7d9e-0000-4000-8000-00000000abcd".into());
    check(&m10.to_string_lossy(), &fs, "needs its origin image 6f0a7d9e-0000-4000-8000-00000000abcd");

    // the good one still installs, and a second install is refused
    n.hull(&["imgadm", "install", "-m", &ms, "-f", &fs]).ok();
    let r = n.hull(&["imgadm", "install", "-m", &ms, "-f", &fs]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("already installed"), "{}", r.stderr);
}

#[test]
fn pool_too_small_for_the_image() {
    let n = TestNode::new("160M");
    let src = n.root().join("big");
    std::fs::create_dir_all(&src).expect("mkdir");
    random_file(&src.join("blob"), 200 << 20);
    let (m, f, uuid) = n.build(&["--dir", &src.to_string_lossy(), "-c", "none"], "big");
    let r = n.hull(&["imgadm", "install", "-m", &m.to_string_lossy(), "-f", &f.to_string_lossy()]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stderr.contains(&format!("image {uuid}: the pool is out of space")), "{}", r.stderr);
    assert!(n.datasets().is_empty(), "{:?}", n.datasets());
    assert!(n.lock_is_free(&uuid));
}

#[test]
fn interrupted_installs_leave_no_image() {
    let n = TestNode::new("256M");
    let (m, f, uuid) = n.build(&["--busybox"], "bb");
    let (m, f) = (m.to_string_lossy().into_owned(), f.to_string_lossy().into_owned());
    for point in ["img-install-unpacked", "img-install-snapshotted", "img-install-recorded"] {
        let r = n.hull_env(&["imgadm", "install", "-m", &m, "-f", &f], &[("HULL_FAILPOINT", point)]);
        assert_ne!(r.code, 0, "{point}: the failpoint did not fire");
        assert!(r.stderr.contains(&format!("failpoint {point}")), "{}", r.stderr);
        // The crash left a partial behind ...
        assert!(n.zones().join(format!("{uuid}-partial")).exists(), "{point}: no partial to clean");
        // ... which the next command removes, and no image shows.
        assert_eq!(n.hull(&["imgadm", "list", "-H"]).ok(), "", "{point}");
        assert!(n.datasets().is_empty(), "{point}: {:?}", n.datasets());
        assert!(n.lock_is_free(&uuid));
        let records = n.root().join(format!("var/imgadm/images/zones-{uuid}.json"));
        assert!(!records.exists(), "{point}: the record of an image that never was is gone");
    }
    n.hull(&["imgadm", "install", "-m", &m, "-f", &f]).ok();
    assert_eq!(n.hull(&["imgadm", "list", "-H", "-o", "uuid"]).ok(), format!("{uuid}\n"));
}

#[test]
fn two_installs_at_once() {
    let n = TestNode::new("512M");
    let src = n.root().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    random_file(&src.join("blob"), 64 << 20);
    let (m, f, uuid) = n.build(&["--dir", &src.to_string_lossy(), "-c", "none"], "twice");
    let spawn = || {
        n.cmd()
            .args(["imgadm", "install", "-m", &m.to_string_lossy(), "-f", &f.to_string_lossy()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let (a, b) = (spawn(), spawn());
    let outs = [a.wait_with_output().expect("wait"), b.wait_with_output().expect("wait")];
    let ok = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(ok, 1, "exactly one install wins: {outs:?}");
    let loser = outs.iter().find(|o| !o.status.success()).expect("loser");
    let err = String::from_utf8_lossy(&loser.stderr);
    assert!(err.contains("being installed") || err.contains("already installed"), "{err}");
    assert_eq!(n.datasets(), vec![uuid.clone(), format!("{uuid}@final")]);
    assert!(n.lock_is_free(&uuid));
}

#[test]
fn incremental_image_on_an_origin() {
    let n = TestNode::new("256M");
    let base = n.busybox();
    // The child's layer adds a file and removes /etc/hostname through a whiteout.
    let layer = n.root().join("layer");
    std::fs::create_dir_all(layer.join("etc")).expect("mkdir");
    std::fs::write(layer.join("hello"), b"from the child").expect("write");
    std::fs::write(layer.join("etc/.wh.hostname"), b"").expect("write");
    let (m, f, child) = n.build(&["--dir", &layer.to_string_lossy()], "child");
    edit_manifest(&m, |v| v["origin"] = base.clone().into());
    n.hull(&["imgadm", "install", "-m", &m.to_string_lossy(), "-f", &f.to_string_lossy()]).ok();
    let root = n.zones().join(&child).join("root");
    assert_eq!(std::fs::read(root.join("hello")).expect("read"), b"from the child");
    assert!(!root.join("etc/hostname").exists());
    assert!(root.join("bin/busybox").exists(), "the origin's files are there");
    assert!(n.zones().join(&base).join("root/etc/hostname").exists(), "the origin is untouched");
    assert_eq!(n.hull(&["dataset", "get", "origin", &format!("zones/{child}")]).ok(), format!("zones/{base}@final\n"));
    // The base is in use by the child; vacuum removes both, child first.
    let r = n.hull(&["imgadm", "delete", &base]);
    assert!(r.stderr.contains("dependent clones"), "{}", r.stderr);
    let out = n.hull(&["imgadm", "vacuum", "-f"]).ok();
    assert!(out.contains(&format!("Deleted image {child}")) && out.contains(&format!("Deleted image {base}")), "{out}");
    assert!(n.datasets().is_empty());
}

#[test]
fn vacuum_needs_confirmation_when_not_interactive() {
    let n = TestNode::new("256M");
    let uuid = n.busybox();
    let r = n.hull(&["imgadm", "vacuum"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("use -f"), "{}", r.stderr);
    assert_eq!(n.hull(&["imgadm", "vacuum", "-n"]).ok(), format!("[dry-run] Would delete image {uuid} (bb@1.0.0)\n"));
    assert_eq!(n.datasets().len(), 2);
}

#[test]
fn zstd_and_uncompressed_images() {
    let n = TestNode::new("256M");
    for c in ["zstd", "none"] {
        let (m, f, uuid) = n.build(&["--busybox", "-c", c], &format!("bb-{c}"));
        n.hull(&["imgadm", "install", "-m", &m.to_string_lossy(), "-f", &f.to_string_lossy()]).ok();
        assert!(n.zones().join(&uuid).join("root/bin/busybox").exists(), "{c}");
    }
    let r = n.hull(&["imgadm", "build", "--busybox", "-n", "x", "-c", "lzma"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn sources_add_list_delete() {
    let n = TestNode::bare();
    assert_eq!(n.hull(&["imgadm", "sources"]).ok(), "");
    assert!(
        n.hull(&["imgadm", "sources", "-a", "http://127.0.0.1:9/"])
            .ok()
            .contains("Added \"imgapi\" image source \"http://127.0.0.1:9\"")
    );
    assert!(n.hull(&["imgadm", "sources", "-a", "http://127.0.0.1:9"]).ok().contains("no change"));
    let r = n.hull(&["imgadm", "sources", "-a", "ftp://x"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("invalid source URL"), "{}", r.stderr);
    let j: serde_json::Value = serde_json::from_str(&n.hull(&["imgadm", "sources", "-j"]).ok()).expect("json");
    assert_eq!(j, serde_json::json!([{"url": "http://127.0.0.1:9", "type": "imgapi"}]));
    n.hull(&["imgadm", "sources", "-d", "http://127.0.0.1:9"]).ok();
    assert_eq!(n.hull(&["imgadm", "sources"]).ok(), "");
    assert!(!n.zones().exists(), "sources never needs a pool");
}

/// A tree with a device node, a FIFO and a socket builds (the socket left out, as GNU tar
/// leaves it) and installs with the node and the FIFO as they were; so does a layer of them.
#[test]
fn special_files_build_and_install() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let n = TestNode::new("256M");
    let dir = n.root().join("tree");
    std::fs::create_dir_all(dir.join("dev")).expect("mkdir");
    let dev = nix::sys::stat::makedev(1, 3);
    nix::sys::stat::mknod(
        &dir.join("dev/null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        dev,
    )
    .expect("mknod");
    nix::unistd::mkfifo(&dir.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let _sock = std::os::unix::net::UnixListener::bind(dir.join("sock")).expect("socket");
    let (m, f, uuid) = n.build(&["--dir", &dir.to_string_lossy()], "special");
    n.hull(&["imgadm", "install", "-m", &m.to_string_lossy(), "-f", &f.to_string_lossy()]).ok();
    let root = n.zones().join(&uuid).join("root");
    let null = std::fs::symlink_metadata(root.join("dev/null")).expect("dev/null");
    assert!(null.file_type().is_char_device() && null.rdev() == dev, "{null:?}");
    assert!(std::fs::symlink_metadata(root.join("fifo")).expect("fifo").file_type().is_fifo());
    assert!(!root.join("sock").exists());
}
