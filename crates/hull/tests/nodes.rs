//! Many nodes: images served by one node's API and imported by another, VMs sent and
//! received, and zones migrated, between nodes that talk over real TCP with TLS.

mod common;
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A client identity that node `of` signed and trusts, written into `dir` for another node:
/// (certificate, key, CA).
fn identity(of: &TestNode, name: &str, dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    of.hull(&["api", "trust", "add", name, "--out", &dir.to_string_lossy()]).ok();
    (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")), dir.join("ca.crt"))
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A plain-HTTP stand-in for an image server in front of a node's API socket that changes
/// one byte in the middle of every image file it passes on: a transfer corrupted in transit.
fn corrupting_proxy(sock: PathBuf) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => req.extend_from_slice(&buf[..k]),
                }
            }
            let text = String::from_utf8_lossy(&req).into_owned();
            let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
            let out = Command::new("curl")
                .args(["-sS", "--unix-socket"])
                .arg(&sock)
                .args(["-w", "%{http_code}"])
                .arg(format!("http://hull{path}"))
                .output()
                .expect("curl");
            let mut body = out.stdout;
            let code = String::from_utf8_lossy(&body.split_off(body.len().saturating_sub(3))).into_owned();
            if path.ends_with("/file") && !body.is_empty() {
                let mid = body.len() / 2;
                body[mid] ^= 0x40;
            }
            let head = format!("HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = c.write_all(head.as_bytes());
            let _ = c.write_all(&body);
        }
    });
    port
}

