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
