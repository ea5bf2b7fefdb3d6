//! Zones from the command line: real containers (libcontainer), real cgroups, a busybox image.

mod common;
use common::*;

/// A node with the busybox image installed.
fn node() -> (TestNode, String) {
    let n = TestNode::new("512M");
    let img = n.busybox();
    (n, img)
}

fn create(n: &TestNode, payload: serde_json::Value) -> String {
    let f = n.root().join(format!("p-{}.json", rand_suffix()));
    std::fs::write(&f, payload.to_string()).expect("write");
    let out = n.hull(&["vmadm", "create", "-j", "-f", &f.to_string_lossy()]).ok();
    let v: serde_json::Value = serde_json::from_str(&out).expect("vm json");
    v["uuid"].as_str().expect("uuid").to_string()
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

fn state(n: &TestNode, uuid: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&n.hull(&["vmadm", "get", uuid]).ok()).expect("json");
    v["state"].as_str().unwrap_or_default().to_string()
}

/// Whether any cgroup hierarchy still has the zone's cgroup.
fn cgroup_left(n: &TestNode, uuid: &str) -> Vec<String> {
    let mut left = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        for h in rd.flatten() {
            let p = h.path().join(format!("{}-{uuid}", n.prefix));
            if p.exists() {
                left.push(p.display().to_string());
            }
        }
    }
    let v2 = std::path::Path::new("/sys/fs/cgroup").join(format!("{}-{uuid}", n.prefix));
    if v2.exists() && !left.contains(&v2.display().to_string()) {
        left.push(v2.display().to_string());
    }
    left
}

fn zoneadmd_running(uuid: &str) -> bool {
    std::fs::read_dir("/proc").into_iter().flatten().flatten().any(|p| {
        std::fs::read(p.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains("zoneadmd") && String::from_utf8_lossy(&c).contains(uuid))
            .unwrap_or(false)
    })
}

/// The supervisor's log, for failure messages.
fn zlog(n: &TestNode, uuid: &str) -> String {
    std::fs::read_to_string(n.root().join(format!("var/hull/z/{uuid}/zoneadmd.log"))).unwrap_or_default()
}

fn base(img: &str) -> serde_json::Value {
    serde_json::json!({"brand": "joyent-minimal", "image_uuid": img, "alias": "web1", "max_physical_memory": 128, "resolvers": ["192.0.2.53"]})
}

#[test]
fn a_busybox_zone_boots_and_goes_away_whole() {
    let (n, img) = node();
    let uuid = create(&n, base(&img));
    assert_eq!(state(&n, &uuid), "running");
    let list = n.hull(&["vmadm", "list", "-H", "-o", "uuid,state,alias"]).ok();
    assert_eq!(list, format!("{uuid}\trunning\tweb1\n"));
    assert_eq!(n.hull(&["vmadm", "lookup", "alias=web1"]).ok(), format!("{uuid}\n"));

    // Its own processes only: init, its shell, and ps itself.
    let ps = n.hull(&["zlogin", &uuid, "ps", "-o", "pid,comm"]).ok();
    let pids: Vec<&str> = ps.lines().skip(1).collect();
    assert!(pids.len() <= 4 && ps.contains("    1 init"), "{ps}");
    assert_eq!(n.hull(&["zlogin", &uuid, "hostname"]).ok(), "web1\n");
    assert_eq!(n.hull(&["zlogin", &uuid, "cat", "/etc/resolv.conf"]).ok(), "search local\nnameserver 192.0.2.53\n");
    let r = n.hull(&["zlogin", &uuid, "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (7, "out\n", "err\n"),
        "exit status and stdio pass through"
    );
    let tmp = n.hull(&["zlogin", &uuid, "sh", "-c", "grep ' /tmp ' /proc/mounts"]).ok();
    assert!(tmp.contains("tmpfs") && tmp.contains("size=131072k"), "/tmp is a tmpfs of `tmpfs` MiB: {tmp}");
    assert!(!cgroup_left(&n, &uuid).is_empty(), "a running zone has its cgroup");

    n.hull(&["vmadm", "stop", &uuid]).ok();
    assert_eq!(state(&n, &uuid), "stopped");
    assert!(
        cgroup_left(&n, &uuid).is_empty(),
        "{:?}\nlog: {}\nrecord: {}",
        cgroup_left(&n, &uuid),
        zlog(&n, &uuid),
        std::fs::read_to_string(n.root().join(format!("var/hull/z/{uuid}/zoneadmd.json"))).unwrap_or_default()
    );
    assert!(!zoneadmd_running(&uuid));
    let r = n.hull(&["vmadm", "stop", &uuid]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("is stopped: cannot stop"), "{}", r.stderr);

    n.hull(&["vmadm", "start", &uuid]).ok();
    assert_eq!(state(&n, &uuid), "running");
    let r = n.hull(&["vmadm", "start", &uuid]);
    assert!(r.stderr.contains("is running: cannot start"), "{}", r.stderr);
    n.hull(&["vmadm", "delete", &uuid]).ok();
    assert_eq!(n.datasets(), vec![img.clone(), format!("{img}@final")], "the VM's dataset is gone");
    assert!(cgroup_left(&n, &uuid).is_empty(), "{:?}", cgroup_left(&n, &uuid));
    assert!(!zoneadmd_running(&uuid));
    assert!(!n.root().join(format!("var/hull/z/{uuid}")).exists());
    assert_eq!(n.hull(&["vmadm", "list", "-H"]).ok(), "");
}

#[test]
fn the_security_baseline_holds_from_inside() {
    let (n, img) = node();
    let uuid = create(&n, base(&img));
    let sh = |script: &str| n.hull(&["zlogin", &uuid, "sh", "-c", script]);
    let r = sh("mkdir -p /mnt/x && mount -t tmpfs none /mnt/x");
    assert_ne!(r.code, 0, "mount must fail: {}", r.stdout);
    let r = sh("mknod /tmp/sda b 8 0");
    assert_ne!(r.code, 0, "mknod of a block device must fail");
    assert!(r.stderr.contains("not permitted"), "{}", r.stderr);
    let r = sh("echo h > /proc/sysrq-trigger");
    assert_ne!(r.code, 0, "sysrq must be read-only");
    // insmod reaches init_module only if the module file opens: any file will do.
    let r = sh("insmod /bin/busybox");
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("not permitted"), "module loading must be refused, not just fail: {}", r.stderr);
    let r = sh("cat /proc/kcore | head -c 1 | wc -c");
    assert_eq!(r.stdout.trim(), "0", "/proc/kcore is masked");
    let r = sh("touch /sys/kernel/x");
    assert_ne!(r.code, 0, "/sys is read-only");
    // The zone cannot lift its own caps through its cgroup files.
    for file in [
        "/sys/fs/cgroup/pids/pids.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        "/sys/fs/cgroup/pids.max",
        "/sys/fs/cgroup/memory.max",
    ] {
        if sh(&format!("[ -e {file} ]")).code != 0 {
            continue; // the other cgroup version's file
        }
        let r = sh(&format!("echo 999999999999 > {file}"));
        assert_ne!(r.code, 0, "{file} must not be writable from inside");
    }
    let max = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"]
        .iter()
        .find_map(|h| {
            std::fs::read_to_string(std::path::Path::new(h).join(format!("{}-{uuid}/pids.max", n.prefix))).ok()
        })
        .expect("pids.max");
    assert_eq!(max.trim(), "2000");
    n.hull(&["vmadm", "delete", &uuid]).ok();
}