#[test]
fn a_node_imports_an_image_and_its_origin_from_another_over_tls() {
    let a = TestNode::new("512M");
    let base = a.busybox();
    // A child image on A: a layer over the base that adds a file and removes another.
    let layer = a.root().join("layer");
    std::fs::create_dir_all(layer.join("etc")).expect("mkdir");
    std::fs::write(layer.join("hello"), b"from the child").expect("write");
    std::fs::write(layer.join("etc/.wh.hostname"), b"").expect("write");
    let (m, f, child) = a.build(&["--dir", &s(&layer)], "child");
    edit_manifest(&m, |v| v["origin"] = base.clone().into());
    a.hull(&["imgadm", "install", "-m", &s(&m), "-f", &s(&f)]).ok();
    let port = free_port();
    let api = Server::start(&a, &["--tls", &format!("127.0.0.1:{port}")], &[]);

    let b = TestNode::new("512M");
    let (crt, key, ca) = identity(&a, "node-b", &b.root().join("to-a"));
    let url = format!("https://127.0.0.1:{port}");
    b.hull(&["imgadm", "sources", "-a", &url, "--cert", &s(&crt), "--key", &s(&key), "--ca", &s(&ca)]).ok();
    // The originals may go: the source keeps its own copies.
    std::fs::remove_dir_all(b.root().join("to-a")).expect("rm");
    let avail = b.hull(&["imgadm", "avail", "-j"]).ok();
    assert!(avail.contains(&child) && avail.contains(&base), "{avail}");
    let out = b.hull(&["imgadm", "import", &child]).ok();
    assert!(out.contains(&base) && out.contains(&child), "{out}");
    // Origin first, as a clone; the same trees as on A.
    assert_eq!(b.hull(&["dataset", "get", "origin", &format!("zones/{child}")]).ok(), format!("zones/{base}@final\n"));
    for img in [&base, &child] {
        assert_eq!(
            tree_hash(&b.zones().join(img).join("root")),
            tree_hash(&a.zones().join(img).join("root")),
            "image {img} differs between the nodes"
        );
    }
    assert!(!b.zones().join(&child).join("root/etc/hostname").exists());
    // The manifest B keeps is A's (name, version, origin), with the file A served.
    let got: Value = serde_json::from_str(&b.hull(&["imgadm", "get", &child]).ok()).expect("json");
    assert_eq!((got["manifest"]["name"].as_str(), got["source"].as_str()), (Some("child"), Some(url.as_str())));
    assert_eq!(got["manifest"]["origin"].as_str(), Some(base.as_str()));
    // A VM on B from the imported image runs what A's image holds.
    let vm =
        b.create_vm(&serde_json::json!({"brand": "joyent-minimal", "image_uuid": child, "max_physical_memory": 64}));
    assert_eq!(b.hull(&["zlogin", &vm, "cat", "/hello"]).ok(), "from the child");

    // A stranger (a certificate A did not sign) gets nothing.
    let c = TestNode::new("256M");
    let other = c.root().join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=x"])
        .args(["-days", "2", "-keyout"])
        .arg(other.join("x.key"))
        .arg("-out")
        .arg(other.join("x.crt"))
        .output()
        .expect("openssl");
    assert!(made.status.success());
    std::fs::copy(a.root().join("etc/hull/api/ca.crt"), other.join("ca.crt")).expect("ca");
    let r = c.hull(&["imgadm", "sources", "-a", &url, "--cert", &s(&other.join("x.crt"))]);
    assert_eq!(r.code, 2, "a certificate without its key: {}", r.stderr);
    let r = c.hull(&[
        "imgadm",
        "sources",
        "-a",
        &url,
        "--cert",
        &s(&other.join("x.crt")),
        "--key",
        &s(&other.join("x.key")),
        "--ca",
        &s(&other.join("ca.crt")),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = c.hull(&["imgadm", "import", &base]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains(&url), "{}", r.stderr);
    assert!(c.datasets().is_empty(), "{:?}", c.datasets());

    // A byte changed in transit is caught: nothing is installed, nothing left.
    let d = TestNode::new("256M");
    let proxy = corrupting_proxy(api.sock.clone());
    d.hull(&["imgadm", "sources", "-a", &format!("http://127.0.0.1:{proxy}")]).ok();
    let r = d.hull(&["imgadm", "import", &base]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("sha1"), "{}", r.stderr);
    assert!(d.datasets().is_empty(), "{:?}", d.datasets());
    assert!(std::fs::read_dir(d.root().join("var/imgadm/cache")).map(|r| r.count()).unwrap_or(0) == 0);
}

/// `vmadm send UUID > file` on a node.
fn send_to(n: &TestNode, uuid: &str, file: &Path) {
    let out = std::fs::File::create(file).expect("stream file");
    let st = n.cmd().args(["vmadm", "send", uuid]).stdout(out).status().expect("vmadm send");
    assert!(st.success(), "vmadm send {uuid} failed");
}

/// `vmadm receive < file` on a node.
fn receive_from(n: &TestNode, file: &Path) -> Run {
    let inp = std::fs::File::open(file).expect("stream file");
    let out = n.cmd().args(["vmadm", "receive"]).stdin(inp).output().expect("vmadm receive");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A node in its own namespace with a local nic tag `t0`.
fn netnode() -> TestNode {
    let n = TestNode::in_netns("512M");
    n.hull(&["nictagadm", "add", "-l", "t0"]).ok();
    n
}

/// `vmadm get` without what belongs to the node it is on.
fn portable(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        for k in ["zonepath", "pid", "boot_timestamp", "last_modified", "state", "zone_state", "exit_status"] {
            o.remove(k);
        }
    }
    v
}

fn nft_ruleset(n: &TestNode) -> String {
    let out = n.in_node(|| Command::new("nft").args(["list", "ruleset"]).output().expect("nft"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_stopped_zone_sent_from_one_node_is_received_whole_on_another() {
    let a = netnode();
    let img = a.busybox();
    let vm = a.create_vm(&serde_json::json!({
        "brand": "joyent-minimal", "image_uuid": img, "max_physical_memory": 64, "alias": "mover",
        "nics": [{"nic_tag": "t0", "ips": ["10.77.0.5/24"]}],
        "customer_metadata": {"k": "v"}
    }));
    a.hull(&["zlogin", &vm, "sh", "-c", "echo before > /data; mkdir -p /d/e; echo x > /d/e/f"]).ok();
    a.hull(&["vmadm", "create-snapshot", &vm, "one"]).ok();
    a.hull(&["zlogin", &vm, "sh", "-c", "echo after > /data; rm -r /d"]).ok();
    a.hull(&["vmadm", "stop", &vm]).ok();
    let stream = a.root().join("vm.stream");
    // A running VM is not sent: it is migrated.
    a.hull(&["vmadm", "start", &vm]).ok();
    let r = a.cmd().args(["vmadm", "send", &vm]).stdout(std::process::Stdio::null()).output().expect("send");
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("running"));
    a.hull(&["vmadm", "stop", &vm]).ok();
    send_to(&a, &vm, &stream);
    assert!(!a.datasets().iter().any(|d| d.contains("@xfer-")), "{:?}", a.datasets());

    let b = netnode();
    let r = receive_from(&b, &stream);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains(&vm), "{}", r.stdout);
    let (ga, gb) = (a.vm(&vm), b.vm(&vm));
    assert_eq!(gb["state"], "stopped");
    assert_eq!(portable(ga.clone()), portable(gb.clone()), "vmadm get differs beyond the node's fields");
    assert_eq!(gb["zonepath"].as_str(), Some(b.zones().join(&vm).to_string_lossy().as_ref()));
    assert_eq!(tree_hash(&a.zones().join(&vm).join("root")), tree_hash(&b.zones().join(&vm).join("root")));
    // The quota is the pool's, not the data's: set again on B.
    let quota = |n: &TestNode| n.hull(&["dataset", "get", "quota", &format!("zones/{vm}")]).ok();
    assert_eq!(quota(&b), quota(&a));
    assert_ne!(quota(&b).trim(), "none");
    // A second receive of the same VM is refused, and changes nothing.
    let r = receive_from(&b, &stream);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);

    // Started on B, with its MAC and address, behind link protection there and not on A.
    let mac = gb["nics"][0]["mac"].as_str().expect("mac").to_string();
    assert_eq!(ga["nics"][0]["mac"].as_str(), Some(mac.as_str()));
    b.hull(&["vmadm", "start", &vm]).ok();
    assert_eq!(b.hull(&["zlogin", &vm, "cat", "/data"]).ok(), "after\n");
    let addrs = b.hull(&["zlogin", &vm, "ip", "addr"]).ok();
    assert!(addrs.contains("10.77.0.5/24") && addrs.contains(&mac), "{addrs}");
    assert!(nft_ruleset(&b).contains(&mac), "no link protection on B");
    assert!(!nft_ruleset(&a).contains(&mac), "link protection left on A");
    // Its snapshot came too.
    b.hull(&["vmadm", "stop", &vm]).ok();
    b.hull(&["vmadm", "rollback-snapshot", &vm, "one"]).ok();
    b.hull(&["vmadm", "start", &vm]).ok();
    assert_eq!(b.hull(&["zlogin", &vm, "cat", "/data", "/d/e/f"]).ok(), "before\nx\n");
}

#[test]
fn cut_corrupted_and_foreign_streams_are_refused_and_leave_nothing() {
    let a = TestNode::new("512M");
    let img = a.busybox();
    let vm = a.create_vm(&serde_json::json!({
        "brand": "joyent-minimal", "image_uuid": img, "max_physical_memory": 64, "autoboot": false
    }));
    common::random_file(&a.zones().join(&vm).join("root/blob"), 3 << 20);
    let stream = a.root().join("vm.stream");
    send_to(&a, &vm, &stream);
    let whole = std::fs::read(&stream).expect("read");
    let b = TestNode::new("512M");
    let bad = b.root().join("bad.stream");
    let mut cases: Vec<(String, Vec<u8>, &str)> = Vec::new();
    for cut in [5, 40, whole.len() / 3, whole.len() / 2, whole.len() - 33, whole.len() - 1] {
        cases.push((format!("cut at {cut}"), whole[..cut].to_vec(), ""));
    }
    for at in [whole.len() / 2, whole.len() - 10] {
        let mut c = whole.clone();
        c[at] ^= 0x01;
        cases.push((format!("byte {at} changed"), c, ""));
    }
    let mut v2 = whole.clone();
    v2[11] = 2;
    cases.push(("version 2".into(), v2, "version 2"));
    let mut more = whole.clone();
    more.push(0);
    cases.push(("a byte past the end".into(), more, "after"));
    cases.push(("not a stream".into(), b"hello, world, this is not a stream".to_vec(), "not a hull VM stream"));
    for (what, bytes, says) in cases {
        std::fs::write(&bad, &bytes).expect("write");
        let r = receive_from(&b, &bad);
        assert_ne!(r.code, 0, "{what}: taken");
        assert!(r.stderr.contains(says), "{what}: {}", r.stderr);
        assert!(b.datasets().is_empty(), "{what}: left {:?}: {}", b.datasets(), r.stderr);
        assert_eq!(b.hull(&["vmadm", "list", "-H"]).ok(), "", "{what}");
    }
    // The whole stream, after all that, is taken.
    let r = receive_from(&b, &stream);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sha1_hex(&b.zones().join(&vm).join("root/blob")), sha1_hex(&a.zones().join(&vm).join("root/blob")));
}

/// A zone on the fleet's first node with an address on `t0`, and a process in it that
/// appends a counter to /log every 10 ms.
fn writing_zone(a: &TestNode, img: &str, ip: &str) -> String {
    let vm = a.create_vm(&serde_json::json!({
        "brand": "joyent-minimal", "image_uuid": img, "max_physical_memory": 64, "alias": "live",
        "nics": [{"nic_tag": "t0", "ips": [format!("{ip}/24")]}]
    }));
    a.hull(&[
        "zlogin",
        &vm,
        "sh",
        "-c",
        "setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i >> /log; sleep 0.01; done' </dev/null >/dev/null 2>&1 &",
    ])
    .ok();
    vm
}

/// Two nodes with a local nic tag `t0` each, the busybox image on the first, and a
/// writing zone there at `ip` holding `blob_mib` MiB besides; (fleet, image, zone).
fn two_nodes_and_a_writing_zone(ip: &str, blob_mib: usize) -> (Fleet, String, String) {
    let f = Fleet::up(2);
    for n in &f.nodes {
        n.hull(&["nictagadm", "add", "-l", "t0"]).ok();
    }
    let img = f.nodes[0].busybox();
    let vm = writing_zone(&f.nodes[0], &img, ip);
    common::random_file(&f.nodes[0].zones().join(&vm).join("root/blob"), blob_mib << 20);
    (f, img, vm)
}

fn lines(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| l.parse().ok()).collect()
}

