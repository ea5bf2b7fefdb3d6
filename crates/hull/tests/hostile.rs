//! The tenant boundary, attacked: hostile images built here, hostile tenants with root in
//! their zone. Each test performs an attack that must fail and then checks the host: canary
//! files and directories outside the node untouched, other zones still running, the pool's
//! space. docs/zones.md says what the boundary promises.

mod common;
use common::*;
use std::path::{Path, PathBuf};

/// A host directory outside the node with a file in it: what attacks aim at.
struct Canary {
    dir: tempfile::TempDir,
}

impl Canary {
    fn new() -> Canary {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new().prefix("hull-canary-").tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
        std::fs::write(dir.path().join("victim"), b"host data\n").expect("write");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("sub/inner"), b"inner\n").expect("write");
        Canary { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Nothing in it changed, nothing was added, nothing went.
    fn intact(&self) {
        use std::os::unix::fs::MetadataExt;
        let p = self.path();
        assert_eq!(std::fs::read(p.join("victim")).expect("victim is there"), b"host data\n");
        assert_eq!(std::fs::read(p.join("sub/inner")).expect("inner is there"), b"inner\n");
        let mut names: Vec<_> =
            std::fs::read_dir(p).expect("ls").flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, ["sub", "victim"], "the host directory gained or lost entries");
        assert!(!p.join("etc").exists(), "nothing written below the host directory");
        let m = std::fs::metadata(p).expect("stat");
        assert_eq!((m.mode() & 0o7777, m.uid()), (0o700, 0), "mode and owner of the host directory");
    }
}

/// One entry of a hand-made image archive.
enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Link(&'a str, &'a str),
}

/// Writes an image (manifest and uncompressed file) whose archive holds `entries`, with
/// `origin` when given; returns (manifest, file, uuid).
fn hostile_image(n: &TestNode, entries: &[E], origin: Option<&str>) -> (PathBuf, PathBuf, String) {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        let (name, data): (&str, &[u8]) = match e {
            E::Dir(name) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                (name, b"")
            }
            E::File(name, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                (name, data)
            }
            E::Link(name, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_link_name(target).expect("link name");
                (name, b"")
            }
        };
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).expect("append");
    }
    let bytes = b.into_inner().expect("tar");
    let uuid = uuid::Uuid::new_v4().to_string();
    let dir = n.root().join("hostile");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let file = dir.join(format!("{uuid}.tar"));
    std::fs::write(&file, &bytes).expect("write image");
    let sha1 = sha1_hex(&file);
    let mut m = serde_json::json!({
        "v": 2, "uuid": uuid, "owner": "00000000-0000-0000-0000-000000000000", "name": "hostile",
        "version": "1.0", "state": "active", "disabled": false, "public": false,
        "published_at": "2026-01-01T00:00:00Z", "type": "zone-dataset", "os": "other",
        "files": [{"sha1": sha1, "size": bytes.len(), "compression": "none"}],
    });
    if let Some(o) = origin {
        m["origin"] = serde_json::json!(o);
    }
    let manifest = dir.join(format!("{uuid}.json"));
    std::fs::write(&manifest, m.to_string()).expect("write manifest");
    (manifest, file, uuid)
}

fn install(n: &TestNode, img: &(PathBuf, PathBuf, String)) -> Run {
    n.hull(&["imgadm", "install", "-m", &img.0.to_string_lossy(), "-f", &img.1.to_string_lossy()])
}

