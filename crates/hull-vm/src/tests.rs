//! create, start and their rollbacks against a fake host (no zoneadmd, no namespaces) and
//! a real pool of the plain-directory backend: what each failure leaves behind.

use crate::host::{Host, NetPlan};
use crate::{Result, VmError, Vmadm};
use hull_storage::Node;
use serde_json::json;
use std::sync::{Arc, Mutex};

/// Records what hull-vm asked of the host; fails where told to.
#[derive(Clone, Default)]
struct Fake {
    calls: Arc<Mutex<Vec<String>>>,
    fail_boot: bool,
    fail_net: bool,
}

impl Fake {
    fn said(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
    fn note(&self, s: String) {
        if let Ok(mut c) = self.calls.lock() {
            c.push(s);
        }
    }
}

impl Host for Fake {
    fn boot(&self, uuid: &str, _monitor: bool) -> Result<()> {
        self.note(format!("boot {uuid}"));
        if self.fail_boot {
            return Err(VmError::Refused { vm: uuid.into(), reason: "boot failed: the fake said so".into() });
        }
        Ok(())
    }
    fn net_plug(&self, plan: &NetPlan) -> Result<()> {
        self.note(format!("plug {} nics={} guest={}", plan.uuid, plan.nics.len(), plan.guest));
        if self.fail_net {
            return Err(VmError::Nics { vm: plan.uuid.into(), problems: vec!["the fake has no links".into()] });
        }
        Ok(())
    }
    fn net_down(&self, uuid: &str) -> Result<()> {
        self.note(format!("down {uuid}"));
        Ok(())
    }
}

struct T {
    _dir: tempfile::TempDir,
    node: Node,
}

fn node() -> T {
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::new(dir.path(), &format!("u{}", &uuid::Uuid::new_v4().simple().to_string()[..7])).expect("node");
    node.create_pool(&hull_storage::host::PoolSpec {
        backend: Some(hull_spec::PoolBackend::Dir),
        file: None,
        size: None,
        device: None,
        dir: None,
        zpool: None,
    })
    .expect("dir pool");
    // The accelerator as if probed: no qemu runs in these tests.
    std::fs::create_dir_all(node.var_dir()).expect("var");
    std::fs::write(
        node.var_dir().join("accel.json"),
        r#"{"accel":"tcg","reason":"unit test","kvm_ms":null,"tcg_ms":null}"#,
    )
    .expect("accel");
    T { _dir: dir, node }
}

fn vmadm(t: &T, fake: &Fake) -> Vmadm {
    Vmadm::with_host(&t.node, Box::new(fake.clone())).expect("vmadm")
}

fn datasets(v: &Vmadm) -> Vec<String> {
    v.pool().expect("pool").list().expect("list").into_iter().map(|d| d.name).collect()
}

fn kvm(uuid: &str, autoboot: bool) -> serde_json::Value {
    json!({"uuid": uuid, "brand": "kvm", "ram": 128, "autoboot": autoboot, "disks": [{"size": 8, "model": "virtio"}]})
}

#[test]
fn a_boot_that_fails_at_create_leaves_the_vm_failed_and_its_network_down() {
    let t = node();
    let fake = Fake { fail_boot: true, ..Fake::default() };
    let v = vmadm(&t, &fake);
    let uuid = "7b0e0c38-4bb4-4c2b-9c0c-6a8d1c5e0f11";
    let e = v.create(&kvm(uuid, true)).expect_err("boot fails");
    assert!(matches!(e, VmError::BootFailed { .. }), "{e}");
    // Stored, marked failed; the namespace it plugged was taken down again.
    assert_eq!(v.load(uuid).expect("stored").get("failed"), Some(&json!(true)));
    assert_eq!(v.get(uuid).expect("get")["state"], json!("failed"));
    assert_eq!(fake.said(), [format!("plug {uuid} nics=0 guest=true"), format!("boot {uuid}"), format!("down {uuid}")]);
}

#[test]
fn a_network_that_fails_at_start_boots_nothing() {
    let t = node();
    let fake = Fake { fail_net: true, ..Fake::default() };
    let v = vmadm(&t, &fake);
    let uuid = "0c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5";
    v.create(&kvm(uuid, false)).expect("created stopped");
    assert!(fake.said().is_empty(), "a VM created stopped touches no host: {:?}", fake.said());
    let e = v.start(uuid).expect_err("no network");
    assert!(e.to_string().contains("the fake has no links"), "{e}");
    assert_eq!(fake.said(), [format!("plug {uuid} nics=0 guest=true"), format!("down {uuid}")]);
    // Still stopped, autoboot still as created.
    assert_eq!(v.load(uuid).expect("stored").get("autoboot"), Some(&json!(false)));
}

#[test]
fn a_start_that_succeeds_clears_failed_and_sets_autoboot() {
    let t = node();
    let failing = Fake { fail_boot: true, ..Fake::default() };
    let uuid = "1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9";
    vmadm(&t, &failing).create(&kvm(uuid, true)).expect_err("first boot fails");
    let fake = Fake::default();
    let v = vmadm(&t, &fake);
    v.start(uuid).expect("starts");
    let cfg = v.load(uuid).expect("stored");
    assert_eq!(cfg.get("failed"), None);
    assert_eq!(cfg.get("autoboot"), Some(&json!(true)));
    assert_eq!(fake.said(), [format!("plug {uuid} nics=0 guest=true"), format!("boot {uuid}")]);
}

#[test]
fn a_create_refused_part_way_leaves_no_dataset() {
    let t = node();
    let fake = Fake::default();
    let v = vmadm(&t, &fake);
    let before = datasets(&v);
    // An OS zone of an image the node does not have; a KVM disk of one.
    let missing = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
    assert!(v.create(&json!({"brand": "joyent-minimal", "image_uuid": missing})).is_err());
    assert!(v.create(&json!({"brand": "kvm", "disks": [{"image_uuid": missing, "boot": true}]})).is_err());
    // A VM that would take more memory than the node has.
    assert!(v.create(&json!({"brand": "kvm", "ram": 1_u64 << 40, "disks": [{"size": 8}]})).is_err());
    assert_eq!(datasets(&v), before, "a refused create left datasets");
    assert!(v.uuids().expect("uuids").is_empty());
    assert!(fake.said().is_empty());
}

#[test]
fn a_second_create_of_the_same_uuid_changes_nothing() {
    let t = node();
    let fake = Fake::default();
    let v = vmadm(&t, &fake);
    let uuid = "2a3b4c5d-6e7f-4a8b-9c0d-1e2f3a4b5c6d";
    v.create(&kvm(uuid, false)).expect("first");
    let cfg = v.load(uuid).expect("stored");
    let e = v.create(&json!({"uuid": uuid, "brand": "kvm", "ram": 512, "disks": [{"size": 16}]})).expect_err("exists");
    assert!(matches!(e, VmError::Exists(_)), "{e}");
    assert_eq!(v.load(uuid).expect("stored"), cfg);
}

#[test]
fn a_refused_update_changes_nothing_and_a_stopped_vm_s_update_touches_no_host() {
    let t = node();
    let fake = Fake::default();
    let v = vmadm(&t, &fake);
    let uuid = "3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f";
    v.create(&kvm(uuid, false)).expect("created");
    let cfg = v.load(uuid).expect("stored");
    // A NIC on a tag the node does not have, with a good alias beside it: all or nothing.
    let bad =
        json!({"alias": "renamed", "add_nics": [{"nic_tag": "nosuch", "ips": ["10.0.0.2/24"], "model": "virtio"}]});
    assert!(v.update(uuid, &bad).is_err());
    assert_eq!(v.load(uuid).expect("stored"), cfg, "a refused update changed the config");
    v.update(uuid, &json!({"alias": "renamed", "ram": 256})).expect("update");
    let after = v.load(uuid).expect("stored");
    assert_eq!((after.get("alias"), after.get("ram")), (Some(&json!("renamed")), Some(&json!(256))));
    assert!(fake.said().is_empty(), "{:?}", fake.said());
}

#[test]
fn a_disk_resize_reaches_only_the_vm_s_own_disk_file() {
    let t = node();
    let fake = Fake::default();
    let v = vmadm(&t, &fake);
    let uuid = "4d5e6f7a-8b9c-4d0e-9f1a-2b3c4d5e6f7a";
    v.create(&json!({"uuid": uuid, "brand": "bhyve", "ram": 128, "autoboot": false,
        "disks": [{"size": 8, "model": "virtio"}, {"size": 8, "model": "virtio"}]}))
        .expect("created");
    let disks = v.load(uuid).expect("stored")["disks"].clone();
    let path = |i: usize| disks[i]["path"].as_str().expect("path").to_string();
    // A resize of the VM's own disk grows its file.
    v.update(uuid, &json!({"update_disks": [{"path": path(0), "size": 16}]})).expect("grow");
    assert_eq!(std::fs::metadata(path(0)).expect("disk").len(), 16 << 20);
    // The VM's zone can write its disks directory: a disk file swapped for a link to a host
    // file must not carry the resize to that file.
    let canary = t._dir.path().join("canary");
    std::fs::write(&canary, b"host data").expect("canary");
    std::fs::remove_file(path(1)).expect("rm");
    std::os::unix::fs::symlink(&canary, path(1)).expect("link");
    assert!(v.update(uuid, &json!({"update_disks": [{"path": path(1), "size": 1}]})).is_err());
    assert_eq!(std::fs::read(&canary).expect("canary"), b"host data");
    // A path that is not one of its disks is refused by name.
    let e = v.update(uuid, &json!({"update_disks": [{"path": canary.to_string_lossy(), "size": 1}]}));
    assert!(e.is_err());
    assert_eq!(std::fs::read(&canary).expect("canary"), b"host data");
}

#[test]
fn links_in_a_vm_s_disks_directory_reach_no_host_file() {
    let t = node();
    let fake = Fake::default();
    let v = vmadm(&t, &fake);
    let uuid = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b";
    v.create(&json!({"uuid": uuid, "brand": "kvm", "ram": 128, "autoboot": false,
        "disks": [{"size": 1, "model": "virtio", "boot": true}]}))
        .expect("created");
    let disk0 = v.load(uuid).expect("stored")["disks"][0]["path"].as_str().expect("path").to_string();
    let disks_dir = std::path::Path::new(&disk0).parent().expect("dir").to_path_buf();
    let canary = t._dir.path().join("canary");
    std::fs::write(&canary, b"host secret").expect("canary");
    // The zone plants the next disk's file as a link: add_disks replaces it.
    std::os::unix::fs::symlink(&canary, disks_dir.join("disk1.raw")).expect("link");
    v.update(uuid, &json!({"add_disks": [{"size": 2, "model": "virtio"}]})).expect("add");
    assert_eq!(std::fs::read(&canary).expect("canary"), b"host secret");
    assert!(std::fs::symlink_metadata(disks_dir.join("disk1.raw")).expect("disk1").is_file());
    // The boot disk swapped for a link to a host file: no image is made of the host file.
    std::fs::remove_file(&disk0).expect("rm");
    std::os::unix::fs::symlink(&canary, &disk0).expect("link");
    let out = t._dir.path().join("out");
    std::fs::create_dir_all(&out).expect("out");
    let r = v.image_create(uuid, "leak", "1", false, hull_spec::Compression::None, &out);
    assert!(r.is_err(), "an image was made through a link");
    let leaked = std::fs::read_dir(&out)
        .expect("out")
        .flatten()
        .any(|e| std::fs::read(e.path()).is_ok_and(|b| b.windows(11).any(|w| w == b"host secret")));
    assert!(!leaked);
}

#[test]
fn remove_disks_takes_a_disk_away_and_moves_the_later_ones_down() {
    let t = node();
    let fake = Fake::default();
    let v = vmadm(&t, &fake);
    let uuid = "6f7a8b9c-0d1e-4f2a-8b3c-4d5e6f7a8b9c";
    v.create(&json!({"uuid": uuid, "brand": "bhyve", "ram": 128, "autoboot": false,
        "disks": [{"size": 8, "model": "virtio"}, {"size": 9, "model": "virtio"}, {"size": 10, "model": "virtio"}]}))
        .expect("created");
    let disks = v.load(uuid).expect("stored")["disks"].clone();
    let path = |d: &serde_json::Value, i: usize| d[i]["path"].as_str().expect("path").to_string();
    let (p0, p1, p2) = (path(&disks, 0), path(&disks, 1), path(&disks, 2));
    // A path the VM does not have is refused by name, and nothing changes.
    let e = v.update(uuid, &json!({"remove_disks": ["/no/such/disk"]})).expect_err("no such disk");
    assert!(e.to_string().contains("/no/such/disk"), "{e}");
    assert_eq!(v.load(uuid).expect("stored")["disks"], disks);
    let r = v.update(uuid, &json!({"remove_disks": [p1.clone()]})).expect("removed");
    assert!(r.reboot.contains(&"remove_disks".to_string()), "{r:?}");
    let after = v.load(uuid).expect("stored")["disks"].clone();
    assert_eq!(after.as_array().map(Vec::len), Some(2));
    // disk0 stays; the 10 MiB disk is disk1 now, at disk1's path; disk2's file is gone.
    assert_eq!(path(&after, 0), p0);
    assert_eq!(path(&after, 1), p1);
    assert_eq!(std::fs::metadata(&p1).expect("disk1").len(), 10 << 20);
    assert!(std::fs::metadata(&p2).is_err());
    // With a snapshot, which holds the old numbering, it is refused.
    v.create_snapshot(uuid, "before").expect("snapshot");
    let e = v.update(uuid, &json!({"remove_disks": [p1]})).expect_err("snapshots");
    assert!(e.to_string().contains("snapshots"), "{e}");
    assert_eq!(v.load(uuid).expect("stored")["disks"], after);
}

#[test]
fn a_link_in_place_of_qemu_s_monitor_reaches_no_host_socket() {
    let t = node();
    let fake = Fake::default();
    let v = vmadm(&t, &fake);
    let uuid = "7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d";
    v.create(&kvm(uuid, false)).expect("created");
    // A host socket (another VM's monitor, a container engine's), and the VM's run
    // directory, which its zone can write, holding a link to it as qmp.sock.
    let host = t._dir.path().join("engine.sock");
    let listener = std::os::unix::net::UnixListener::bind(&host).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let run = v.run_dir(uuid);
    std::fs::create_dir_all(&run).expect("run dir");
    std::os::unix::fs::symlink(&host, run.join("qmp.sock")).expect("link");
    assert!(v.qmp(uuid).is_err(), "a monitor was reached through the link");
    assert!(listener.accept().is_err(), "hull connected to the host socket through the link");
}
