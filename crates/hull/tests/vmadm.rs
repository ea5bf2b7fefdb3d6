//! vmadm from the command line.

mod common;
use common::*;
use std::io::Write;

fn validate(n: &TestNode, args: &[&str], payload: &str) -> (i32, String, String) {
    let mut child = n
        .cmd()
        .args(["vmadm", "validate"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // A usage error exits before reading: a closed pipe is then expected.
    let _ = child.stdin.take().expect("stdin").write_all(payload.as_bytes());
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_reports_in_smartos_shape() {
    // Validation checks the node's images, as SmartOS's does: an image that is not installed
    // is a bad value (a node without a pool has none, and validating makes no pool).
    let bare = TestNode::bare();
    let absent = r#"{"brand": "joyent", "image_uuid": "c02a2044-c1bd-11e4-bd8c-dfc1db8b0182", "zpool": "zones"}"#;
    let (code, _, err) = validate(&bare, &["create"], absent);
    assert_eq!(code, 1);
    assert!(
        err.contains(
            r#""bad_values": [
    "image_uuid",
    "zpool"
  ]"#
        ),
        "{err}"
    );
    assert!(!bare.root().join("var/hull/zones.img").exists(), "validating made a pool");
    let n = TestNode::new("256M");
    let img = n.busybox();
    let good_json = serde_json::json!({"brand": "joyent", "image_uuid": img, "max_physical_memory": 256, "nics": [{"nic_tag": "admin", "ip": "dhcp"}]}).to_string();
    let good = good_json.as_str();
    let (code, out, err) = validate(&n, &["create", "joyent"], good);
    assert_eq!((code, out.as_str()), (0, "VALID 'create' payload for joyent brand VMs.\n"), "{err}");
    let (code, _, err) = validate(
        &n,
        &["create"],
        r#"{"brand": "kvm", "disks": [{"image_uuid": "IMG"}]}"#.replace("IMG", &img).as_str(),
    );
    assert_eq!(code, 1);
    assert!(err.contains("disks.0.image_uuid"), "a zone image is no disk: {err}");

    let bad = r#"{"brand": "joyent", "colour": 1, "cpu_cap": -1, "max_lwps": "many"}"#;
    let (code, _, err) = validate(&n, &["create", "joyent"], bad);
    assert_eq!(code, 1);
    let json_end = err.find("\nvmadm: error").expect("error line");
    let v: serde_json::Value = serde_json::from_str(&err[..json_end]).expect("json on stderr");
    assert_eq!(
        v,
        serde_json::json!({"bad_values": ["cpu_cap", "max_lwps"], "bad_properties": ["colour"], "missing_properties": ["image_uuid"]})
    );

    let (code, _, err) = validate(&n, &["create", "joyent"], "{not json");
    assert_eq!(code, 1);
    assert!(err.contains("payload is not valid JSON"), "{err}");
    let (code, _, _) = validate(&n, &["create", "solaris"], "{}");
    assert_eq!(code, 2, "an unknown brand on the command line is a usage error");
    let (code, out, _) = validate(&n, &["update", "lx"], r#"{"max_physical_memory": 1024, "set_tags": {"a": "b"}}"#);
    assert_eq!((code, out.as_str()), (0, "VALID 'update' payload for lx brand VMs.\n"));

    let file = n.root().join("payload.json");
    std::fs::write(&file, good).expect("write");
    let r = n.hull(&["vmadm", "validate", "create", "joyent", "-f", &file.to_string_lossy()]);
    assert_eq!(r.ok(), "VALID 'create' payload for joyent brand VMs.\n");
    // SmartOS's own form: the brand is the payload's.
    let r = n.hull(&["vmadm", "validate", "create", "-f", &file.to_string_lossy()]);
    assert_eq!(r.ok(), "VALID 'create' payload for joyent brand VMs.\n");
    // lx takes Linux images (lx-dataset), the joyent brands zone-dataset ones, as SmartOS.
    let lx = serde_json::json!({"brand": "lx", "image_uuid": img, "kernel_version": "4.3.0"}).to_string();
    let (code, _, err) = validate(&n, &["create"], &lx);
    assert_eq!(code, 1);
    assert!(err.contains("image_uuid"), "a zone-dataset image for lx: {err}");
    let (m, f, lx_img) = n.build(&["--busybox", "--type", "lx-dataset"], "bblx");
    n.hull(&["imgadm", "install", "-m", &m.to_string_lossy(), "-f", &f.to_string_lossy()]).ok();
    let lx = serde_json::json!({"brand": "lx", "image_uuid": lx_img, "kernel_version": "4.3.0"}).to_string();
    let (code, out, err) = validate(&n, &["create"], &lx);
    assert_eq!((code, out.as_str()), (0, "VALID 'create' payload for lx brand VMs.\n"), "{err}");
    let joyent = serde_json::json!({"brand": "joyent", "image_uuid": lx_img}).to_string();
    assert_eq!(validate(&n, &["create"], &joyent).0, 1, "an lx-dataset image for joyent");
    let (code, _, err) = validate(&n, &["create"], r#"{"image_uuid": "c02a2044-c1bd-11e4-bd8c-dfc1db8b0182"}"#);
    assert_eq!(code, 1);
    assert!(err.contains(r#""bad_brand": "undefined""#), "{err}");
    let (code, _, _) = validate(&n, &["update"], "{}");
    assert_eq!(code, 2, "update names the brand");
}

#[test]
fn man_pages_and_completions_come_from_the_command_line() {
    let n = TestNode::bare();
    let dir = n.root().join("man");
    let out = n.hull(&["manpages", &dir.to_string_lossy()]).ok();
    assert!(out.lines().count() > 20, "{out}");
    let vmadm = std::fs::read_to_string(dir.join("vmadm.8")).expect("vmadm.8");
    assert!(vmadm.contains(".SH PROPERTIES") && vmadm.contains("max_physical_memory"), "{vmadm}");
    let create = std::fs::read_to_string(dir.join("vmadm-create.8")).expect("vmadm-create.8");
    assert!(create.contains("joyent\\-minimal") && create.contains("image_uuid"), "an example: {create}");
    for page in ["hull.8", "imgadm.8", "zlogin.8", "svcadm-enable.8", "vmadm-delete-snapshot.8"] {
        assert!(dir.join(page).exists(), "{page}");
    }
    // Every vmadm verb says what it does.
    let help = n.hull(&["vmadm", "--help"]).ok();
    for verb in ["start", "reboot", "delete", "delete-snapshot"] {
        let line = help.lines().find(|l| l.trim_start().starts_with(&format!("{verb} "))).unwrap_or_default();
        assert!(line.trim().len() > verb.len() + 5, "{verb} has no help: {help}");
    }
    let bash = n.hull(&["completions", "bash"]).ok();
    for tool in ["hull", "vmadm", "imgadm", "zlogin"] {
        assert!(bash.contains(&format!("complete -F _{tool} ")), "{tool}");
    }
}

#[test]
fn a_stored_config_that_does_not_fit_is_named_and_the_vm_can_still_go() {
    let n = TestNode::new("512M");
    let img = n.busybox();
    let payload = serde_json::json!({"brand": "joyent-minimal", "image_uuid": img, "autoboot": false});
    let f = n.root().join("p.json");
    std::fs::write(&f, payload.to_string()).expect("write");
    let uuid = n.hull(&["vmadm", "create", "-f", &f.to_string_lossy()]).ok();
    let uuid = uuid.split_whitespace().find(|w| w.len() == 36).expect("uuid").to_string();
    // Edited by hand: a NIC's VLAN that is not a number.
    let cfg = n.zones().join(&uuid).join("config/vm.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg).expect("read")).expect("json");
    v["nics"] = serde_json::json!([{"nic_tag": "admin", "vlan_id": "twelve"}]);
    std::fs::write(&cfg, v.to_string()).expect("write");
    let r = n.hull(&["vmadm", "start", &uuid]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains(&uuid) && r.stderr.contains("nics[0].vlan_id"), "{}", r.stderr);
    assert_eq!(r.stderr.matches("nics[0].vlan_id").count(), 1, "said twice: {}", r.stderr);
    // Still shown as it is, and deleted.
    assert!(n.hull(&["vmadm", "get", &uuid]).ok().contains("twelve"));
    n.hull(&["vmadm", "delete", &uuid]).ok();
    assert!(!n.zones().join(&uuid).exists());
}
