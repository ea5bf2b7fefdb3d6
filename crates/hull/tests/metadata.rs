//! The metadata service: SmartOS's mdata protocol at /.zonecontrol/metadata.sock in a
//! running busybox zone, through the in-zone tools, through the socket itself from the host,
//! and through cloud-init's own client (Debian's cloud-init package).

mod common;
use common::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// A node in its own namespace, a local tag, and a running zone with a NIC and metadata.
fn zone() -> (TestNode, String) {
    let n = TestNode::in_netns("512M");
    let img = n.busybox();
    n.hull(&["nictagadm", "add", "-l", "t0"]).ok();
    let payload = json!({
        "brand": "joyent-minimal", "image_uuid": img, "alias": "md0", "max_physical_memory": 64,
        "nics": [{"nic_tag": "t0", "ips": ["10.77.0.5/24"], "primary": true}],
        "resolvers": ["10.77.0.1"],
        "tags": {"role": "web"},
        "customer_metadata": {"user-script": "#!/bin/sh\necho hi\n", "root_authorized_keys": "ssh-ed25519 AAAA k"},
        "internal_metadata": {"admin_pw": "s3cret", "operator-script": "echo op"},
    });
    let f = n.root().join("vm.json");
    std::fs::write(&f, payload.to_string()).expect("payload");
    let out = n.hull(&["vmadm", "create", "-f", &f.to_string_lossy()]).ok();
    let uuid = out.trim().rsplit(' ').next().expect("uuid").to_string();
    (n, uuid)
}

fn sock(n: &TestNode, uuid: &str) -> PathBuf {
    n.root().join(format!("var/hull/z/{uuid}/zonecontrol/metadata.sock"))
}

