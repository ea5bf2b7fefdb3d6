//! A real Debian image from debootstrap (about a minute; needs the Debian mirror), and the
//! main job (clones and zones) on a busybox image.

mod common;
use common::*;

/// Waits until `check` holds in the zone (`sh -c` through zlogin), up to `secs`.
fn wait_in(n: &TestNode, vm: &str, check: &str, secs: u64) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if n.hull(&["zlogin", vm, "sh", "-c", check]).code == 0 {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    false
}

fn create(n: &TestNode, payload: serde_json::Value) -> String {
    let f = n.root().join("debian.json");
    std::fs::write(&f, payload.to_string()).expect("write");
    let out = n.hull(&["vmadm", "create", "-j", "-f", &f.to_string_lossy()]).ok();
    let vm: serde_json::Value = serde_json::from_str(&out).expect("json");
    vm["uuid"].as_str().expect("uuid").to_string()
}

#[test]
fn debootstrap_image_installs_and_clones() {
    let n = TestNode::new("3G");
    // Debian with its own cloud-init package, unmodified.
    // A copy of the tests' package cache without two packages: debootstrap must fetch one
    // (procps) into it and apt the other (cloud-init).
    let cache = n.root().join("debs");
    std::fs::create_dir_all(DEB_CACHE).expect("cache");
    let cp = std::process::Command::new("cp").arg("-a").arg(format!("{DEB_CACHE}/.")).arg(&cache).status();
    assert!(cp.expect("cp").success());
    let debs = |prefix: &str| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&cache)
            .expect("cache")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|f| f.to_string_lossy().starts_with(prefix)))
            .collect()
    };
    for p in ["procps_", "cloud-init_"] {
        debs(p).iter().for_each(|d| std::fs::remove_file(d).expect("remove"));
    }
    let c = cache.to_string_lossy();
    let (m, f, uuid) =
        n.build(&["--debootstrap", "--include", "cloud-init", "-c", "zstd", "--cache-dir", &c], "debian");
    for p in ["procps_", "cloud-init_"] {
        assert_eq!(debs(p).len(), 1, "the build kept no {p}*.deb in its cache");
    }
    n.hull(&["imgadm", "install", "-m", &m.to_string_lossy(), "-f", &f.to_string_lossy()]).ok();
    let root = n.zones().join(&uuid).join("root");
    let version = std::fs::read_to_string(root.join("etc/debian_version")).expect("debian_version");
    assert!(version.starts_with("12."), "{version}");
    let init = std::fs::read_link(root.join("sbin/init")).expect("init link");
    assert!(init.to_string_lossy().contains("systemd"), "{init:?}");
    assert!(root.join("dev/null").exists(), "device nodes survive the round trip");
    assert!(root.join("usr/bin/cloud-init").exists(), "--include installs cloud-init");
    let archives = std::fs::read_dir(root.join("var/cache/apt/archives")).expect("archives");
    let debs: Vec<_> = archives.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".deb")).collect();
    assert!(
        debs.is_empty(),
        "the image carries packages: {:?}",
        debs.iter().map(|e| e.file_name()).collect::<Vec<_>>()
    );
    n.hull(&["dataset", "clone", &format!("zones/{uuid}@final"), "zones/vm"]).ok();
    assert!(n.zones().join("vm/root/usr/bin/apt").exists());

    // The node's lxcfs: the zones below see their own memory in /proc (procps's free).
    let _lx = Lxcfs::start(&n);
    // Two Debian zones: one where cloud-init configures the zone from its metadata, one where
    // cloud-init is switched off and hull's own first-boot unit runs the user-script.
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHullTestKey test@hull";
    let cloudy = create(
        &n,
        serde_json::json!({"brand": "lx", "kernel_version": "6.1", "image_uuid": uuid, "alias": "deb", "max_physical_memory": 512,
            "customer_metadata": {"hostname": "cloudy", "root_authorized_keys": key,
                "user-script": "#!/bin/sh\necho ran >> /root/user-script-ran\n"}}),
    );
    let plain = create(
        &n,
        serde_json::json!({"brand": "lx", "kernel_version": "6.1", "image_uuid": uuid, "alias": "deb2", "max_physical_memory": 512,
            "autoboot": false,
            "customer_metadata": {"user-script": "#!/bin/sh\necho ran >> /root/user-script-ran\n"}}),
    );
    std::fs::write(n.zones().join(&plain).join("root/etc/cloud/cloud-init.disabled"), "").expect("disable cloud-init");
    n.hull(&["vmadm", "start", &plain]).ok();
    for vm in [&cloudy, &plain] {
        let mut state = String::new();
        for _ in 0..240 {
            state = n.hull(&["zlogin", vm, "systemctl", "is-system-running"]).stdout.trim().to_string();
            if state == "running" || state == "degraded" {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        let failed = n.hull(&["zlogin", vm, "systemctl", "--failed", "--no-legend"]).stdout;
        assert!(state == "running" || state == "degraded", "systemd says {state:?}; failed: {failed}");
    }

    // cloud-init took the SmartOS datasource (as in an LX zone: its units see the zone's
    // uname as one), read the metadata over the zone's socket, and did its work.
    let status = |vm: &str| n.hull(&["zlogin", vm, "cat", "/run/cloud-init/status.json"]).stdout;
    let done = wait_in(&n, &cloudy, "test -e /var/lib/cloud/instance/boot-finished", 180);
    let log =
        n.hull(&["zlogin", &cloudy, "sh", "-c", "grep -E 'WARN|ERROR' /var/log/cloud-init.log | tail -n 40"]).stdout;
    assert!(done, "cloud-init did not finish: {}\n{log}", status(&cloudy));
    let st: serde_json::Value = serde_json::from_str(&status(&cloudy)).expect("status.json");
    assert!(st["v1"]["datasource"].as_str().unwrap_or("").contains("DataSourceSmartOS"), "{st}");
    for stage in ["init-local", "init", "modules-config", "modules-final"] {
        assert_eq!(st["v1"][stage]["errors"], serde_json::json!([]), "{stage}: {st}\n{log}");
    }
    let keys = n.hull(&["zlogin", &cloudy, "cat", "/root/.ssh/authorized_keys"]).ok();
    assert_eq!(keys.trim(), key, "root's keys are the metadata's, with no login refusal in front");
    assert!(wait_in(&n, &cloudy, "test -s /root/user-script-ran", 30), "cloud-init did not run the user-script");
    assert_eq!(n.hull(&["zlogin", &cloudy, "cat", "/root/user-script-ran"]).ok(), "ran\n", "the user-script ran once");
    let skipped = n.hull(&["zlogin", &cloudy, "systemctl", "show", "-P", "ConditionResult", "hull-mdata-execute"]).ok();
    assert_eq!(skipped.trim(), "no", "hull's unit leaves the metadata to cloud-init");
    // The hostname: cloud-init wrote it (a zone cannot rename itself while it runs); the
    // zone is called so from its next boot.
    assert_eq!(n.hull(&["zlogin", &cloudy, "cat", "/etc/hostname"]).ok(), "cloudy\n", "{log}");
    n.hull(&["vmadm", "reboot", &cloudy]).ok();
    assert!(wait_in(&n, &cloudy, "test \"$(hostname)\" = cloudy", 120), "the zone is not called cloudy after a reboot");

    // Without cloud-init: hull's first-boot unit ran the user-script through the metadata service.
    assert!(wait_in(&n, &plain, "test -s /root/user-script-ran", 30), "the user-script did not run");
    assert_eq!(n.hull(&["zlogin", &plain, "cat", "/root/user-script-ran"]).ok(), "ran\n");
    assert_eq!(n.hull(&["zlogin", &plain, "systemctl", "is-active", "hull-mdata-execute"]).stdout.trim(), "active");
    assert_eq!(n.hull(&["zlogin", &plain, "hostname"]).ok(), "deb2\n");
    // procps's free reads lxcfs's /proc/meminfo: the zone's cap, not the host's memory.
    let free = n.hull(&["zlogin", &plain, "free", "-m"]).ok();
    assert!(free.lines().any(|l| l.starts_with("Mem:") && l.split_whitespace().nth(1) == Some("512")), "{free}");
    // The tools by SmartOS's names, on the PATH.
    assert_eq!(n.hull(&["zlogin", &plain, "mdata-get", "sdc:alias"]).ok(), "deb2\n");
    // Its own machine id (the image's is empty).
    let id = n.hull(&["zlogin", &plain, "cat", "/etc/machine-id"]).ok();
    assert_eq!(id.trim(), plain.replace('-', ""));
    for vm in [&cloudy, &plain] {
        n.hull(&["vmadm", "stop", vm]).ok();
    }
    let log = std::fs::read_to_string(n.root().join(format!("var/hull/z/{plain}/console.log"))).expect("console log");
    assert!(log.contains("Powering off") || log.contains("Reached target"), "{log}");
    for vm in [&cloudy, &plain] {
        n.hull(&["vmadm", "delete", vm]).ok();
    }
}

#[test]
fn the_main_job_on_busybox() {
    let n = TestNode::new("512M");
    let out = n.hull(&["demo", "--image", "busybox", "--clones", "5", "--zones", "2", "-j"]).ok();
    let line = out.lines().last().expect("json line");
    let v: serde_json::Value = serde_json::from_str(line).expect("json");
    assert_eq!(v["clones"], 5);
    assert_eq!(v["zones"], 2);
    assert!(out.contains("running  demo-zone-0") && out.contains("Linux demo-zone-0"), "{out}");
    assert_eq!(n.hull(&["vmadm", "list", "-H", "-o", "state", "state=running"]).ok(), "running\nrunning\n");
    assert!(v["added_over_image"].as_f64().expect("ratio") < 0.5, "{v}");
    let names = n.datasets();
    assert_eq!(names.iter().filter(|d| d.starts_with("demo-")).count(), 5, "{names:?}");
    // Again: reuses the image and starts from no demo clones.
    let again = n.hull(&["demo", "--image", "busybox", "--clones", "3", "--zones", "1"]).ok();
    assert!(again.contains("already installed"), "{again}");
    assert_eq!(n.datasets().iter().filter(|d| d.starts_with("demo-")).count(), 3);
    assert_eq!(
        n.hull(&["vmadm", "list", "-H", "-o", "alias"]).ok(),
        "demo-zone-0\n",
        "earlier demo zones are replaced"
    );
}
