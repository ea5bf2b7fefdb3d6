//! The KVM brand: real qemu (TCG here: KVM makes no progress on these machines) inside a
//! zone. Guests: a boot sector on a zvol image that prints a marker, and Debian's cloud
//! kernel with a busybox initramfs whose init powers off on the ACPI power button
//! (`.ci/deps` extracts the kernel into /var/cache/hull/guest).

mod common;
use common::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const GUEST: &str = "/var/cache/hull/guest";

fn create(n: &TestNode, payload: Value) -> Run {
    let f = n.root().join(format!("p-{}.json", std::process::id() as u128 ^ Instant::now().elapsed().as_nanos()));
    std::fs::write(&f, payload.to_string()).expect("write");
    n.hull(&["vmadm", "create", "-f", &f.to_string_lossy()])
}

fn uuid_of(out: &str) -> String {
    out.trim().rsplit(' ').next().expect("uuid").to_string()
}

/// Builds an image with `imgadm build ARGS`, installs it, and returns its uuid.
fn build_and_install(n: &TestNode, args: &[&str], name: &str) -> String {
    let (m, f, uuid) = n.build(args, name);
    n.hull(&["imgadm", "install", "-m", &m.to_string_lossy(), "-f", &f.to_string_lossy()]).ok();
    uuid
}

fn console(n: &TestNode, uuid: &str) -> String {
    std::fs::read_to_string(n.root().join(format!("var/hull/z/{uuid}/console.log"))).unwrap_or_default()
}

fn wait_console(n: &TestNode, uuid: &str, marker: &str, secs: u64) -> Duration {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if console(n, uuid).contains(marker) {
            return t.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no {marker} on {uuid}'s serial console in {secs} s:\n{}", console(n, uuid));
}

fn state(n: &TestNode, uuid: &str) -> String {
    let v: Value = serde_json::from_str(&n.hull(&["vmadm", "get", uuid]).ok()).expect("json");
    v["state"].as_str().unwrap_or_default().to_string()
}

fn qemu_pid(n: &TestNode, uuid: &str) -> i32 {
    let v: Value = serde_json::from_str(&n.hull(&["vmadm", "get", uuid]).ok()).expect("json");
    v["pid"].as_i64().expect("pid") as i32
}

#[test]
fn a_vm_from_a_zvol_image_boots_in_its_zone_and_leaves_nothing() {
    let n = TestNode::new("1G");
    let img = n.boot_sector_image(256);
    let a =
        uuid_of(&create(&n, json!({"brand": "kvm", "ram": 128, "disks": [{"image_uuid": img, "boot": true}]})).ok());
    let b = uuid_of(
        &create(
            &n,
            json!({"brand": "bhyve", "ram": 128, "disks": [{"image_uuid": img, "boot": true, "model": "ide"}]}),
        )
        .ok(),
    );
    wait_console(&n, &a, "HULL-BOOT-OK", 30);
    wait_console(&n, &b, "HULL-BOOT-OK", 30);
    // Both disks are clones of the image's @final: they share its blocks.
    let list = n.hull(&["dataset", "list", "-H", "-o", "name,origin"]).ok();
    for v in [&a, &b] {
        assert!(list.contains(&format!("zones/{v}-disk0\tzones/{img}@final")), "{list}");
    }
    // qemu is PID 1 of its own pid namespace, in a root that holds no host files but /usr,
    // with seccomp on (the zone's filter and qemu's own sandbox).
    let pid = qemu_pid(&n, &a);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).expect("NSpid");
    assert!(nspid.split_whitespace().last() == Some("1"), "{nspid}");
    assert!(status.lines().any(|l| l.starts_with("Seccomp:") && l.trim_end().ends_with('2')), "{status}");
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    assert!(root.join("usr/bin/qemu-system-x86_64").exists());
    for host_only in ["etc/shadow", "root", "home", "var/hull", "proc/1/root/etc/shadow"] {
        assert!(!root.join(host_only).exists(), "{host_only} is visible to qemu");
    }
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).expect("cmdline").replace('\0', " ");
    assert!(cmdline.contains("-sandbox on"), "{cmdline}");
    // QMP answers through vmadm info.
    let info: Value =
        serde_json::from_str(&n.hull(&["vmadm", "info", &a, "status", "block", "accel"]).ok()).expect("json");
    assert_eq!(info["status"]["status"], "running");
    assert!(info["block"].to_string().contains("/vm/disks/disk0.raw"), "{}", info["block"]);
    assert!(info["accel"]["node"]["accel"].is_string());
    // A halted boot sector ignores ACPI: stop kills it at the timeout.
    n.hull(&["vmadm", "stop", "-t", "2", &a]).ok();
    assert_eq!(state(&n, &a), "stopped");
    for v in [&a, &b] {
        n.hull(&["vmadm", "delete", v]).ok();
    }
    let left = n.hull(&["dataset", "list", "-H", "-o", "name"]).ok();
    assert_eq!(left.trim(), format!("zones/{img}"), "only the image is left");
    let qemus = std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&a) || String::from_utf8_lossy(&c).contains(&b))
                .unwrap_or(false)
        })
        .count();
    assert_eq!(qemus, 0, "a process of the deleted VMs is still running");
}