/// Waits for the zone's socket to answer (zoneadmd makes it as the zone boots).
fn wait_socket(n: &TestNode, uuid: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(sock(n, uuid)).is_err() {
        assert!(std::time::Instant::now() < deadline, "no metadata socket for {uuid}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tool(n: &TestNode, uuid: &str, args: &[&str]) -> Run {
    let mut all = vec!["zlogin", uuid];
    let t = format!("/.zonecontrol/bin/{}", args[0]);
    all.push(&t);
    all.extend_from_slice(&args[1..]);
    n.hull(&all)
}

fn get_vm(n: &TestNode, uuid: &str) -> Value {
    serde_json::from_str(&n.hull(&["vmadm", "get", uuid]).ok()).expect("vmadm get")
}

#[test]
fn a_zone_reads_and_writes_its_metadata_with_smartos_s_tools() {
    let (n, uuid) = zone();
    wait_socket(&n, &uuid);
    assert_eq!(tool(&n, &uuid, &["mdata-get", "sdc:uuid"]).ok().trim(), uuid);
    assert_eq!(tool(&n, &uuid, &["mdata-get", "sdc:alias"]).ok().trim(), "md0");
    assert_eq!(tool(&n, &uuid, &["mdata-get", "sdc:tags.role"]).ok().trim(), "web");
    // By SmartOS's names on the PATH too (the image links them to /.zonecontrol/bin).
    assert_eq!(n.hull(&["zlogin", &uuid, "mdata-get", "sdc:alias"]).ok(), "md0\n");
    assert_eq!(
        n.hull(&["zlogin", &uuid, "sh", "-c", "mdata-list"]).ok(),
        "root_authorized_keys\nuser-script\nadmin_pw\n"
    );
    // The library and the environment that make cloud-init's units see an LX zone's uname.
    assert_eq!(
        n.hull(&["zlogin", &uuid, "cat", "/.zonecontrol/cloud-init.env"]).ok(),
        "LD_PRELOAD=/.zonecontrol/lib/libhull-brandz.so\n"
    );
    assert_eq!(n.hull(&["zlogin", &uuid, "test", "-f", "/.zonecontrol/lib/libhull-brandz.so"]).code, 0);
    let nics: Value =
        serde_json::from_str(&tool(&n, &uuid, &["mdata-get", "sdc:nics"]).ok()).expect("sdc:nics is JSON");
    assert_eq!(nics[0]["ips"], json!(["10.77.0.5/24"]), "{nics}");
    assert_eq!(nics[0]["interface"], "net0");
    assert_eq!(tool(&n, &uuid, &["mdata-get", "user-script"]).ok(), "#!/bin/sh\necho hi\n");
    // _pw keys are internal_metadata's, and still readable; operator-script only as sdc:.
    assert_eq!(tool(&n, &uuid, &["mdata-get", "admin_pw"]).ok().trim(), "s3cret");
    assert_eq!(tool(&n, &uuid, &["mdata-get", "sdc:operator-script"]).ok().trim(), "echo op");
    let missing = tool(&n, &uuid, &["mdata-get", "no-such-key"]);
    assert_eq!(missing.code, 1, "{}", missing.stderr);
    // Written by the tenant: stored, and vmadm get shows it.
    tool(&n, &uuid, &["mdata-put", "from-zone", "value with spaces"]).ok();
    assert_eq!(get_vm(&n, &uuid)["customer_metadata"]["from-zone"], "value with spaces");
    let mut list: Vec<String> = tool(&n, &uuid, &["mdata-list"]).ok().lines().map(String::from).collect();
    list.sort();
    assert_eq!(list, ["admin_pw", "from-zone", "root_authorized_keys", "user-script"]);
    // sdc: keys are the host's: refused with mdata-client's error status, nothing changed.
    let refused = tool(&n, &uuid, &["mdata-put", "sdc:alias", "evil"]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains("sdc"), "{}", refused.stderr);
    assert_eq!(get_vm(&n, &uuid)["alias"], "md0");
    // The operator's change is the next GET's answer.
    let f = n.root().join("u.json");
    std::fs::write(&f, json!({"set_customer_metadata": {"from-host": "1"}}).to_string()).expect("update");
    n.hull(&["vmadm", "update", &uuid, "-f", &f.to_string_lossy()]).ok();
    assert_eq!(tool(&n, &uuid, &["mdata-get", "from-host"]).ok().trim(), "1");
    tool(&n, &uuid, &["mdata-delete", "from-zone"]).ok();
    assert!(get_vm(&n, &uuid)["customer_metadata"].get("from-zone").is_none());
    // Back after a reboot.
    n.hull(&["vmadm", "reboot", &uuid, "-F"]).ok();
    wait_socket(&n, &uuid);
    assert_eq!(tool(&n, &uuid, &["mdata-get", "sdc:uuid"]).ok().trim(), uuid);
    // The zone cannot replace or add to its control directory.
    let rm = n.hull(&["zlogin", &uuid, "rm", "-f", "/.zonecontrol/metadata.sock"]);
    let touch = n.hull(&["zlogin", &uuid, "touch", "/.zonecontrol/bin/x"]);
    assert!(rm.code != 0 && touch.code != 0, "rm {} touch {}", rm.stderr, touch.stderr);
    assert!(sock(&n, &uuid).exists());
    assert!(!n.root().join(format!("var/hull/z/{uuid}/zonecontrol/bin/x")).exists());
}

fn frame(body: &str) -> String {
    format!("V2 {} {:08x} {body}\n", body.len(), crc32fast::hash(body.as_bytes()))
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn the_socket_speaks_both_versions_to_two_clients_and_survives_bad_input() {
    let (n, uuid) = zone();
    wait_socket(&n, &uuid);
    let open = || {
        let s = UnixStream::connect(sock(&n, &uuid)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        (BufReader::new(s.try_clone().expect("clone")), s)
    };
    let line = |r: &mut BufReader<UnixStream>| {
        let mut l = String::new();
        r.read_line(&mut l).expect("an answer");
        l
    };
    let (mut r1, mut w1) = open();
    let (mut r2, mut w2) = open();
    // Version 1 on one, version 2 on the other, interleaved.
    w1.write_all(b"GET sdc:alias\n").expect("send");
    w2.write_all(b"NEGOTIATE V2\n").expect("send");
    assert_eq!(line(&mut r2), "V2_OK\n");
    assert_eq!([line(&mut r1), line(&mut r1), line(&mut r1)].concat(), "SUCCESS\nmd0\n.\n");
    let body = format!("0000beef GET {}", b64("sdc:uuid"));
    w2.write_all(frame(&body).as_bytes()).expect("send");
    assert_eq!(line(&mut r2), frame(&format!("0000beef SUCCESS {}", b64(&uuid))));
    // A bad checksum, garbage bytes, and an over-long line: each answered, the session lives.
    let bad = frame(&body).replacen(&format!("{:08x}", crc32fast::hash(body.as_bytes())), "00000000", 1);
    w2.write_all(bad.as_bytes()).expect("send");
    assert!(line(&mut r2).contains("0000beef FAILURE"));
    w1.write_all(&[0xff, 0x00, 0x80, b'\n']).expect("send");
    assert_eq!(line(&mut r1), "invalid command\n");
    w1.write_all(&vec![b'A'; 2 << 20]).expect("send");
    w1.write_all(b"\nGET sdc:alias\n").expect("send");
    assert_eq!(line(&mut r1), "FAILURE\n");
    assert_eq!(line(&mut r1), "SUCCESS\n");
    // A request split across writes.
    let body = format!("0000cafe GET {}", b64("sdc:alias"));
    let f = frame(&body);
    let (a, b) = f.split_at(7);
    w2.write_all(a.as_bytes()).expect("send");
    std::thread::sleep(Duration::from_millis(50));
    w2.write_all(b.as_bytes()).expect("send");
    assert_eq!(line(&mut r2), frame(&format!("0000cafe SUCCESS {}", b64("md0"))));
    drop((r1, w1, r2, w2));
    // A flood of connections: past the zone's limit they are closed, and the service is
    // there again once they go.
    let many: Vec<_> = (0..40).filter_map(|_| UnixStream::connect(sock(&n, &uuid)).ok()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut closed = 0;
    for s in &many {
        s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
        let mut c = s;
        let _ = c.write_all(b"GET sdc:alias\n");
        let mut r = BufReader::new(c);
        let mut l = String::new();
        if matches!(r.read_line(&mut l), Ok(0)) {
            closed += 1;
        }
    }
    assert!(closed >= 40 - hull_vm::metadata::MAX_CONNECTIONS, "only {closed} of 40 refused");
    drop(many);
    std::thread::sleep(Duration::from_millis(300));
    let (mut r, mut w) = open();
    w.write_all(b"GET sdc:alias\n").expect("send");
    assert_eq!(line(&mut r), "SUCCESS\n");
}

#[test]
fn cloud_init_s_own_client_reads_and_writes_the_zone_s_metadata() {
    let py = "/usr/bin/python3";
    let probe = std::process::Command::new(py)
        .args(["-c", "import cloudinit.sources.DataSourceSmartOS"])
        .status()
        .expect("python3");
    assert!(probe.success(), "Debian's cloud-init is missing: run .ci/deps (it installs cloud-init)");
    let (n, uuid) = zone();
    wait_socket(&n, &uuid);
    let script = r#"
import json, sys
from cloudinit.sources.DataSourceSmartOS import JoyentMetadataSocketClient, convert_smartos_network_data
c = JoyentMetadataSocketClient(sys.argv[1])
c.open_transport()
out = {
    "uuid": c.get("sdc:uuid"),
    "keys": sorted(c.list()),
    "nics": c.get_json("sdc:nics"),
    "script": c.get("user-script"),
    "missing": c.get("no-such-key"),
}
c.put("cloud-init-was-here", "yes")
out["network"] = convert_smartos_network_data(network_data=out["nics"], dns_servers=c.get_json("sdc:resolvers"))
c.close_transport()
print(json.dumps(out))
"#;
    let run = std::process::Command::new(py)
        .arg("-c")
        .arg(script)
        .arg(sock(&n, &uuid))
        .output()
        .expect("run cloud-init's client");
    let text = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "{text}{}", String::from_utf8_lossy(&run.stderr));
    let v: Value = serde_json::from_str(text.trim()).expect("json");
    assert_eq!(v["uuid"], uuid.as_str());
    assert_eq!(v["script"], "#!/bin/sh\necho hi\n");
    assert!(v["missing"].is_null());
    assert_eq!(v["keys"], json!(["admin_pw", "root_authorized_keys", "user-script"]));
    // cloud-init's own conversion of sdc:nics gives the NIC's address.
    let cfg = v["network"]["config"].as_array().expect("network config");
    let phys = cfg.iter().find(|c| c["type"] == "physical").expect("a physical NIC");
    assert_eq!(phys["mac_address"], v["nics"][0]["mac"]);
    let subnet = &phys["subnets"][0];
    assert_eq!((subnet["type"].as_str(), subnet["address"].as_str()), (Some("static"), Some("10.77.0.5/24")), "{phys}");
    assert_eq!(get_vm(&n, &uuid)["customer_metadata"]["cloud-init-was-here"], "yes");
}

#[test]
fn a_user_script_runs_once_per_provisioning_and_root_s_keys_land_when_there_is_sshd() {
    let n = TestNode::new("512M");
    let img = n.busybox();
    let payload = json!({
        "brand": "joyent-minimal", "image_uuid": img, "max_physical_memory": 64,
        "customer_metadata": {
            "user-script": "#!/bin/sh\necho ran >> /var/log/us-ran\n",
            "root_authorized_keys": "ssh-ed25519 AAAAC3Nza test@hull"
        },
    });
    let f = n.root().join("vm.json");
    std::fs::write(&f, payload.to_string()).expect("payload");
    let out = n.hull(&["vmadm", "create", "-f", &f.to_string_lossy()]).ok();
    let uuid = out.trim().rsplit(' ').next().expect("uuid").to_string();
    let ran = |n: &TestNode| n.hull(&["zlogin", &uuid, "cat", "/var/log/us-ran"]).stdout;
    let wait_ran = |n: &TestNode| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while ran(n).is_empty() {
            assert!(std::time::Instant::now() < deadline, "the user-script did not run");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_ran(&n);
    assert_eq!(ran(&n), "ran\n");
    // No SSH server in the image: no keys written.
    let keys = n.hull(&["zlogin", &uuid, "cat", "/root/.ssh/authorized_keys"]);
    assert_ne!(keys.code, 0, "keys written with no sshd: {}", keys.stdout);
    // An SSH server appears; after a reboot the keys are there, and the script did not run again.
    n.hull(&[
        "zlogin",
        &uuid,
        "sh",
        "-c",
        "mkdir -p /usr/sbin && printf '#!/bin/sh\\n' > /usr/sbin/sshd && chmod 755 /usr/sbin/sshd",
    ])
    .ok();
    n.hull(&["vmadm", "reboot", &uuid, "-F"]).ok();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let keys = loop {
        let k = n.hull(&["zlogin", &uuid, "cat", "/root/.ssh/authorized_keys"]);
        if k.code == 0 || std::time::Instant::now() > deadline {
            break k;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(keys.stdout, "ssh-ed25519 AAAAC3Nza test@hull\n", "{}", keys.stderr);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ran(&n), "ran\n", "the user-script ran again after a reboot");
}

#[test]
fn a_tenant_cannot_grow_the_host_s_records_without_bound() {
    let (n, uuid) = zone();
    wait_socket(&n, &uuid);
    let log = n.root().join("var/hull/events.jsonl");
    let before = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let put = |key: &str, bytes: usize| {
        n.hull(&[
            "zlogin",
            &uuid,
            "sh",
            "-c",
            &format!("head -c {bytes} /dev/zero | tr '\\0' x | /.zonecontrol/bin/mdata-put {key}"),
        ])
    };
    // One value over the limit: refused, nothing stored.
    let r = put("huge", 300 * 1024);
    assert_ne!(r.code, 0, "a 300 KiB value was taken");
    assert!(get_vm(&n, &uuid)["customer_metadata"].get("huge").is_none());
    // Values at the limit fill the VM's metadata to its bound, and no further.
    let mut taken = 0;
    for i in 0..6 {
        if put(&format!("big{i}"), 250 * 1024).code == 0 {
            taken += 1;
        }
    }
    assert_eq!(taken, 4, "the VM's metadata is bounded at 1 MiB");
    let total: usize = get_vm(&n, &uuid)["customer_metadata"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_str).map(str::len).sum())
        .unwrap_or(0);
    assert!(total <= 1 << 20, "{total}");
    // A megabyte written by the tenant, a few kilobytes of log: values are logged by size.
    let after = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    assert!(after - before < 64 * 1024, "the event log grew by {} bytes", after - before);
}