#[test]
fn caps_hold_and_change_live() {
    let (n, img) = node();
    let mut p = base(&img);
    p["max_physical_memory"] = 64.into();
    p["max_lwps"] = 40.into();
    let uuid = create(&n, p);
    // A memory hog is killed inside the zone; the zone lives on.
    let r = n.hull(&["zlogin", &uuid, "sh", "-c", "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo survived"]);
    assert_ne!(r.stdout, "survived\n", "the hog must not get 300 MB under a 64 MiB cap");
    assert_eq!(state(&n, &uuid), "running");
    // A fork bomb stops at max_lwps.
    let r = n.hull(&[
        "zlogin",
        &uuid,
        "sh",
        "-c",
        "i=0; while [ $i -lt 100 ]; do sleep 3 >/dev/null 2>&1 & i=$((i+1)); done 2>/dev/null; exit 0",
    ]);
    assert!(r.code == 0 || r.code == 2, "{}", r.stderr);
    let current = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"]
        .iter()
        .find_map(|h| {
            std::fs::read_to_string(std::path::Path::new(h).join(format!("{}-{uuid}/pids.current", n.prefix))).ok()
        })
        .expect("pids.current");
    let count: u64 = current.trim().parse().expect("count");
    assert!((30..=40).contains(&count), "processes in the zone: {count}");
    std::thread::sleep(std::time::Duration::from_secs(4));
    // Live update: the cgroup limit changes at once; a hostname waits for the reboot.
    let out = n.hull(&["vmadm", "update", &uuid, "max_physical_memory=96", "hostname=web2", "max_lwps=500"]).said();
    // The cap moves max_swap and max_locked_memory with it (SmartOS's fixPayloadMemory).
    let live = out.lines().find(|l| l.starts_with("applied live:")).unwrap_or_default();
    for k in ["max_lwps", "max_physical_memory", "max_swap", "max_locked_memory"] {
        assert!(live.contains(k), "{k}: {out}");
    }
    assert!(out.contains("stored, applies at the next boot: hostname"), "{out}");
    let limit = ["/sys/fs/cgroup/memory", "/sys/fs/cgroup"]
        .iter()
        .find_map(|h| {
            let d = std::path::Path::new(h).join(format!("{}-{uuid}", n.prefix));
            std::fs::read_to_string(d.join("memory.limit_in_bytes"))
                .or_else(|_| std::fs::read_to_string(d.join("memory.max")))
                .ok()
        })
        .expect("memory limit file");
    assert_eq!(limit.trim(), (96u64 << 20).to_string());
    let v: serde_json::Value = serde_json::from_str(&n.hull(&["vmadm", "get", &uuid]).ok()).expect("json");
    assert_eq!(v["max_physical_memory"], 96);
    // An OS zone's ram is its cap, as on SmartOS: live, with swap and tmpfs following it.
    let out = n.hull(&["vmadm", "update", &uuid, "ram=112"]).said();
    assert!(out.contains("applied live") && out.contains("max_physical_memory"), "{out}");
    assert!(!out.contains("not yet"), "{out}");
    let v: serde_json::Value = serde_json::from_str(&n.hull(&["vmadm", "get", &uuid]).ok()).expect("json");
    assert_eq!((v["ram"].clone(), v["max_physical_memory"].clone()), (112.into(), 112.into()));
    assert!(v["max_swap"].as_i64() >= Some(112), "{v}");
    // max_swap below the cap is raised to it, with a warning, not stored below it.
    let r = n.hull(&["vmadm", "update", &uuid, "max_swap=256", "max_physical_memory=300"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("raised to 300"), "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&n.hull(&["vmadm", "get", &uuid]).ok()).expect("json");
    assert_eq!(v["max_swap"], 300);
    n.hull(&["vmadm", "update", &uuid, "max_physical_memory=96"]).ok();
    // max_locked_memory is an rlimit: set live on every process of the zone (lowered here:
    // raising it past the host's own limit is refused, with the limit in the message).
    let out = n.hull(&["vmadm", "update", &uuid, "max_locked_memory=1"]).said();
    assert!(out.contains("applied live: max_locked_memory"), "{out}");
    let limits = n.hull(&["zlogin", &uuid, "cat", "/proc/1/limits"]).ok();
    let line = limits.lines().find(|l| l.starts_with("Max locked memory")).expect("memlock line");
    assert!(line.contains(&(1u64 << 20).to_string()), "{line}");
    // zfs_io_priority is applied where the host weighs IO, and said not to be elsewhere.
    let out = n.hull(&["vmadm", "update", &uuid, "zfs_io_priority=200"]).said();
    let weight = ["blkio/{}/blkio.bfq.weight", "{}/io.bfq.weight", "{}/io.weight"]
        .iter()
        .map(|t| std::path::Path::new("/sys/fs/cgroup").join(t.replace("{}", &format!("{}-{uuid}", n.prefix))))
        .find(|p| p.exists());
    if let Some(file) = weight {
        assert!(out.contains("applied live: zfs_io_priority"), "{out}");
        assert!(std::fs::read_to_string(&file).expect("weight").contains("200"), "{}", file.display());
    } else {
        assert!(out.contains("stored, not yet applied by hull: zfs_io_priority"), "{out}");
    }
    let out = n.hull(&["vmadm", "update", &uuid, "set_tags={\"a\":\"b\"}"]);
    assert_eq!(out.code, 1, "a tags object must be JSON, not a string");
    // Caps removed live, as SmartOS removes them: cpu_cap 0, max_lwps unset.
    n.hull(&["vmadm", "update", &uuid, "cpu_cap=50"]).ok();
    n.hull(&["vmadm", "update", &uuid, "cpu_cap=0"]).ok();
    let f = n.root().join("unset.json");
    std::fs::write(&f, r#"{"max_lwps": null}"#).expect("write");
    n.hull(&["vmadm", "update", &uuid, "-f", &f.to_string_lossy()]).ok();
    let v: serde_json::Value = serde_json::from_str(&n.hull(&["vmadm", "get", &uuid]).ok()).expect("json");
    assert!(v.get("cpu_cap").is_none() && v.get("max_lwps").is_none(), "{v}");
    let read = |file: &str| {
        ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/pids", "/sys/fs/cgroup"]
            .iter()
            .find_map(|h| {
                std::fs::read_to_string(std::path::Path::new(h).join(format!("{}-{uuid}/{file}", n.prefix))).ok()
            })
            .unwrap_or_default()
    };
    let quota = read("cpu.cfs_quota_us") + &read("cpu.max");
    assert!(quota.trim() == "-1" || quota.starts_with("max"), "cpu cap left: {quota}");
    assert_eq!(read("pids.max").trim(), "max");
    n.hull(&["vmadm", "delete", &uuid]).ok();
}

#[test]
fn bad_payloads_create_nothing() {
    let (n, img) = node();
    let before = n.datasets();
    let cases: Vec<(String, &str)> = vec![
        ("{nope".into(), "payload is not valid JSON"),
        (
            serde_json::json!({"brand": "joyent", "image_uuid": img, "max_physical_memory": "lots"}).to_string(),
            "bad values: max_physical_memory",
        ),
        (serde_json::json!({"brand": "joyent", "image_uuid": img, "max_swap": 10}).to_string(), "bad values: max_swap"),
        (
            serde_json::json!({"brand": "joyent", "image_uuid": "7b3f0c1e-0000-4000-8000-000000000001"}).to_string(),
            "is not installed",
        ),
        (serde_json::json!({"brand": "joyent"}).to_string(), "missing properties: image_uuid"),
        (serde_json::json!({"brand": "solaris8", "image_uuid": img}).to_string(), "bad brand"),
        (
            serde_json::json!({"brand": "joyent", "image_uuid": img, "zpool": "tank"}).to_string(),
            "zpool \"tank\" does not exist",
        ),
    ];
    for (payload, want) in cases {
        let f = n.root().join("bad.json");
        std::fs::write(&f, &payload).expect("write");
        let r = n.hull(&["vmadm", "create", "-f", &f.to_string_lossy()]);
        assert_eq!(r.code, 1, "{payload}");
        assert!(r.stderr.contains(want), "{payload}: want {want:?} in {}", r.stderr);
        assert_eq!(n.datasets(), before, "{payload} left something");
    }
    // As SmartOS: a property the brand does not have is dropped with a warning, not refused,
    // and a payload without a brand makes a joyent zone.
    let f = n.root().join("extra.json");
    let extra = serde_json::json!({"image_uuid": img, "flavour": 1, "alias": null, "autoboot": false});
    std::fs::write(&f, extra.to_string()).expect("write");
    let r = n.hull(&["vmadm", "create", "-f", &f.to_string_lossy()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("invalid create property: [flavour]"), "{}", r.stderr);
    let made = r.stdout.trim().rsplit(' ').next().expect("uuid").to_string();
    let v: serde_json::Value = serde_json::from_str(&n.hull(&["vmadm", "get", &made]).ok()).expect("json");
    assert_eq!(v["brand"], "joyent");
    assert!(v.get("flavour").is_none() && v.get("alias").is_none(), "{v}");
    n.hull(&["vmadm", "update", &made, "alias=web"]).ok();
    let f2 = n.root().join("unset.json");
    std::fs::write(&f2, r#"{"alias": null, "flavour": 2}"#).expect("write");
    let r = n.hull(&["vmadm", "update", &made, "-f", &f2.to_string_lossy()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&n.hull(&["vmadm", "get", &made]).ok()).expect("json");
    assert!(v.get("alias").is_none(), "alias: null unsets it: {v}");
    n.hull(&["vmadm", "delete", &made]).ok();
    // A duplicate uuid.
    let mut p = base(&img);
    p["autoboot"] = false.into();
    let uuid = create(&n, p.clone());
    p["uuid"] = uuid.clone().into();
    let f = n.root().join("dup.json");
    std::fs::write(&f, p.to_string()).expect("write");
    let r = n.hull(&["vmadm", "create", "-f", &f.to_string_lossy()]);
    assert!(r.stderr.contains(&format!("VM {uuid} already exists")), "{}", r.stderr);
    assert_eq!(state(&n, &uuid), "stopped", "autoboot=false leaves it stopped");
    for verb in ["stop", "kill"] {
        let r = n.hull(&["vmadm", verb, &uuid]);
        assert_eq!(r.code, 1, "{verb} on a stopped VM");
    }
    let r = n.hull(&["zlogin", &uuid, "true"]);
    assert_eq!(r.code, 1);
    let r = n.hull(&["vmadm", "get", "0b7f1e5e-0000-4000-8000-00000000dead"]);
    assert!(r.stderr.contains("not found"), "{}", r.stderr);
}

#[test]
fn crashed_creates_leave_nothing() {
    let (n, img) = node();
    let f = n.root().join("p.json");
    std::fs::write(&f, base(&img).to_string()).expect("write");
    for point in ["vm-create-cloned", "vm-create-configured"] {
        let r = n.hull_env(&["vmadm", "create", "-f", &f.to_string_lossy()], &[("HULL_FAILPOINT", point)]);
        assert!(r.stderr.contains(&format!("failpoint {point}")), "{point}: {}", r.stderr);
        assert!(n.datasets().iter().any(|d| d.ends_with("-provisioning")), "{point}: nothing to repair");
        assert_eq!(n.hull(&["vmadm", "list", "-H"]).ok(), "", "{point}");
        assert_eq!(n.datasets(), vec![img.clone(), format!("{img}@final")], "{point}");
    }
    // After the VM is whole, a crash leaves the VM (stopped), deletable.
    let r = n.hull_env(&["vmadm", "create", "-f", &f.to_string_lossy()], &[("HULL_FAILPOINT", "vm-create-whole")]);
    assert_ne!(r.code, 0);
    let uuid = n.hull(&["vmadm", "lookup", "alias=web1"]).ok().trim().to_string();
    assert_eq!(state(&n, &uuid), "stopped");
    n.hull(&["vmadm", "delete", &uuid]).ok();
}

#[test]
fn the_zone_outlives_its_supervisor() {
    let (n, img) = node();
    let uuid = create(&n, base(&img));
    let rec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(n.root().join(format!("var/hull/z/{uuid}/zoneadmd.json"))).expect("record"),
    )
    .expect("json");
    let zoneadmd = rec["zoneadmd"].as_i64().expect("pid") as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(zoneadmd), nix::sys::signal::Signal::SIGKILL).expect("kill");
    std::thread::sleep(std::time::Duration::from_millis(200));
    // The zone still runs; the next command attaches a new supervisor.
    assert_eq!(n.hull(&["zlogin", &uuid, "echo", "alive"]).ok(), "alive\n");
    assert!(zoneadmd_running(&uuid), "a new zoneadmd watches the zone");
    n.hull(&["vmadm", "stop", "-F", &uuid]).ok();
    assert!(cgroup_left(&n, &uuid).is_empty());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!zoneadmd_running(&uuid));
    n.hull(&["vmadm", "delete", &uuid]).ok();
}

#[test]
fn the_console_is_a_pty_behind_a_socket() {
    let (n, img) = node();
    let uuid = create(&n, base(&img));
    let mut child = n
        .cmd()
        .args(["vmadm", "console", &uuid])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("console");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"\necho hello-$((6*7))\n").expect("write");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let out = child.wait_with_output().expect("wait");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("hello-42"), "console said: {text:?}");
    let log = std::fs::read_to_string(n.root().join(format!("var/hull/z/{uuid}/console.log"))).expect("log");
    assert!(log.contains("hello-42"), "{log:?}");
    n.hull(&["vmadm", "delete", &uuid]).ok();
}

#[test]
fn images_from_zones_full_and_incremental() {
    let (n, img) = node();
    let uuid = create(&n, base(&img));
    n.hull(&["zlogin", &uuid, "sh", "-c", "echo made-in-zone > /root/marker; rm /etc/os-release"]).ok();
    let out = n.root().join("made");
    let out_s = out.to_string_lossy().into_owned();
    let r = n.hull(&["imgadm", "create", "-o", &out_s, &uuid, "name=layer", "version=1"]);
    assert!(r.stderr.contains("is running: cannot make an image of"), "{}", r.stderr);
    n.hull(&["vmadm", "stop", &uuid]).ok();

    for (flag, name) in [("-i", "layer"), ("-c", "full")] {
        let mut args = vec!["imgadm", "create", "-o", &out_s];
        if flag == "-i" {
            args.push("-i");
        }
        let (nm, vr) = (format!("name={name}"), "version=1".to_string());
        args.extend_from_slice(&[&uuid, &nm, &vr]);
        let text = n.hull(&args).ok();
        let install = text.lines().find(|l| l.starts_with("imgadm install")).expect("install line");
        let parts: Vec<&str> = install.split_whitespace().collect();
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(parts[3]).expect("manifest")).expect("json");
        assert_eq!(manifest["origin"].as_str().is_some(), flag == "-i", "{manifest}");
        assert_eq!(manifest["requirements"]["brand"], "joyent-minimal");
        n.hull(&["imgadm", "install", "-m", parts[3], "-f", parts[5]]).ok();
        let new = manifest["uuid"].as_str().expect("uuid").to_string();
        let root = n.zones().join(&new).join("root");
        assert_eq!(std::fs::read_to_string(root.join("root/marker")).expect("marker"), "made-in-zone\n", "{name}");
        assert!(!root.join("etc/os-release").exists(), "{name}: the zone's deletion is kept");
        assert!(root.join("bin/busybox").exists(), "{name}");
        // A zone from the new image boots and sees the change.
        let mut p = base(&new);
        p["alias"] = format!("from-{name}").into();
        let child = create(&n, p);
        assert_eq!(n.hull(&["zlogin", &child, "cat", "/root/marker"]).ok(), "made-in-zone\n");
        n.hull(&["vmadm", "delete", &child]).ok();
    }
    let sizes: Vec<u64> = std::fs::read_dir(&out)
        .expect("out")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tar.gz"))
        .map(|e| e.metadata().expect("meta").len())
        .collect();
    assert_eq!(sizes.len(), 2);
    assert!(sizes.iter().min() < Some(&4096), "the incremental image holds only the change: {sizes:?}");
}