/// Debian's cloud kernel and hull's guest initramfs (busybox, the modules, an init that
/// powers off on the ACPI power button), as `imgadm build --guest-kernel` puts them on a disk.
fn kernel_guest(dir: &Path) -> (PathBuf, PathBuf) {
    let g = Path::new(GUEST);
    assert!(g.join("vmlinuz").exists(), "{GUEST}/vmlinuz is missing: run .ci/deps");
    let initrd = dir.join("initrd.gz");
    hull_img::guest::initramfs(g, &initrd).expect("initramfs");
    (g.join("vmlinuz"), initrd)
}

#[test]
fn vmadm_stop_is_honoured_by_the_guest_s_acpi() {
    let n = TestNode::new("512M");
    let (kernel, initrd) = kernel_guest(n.root());
    let payload = json!({"brand": "kvm", "ram": 256, "autoboot": false,
        "qemu_extra_opts": "-kernel /vm/boot/vmlinuz -initrd /vm/boot/initrd.gz -append 'console=ttyS0 quiet'"});
    let u = uuid_of(&create(&n, payload).ok());
    let v: Value = serde_json::from_str(&n.hull(&["vmadm", "get", &u]).ok()).expect("json");
    let boot = PathBuf::from(v["zonepath"].as_str().expect("zonepath")).join("boot");
    std::fs::create_dir_all(&boot).expect("mkdir");
    std::fs::copy(&kernel, boot.join("vmlinuz")).expect("kernel");
    std::fs::copy(&initrd, boot.join("initrd.gz")).expect("initrd");
    n.hull(&["vmadm", "start", &u]).ok();
    wait_console(&n, &u, "HULL-GUEST-UP", 90);
    // The console is the guest's serial port: attach, send a line, and detach at the end of
    // input.
    let mut c = n
        .cmd()
        .args(["vmadm", "console", &u])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("console");
    {
        use std::io::Write;
        let mut stdin = c.stdin.take().expect("stdin");
        stdin.write_all(b"hull-typed-this\n").expect("type");
    }
    let t = Instant::now();
    while c.try_wait().expect("wait").is_none() && t.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(c.try_wait().expect("wait").is_some(), "vmadm console did not return at the end of its input");
    let _ = c.kill();
    let t = Instant::now();
    n.hull(&["vmadm", "stop", "-t", "60", &u]).ok();
    let took = t.elapsed();
    assert!(console(&n, &u).contains("HULL-GUEST-POWEROFF"), "{}", console(&n, &u));
    assert!(took < Duration::from_secs(30), "the guest took {took:?}: was it killed at the timeout?");
    assert_eq!(state(&n, &u), "stopped");
}