#[test]
fn a_running_zone_migrates_with_every_write_it_made() {
    // Some data besides, so that the first sync takes a while as the zone writes.
    let (f, img, vm) = two_nodes_and_a_writing_zone("10.77.0.5", 16);
    let (a, b) = (&f.nodes[0], &f.nodes[1]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = a.hull(&["migrate", &vm, "--to", &f.urls[1], "-j"]).ok();
    let phases: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(phases.first().and_then(|p| p["phase"].as_str()), Some("begin"), "{out}");
    assert_eq!(phases.last().and_then(|p| p["phase"].as_str()), Some("switch"), "{out}");
    assert!(phases.iter().filter(|p| p["phase"] == "sync").count() >= 2, "{out}");
    assert!(phases.last().and_then(|p| p["downtime_ms"].as_u64()).is_some(), "{out}");

    // Running on B, with every write A's zone made before it stopped.
    assert_eq!(b.vm(&vm)["state"], "running");
    let (on_a, on_b) = (lines(&a.zones().join(&vm).join("root/log")), lines(&b.zones().join(&vm).join("root/log")));
    assert!(on_a.len() > 20, "the writer wrote {} lines", on_a.len());
    assert_eq!(on_a, on_b, "B's /log is not what A's zone wrote");
    assert_eq!(on_a, (1..=on_a.len() as u64).collect::<Vec<_>>(), "A's /log has gaps");
    assert_eq!(sha1_hex(&a.zones().join(&vm).join("root/blob")), sha1_hex(&b.zones().join(&vm).join("root/blob")));
    // Its address answers from B (from a zone of B's, made from the image B imports from A).
    b.hull(&["imgadm", "import", &img]).ok();
    let pinger = b.create_vm(&serde_json::json!({
        "brand": "joyent-minimal", "image_uuid": img, "max_physical_memory": 64,
        "nics": [{"nic_tag": "t0", "ips": ["10.77.0.9/24"]}]
    }));
    let answers = (0..3).any(|_| b.hull(&["zlogin", &pinger, "ping", "-c", "1", "-W", "2", "10.77.0.5"]).code == 0);
    assert!(answers, "10.77.0.5 does not answer on B");
    let gv = b.vm(&vm);
    assert_eq!(gv["nics"][0]["ips"][0], "10.77.0.5/24");
    // A keeps its copy, stopped, marked, and never starts it again.
    let ga = a.vm(&vm);
    assert_eq!(ga["state"], "stopped");
    assert_eq!(ga["migrated"]["to"].as_str(), Some(f.urls[1].as_str()), "{ga}");
    let r = a.hull(&["vmadm", "start", &vm]);
    assert!(r.code != 0 && r.stderr.contains("migrated"), "{}", r.stderr);
    a.hull(&["vmadm", "boot-all"]);
    assert_eq!(a.vm(&vm)["state"], "stopped");
    // Nothing of the transfer is left on either side.
    for n in [a, b] {
        let left: Vec<String> =
            n.datasets().into_iter().filter(|d| d.contains("xfer-") || d.contains("-receiving")).collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

#[test]
fn a_migration_killed_mid_sync_leaves_the_zone_running_and_a_retry_succeeds() {
    let (f, _, vm) = two_nodes_and_a_writing_zone("10.77.0.6", 8);
    let (a, b) = (&f.nodes[0], &f.nodes[1]);
    a.hull(&["migrate", &vm, "--to", &f.urls[1], "--phase", "begin"]).ok();
    // The migrating process dies after it sent the first part of the stream.
    let r = a.hull_env(&["migrate", &vm, "--phase", "sync"], &[("HULL_FAILPOINT", "vm-send-part")]);
    assert_ne!(r.code, 0);
    assert_eq!(a.vm(&vm)["state"], "running", "the zone stopped on A");
    let before = lines(&a.zones().join(&vm).join("root/log")).len();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(lines(&a.zones().join(&vm).join("root/log")).len() > before, "the zone stopped writing");
    // B kept nothing of the broken stream but the reservation.
    let staged: Vec<String> = b.datasets().into_iter().filter(|d| d.contains('@')).collect();
    assert!(staged.is_empty(), "{staged:?}");
    // The retry, through A's API this time: sync, sync, switch.
    let api = &f.apis[0];
    for phase in ["sync", "sync", "switch"] {
        let job = api.change("POST", &format!("/vms/{vm}?action=migrate&migration_action={phase}"), None);
        assert!(job.result.is_some(), "{job:?}");
    }
    assert_eq!(b.vm(&vm)["state"], "running");
    let (on_a, on_b) = (lines(&a.zones().join(&vm).join("root/log")), lines(&b.zones().join(&vm).join("root/log")));
    assert_eq!(on_a, on_b);
    // Progress and phases are on A's events stream.
    let ev = api.events("?since=0", "2");
    let mig: Vec<&Value> = ev.iter().filter(|e| e["type"] == "migrate" && e["uuid"] == vm.as_str()).collect();
    assert!(mig.iter().any(|e| e["changes"][0]["migration"] == "switch"), "{mig:?}");
    // An abort of a migration that is over is refused: there is none.
    let (code, e) = api.call("POST", &format!("/vms/{vm}?action=migrate&migration_action=abort"), None);
    assert_eq!(code, 202, "{e}");
    let j = api.wait(e["job_uuid"].as_str().expect("job"));
    assert_eq!(j.error.map(|e| e.code), Some("MigrationNotFound".to_string()));
}

#[test]
fn a_kvm_vm_is_sent_with_every_disk_and_boots_on_the_other_node() {
    let a = TestNode::new("512M");
    let img = a.boot_sector_image(16);
    let vm = a.create_vm(&serde_json::json!({
        "brand": "kvm", "ram": 128, "autoboot": false,
        "disks": [{"image_uuid": img, "boot": true}, {"size": 32}]
    }));
    // Marks on both disks, past what the image holds.
    let disks = |n: &TestNode| {
        [n.zones().join(format!("{vm}-disk0")).join("disk.raw"), n.zones().join(&vm).join("disks/disk1.raw")]
    };
    for (i, d) in disks(&a).iter().enumerate() {
        let mut file = std::fs::OpenOptions::new().write(true).open(d).expect("open disk");
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(8 << 20)).expect("seek");
        file.write_all(format!("disk {i} was here").as_bytes()).expect("write disk");
    }
    a.hull(&["vmadm", "create-snapshot", &vm, "s1"]).ok();
    let stream = a.root().join("kvm.stream");
    send_to(&a, &vm, &stream);

    let b = TestNode::new("512M");
    let r = receive_from(&b, &stream);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(portable(a.vm(&vm)), portable(b.vm(&vm)));
    for (da, db) in disks(&a).iter().zip(disks(&b).iter()) {
        assert_eq!(sha1_hex(da), sha1_hex(db), "{} differs", db.display());
    }
    let mut ds = b.datasets();
    ds.sort();
    let want = [vm.clone(), format!("{vm}-disk0"), format!("{vm}-disk0@vmsnap-s1"), format!("{vm}@vmsnap-s1")];
    let mut want = want.to_vec();
    want.sort();
    assert_eq!(ds, want, "B's datasets");
    b.hull(&["vmadm", "start", &vm]).ok();
    let console = b.root().join(format!("var/hull/z/{vm}/console.log"));
    let t = std::time::Instant::now();
    while !std::fs::read_to_string(&console).unwrap_or_default().contains("HULL-BOOT-OK") {
        assert!(t.elapsed().as_secs() < 60, "no boot on B: {}", std::fs::read_to_string(&console).unwrap_or_default());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A hull VM stream made by hand: `header`, then one part whose btrfs stream is `btrfs`,
/// with a correct trailer (an attacker can always compute one).
fn forged_stream(header: &Value, part: &Value, btrfs: &[u8]) -> Vec<u8> {
    let mut s = b"HULLVM\r\n".to_vec();
    s.extend_from_slice(&1u32.to_be_bytes());
    let frame = |s: &mut Vec<u8>, kind: u8, body: &[u8]| {
        s.push(kind);
        s.extend_from_slice(&(body.len() as u32).to_be_bytes());
        s.extend_from_slice(body);
    };
    frame(&mut s, b'H', header.to_string().as_bytes());
    frame(&mut s, b'P', part.to_string().as_bytes());
    for chunk in btrfs.chunks(1 << 20) {
        frame(&mut s, b'D', chunk);
    }
    frame(&mut s, b'E', b"");
    let tmp = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(tmp.path(), &s).expect("write");
    let out = Command::new("sha256sum").arg(tmp.path()).output().expect("sha256sum");
    let hex = String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string();
    let sum: Vec<u8> = (0..32).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex")).collect();
    frame(&mut s, b'Z', &sum);
    s
}

/// A tenant's stream that names another VM's snapshot on the receiving node as its parent
/// would make a copy of that VM's disk for the sender. It is refused before btrfs receive
/// sees it; the victim is untouched and nothing of the forged VM stays.
#[test]
fn a_stream_cannot_take_blocks_from_another_vm_on_the_receiving_node() {
    let b = TestNode::new("512M");
    let img = b.busybox();
    let victim = b.create_vm(&serde_json::json!({
        "brand": "joyent-minimal", "image_uuid": img, "max_physical_memory": 64, "autoboot": false
    }));
    let secret = b.zones().join(&victim).join("root/secret");
    std::fs::write(&secret, b"the victim's secret").expect("write");
    b.hull(&["vmadm", "create-snapshot", &victim, "s"]).ok();
    // An attacker's subvolume beside it, and btrfs's own incremental stream of it on the
    // victim's snapshot: its SNAPSHOT command names the victim's snapshot by uuid.
    let forged = uuid::Uuid::new_v4().to_string();
    let work = b.zones().join(".attacker");
    std::fs::create_dir_all(&work).expect("mkdir");
    let vsnap = b.zones().join(&victim).join(".snapshots/vmsnap-s");
    assert!(
        Command::new("btrfs")
            .args(["subvolume", "snapshot"])
            .arg(&vsnap)
            .arg(work.join("w"))
            .status()
            .expect("snap")
            .success()
    );
    assert!(
        Command::new("btrfs")
            .args(["subvolume", "snapshot", "-r"])
            .arg(work.join("w"))
            .arg(work.join("xfer-1"))
            .status()
            .expect("snap")
            .success()
    );
    let stream =
        Command::new("btrfs").args(["send", "-q", "-p"]).arg(&vsnap).arg(work.join("xfer-1")).output().expect("send");
    assert!(stream.status.success());
    for p in ["xfer-1", "w"] {
        let _ = Command::new("btrfs").args(["subvolume", "delete"]).arg(work.join(p)).output();
    }
    let _ = std::fs::remove_dir(&work);
    let header = serde_json::json!({
        "uuid": forged, "brand": "joyent-minimal", "datasets": [forged],
        "config": {"uuid": forged, "brand": "joyent-minimal"}
    });
    // As an incremental part on a parent of its own, and as a first part.
    for part in [
        serde_json::json!({"dataset": 0, "snapshot": "xfer-1"}),
        serde_json::json!({"dataset": 0, "snapshot": "xfer-1", "parent": "vmsnap-s"}),
    ] {
        let file = b.root().join("forged.stream");
        std::fs::write(&file, forged_stream(&header, &part, &stream.stdout)).expect("write");
        let r = receive_from(&b, &file);
        assert_ne!(r.code, 0, "a forged stream was taken: {part}");
        assert!(r.stderr.contains("parent") || r.stderr.contains("does not have"), "{part}: {}", r.stderr);
        let left: Vec<String> = b.datasets().into_iter().filter(|d| d.contains(&forged)).collect();
        assert!(left.is_empty(), "{part}: left {left:?}");
    }
    assert_eq!(std::fs::read(&secret).expect("read"), b"the victim's secret");
}

/// An image whose tree holds links to host paths is served with the links as links: the
/// stream never carries what a link points at on the serving host.
#[test]
fn a_served_image_never_carries_what_its_links_point_at() {
    let a = TestNode::new("256M");
    let dir = a.root().join("tree");
    std::fs::create_dir_all(dir.join("etc")).expect("mkdir");
    std::os::unix::fs::symlink("/etc/shadow", dir.join("etc/passwd")).expect("link");
    std::os::unix::fs::symlink("/", dir.join("host")).expect("link");
    std::fs::write(dir.join("etc/hostname"), b"tenant\n").expect("write");
    let (m, f, img) = a.build(&["--dir", &s(&dir)], "links");
    a.hull(&["imgadm", "install", "-m", &s(&m), "-f", &s(&f)]).ok();
    let api = Server::start(&a, &[], &[]);
    let got = a.root().join("served.tar.zst");
    api.download(&format!("/images/{img}/file"), &got);
    let list = Command::new("sh").arg("-c").arg(format!("zstd -dc {} | tar tv", got.display())).output().expect("tar");
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("root/etc/passwd -> /etc/shadow"), "{text}");
    assert!(text.contains("root/host -> /"), "{text}");
    assert!(!text.contains("root/host/"), "the stream went through a link: {text}");
    let raw = Command::new("sh").arg("-c").arg(format!("zstd -dc {}", got.display())).output().expect("zstd");
    let shadow = std::fs::read("/etc/shadow").unwrap_or_default();
    let first = shadow.split(|b| *b == b'\n').next().unwrap_or_default();
    assert!(
        first.is_empty() || !raw.stdout.windows(first.len()).any(|w| w == first),
        "the host's shadow is in the stream"
    );
}

/// A migration's header names the VM; a name that is no uuid makes no path on the target,
/// and other bad calls answer 4xx and change nothing.
#[test]
fn bad_migration_calls_are_refused_and_change_nothing() {
    let b = TestNode::new("256M");
    let api = Server::start(&b, &[], &[]);
    let before = tree_listing(b.root());
    for (path, body, code) in [
        (
            "/migrations?action=begin",
            r#"{"uuid":"../../../../tmp/evil","brand":"joyent","datasets":["x"],"config":{}}"#,
            400,
        ),
        (
            "/migrations?action=begin",
            r#"{"uuid":"8f0c2b6e-0c4e-4a53-9d2f-3c1c1c1c1c1c","brand":"joyent","datasets":["../x"],"config":{"uuid":"8f0c2b6e-0c4e-4a53-9d2f-3c1c1c1c1c1c"}}"#,
            400,
        ),
        (
            "/migrations?action=begin",
            r#"{"uuid":"8f0c2b6e-0c4e-4a53-9d2f-3c1c1c1c1c1c","brand":"joyent","datasets":["8f0c2b6e-0c4e-4a53-9d2f-3c1c1c1c1c1c"],"config":{"uuid":"someone-else"}}"#,
            400,
        ),
        ("/migrations?action=begin", "[1,2]", 400),
        ("/migrations?action=switch", "{}", 400),
    ] {
        let (got, v) = api.call("POST", path, Some(body));
        assert_eq!(got, code, "{path} {body}: {v}");
    }
    for (method, path) in [
        ("PUT", "/migrations/8f0c2b6e-0c4e-4a53-9d2f-3c1c1c1c1c1c/stream"),
        ("POST", "/migrations/8f0c2b6e-0c4e-4a53-9d2f-3c1c1c1c1c1c?action=switch"),
        ("DELETE", "/migrations/8f0c2b6e-0c4e-4a53-9d2f-3c1c1c1c1c1c"),
    ] {
        let (got, v) = api.call(method, path, Some("HULLVM\r\n"));
        assert_eq!((got, v["code"].as_str()), (404, Some("MigrationNotFound")), "{method} {path}: {v}");
    }
    assert!(!Path::new("/tmp/evil.json").exists());
    assert_eq!(tree_listing(b.root()), before, "a refused call changed the node");
}

/// Every path under `root` but the API's own bookkeeping (its jobs and event log).
fn tree_listing(root: &Path) -> Vec<String> {
    let out = Command::new("find")
        .arg(root)
        .args(["-xdev", "-not", "-path", "*/var/hull/api*", "-not", "-path", "*/var/hull/events*"])
        .output()
        .expect("find");
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
    v.sort();
    v
}

/// An abort after a sync, and one after a switch that could not start the zone on the
/// target, both leave the zone running on its own node and nothing of it on the other.
#[test]
fn an_abort_returns_the_zone_to_its_node() {
    let (f, _, vm) = two_nodes_and_a_writing_zone("10.77.0.7", 1);
    let (a, b) = (&f.nodes[0], &f.nodes[1]);
    a.hull(&["migrate", &vm, "--to", &f.urls[1], "--phase", "begin"]).ok();
    a.hull(&["migrate", &vm, "--phase", "sync"]).ok();
    assert!(b.datasets().iter().any(|d| d.contains("-receiving")), "{:?}", b.datasets());
    a.hull(&["migrate", &vm, "--phase", "abort"]).ok();
    assert_eq!(a.vm(&vm)["state"], "running");
    assert!(b.datasets().is_empty(), "left on B: {:?}", b.datasets());
    assert!(!a.datasets().iter().any(|d| d.contains("xfer-")), "{:?}", a.datasets());
    assert!(!b.root().join(format!("var/hull/migrations/in/{vm}.json")).exists());
    // B cannot start the zone (its nic tag is gone): the switch fails, the zone runs on A
    // again, and B keeps nothing of it.
    b.hull(&["nictagadm", "delete", "t0"]).ok();
    a.hull(&["migrate", &vm, "--to", &f.urls[1], "--phase", "begin"]).ok();
    a.hull(&["migrate", &vm, "--phase", "sync"]).ok();
    let r = a.hull(&["migrate", &vm, "--phase", "switch"]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert_eq!(a.vm(&vm)["state"], "running", "{}", r.stderr);
    assert!(a.vm(&vm).get("migrated").is_none());
    let r = b.hull(&["vmadm", "get", &vm]);
    assert_ne!(r.code, 0, "the VM is on both nodes");
    a.hull(&["migrate", &vm, "--phase", "abort"]).ok();
    assert!(b.datasets().is_empty(), "left on B: {:?}", b.datasets());
}