#[test]
fn boot_all_starts_the_autoboot_vms() {
    let (n, img) = node();
    let a = create(&n, base(&img));
    let mut p = base(&img);
    p["autoboot"] = false.into();
    p["alias"] = "manual".into();
    let b = create(&n, p);
    // The node's shutdown (stop-all) leaves autoboot alone: boot-all brings the VM back.
    n.hull(&["vmadm", "stop-all"]).ok();
    let out = n.hull(&["vmadm", "boot-all"]).ok();
    assert_eq!(out, format!("Successfully started VM {a}\n"));
    assert_eq!(state(&n, &a), "running");
    assert_eq!(state(&n, &b), "stopped");
    // An operator's stop sets autoboot false, as SmartOS's does; start sets it true again.
    let autoboot = |u: &str| -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(&n.hull(&["vmadm", "get", u]).ok()).expect("json")["autoboot"].clone()
    };
    n.hull(&["vmadm", "stop", &a]).ok();
    assert_eq!(autoboot(&a), false);
    assert_eq!(n.hull(&["vmadm", "boot-all"]).ok(), "");
    assert_eq!(state(&n, &a), "stopped");
    n.hull(&["vmadm", "start", &b]).ok();
    assert_eq!(autoboot(&b), true);
}

#[test]
fn parallel_creates_and_mixed_verbs_stay_consistent() {
    let (n, img) = node();
    let spawn = |args: Vec<String>| {
        n.cmd()
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let mut files = Vec::new();
    for i in 0..20 {
        let mut p = base(&img);
        p["alias"] = format!("p{i}").into();
        p["max_physical_memory"] = 32.into();
        let f = n.root().join(format!("par-{i}.json"));
        std::fs::write(&f, p.to_string()).expect("write");
        files.push(f);
    }
    let children: Vec<_> = files
        .iter()
        .map(|f| spawn(vec!["vmadm".into(), "create".into(), "-f".into(), f.to_string_lossy().into()]))
        .collect();
    for c in children {
        let out = c.wait_with_output().expect("wait");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let uuids: Vec<String> = n.hull(&["vmadm", "list", "-H", "-o", "uuid"]).ok().lines().map(String::from).collect();
    assert_eq!(uuids.len(), 20);
    // Mixed verbs at once: stop some, delete some, start stopped ones, kill others.
    let verbs: Vec<Vec<String>> = uuids
        .iter()
        .enumerate()
        .map(|(i, u)| match i % 4 {
            0 => vec!["vmadm".into(), "stop".into(), "-F".into(), u.clone()],
            1 => vec!["vmadm".into(), "delete".into(), u.clone()],
            2 => vec!["zlogin".into(), u.clone(), "true".into()],
            _ => vec!["vmadm".into(), "kill".into(), u.clone()],
        })
        .collect();
    let children: Vec<_> = verbs.iter().map(|v| spawn(v.clone())).collect();
    for (c, v) in children.into_iter().zip(&verbs) {
        let out = c.wait_with_output().expect("wait");
        assert!(
            out.status.success() || String::from_utf8_lossy(&out.stderr).contains("busy"),
            "{v:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    // Every VM is whole: deleted ones are gone entirely, the others are running or stopped
    // with a cgroup exactly when running.
    let list = n.hull(&["vmadm", "list", "-H", "-o", "uuid,state"]).ok();
    assert_eq!(list.lines().count(), 15, "{list}");
    for line in list.lines() {
        let (u, s) = line.split_once('\t').expect("row");
        let i = uuids.iter().position(|x| x == u).expect("known");
        let want = if i % 4 == 2 { "running" } else { "stopped" };
        assert_eq!(s, want, "{u} (verb {:?})", verbs[i]);
        assert_eq!(cgroup_left(&n, u).is_empty(), s != "running", "{u}: cgroup and state disagree");
    }
    for (i, u) in uuids.iter().enumerate().filter(|(i, _)| i % 4 == 1) {
        assert!(cgroup_left(&n, u).is_empty() && !n.zones().join(u).exists(), "deleted VM {i} left something");
    }
    let datasets = n.datasets();
    assert!(!datasets.iter().any(|d| d.ends_with("-provisioning")), "{datasets:?}");
    assert_eq!(datasets.len(), 2 + 15, "{datasets:?}");
}

#[test]
fn crashes_in_start_update_and_delete_leave_whole_vms() {
    let (n, img) = node();
    let mut p = base(&img);
    p["autoboot"] = false.into();
    let uuid = create(&n, p);
    let r = n.hull_env(&["vmadm", "start", &uuid], &[("HULL_FAILPOINT", "vm-start-prepared")]);
    assert!(r.stderr.contains("failpoint vm-start-prepared"), "{}", r.stderr);
    assert_eq!(state(&n, &uuid), "stopped");
    assert!(cgroup_left(&n, &uuid).is_empty());
    n.hull(&["vmadm", "start", &uuid]).ok();

    let r =
        n.hull_env(&["vmadm", "update", &uuid, "max_physical_memory=200"], &[("HULL_FAILPOINT", "vm-update-applied")]);
    assert!(r.stderr.contains("failpoint"), "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&n.hull(&["vmadm", "get", &uuid]).ok()).expect("json");
    assert_eq!(v["max_physical_memory"], 128, "the stored config is the old one, whole");
    n.hull(&["vmadm", "update", &uuid, "max_physical_memory=200"]).ok();

    let r = n.hull_env(&["vmadm", "delete", &uuid], &[("HULL_FAILPOINT", "vm-delete-stopped")]);
    assert!(r.stderr.contains("failpoint"), "{}", r.stderr);
    assert_eq!(state(&n, &uuid), "stopped", "stopped but whole");
    assert!(cgroup_left(&n, &uuid).is_empty());
    let r = n.hull_env(&["vmadm", "delete", &uuid], &[("HULL_FAILPOINT", "vm-delete-destroyed")]);
    assert!(r.stderr.contains("failpoint"), "{}", r.stderr);
    assert_eq!(n.hull(&["vmadm", "list", "-H"]).ok(), "", "gone");
    assert_eq!(n.datasets(), vec![img.clone(), format!("{img}@final")]);
    assert!(!zoneadmd_running(&uuid));
}

#[test]
fn a_zone_cannot_make_the_host_write_through_its_links() {
    let (n, img) = node();
    let uuid = create(&n, base(&img));
    let victim = n.root().join("host-etc");
    std::fs::create_dir_all(&victim).expect("mkdir");
    std::fs::write(victim.join("hostname"), "host\n").expect("write");
    // The tenant replaces its /etc with a link to a host path and reboots.
    let target = victim.to_string_lossy().into_owned();
    n.hull(&["zlogin", &uuid, "sh", "-c", &format!("mv /etc /etc.real && ln -s {target} /etc")]).ok();
    n.hull(&["vmadm", "stop", "-F", &uuid]).ok();
    let r = n.hull(&["vmadm", "start", &uuid]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("is not a directory; refusing"), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(victim.join("hostname")).expect("read"), "host\n", "the host file is untouched");
}

#[test]
fn snapshots_roll_a_vm_back() {
    let (n, img) = node();
    let uuid = create(&n, base(&img));
    n.hull(&["zlogin", &uuid, "sh", "-c", "echo v1 > /root/f"]).ok();
    n.hull(&["vmadm", "create-snapshot", &uuid, "s1"]).ok();
    let r = n.hull(&["vmadm", "create-snapshot", &uuid, "s1"]);
    assert!(r.stderr.contains("already has a snapshot s1"), "{}", r.stderr);
    assert_eq!(n.hull(&["vmadm", "create-snapshot", &uuid, "bad/name"]).code, 1);
    n.hull(&["zlogin", &uuid, "sh", "-c", "echo v2 > /root/f; rm /bin/vi"]).ok();
    let v: serde_json::Value = serde_json::from_str(&n.hull(&["vmadm", "get", &uuid]).ok()).expect("json");
    assert_eq!(v["snapshots"][0]["name"], "s1");

    n.hull(&["vmadm", "rollback-snapshot", &uuid, "s1"]).ok();
    assert_eq!(state(&n, &uuid), "running", "a running VM is running again after the rollback");
    assert_eq!(n.hull(&["zlogin", &uuid, "cat", "/root/f"]).ok(), "v1\n");
    assert_eq!(n.hull(&["zlogin", &uuid, "test", "-e", "/bin/vi"]).code, 0);
    assert!(n.hull(&["vmadm", "rollback-snapshot", &uuid, "nope"]).stderr.contains("no snapshot nope"));

    // A crash at either step of a rollback is finished by the next command.
    for point in ["btrfs-rollback-moved", "btrfs-rollback-swapped"] {
        n.hull(&["zlogin", &uuid, "sh", "-c", "echo v3 > /root/f"]).ok();
        let r = n.hull_env(&["vmadm", "rollback-snapshot", &uuid, "s1"], &[("HULL_FAILPOINT", point)]);
        assert!(r.stderr.contains(&format!("failpoint {point}")), "{}", r.stderr);
        let v: serde_json::Value = serde_json::from_str(&n.hull(&["vmadm", "get", &uuid]).ok()).expect("json");
        assert_eq!(v["snapshots"][0]["name"], "s1", "{point}: the snapshots survive");
        n.hull(&["vmadm", "start", &uuid]).ok();
        assert_eq!(n.hull(&["zlogin", &uuid, "cat", "/root/f"]).ok(), "v1\n", "{point}");
    }
    n.hull(&["vmadm", "delete-snapshot", &uuid, "s1"]).ok();
    let v: serde_json::Value = serde_json::from_str(&n.hull(&["vmadm", "get", &uuid]).ok()).expect("json");
    assert_eq!(v["snapshots"], serde_json::json!([]));
    assert!(!n.datasets().iter().any(|d| d.contains(".rollback") || d.contains(".rolledback")));
}

#[test]
fn zlogin_on_a_terminal_gets_a_pty() {
    let (n, img) = node();
    let uuid = create(&n, base(&img));
    // script(1) gives zlogin a terminal as stdin, as a person at a console has.
    let cmd = format!(
        "HULL_ROOT={} HULL_NODE={} {HULL} zlogin {uuid} sh -c 'tty; echo in-pty; exit 3'",
        n.root().display(),
        n.prefix
    );
    let out = std::process::Command::new("script").args(["-qec", &cmd, "/dev/null"]).output().expect("script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("/dev/pts/") && text.contains("in-pty"), "{text:?}");
    // Without a terminal the command shares zlogin's stdio, no pty.
    let r = n.hull(&["zlogin", &uuid, "sh", "-c", "tty"]);
    assert_ne!(r.code, 0, "{}", r.stdout);
}

#[test]
fn events_record_the_life_of_vms() {
    let (n, img) = node();
    let mut follower =
        n.cmd().args(["vmadm", "events", "-f", "-j"]).stdout(std::process::Stdio::piped()).spawn().expect("events -f");
    let uuid = create(&n, base(&img));
    n.hull(&["vmadm", "update", &uuid, "alias=renamed"]).ok();
    n.hull(&["vmadm", "stop", &uuid]).ok();
    n.hull(&["vmadm", "delete", &uuid]).ok();
    let all: Vec<serde_json::Value> = n
        .hull(&["vmadm", "events", "-j", &uuid])
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let kinds: Vec<String> = all
        .iter()
        .map(|e| {
            let change = e["changes"][0]["prettyPath"]
                .as_str()
                .map(|p| format!(" {p}={}", e["changes"][0]["newValue"]))
                .unwrap_or_default();
            format!("{}{change}", e["type"].as_str().unwrap_or_default())
        })
        .collect();
    assert_eq!(
        kinds,
        vec!["create", "modify state=\"running\"", "modify alias=\"renamed\"", "modify state=\"stopped\"", "delete"],
        "{all:?}"
    );
    // The follower saw them as they came.
    std::thread::sleep(std::time::Duration::from_millis(400));
    let _ = follower.kill();
    let out = follower.wait_with_output().expect("wait");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 5);
    let human = n.hull(&["vmadm", "events", &uuid]).ok();
    assert!(human.contains(&format!("{uuid} modify: state stopped -> running")), "{human}");

    let other = create(&n, base(&img));
    let r = n.hull(&["vmadm", "info", &other]);
    assert!(r.stderr.contains("info is not supported for brand joyent-minimal"), "{}", r.stderr);
}

#[test]
fn zlogin_runs_root_s_shell_and_says_when_a_command_is_missing() {
    let (n, img) = node();
    let uuid = create(&n, base(&img));
    // A missing command: a shell's 127 and one line, no runtime noise.
    let r = n.hull(&["zlogin", &uuid, "nosuchcmd", "-x"]);
    assert_eq!(r.code, 127, "{}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("nosuchcmd: command not found"), "{}", r.stderr);
    assert_eq!(n.hull(&["zlogin", &uuid, "/no/such/thing"]).code, 127);
    // No command: root's shell from the zone's passwd, as a login shell.
    let root = n.zones().join(&uuid).join("root");
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).expect("passwd");
    let changed: String = passwd
        .lines()
        .map(|l| if l.starts_with("root:") { "root:x:0:0:root:/root:/bin/ash".to_string() } else { l.to_string() })
        .map(|l| l + "\n")
        .collect();
    std::fs::write(root.join("etc/passwd"), changed).expect("passwd");
    let mut child = n
        .cmd()
        .args(["zlogin", &uuid])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("zlogin");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), b"echo $0; exit 4\n").expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ash"), "{:?}", out);
    // An image file is published readable.
    let (_, file, _) = n.build(&["--busybox"], "pub");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).expect("file").permissions().mode() & 0o777, 0o644);
}

#[test]
fn an_update_sequence_as_smartos_runs_it() {
    let (n, img) = node();
    let mut p = base(&img);
    p["autoboot"] = false.into();
    let uuid = create(&n, p);
    let upd = |payload: serde_json::Value| {
        let f = n.root().join("u.json");
        std::fs::write(&f, payload.to_string()).expect("write");
        n.hull(&["vmadm", "update", &uuid, "-f", &f.to_string_lossy()])
    };
    let get = || -> serde_json::Value { serde_json::from_str(&n.hull(&["vmadm", "get", &uuid]).ok()).expect("json") };
    for step in [
        serde_json::json!({"set_routes": {"10.9.0.0/16": "10.0.0.1", "10.8.0.0/16": "10.0.0.2"}}),
        serde_json::json!({"remove_routes": ["10.8.0.0/16"]}),
        serde_json::json!({"set_customer_metadata": {"user-script": "true"}, "set_tags": {"a": 1}}),
        serde_json::json!({"remove_customer_metadata": ["user-script"], "remove_tags": ["a"]}),
        serde_json::json!({"add_filesystems": [{"source": "/data", "target": "/data", "type": "lofs"}]}),
        serde_json::json!({"update_filesystems": [{"target": "/data", "options": ["ro"]}]}),
        serde_json::json!({"alias": "renamed", "max_physical_memory": 256, "quota": 5, "cpu_cap": 50}),
        serde_json::json!({"alias": null}),
    ] {
        let r = upd(step.clone());
        assert_eq!(r.code, 0, "{step}: {}", r.stderr);
    }
    let v = get();
    assert_eq!(v["routes"], serde_json::json!({"10.9.0.0/16": "10.0.0.1"}));
    assert_eq!(
        v["filesystems"],
        serde_json::json!([{"source": "/data", "target": "/data", "type": "lofs", "options": ["ro"]}])
    );
    assert_eq!(v["customer_metadata"], serde_json::json!({}));
    for verb in ["set_routes", "remove_routes", "add_filesystems", "update_filesystems", "set_tags", "alias"] {
        assert!(v.get(verb).is_none(), "{verb} stored as a property: {v}");
    }
    assert_eq!((v["quota"].clone(), v["cpu_cap"].clone()), (5.into(), 50.into()));
    let r = upd(serde_json::json!({"remove_filesystems": ["/data"]}));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(get()["filesystems"], serde_json::json!([]));
}

#[test]
fn a_minimal_payload_gets_what_smartos_shows() {
    let (n, img) = node();
    let uuid = create(&n, serde_json::json!({"image_uuid": img, "do_not_inventory": true, "autoboot": false}));
    let v: serde_json::Value = serde_json::from_str(&n.hull(&["vmadm", "get", &uuid]).ok()).expect("json");
    let want = serde_json::json!({
        "brand": "joyent", "billing_id": "00000000-0000-0000-0000-000000000000", "cpu_shares": 100,
        "customer_metadata": {}, "dns_domain": "local", "do_not_inventory": true, "firewall_enabled": false,
        "hvm": false, "init_restarts": 0, "internal_metadata": {}, "limit_priv": "default",
        "max_locked_memory": 256, "max_lwps": 2000, "max_msg_ids": 4096, "max_physical_memory": 256,
        "max_sem_ids": 4096, "max_shm_memory": 256, "max_shm_ids": 4096, "max_swap": 256, "nics": [],
        "owner_uuid": "00000000-0000-0000-0000-000000000000", "quota": 10, "resolvers": [], "routes": {},
        "tags": {}, "tmpfs": 256, "v": 1, "zfs_io_priority": 100, "zfs_root_recsize": 131072, "zpool": "zones",
        "zonename": uuid, "uuid": uuid
    });
    for (k, w) in want.as_object().expect("object") {
        assert_eq!(&v[k], w, "{k}");
    }
    for k in ["create_timestamp", "last_modified", "server_uuid", "platform_buildstamp"] {
        assert!(v[k].as_str().is_some_and(|s| !s.is_empty()), "{k}: {v}");
    }
    assert!(v["last_modified"].as_str().is_some_and(|s| s.ends_with('Z') && s.contains('T')), "{v}");
    // indestructible_zoneroot guards against a delete until it is unset, as on SmartOS.
    n.hull(&["vmadm", "update", &uuid, "indestructible_zoneroot=true"]).ok();
    let r = n.hull(&["vmadm", "delete", &uuid]);
    assert!(r.code != 0 && r.stderr.contains("indestructible_zoneroot is set, cannot delete"), "{}", r.stderr);
    assert_eq!(state(&n, &uuid), "stopped", "still there");
    n.hull(&["vmadm", "update", &uuid, "indestructible_zoneroot=false"]).ok();
    n.hull(&["vmadm", "delete", &uuid]).ok();
}

#[test]
fn a_zone_names_itself_by_its_etc_hostname_from_its_next_boot_and_a_bad_name_is_ignored() {
    let (n, img) = node();
    let uuid = create(&n, base(&img));
    let name = |n: &TestNode| n.hull(&["zlogin", &uuid, "hostname"]).ok();
    let set_and_reboot = |n: &TestNode, script: &str| {
        n.hull(&["zlogin", &uuid, "sh", "-c", script]).ok();
        n.hull(&["vmadm", "reboot", "-F", &uuid]).ok();
    };
    assert_eq!(name(&n), "web1\n");
    // What the zone writes (as cloud-init's set_hostname does) names it after a reboot.
    set_and_reboot(&n, "echo cloudy > /etc/hostname");
    assert_eq!(name(&n), "cloudy\n");
    let vm: serde_json::Value = serde_json::from_str(&n.hull(&["vmadm", "get", &uuid]).ok()).expect("json");
    assert!(vm.get("hostname").is_none_or(|h| h != "cloudy"), "the VM's config is not the zone's to change");
    // Not a hostname, a huge file, a link, a FIFO: the VM's own name, and the host reads a page
    // at most.
    for bad in [
        "echo 'bad name!' > /etc/hostname",
        "dd if=/dev/zero bs=1M count=64 2>/dev/null | tr '\\0' a > /etc/hostname",
        "rm /etc/hostname && ln -s /proc/self/environ /etc/hostname",
        // A FIFO no one writes: opening it to read would wait for ever.
        "rm /etc/hostname && mkfifo /etc/hostname",
    ] {
        set_and_reboot(&n, bad);
        assert_eq!(name(&n), "web1\n", "{bad}");
    }
    set_and_reboot(&n, "rm -f /etc/hostname; echo cloudy > /etc/hostname");
    assert_eq!(name(&n), "cloudy\n");
    // The operator's change of the VM's hostname wins, and is written for the zone.
    n.hull(&["vmadm", "update", &uuid, "hostname=web2"]).ok();
    n.hull(&["vmadm", "reboot", "-F", &uuid]).ok();
    assert_eq!(name(&n), "web2\n");
    assert_eq!(n.hull(&["zlogin", &uuid, "cat", "/etc/hostname"]).ok(), "web2\n");
}

/// A table reads only the properties it names from each config (vmadm list's speed with
/// many VMs): what it shows, sorts by and filters on must still be what `vmadm get` says.
#[test]
fn a_table_shows_what_get_says_of_the_properties_it_names() {
    let (n, img) = node();
    let mut uuids = Vec::new();
    for (alias, role, quota) in [("t-b", "web", 3), ("t-a", "db", 5), ("t-c", "web", 7)] {
        let mut p = base(&img);
        p["alias"] = alias.into();
        p["autoboot"] = false.into();
        p["quota"] = quota.into();
        p["tags"] = serde_json::json!({"role": role});
        p["customer_metadata"] = serde_json::json!({"k": format!("v-{alias}")});
        uuids.push(create(&n, p));
    }
    let cols = "uuid,alias,quota,tags.role,ram,type,state,customer_metadata.k,zonepath";
    let table = n.hull(&["vmadm", "list", "-p", "-s", "alias", "-o", cols, "tags.role=web"]).ok();
    let mut expected = Vec::new();
    for u in &uuids {
        let v: serde_json::Value = serde_json::from_str(&n.hull(&["vmadm", "get", u]).ok()).expect("get");
        if v["tags"]["role"] != "web" {
            continue;
        }
        let cell = |x: &serde_json::Value| x.as_str().map(String::from).unwrap_or_else(|| x.to_string());
        let row: Vec<String> = [
            &v["uuid"],
            &v["alias"],
            &v["quota"],
            &v["tags"]["role"],
            &v["ram"],
            &v["type"],
            &v["state"],
            &v["customer_metadata"]["k"],
            &v["zonepath"],
        ]
        .iter()
        .map(|x| cell(x))
        .collect();
        expected.push((v["alias"].as_str().unwrap_or_default().to_string(), row.join(":")));
    }
    expected.sort();
    let expected: Vec<String> = expected.into_iter().map(|(_, r)| r).collect();
    assert_eq!(table.lines().collect::<Vec<_>>(), expected, "{table}");
    assert_eq!(expected.len(), 2);
    // lookup filters on a stored property it does not print.
    let found = n.hull(&["vmadm", "lookup", "quota=5"]).ok();
    assert_eq!(found.trim(), uuids[1]);
    for u in &uuids {
        n.hull(&["vmadm", "delete", u]).ok();
    }
}