#[test]
fn bad_kvm_payloads_create_nothing() {
    let n = TestNode::new("512M");
    let zvol = n.boot_sector_image(16);
    let zone_img = n.busybox();
    let cases = [
        (json!({"brand": "kvm", "disks": [{"size": 64, "boot": true, "model": "floppy"}]}), "disks.0.model"),
        (json!({"brand": "kvm", "ram": 100_000_000, "disks": [{"size": 64, "boot": true}]}), "more than this node's"),
        (json!({"brand": "kvm", "disks": [{"image_uuid": zone_img, "boot": true}]}), "not a zvol image"),
        (json!({"brand": "kvm", "disks": [{"boot": true}]}), "missing properties: disks.0.size"),
        (json!({"brand": "joyent-minimal", "image_uuid": zvol}), "cannot be a joyent-minimal zone's root"),
        // As SmartOS: lx boots Linux images (lx-dataset), not zone-dataset ones.
        (json!({"brand": "lx", "kernel_version": "6.1", "image_uuid": zone_img}), "it takes lx-dataset or docker"),
    ];
    let before = n.datasets();
    for (p, needle) in cases {
        let r = create(&n, p.clone());
        assert_eq!(r.code, 1, "{p}: {}", r.stderr);
        assert!(r.stderr.contains(needle), "{p}: {}", r.stderr);
    }
    assert_eq!(n.datasets(), before, "a refused payload left a dataset");
    assert!(n.hull(&["vmadm", "list", "-H"]).ok().trim().is_empty());
    // vmadm validate as SmartOS's: where each disk comes from, and the images on this node,
    // every problem in one answer.
    let validate = |p: Value| -> Value {
        let f = n.root().join("v.json");
        std::fs::write(&f, p.to_string()).expect("write");
        let r = n.hull(&["vmadm", "validate", "create", "-f", &f.to_string_lossy()]);
        let text = r.stderr.split("\nvmadm: error").next().unwrap_or_default().to_string();
        serde_json::from_str(&text).unwrap_or(Value::Null)
    };
    let size = 16; // MiB: the boot sector image's
    let v = validate(json!({"brand": "kvm", "disks": [
        {"image_uuid": zvol, "size": 64, "block_size": 512},
        {"size": 10, "image_size": 5},
        {"boot": true},
        {"media": "cdrom", "path": "/iso/x.iso"},
        {"image_uuid": zvol, "image_size": size + 1},
        {"image_uuid": zone_img, "image_size": 1}]}));
    assert_eq!(v["bad_properties"], json!(["disks.0.size", "disks.0.block_size", "disks.1.image_size"]), "{v}");
    assert_eq!(v["missing_properties"], json!(["disks.2.size"]), "{v}");
    assert_eq!(v["bad_values"], json!(["disks.4.image_size", "disks.5.image_uuid"]), "{v}");
    // An image's disk without image_size is given the image's.
    let f = n.root().join("ok.json");
    std::fs::write(&f, json!({"brand": "kvm", "disks": [{"image_uuid": zvol, "boot": true}]}).to_string()).expect("w");
    n.hull(&["vmadm", "validate", "create", "-f", &f.to_string_lossy()]).ok();
}

#[test]
fn a_qcow2_image_installs_as_a_raw_disk() {
    let n = TestNode::new("512M");
    let raw = n.root().join("b.raw");
    let mut b = hull_qemu::probe::boot_sector();
    b.resize(512, 0);
    std::fs::write(&raw, &b).expect("write");
    std::fs::OpenOptions::new().write(true).open(&raw).expect("open").set_len(64 << 20).expect("size");
    let qcow = n.root().join("b.qcow2");
    let st = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow)
        .status()
        .expect("qemu-img");
    assert!(st.success());
    let img = build_and_install(&n, &["--disk", &qcow.to_string_lossy()], "q");
    let disk = n.zones().join(&img).join("disk.raw");
    let data = std::fs::read(&disk).expect("disk.raw");
    assert_eq!(data.len(), 64 << 20, "the raw disk has the qcow2's virtual size");
    assert_eq!(&data[..512], &b[..], "the boot sector survived the conversion");
    assert!(!n.zones().join(&img).join("disk.qcow2").exists());
}