#[test]
fn image_whiteouts_cannot_remove_host_files() {
    let n = TestNode::new("512M");
    let c = Canary::new();
    let host = c.path().to_string_lossy().into_owned();
    let attacks: Vec<Vec<E>> = vec![
        vec![E::Dir("root/"), E::Link("root/link", &host), E::File("root/link/.wh.victim", b"")],
        vec![E::Dir("root/"), E::Link("root/link", &host), E::File("root/link/.wh..wh..opq", b"")],
        vec![E::Dir("root/"), E::Link("root/link", &host), E::File("root/link/sub/.wh.inner", b"")],
        vec![E::Dir("root/"), E::Link("root/link", &host), E::File("root/link/victim", b"tenant")],
        vec![E::Dir("root/"), E::Link("root/link", &host), E::Dir("root/link")],
        vec![E::Dir("root/"), E::Link("root/up", "../../../../../../.."), E::File("root/up/.wh.tmp", b"")],
    ];
    for (i, a) in attacks.iter().enumerate() {
        let img = hostile_image(&n, a, None);
        let r = install(&n, &img);
        c.intact();
        if i != 4 {
            assert_eq!(r.code, 1, "attack {i} installed: {}", r.stdout);
            assert!(r.stderr.contains("corrupt") || r.stderr.contains("link"), "attack {i}: {}", r.stderr);
            assert!(!n.datasets().iter().any(|d| d.contains(&img.2)), "attack {i} left a dataset");
        }
    }

    // An incremental image reaching through a link its origin holds.
    let origin = hostile_image(&n, &[E::Dir("root/"), E::Dir("root/var"), E::Link("root/var/cache", &host)], None);
    install(&n, &origin).ok();
    for entry in ["root/var/cache/.wh.victim", "root/var/cache/.wh..wh..opq", "root/var/cache/new"] {
        let img = hostile_image(&n, &[E::File(entry, b"")], Some(&origin.2));
        let r = install(&n, &img);
        assert_eq!(r.code, 1, "{entry} installed");
        c.intact();
    }
}

#[test]
fn an_image_whose_root_is_a_link_does_not_install() {
    let n = TestNode::new("512M");
    let c = Canary::new();
    let host = c.path().to_string_lossy().into_owned();
    for entries in [vec![E::Link("root", &host)], vec![E::File("root", b"not a dir")], vec![E::Dir("other/")]] {
        let img = hostile_image(&n, &entries, None);
        let r = install(&n, &img);
        assert_eq!(r.code, 1, "installed: {}", r.stdout);
        assert!(r.stderr.contains("root"), "{}", r.stderr);
        c.intact();
    }
    assert!(n.datasets().is_empty(), "{:?}", n.datasets());
    // And a VM whose root was swapped for a link after the fact does not boot on the host.
    let img = n.busybox();
    let f = n.root().join("p.json");
    std::fs::write(
        &f,
        serde_json::json!({"brand": "joyent-minimal", "image_uuid": img, "autoboot": false}).to_string(),
    )
    .expect("write");
    let v: serde_json::Value =
        serde_json::from_str(&n.hull(&["vmadm", "create", "-j", "-f", &f.to_string_lossy()]).ok()).expect("json");
    let uuid = v["uuid"].as_str().expect("uuid");
    // Host users cannot reach into image or VM datasets (set-id files, device nodes).
    for d in [n.zones().join(&img), n.zones().join(uuid)] {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&d).expect("dataset").permissions().mode() & 0o777, 0o700, "{}", d.display());
    }
    let root = n.zones().join(uuid).join("root");
    std::fs::rename(&root, n.zones().join(uuid).join("root.real")).expect("rename");
    std::os::unix::fs::symlink(c.path(), &root).expect("symlink");
    let r = n.hull(&["vmadm", "start", uuid]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("not a zone root"), "{}", r.stderr);
    c.intact();
}

/// The tenant's attack program (tests/hostile/attack.c), built static, copied into the
/// zone's root as /attack.
fn arm(n: &TestNode, uuid: &str) {
    let bin = n.root().join("attack");
    if !bin.exists() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile/attack.c");
        let out = std::process::Command::new("gcc")
            .args(["-static", "-O1", "-o"])
            .arg(&bin)
            .arg(&src)
            .output()
            .expect("run gcc");
        assert!(out.status.success(), "gcc: {}", String::from_utf8_lossy(&out.stderr));
    }
    std::fs::copy(&bin, n.zones().join(uuid).join("root/attack")).expect("copy attack");
}

