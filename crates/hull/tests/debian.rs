//! A real Debian image from debootstrap (about a minute; needs the Debian mirror), and the
//! main job (clones and zones) on a busybox image.

mod common;
use common::*;

#[test]
fn debootstrap_image_installs_and_clones() {
    let n = TestNode::new("2G");
    let (m, f, uuid) = n.build(&["--debootstrap", "-c", "zstd"], "debian");
    n.hull(&["imgadm", "install", "-m", &m.to_string_lossy(), "-f", &f.to_string_lossy()]).ok();
    let root = n.zones().join(&uuid).join("root");
    let version = std::fs::read_to_string(root.join("etc/debian_version")).expect("debian_version");
    assert!(version.starts_with("12."), "{version}");
    let init = std::fs::read_link(root.join("sbin/init")).expect("init link");
    assert!(init.to_string_lossy().contains("systemd"), "{init:?}");
    assert!(root.join("dev/null").exists(), "device nodes survive the round trip");
    n.hull(&["dataset", "clone", &format!("zones/{uuid}@final"), "zones/vm"]).ok();
    assert!(n.zones().join("vm/root/usr/bin/apt").exists());

    // A Debian zone: systemd as PID 1 reaches running (or degraded), and powers off on stop.
    let f = n.root().join("debian.json");
    let payload = serde_json::json!({"brand": "lx", "kernel_version": "6.1", "image_uuid": uuid, "alias": "deb", "max_physical_memory": 512,
        "customer_metadata": {"user-script": "#!/bin/sh\necho ran >> /root/user-script-ran\n"}});
    std::fs::write(&f, payload.to_string()).expect("write");
    let out = n.hull(&["vmadm", "create", "-j", "-f", &f.to_string_lossy()]).ok();
    let vm: serde_json::Value = serde_json::from_str(&out).expect("json");
    let vm = vm["uuid"].as_str().expect("uuid").to_string();
    let mut state = String::new();
    for _ in 0..120 {
        state = n.hull(&["zlogin", &vm, "systemctl", "is-system-running"]).stdout.trim().to_string();
        if state == "running" || state == "degraded" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(state == "running" || state == "degraded", "systemd says {state:?}");
    assert_eq!(n.hull(&["zlogin", &vm, "hostname"]).ok(), "deb\n");
    // The image's first-boot unit ran the VM's user-script through the metadata service.
    let mut ran = String::new();
    for _ in 0..60 {
        ran = n.hull(&["zlogin", &vm, "cat", "/root/user-script-ran"]).stdout;
        if !ran.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let unit = n.hull(&["zlogin", &vm, "systemctl", "status", "hull-mdata-execute"]).stdout;
    assert_eq!(ran, "ran\n", "the user-script did not run: {unit}");
    assert_eq!(n.hull(&["zlogin", &vm, "systemctl", "is-active", "hull-mdata-execute"]).stdout.trim(), "active");
    // Its own machine id (the image's is empty).
    let id = n.hull(&["zlogin", &vm, "cat", "/etc/machine-id"]).ok();
    assert_eq!(id.trim(), vm.replace('-', ""));
    n.hull(&["vmadm", "stop", &vm]).ok();
    let log = std::fs::read_to_string(n.root().join(format!("var/hull/z/{vm}/console.log"))).expect("console log");
    assert!(log.contains("Powering off") || log.contains("Reached target"), "{log}");
    n.hull(&["vmadm", "delete", &vm]).ok();
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