/// Copies the kernel guest into a stopped VM's dataset, where qemu_extra_opts finds it.
fn install_guest(n: &TestNode, uuid: &str) {
    let (kernel, initrd) = kernel_guest(n.root());
    let v: Value = serde_json::from_str(&n.hull(&["vmadm", "get", uuid]).ok()).expect("json");
    let boot = PathBuf::from(v["zonepath"].as_str().expect("zonepath")).join("boot");
    std::fs::create_dir_all(&boot).expect("mkdir");
    std::fs::copy(&kernel, boot.join("vmlinuz")).expect("kernel");
    std::fs::copy(&initrd, boot.join("initrd.gz")).expect("initrd");
}

#[test]
fn a_guest_s_nic_is_a_vnic_with_the_zone_s_protection() {
    let n = TestNode::in_netns("1G");
    n.hull(&["nictagadm", "add", "-l", "t0"]).ok();
    let img = n.busybox();
    let guest = uuid_of(
        &create(
            &n,
            json!({"brand": "kvm", "ram": 256, "autoboot": false,
                "nics": [{"nic_tag": "t0", "ips": ["10.8.0.2/24"], "model": "virtio"}],
                "qemu_extra_opts": "-kernel /vm/boot/vmlinuz -initrd /vm/boot/initrd.gz -append 'console=ttyS0 quiet hull.ip=10.8.0.2/24'"}),
        )
        .ok(),
    );
    install_guest(&n, &guest);
    n.hull(&["vmadm", "start", &guest]).ok();
    let zone = uuid_of(
        &create(
            &n,
            json!({"brand": "joyent-minimal", "image_uuid": img, "max_physical_memory": 64,
            "nics": [{"nic_tag": "t0", "ips": ["10.8.0.1/24"]}]}),
        )
        .ok(),
    );
    wait_console(&n, &guest, "HULL-GUEST-UP", 90);
    let ping = |ip: &str| n.hull(&["zlogin", &zone, "ping", "-c", "1", "-W", "3", ip]).code == 0;
    let t = Instant::now();
    while !ping("10.8.0.2") && t.elapsed() < Duration::from_secs(20) {}
    assert!(ping("10.8.0.2"), "the zone reaches the guest over their tag:\n{}", console(&n, &guest));
    // The guest's VNIC carries its MAC and the host end's protection: dladm shows it.
    let v: Value = serde_json::from_str(&n.hull(&["vmadm", "get", &guest]).ok()).expect("json");
    let mac = v["nics"][0]["mac"].as_str().expect("mac").to_string();
    let vnics = n.hull(&["dladm", "show-vnic", "-p", "-o", "zone,macaddress"]).ok();
    assert!(vnics.contains(&format!("{guest}:{}", mac.replace(':', "\\:"))), "{vnics}");
    // The guest takes an address it was not given: protection drops it.
    n.hull(&["vmadm", "stop", &guest]).ok();
    n.hull(&["vmadm", "update", &guest, "qemu_extra_opts=-kernel /vm/boot/vmlinuz -initrd /vm/boot/initrd.gz -append 'console=ttyS0 quiet hull.ip=10.8.0.9/24'"]).ok();
    let log = n.root().join(format!("var/hull/z/{guest}/console.log"));
    let _ = std::fs::remove_file(&log);
    n.hull(&["vmadm", "start", &guest]).ok();
    wait_console(&n, &guest, "HULL-GUEST-UP", 90);
    std::thread::sleep(Duration::from_secs(1));
    assert!(!ping("10.8.0.9"), "a guest with a forged address got through");
}