fn zone(n: &TestNode, img: &str, extra: serde_json::Value) -> String {
    let mut p = serde_json::json!({"brand": "joyent-minimal", "image_uuid": img, "max_physical_memory": 64});
    for (k, v) in extra.as_object().expect("object") {
        p[k] = v.clone();
    }
    let f = n.root().join(format!("p-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&f, p.to_string()).expect("write");
    let v: serde_json::Value =
        serde_json::from_str(&n.hull(&["vmadm", "create", "-j", "-f", &f.to_string_lossy()]).ok()).expect("json");
    v["uuid"].as_str().expect("uuid").to_string()
}

fn state(n: &TestNode, uuid: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&n.hull(&["vmadm", "get", uuid]).ok()).expect("json");
    v["state"].as_str().unwrap_or_default().to_string()
}

#[test]
fn zone_root_cannot_make_subvolumes_user_namespaces_or_rings() {
    let n = TestNode::new("512M");
    let img = n.busybox();
    let victim = zone(&n, &img, serde_json::json!({"alias": "victim"}));
    let uuid = zone(&n, &img, serde_json::json!({"alias": "attacker", "quota": 1}));
    arm(&n, &uuid);
    let attack = |args: &[&str]| {
        let mut all = vec!["zlogin", uuid.as_str(), "/attack"];
        all.extend_from_slice(args);
        let r = n.hull(&all);
        format!("{}{}", r.stdout.trim(), r.stderr.trim())
    };
    // Subvolumes escape the quota and block deletion.
    assert_eq!(attack(&["subvol", "/", "escape"]), "refused EPERM");
    assert_eq!(attack(&["subvol", "/tmp", "escape"]), "refused EPERM");
    // A user namespace is the way to a cgroup2 mount showing every zone's cgroup.kill.
    assert_eq!(attack(&["userns"]), "refused EPERM");
    assert_eq!(attack(&["clone3"]), "refused ENOSYS");
    assert_eq!(attack(&["io_uring"]), "refused EPERM");
    assert!(!n.zones().join(&uuid).join("root/escape").exists());
    assert_eq!(state(&n, &victim), "running");
    // Deleting the attacker works and leaves the victim alone.
    n.hull(&["vmadm", "delete", &uuid]).ok();
    assert_eq!(state(&n, &victim), "running");
}

#[test]
fn zlogin_processes_are_wholly_inside_the_zone() {
    let n = TestNode::new("512M");
    let img = n.busybox();
    let uuid = zone(&n, &img, serde_json::json!({}));
    // In the zone's cgroup namespace, a cgroup outside the zone's shows as "/..".
    let cg = n.hull(&["zlogin", &uuid, "cat", "/proc/self/cgroup"]).ok();
    assert!(!cg.is_empty());
    for line in cg.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or_default();
        assert!(!path.starts_with("/.."), "a zlogin'd process is outside the zone's cgroup: {line}\n{cg}");
    }
}