#[test]
fn snapshots_and_images_of_a_stopped_kvm_vm_take_its_disks() {
    let n = TestNode::new("1G");
    let img = n.boot_sector_image(32);
    let u = uuid_of(
        &create(
            &n,
            json!({"brand": "kvm", "ram": 128, "autoboot": false, "disks": [{"image_uuid": img, "boot": true}]}),
        )
        .ok(),
    );
    let disk = n.zones().join(format!("{u}-disk0")).join("disk.raw");
    let first = |p: &Path| std::fs::read(p).expect("disk")[..512].to_vec();
    let good = first(&disk);
    n.hull(&["vmadm", "create-snapshot", &u, "before"]).ok();
    // The guest (here: the host) wrecks its boot sector; the rollback brings it back.
    let mut data = std::fs::read(&disk).expect("disk");
    data[..512].fill(0);
    std::fs::write(&disk, &data).expect("write");
    assert_ne!(first(&disk), good);
    n.hull(&["vmadm", "rollback-snapshot", &u, "before"]).ok();
    assert_eq!(first(&disk), good, "the disk dataset was rolled back with the VM");
    // An image of the VM is a zvol image of its boot disk; a VM made from it boots.
    let out = n.root().join("made");
    let made = n.hull(&["imgadm", "create", "-o", &out.to_string_lossy(), &u, "name=fromvm", "version=1.0.0"]).ok();
    let manifest = std::fs::read_dir(&out)
        .expect("out")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("manifest");
    let file = std::fs::read_dir(&out)
        .expect("out")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "gz"))
        .expect("file");
    let m: Value = serde_json::from_str(&std::fs::read_to_string(&manifest).expect("read")).expect("json");
    assert_eq!(m["type"], "zvol", "{made}");
    n.hull(&["imgadm", "install", "-m", &manifest.to_string_lossy(), "-f", &file.to_string_lossy()]).ok();
    let v = uuid_of(
        &create(&n, json!({"brand": "kvm", "ram": 128, "disks": [{"image_uuid": m["uuid"], "boot": true}]})).ok(),
    );
    wait_console(&n, &v, "HULL-BOOT-OK", 30);
    n.hull(&["vmadm", "delete-snapshot", &u, "before"]).ok();
    let snaps = n.hull(&["dataset", "list", "-H", "-t", "snapshot", "-o", "name"]).ok();
    assert!(!snaps.contains("vmsnap-before"), "{snaps}");
}

#[test]
fn vnc_is_served_on_the_node_s_loopback() {
    let n = TestNode::in_netns("512M");
    let img = n.boot_sector_image(16);
    let u = uuid_of(
        &create(&n, json!({"brand": "kvm", "ram": 64, "vnc_port": 5911, "disks": [{"image_uuid": img, "boot": true}]}))
            .ok(),
    );
    wait_console(&n, &u, "HULL-BOOT-OK", 30);
    let greeting = n.in_node(|| {
        let mut s = std::net::TcpStream::connect("127.0.0.1:5911").expect("connect to the VNC port");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut buf = [0u8; 12];
        std::io::Read::read_exact(&mut s, &mut buf).expect("RFB greeting");
        String::from_utf8_lossy(&buf).into_owned()
    });
    assert!(greeting.starts_with("RFB 003."), "{greeting:?}");
    let info: Value = serde_json::from_str(&n.hull(&["vmadm", "info", &u, "vnc"]).ok()).expect("json");
    assert_eq!(info["vnc"]["port"], 5911);
    assert_eq!(info["vnc"]["host"], "127.0.0.1");
}