#[test]
fn delete_removes_subvolumes_made_inside_a_vm() {
    let n = TestNode::new("512M");
    let img = n.busybox();
    let uuid = zone(&n, &img, serde_json::json!({}));
    // As a tenant could before zones were refused the ioctl: nested, two deep.
    let root = n.zones().join(&uuid).join("root");
    for p in [root.join("nested"), root.join("nested/deeper")] {
        let out = std::process::Command::new("btrfs").args(["subvolume", "create"]).arg(&p).output().expect("btrfs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    std::fs::write(root.join("nested/deeper/data"), b"x").expect("write");
    n.hull(&["vmadm", "delete", &uuid]).ok();
    assert!(!n.zones().join(&uuid).exists());
    assert_eq!(n.datasets(), vec![img.clone(), format!("{img}@final")]);
}

#[test]
fn a_relative_root_is_stored_absolute() {
    let n = TestNode::bare();
    let run = |cwd: &Path, args: &[&str]| {
        let mut c = std::process::Command::new(HULL);
        c.current_dir(cwd).env_remove("HULL_ROOT").args(["--node", n.prefix.as_str()]).args(args);
        let out = common::bounded(&mut c);
        assert!(out.code == 0, "{args:?}: {}", out.stderr);
    };
    run(n.root(), &["--root", "node", "pool", "create", "--size", "256M"]);
    let cfg = std::fs::read_to_string(n.root().join("node/etc/hull/node.json")).expect("node.json");
    let v: serde_json::Value = serde_json::from_str(&cfg).expect("json");
    let file = v["pool"]["file"].as_str().expect("file");
    assert!(file.starts_with('/'), "{cfg}");
    // From elsewhere, the same node by its absolute path: the pool goes, file and all.
    let abs = n.root().join("node").to_string_lossy().into_owned();
    run(Path::new("/"), &["--root", &abs, "pool", "destroy"]);
    assert!(!Path::new(file).exists());
}

#[test]
fn values_that_cannot_be_applied_are_refused_and_listing_survives_any_alias() {
    let n = TestNode::new("512M");
    let img = n.busybox();
    let f = n.root().join("p.json");
    for (k, v) in [
        ("quota", serde_json::json!(17_179_869_185u64)),
        ("max_lwps", serde_json::json!(0)),
        ("hostname", serde_json::json!("h".repeat(5000))),
        ("dns_domain", serde_json::json!("x.com\nnameserver 6.6.6.6")),
        ("routes", serde_json::json!({"10.0.0.0/8": "not-an-ip"})),
    ] {
        let mut p = serde_json::json!({"brand": "joyent-minimal", "image_uuid": img, "autoboot": false});
        p[k] = v;
        std::fs::write(&f, p.to_string()).expect("write");
        let r = n.hull(&["vmadm", "create", "-f", &f.to_string_lossy()]);
        assert_eq!(r.code, 1, "{k} accepted");
        assert!(r.stderr.contains(k), "{k}: {}", r.stderr);
    }
    assert_eq!(n.hull(&["vmadm", "list", "-H"]).ok(), "", "nothing made");
    // An alias as long as the table's widest cell ever was: list prints it.
    let uuid = zone(&n, &img, serde_json::json!({"alias": "a".repeat(4096), "autoboot": false}));
    let out = n.hull(&["vmadm", "list"]).ok();
    assert!(out.contains(&uuid));
    // The quota is stored as applied.
    n.hull(&["vmadm", "update", &uuid, "quota=17179869183"]).ok();
    let v: serde_json::Value = serde_json::from_str(&n.hull(&["vmadm", "get", &uuid]).ok()).expect("json");
    assert_eq!(v["quota"], 17_179_869_183u64);
    assert!(n.hull(&["vmadm", "update", &uuid, "quota=17179869185"]).code == 1);
}

#[test]
fn a_corrupt_supervisor_record_does_not_start_a_second_init() {
    let n = TestNode::new("512M");
    let img = n.busybox();
    let uuid = zone(&n, &img, serde_json::json!({}));
    std::fs::write(n.root().join(format!("var/hull/z/{uuid}/zoneadmd.json")), b"{\"zoneadm").expect("corrupt");
    assert_eq!(state(&n, &uuid), "running", "the runtime says it runs");
    let r = n.hull(&["vmadm", "start", &uuid]);
    assert_eq!(r.code, 1, "a second start went through");
    assert!(r.stderr.contains("running"), "{}", r.stderr);
    n.hull(&["vmadm", "stop", "-F", &uuid]).ok();
    assert_eq!(state(&n, &uuid), "stopped");
    n.hull(&["vmadm", "start", &uuid]).ok();
    assert_eq!(state(&n, &uuid), "running");
}

fn pid(n: &TestNode, uuid: &str) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(&n.hull(&["vmadm", "get", uuid]).ok()).expect("json");
    v["pid"].as_i64()
}

/// Waits up to ten seconds for the zone to run with an init other than `old`.
fn back_up(n: &TestNode, uuid: &str, old: Option<i64>) -> bool {
    for _ in 0..100 {
        if state(n, uuid) == "running" && pid(n, uuid).is_some() && pid(n, uuid) != old {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

#[test]
fn a_zone_whose_init_dies_comes_back_and_a_power_off_stays_off() {
    let n = TestNode::new("512M");
    let img = n.busybox();
    let uuid = zone(&n, &img, serde_json::json!({"max_physical_memory": 64, "tmpfs": 64}));
    // Its own memory pressure: /tmp as large as the cap, filled. Whatever the kernel kills,
    // the zone is up afterwards.
    let _ = n.hull(&["zlogin", &uuid, "dd", "if=/dev/zero", "of=/tmp/fill", "bs=1M", "count=200"]);
    // If the OOM killer took init, the zone is on its way back; give it the time.
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(back_up(&n, &uuid, None), "the zone is not running after its memory filled");
    let _ = n.hull(&["zlogin", &uuid, "rm", "-f", "/tmp/fill"]);
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(back_up(&n, &uuid, None));
    // Init killed as the OOM killer would.
    let before = pid(&n, &uuid);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(before.expect("pid") as i32), nix::sys::signal::Signal::SIGKILL)
        .expect("kill init");
    assert!(back_up(&n, &uuid, before), "init died and the zone stayed down");
    // reboot -f inside the zone reboots it.
    let before = pid(&n, &uuid);
    let _ = n.hull(&["zlogin", &uuid, "reboot", "-f"]);
    assert!(back_up(&n, &uuid, before), "reboot -f stopped the zone");
    // poweroff -f stays off, and so does vmadm stop.
    let _ = n.hull(&["zlogin", &uuid, "poweroff", "-f"]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(state(&n, &uuid), "stopped", "poweroff came back");
    n.hull(&["vmadm", "start", &uuid]).ok();
    n.hull(&["vmadm", "stop", "-F", &uuid]).ok();
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(state(&n, &uuid), "stopped", "vmadm stop came back");
    // restart_init false: a dead init leaves the zone down, as on SmartOS.
    n.hull(&["vmadm", "update", &uuid, "restart_init=false"]).ok();
    n.hull(&["vmadm", "start", &uuid]).ok();
    let p = pid(&n, &uuid).expect("pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(p as i32), nix::sys::signal::Signal::SIGKILL).expect("kill");
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(state(&n, &uuid), "stopped");
}

#[test]
fn a_broken_pipe_ends_a_tool_quietly_and_a_bad_record_hides_only_its_image() {
    let n = TestNode::new("512M");
    let a = n.busybox();
    let (m, f, b) = n.build(&["--busybox"], "bb2");
    n.hull(&["imgadm", "install", "-m", &m.to_string_lossy(), "-f", &f.to_string_lossy()]).ok();
    std::fs::write(n.root().join(format!("var/imgadm/images/zones-{a}.json")), b"{not json").expect("corrupt");
    let out = n.hull(&["imgadm", "list", "-H", "-o", "uuid"]).ok();
    assert_eq!(out.trim(), b, "the good image is listed");
    // A reader that goes away at once: no panic, no error message.
    use std::io::Read;
    let mut child = n
        .cmd()
        .args(["imgadm", "list", "-j"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let mut err = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut err).expect("read");
    let _ = child.wait();
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn zlogin_gives_the_zone_pipes_not_the_caller_s_descriptors() {
    let n = TestNode::new("512M");
    let img = n.busybox();
    let uuid = zone(&n, &img, serde_json::json!({}));
    arm(&n, &uuid);
    let c = Canary::new();
    let victim = c.path().join("victim");
    // The command reopens its stdin for writing: with the caller's descriptor, that was the
    // host file redirected into zlogin.
    let out = n
        .cmd()
        .args(["zlogin", &uuid, "/attack", "fd0"])
        .stdin(std::fs::File::open(&victim).expect("open"))
        .output()
        .expect("zlogin");
    eprintln!("fd0: {}", String::from_utf8_lossy(&out.stdout));
    c.intact();
    // Input and output still flow, and the exit status comes back.
    let out = n
        .cmd()
        .args(["zlogin", &uuid, "sh", "-c", "cat; echo err >&2; exit 3"])
        .stdin(std::fs::File::open(&victim).expect("open"))
        .output()
        .expect("zlogin");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "host data\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn zlogin_at_the_process_cap_says_so() {
    let n = TestNode::new("512M");
    let img = n.busybox();
    let uuid = zone(&n, &img, serde_json::json!({"max_lwps": 4}));
    let mut hog =
        n.cmd().args(["zlogin", &uuid, "sh", "-c", "sleep 30 & sleep 30 & sleep 30 & wait"]).spawn().expect("spawn");
    std::thread::sleep(std::time::Duration::from_secs(1));
    let r = n.hull(&["zlogin", &uuid, "true"]);
    let _ = hog.kill();
    let _ = hog.wait();
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("max_lwps"), "{}", r.stderr);
}

#[test]
fn an_init_that_is_missing_or_dies_at_once_leaves_its_zone_down_and_others_up() {
    let n = TestNode::new("512M");
    let img = n.busybox();
    let other = zone(&n, &img, serde_json::json!({"alias": "other"}));
    let other_pid = pid(&n, &other);
    // Missing: the start says so itself, and the zone is not left half up.
    let missing = zone(&n, &img, serde_json::json!({"autoboot": false, "init_name": "/no/such/init"}));
    let r = n.hull(&["vmadm", "start", &missing]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("init_name /no/such/init") && r.stderr.contains(&missing), "{}", r.stderr);
    assert_eq!(state(&n, &missing), "stopped");
    // A directory is no init either.
    n.hull(&["vmadm", "update", &missing, "init_name=/etc"]).ok();
    let r = n.hull(&["vmadm", "start", &missing]);
    assert!(r.stderr.contains("not an executable file"), "{}", r.stderr);
    // An init that exits at once is restarted a few times, then left down and marked failed
    // instead of restarting for ever.
    let quick = zone(&n, &img, serde_json::json!({"init_name": "/bin/true"}));
    let mut s = String::new();
    for _ in 0..150 {
        s = state(&n, &quick);
        if s == "failed" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(s, "failed", "an init that exits at once");
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(state(&n, &quick), "failed", "it stays down");
    // A start clears it.
    n.hull(&["vmadm", "update", &quick, "init_name=/sbin/init"]).ok();
    n.hull(&["vmadm", "start", &quick]).ok();
    assert_eq!(state(&n, &quick), "running");
    assert_eq!(state(&n, &other), "running");
    assert_eq!(pid(&n, &other), other_pid, "the other zone was not touched");
}

/// The host's view of a process's real and effective uid (`/proc/PID/status`).
fn host_uids(pid: i64) -> (u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid line");
    let ids: Vec<u32> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    (ids[0], ids[1])
}

#[test]
fn zone_root_is_an_unprivileged_host_id_of_its_own_and_the_disk_keeps_the_image_s_ids() {
    let n = TestNode::new("512M");
    let img = n.busybox();
    let a = zone(&n, &img, serde_json::json!({"alias": "a"}));
    let b = zone(&n, &img, serde_json::json!({"alias": "b"}));
    // Seen from the host, each zone's root is a high uid, and not the other zone's.
    let (ua, ub) = (host_uids(pid(&n, &a).expect("pid")), host_uids(pid(&n, &b).expect("pid")));
    assert!(ua.0 >= 1_000_000_000 && ua.1 >= 1_000_000_000, "zone a's init runs as host uid {ua:?}");
    assert!(ub.0 >= 1_000_000_000, "zone b's init runs as host uid {ub:?}");
    assert!(ua.0.abs_diff(ub.0) >= 65536, "two zones share host ids: {ua:?} {ub:?}");
    // A zlogin'd command is in the zone's user namespace too: its map is the zone's.
    let map = n.hull(&["zlogin", &a, "cat", "/proc/self/uid_map"]).ok();
    let fields: Vec<u32> = map.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    assert_eq!(fields, vec![0, ua.0, 65536], "{map}");
    // Inside, the image's files are root's; a file zone root makes, and one it gives to
    // uid 1000, are stored with those ids on disk: nothing shifted, nothing to shift back.
    let ls = n.hull(&["zlogin", &a, "ls", "-ln", "/bin/busybox"]).ok();
    assert!(ls.split_whitespace().nth(2) == Some("0"), "{ls}");
    n.hull(&["zlogin", &a, "sh", "-c", "touch /mine /theirs && chown 1000:1000 /theirs"]).ok();
    let root = n.zones().join(&a).join("root");
    use std::os::unix::fs::MetadataExt;
    let meta = |p: &str| std::fs::symlink_metadata(root.join(p)).expect(p);
    assert_eq!((meta("mine").uid(), meta("mine").gid()), (0, 0));
    assert_eq!((meta("theirs").uid(), meta("theirs").gid()), (1000, 1000));
    assert_eq!(meta("bin/busybox").uid(), 0);
    // Ids outside its range do not exist for the zone: it cannot hand a file to one.
    let r = n.hull(&["zlogin", &a, "sh", "-c", "chown 70000 /mine"]);
    assert_ne!(r.code, 0, "uid 70000 is outside the zone's range");
    // A privileged zone is a payload choice, and runs as host root.
    let p = zone(&n, &img, serde_json::json!({"alias": "p", "privileged": true}));
    assert_eq!(host_uids(pid(&n, &p).expect("pid")).0, 0);
    let v: serde_json::Value = serde_json::from_str(&n.hull(&["vmadm", "get", &p]).ok()).expect("json");
    assert_eq!(v["privileged"], true);
    // Stop and delete leave no idmapped mount and no user namespace behind.
    for u in [&a, &b, &p] {
        n.hull(&["vmadm", "delete", u]).ok();
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let base = n.root().to_string_lossy().into_owned();
    let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&base) && !l.contains("/zones ")).collect();
    assert!(left.iter().all(|l| !l.contains("bundles") && !l.contains("userns")), "{left:#?}");
    let claims = std::fs::read_dir(n.root().join("var/hull/idmap")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(claims, 0, "id ranges still claimed after delete");
}

#[test]
fn a_zone_s_memory_pressure_kills_a_tenant_process_not_its_init() {
    let n = TestNode::new("512M");
    let img = n.busybox();
    let uuid = zone(&n, &img, serde_json::json!({"autoboot": false, "max_physical_memory": 64}));
    // An init that holds more memory than anything else in the zone: the kernel's own choice
    // under pressure. It hands out the memory it holds only when killed.
    let script = "#!/bin/sh\nx=$(head -c 30000000 /dev/zero | tr '\\0' a)\nwhile :; do sleep 1; done\n";
    let path = n.zones().join(&uuid).join("root/fatinit");
    std::fs::write(&path, script).expect("write init");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    n.hull(&["vmadm", "update", &uuid, "init_name=/fatinit"]).ok();
    n.hull(&["vmadm", "start", &uuid]).ok();
    let init = pid(&n, &uuid).expect("pid");
    // Wait until init holds its memory.
    let rss = |p: i64| -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
    };
    for _ in 0..100 {
        if rss(init) > 20_000 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(rss(init) > 20_000, "init holds {} kB", rss(init));
    // A tenant's process grows until the cap is reached, smaller than init when it is.
    let r = n.hull(&["zlogin", &uuid, "sh", "-c", "x=$(head -c 60000000 /dev/zero | tr '\\0' a); echo survived"]);
    assert!(!r.stdout.contains("survived"), "the hog got 60 MB under a 64 MiB cap");
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(state(&n, &uuid), "running");
    assert_eq!(pid(&n, &uuid), Some(init), "the zone's init was killed (or the zone rebooted)");
}

#[test]
fn links_in_an_image_or_a_zone_lead_nowhere_outside_it() {
    let n = TestNode::new("512M");
    let c = Canary::new();
    let victim = c.path().join("victim").to_string_lossy().into_owned();
    // An image whose machine id and init are links to a host file.
    let img = hostile_image(
        &n,
        &[
            E::Dir("root/"),
            E::Dir("root/etc/"),
            E::Link("root/etc/machine-id", &victim),
            E::Dir("root/sbin/"),
            E::Link("root/sbin/init", &victim),
        ],
        None,
    );
    install(&n, &img).ok();
    let uuid = zone(&n, &img.2, serde_json::json!({"autoboot": false}));
    c.intact();
    let link = n.zones().join(&uuid).join("root/etc/machine-id");
    assert!(std::fs::symlink_metadata(&link).expect("link").file_type().is_symlink(), "the link was replaced");
    // The init is looked for inside the zone's root, where the link's target is not.
    let r = n.hull(&["vmadm", "start", &uuid]);
    assert!(r.code != 0 && r.stderr.contains("init_name /sbin/init"), "{}", r.stderr);
    c.intact();
    // A running zone's root makes its passwd a link to a host file: zlogin reads it as the
    // zone would (inside the zone), and still runs a shell there.
    let bb = n.busybox();
    let z = zone(&n, &bb, serde_json::json!({}));
    n.hull(&["zlogin", &z, "sh", "-c", &format!("rm /etc/passwd && ln -s {victim} /etc/passwd")]).ok();
    let mut child = n
        .cmd()
        .args(["zlogin", &z])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("zlogin");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), b"cat /proc/1/cgroup >/dev/null; exit 5\n")
        .expect("write");
    assert_eq!(child.wait_with_output().expect("wait").status.code(), Some(5));
    c.intact();
}