#[test]
fn a_guest_image_from_imgadm_build_boots_from_its_disk_and_stops_on_acpi() {
    let n = TestNode::new("1G");
    let kernel = format!("{GUEST}/vmlinuz");
    let img = build_and_install(&n, &["--guest-kernel", &kernel, "--guest-modules", GUEST], "guest");
    let m: Value = serde_json::from_str(&n.hull(&["imgadm", "get", &img]).ok()).expect("json");
    assert_eq!(m["manifest"]["type"], "zvol", "{m}");
    // No -kernel: the BIOS boots the disk's MBR, syslinux loads the kernel.
    let u =
        uuid_of(&create(&n, json!({"brand": "kvm", "ram": 256, "disks": [{"image_uuid": &img, "boot": true}]})).ok());
    wait_console(&n, &u, hull_img::guest::MARKER, 90);
    assert!(console(&n, &u).contains("SYSLINUX"), "booted by syslinux: {}", console(&n, &u));
    let t = Instant::now();
    n.hull(&["vmadm", "stop", "-t", "60", &u]).ok();
    assert!(t.elapsed() < Duration::from_secs(30), "the guest ignored ACPI: {:?}", t.elapsed());
    assert!(console(&n, &u).contains("HULL-GUEST-POWEROFF"));
}

#[test]
fn a_debian_guest_boots_from_its_disk_and_cloud_init_configures_it_from_metadata() {
    let n = TestNode::new("3G");
    let kernel = format!("{GUEST}/vmlinuz");
    let args = [
        "--guest-kernel",
        &kernel,
        "--guest-modules",
        GUEST,
        "--guest-debian",
        "--include",
        "cloud-init",
        "--cache-dir",
        DEB_CACHE,
    ];
    let img = build_and_install(&n, &args, "debian-guest");
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHullGuestKey test@hull";
    let script = "#!/bin/sh\necho \"HULL-US $(hostname) $(cat /root/.ssh/authorized_keys)\" > /dev/console\n";
    let u = uuid_of(
        &create(
            &n,
            json!({"brand": "kvm", "ram": 768, "disks": [{"image_uuid": &img, "boot": true}],
                "customer_metadata": {"hostname": "cloudvm", "root_authorized_keys": key, "user-script": script}}),
        )
        .ok(),
    );
    // BIOS, syslinux, the kernel, the initramfs's switch to the ext4 root, then systemd;
    // cloud-init finds the SmartOS datasource by the SMBIOS product name and reads the
    // metadata over ttyS1: the hostname, root's key, and the user-script, which says so.
    wait_console(&n, &u, "HULL-US", 480);
    let c = console(&n, &u);
    assert!(c.contains("SYSLINUX") && c.contains("HULL-GUEST-ROOT") && c.contains("Welcome to"), "{c}");
    assert!(c.contains(&format!("HULL-US cloudvm {key}")), "{c}");
    wait_console(&n, &u, "login:", 120);
    // cloud-init's last line names the datasource; it comes after the user-script, and
    // the login prompt may come before either.
    wait_console(&n, &u, "DataSourceSmartOS", 120);
    // systemd-logind (udev tags the button, dbus carries logind) powers the guest off.
    let t = Instant::now();
    n.hull(&["vmadm", "stop", "-t", "60", &u]).ok();
    assert!(t.elapsed() < Duration::from_secs(40), "the Debian guest ignored ACPI: {:?}", t.elapsed());
    assert!(console(&n, &u).contains("Power down"), "{}", console(&n, &u));
    assert_eq!(state(&n, &u), "stopped");
}

#[test]
fn forced_kvm_runs_the_guest_through_dev_kvm_in_its_zone() {
    // KVM crawls on these machines but does run a boot sector: enough to check the zone's
    // /dev/kvm and qemu's -accel kvm, with the operator forcing it.
    if !Path::new("/dev/kvm").exists() {
        panic!("/dev/kvm is missing on this machine");
    }
    let n = TestNode::new("512M");
    let img = n.boot_sector_image(16);
    let p = n.root().join("kvm.json");
    std::fs::write(&p, json!({"brand": "kvm", "ram": 64, "disks": [{"image_uuid": img, "boot": true}]}).to_string())
        .expect("write");
    let out = n.hull_env(&["vmadm", "create", "-f", &p.to_string_lossy()], &[("HULL_ACCEL", "kvm")]).ok();
    let u = uuid_of(&out);
    wait_console(&n, &u, "HULL-BOOT-OK", 60);
    let info: Value = serde_json::from_str(&n.hull_env(&["vmadm", "info", &u, "accel"], &[("HULL_ACCEL", "kvm")]).ok())
        .expect("json");
    assert_eq!(info["accel"]["kvm"]["enabled"], true, "{info}");
    assert_eq!(info["accel"]["node"]["reason"], "forced by HULL_ACCEL");
    let pid = qemu_pid(&n, &u);
    assert!(std::fs::read_link(format!("/proc/{pid}/root")).is_ok());
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).expect("cmdline").replace('\0', " ");
    assert!(cmdline.contains("-accel kvm") && cmdline.contains("-cpu qemu64"), "{cmdline}");
    let st: Value =
        serde_json::from_str(&n.hull_env(&["node", "status", "-j"], &[("HULL_ACCEL", "kvm")]).ok()).expect("json");
    assert_eq!(st["accel"]["accel"], "kvm");
}

#[test]
fn a_kvm_vm_takes_a_blank_disk_and_disk_changes_by_update() {
    let n = TestNode::new("512M");
    let u = uuid_of(
        &create(&n, json!({"brand": "kvm", "ram": 64, "autoboot": false, "disks": [{"size": 16, "boot": true}]})).ok(),
    );
    let f = n.root().join("add.json");
    std::fs::write(&f, json!({"add_disks": [{"size": 8, "model": "virtio"}]}).to_string()).expect("write");
    let out = n.hull(&["vmadm", "update", &u, "-f", &f.to_string_lossy()]).said();
    assert!(out.contains("add_disks"), "{out}");
    let v: Value = serde_json::from_str(&n.hull(&["vmadm", "get", &u]).ok()).expect("json");
    let disks = v["disks"].as_array().expect("disks");
    assert_eq!(disks.len(), 2, "{v}");
    assert!(v.get("add_disks").is_none(), "stored under its verb: {v}");
    let file = n.zones().join(&u).join("disks/disk1.raw");
    assert_eq!(std::fs::metadata(&file).expect("the new disk").len(), 8 << 20);
    // A disk's path is its file on the host; update_disks merges into the disk with that path.
    let path = disks[1]["path"].as_str().expect("path").to_string();
    assert_eq!(std::path::Path::new(&path), file.as_path());
    assert!(std::path::Path::new(disks[0]["path"].as_str().expect("path")).is_file());
    std::fs::write(&f, json!({"update_disks": [{"path": path, "model": "ide"}]}).to_string()).expect("write");
    n.hull(&["vmadm", "update", &u, "-f", &f.to_string_lossy()]).ok();
    let v: Value = serde_json::from_str(&n.hull(&["vmadm", "get", &u]).ok()).expect("json");
    assert_eq!(v["disks"][1]["model"], "ide");
    // A disk from an image is made at create only: said, and nothing stored.
    std::fs::write(
        &f,
        json!({"add_disks": [{"image_uuid": "7b3f0c1e-0000-4000-8000-000000000001", "image_size": 8}]}).to_string(),
    )
    .expect("write");
    let r = n.hull(&["vmadm", "update", &u, "-f", &f.to_string_lossy()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("made at create only"), "{}", r.stderr);
}

#[test]
fn a_bhyve_disk_grows_under_its_running_guest() {
    let n = TestNode::new("512M");
    let u = uuid_of(&create(&n, json!({"brand": "bhyve", "ram": 64, "disks": [{"size": 16, "boot": true}]})).ok());
    assert_eq!(state(&n, &u), "running");
    let v: Value = serde_json::from_str(&n.hull(&["vmadm", "get", &u]).ok()).expect("json");
    let path = v["disks"][0]["path"].as_str().expect("path").to_string();
    let f = n.root().join("grow.json");
    std::fs::write(&f, json!({"update_disks": [{"path": path, "size": 32}]}).to_string()).expect("write");
    let out = n.hull(&["vmadm", "update", &u, "-f", &f.to_string_lossy()]).said();
    assert!(out.contains("applied live: update_disks"), "{out}");
    assert_eq!(std::fs::metadata(&path).expect("disk").len(), 32 << 20);
    // qemu, and so the guest, sees the new size at once.
    let info = n.hull(&["vmadm", "info", &u, "block"]).ok();
    assert!(info.contains(&(32u64 << 20).to_string()), "{info}");
    // Shrinking is refused unless asked for by name, as on SmartOS.
    std::fs::write(&f, json!({"update_disks": [{"path": path, "size": 8}]}).to_string()).expect("write");
    let r = n.hull(&["vmadm", "update", &u, "-f", &f.to_string_lossy()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("dangerous_allow_shrink"), "{}", r.stderr);
    assert_eq!(std::fs::metadata(&path).expect("disk").len(), 32 << 20);
    n.hull(&["vmadm", "delete", &u]).ok();
}

#[test]
fn a_kvm_guest_gets_its_static_address_by_dhcp() {
    let n = TestNode::in_netns("1G");
    n.hull(&["nictagadm", "add", "-l", "t0"]).ok();
    let img = n.busybox();
    // The guest is not told its address on the command line: it asks DHCP, as a cloud
    // image does, and hull answers at its port with the NIC's `ips` and `gateways`.
    let guest = uuid_of(
        &create(
            &n,
            json!({"brand": "kvm", "ram": 256, "autoboot": false, "resolvers": ["10.8.1.53"],
                "nics": [{"nic_tag": "t0", "ips": ["10.8.1.2/24"], "gateways": ["10.8.1.1"], "model": "virtio"}],
                "qemu_extra_opts": "-kernel /vm/boot/vmlinuz -initrd /vm/boot/initrd.gz -append 'console=ttyS0 quiet hull.dhcp'"}),
        )
        .ok(),
    );
    install_guest(&n, &guest);
    n.hull(&["vmadm", "start", &guest]).ok();
    let zone = uuid_of(
        &create(
            &n,
            json!({"brand": "joyent-minimal", "image_uuid": img, "max_physical_memory": 64,
            "nics": [{"nic_tag": "t0", "ips": ["10.8.1.1/24"]}]}),
        )
        .ok(),
    );
    wait_console(&n, &guest, "HULL-GUEST-UP", 90);
    let text = console(&n, &guest);
    assert!(text.contains("HULL-GUEST-DHCP 10.8.1.2/24 10.8.1.1"), "the guest was not told its address:\n{text}");
    let ping = |ip: &str| n.hull(&["zlogin", &zone, "ping", "-c", "1", "-W", "3", ip]).code == 0;
    let t = Instant::now();
    while !ping("10.8.1.2") && t.elapsed() < Duration::from_secs(20) {}
    assert!(ping("10.8.1.2"), "the guest answers at its address:\n{text}");
    for v in [&guest, &zone] {
        n.hull(&["vmadm", "delete", v]).ok();
    }
}

#[test]
fn a_kvm_guest_reads_its_metadata_on_its_second_serial_port_and_looks_like_smartos() {
    let n = TestNode::new("1G");
    let guest = uuid_of(
        &create(
            &n,
            json!({"brand": "kvm", "ram": 256, "autoboot": false,
                "customer_metadata": {"user-script": "#!/bin/sh\n"},
                "qemu_extra_opts": "-kernel /vm/boot/vmlinuz -initrd /vm/boot/initrd.gz -append 'console=ttyS0 quiet hull.mdata'"}),
        )
        .ok(),
    );
    install_guest(&n, &guest);
    n.hull(&["vmadm", "start", &guest]).ok();
    wait_console(&n, &guest, "HULL-GUEST-UP", 90);
    let text = console(&n, &guest);
    // cloud-init's SmartOS datasource takes a guest with this product name for a SmartOS one.
    assert!(text.contains("HULL-GUEST-DMI SmartDC HVM"), "SMBIOS identity:\n{text}");
    assert!(text.contains(&format!("HULL-GUEST-MDATA SUCCESS {guest}")), "metadata over ttyS1:\n{text}");
    n.hull(&["vmadm", "delete", &guest]).ok();
}
