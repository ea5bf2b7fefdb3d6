//! imgadm avail/show/import against an IMGAPI server that the test runs on loopback.

mod common;
use common::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// uuid to (manifest, file).
type Catalog = Mutex<HashMap<String, (serde_json::Value, Vec<u8>)>>;
type Shared = Arc<Catalog>;

/// How the server misbehaves.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Good,
    /// Answers every request with text that is not JSON.
    Garbage,
    /// Sends half of each image file, then closes the connection.
    DropFile,
}

/// A minimal IMGAPI: GET /images, /images/UUID, /images/UUID/file.
struct Imgapi {
    url: String,
    images: Shared,
    mode: Arc<Mutex<Mode>>,
    hits: Arc<Mutex<Vec<String>>>,
}

impl Imgapi {
    fn start() -> Imgapi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let images: Shared = Default::default();
        let mode = Arc::new(Mutex::new(Mode::Good));
        let hits: Arc<Mutex<Vec<String>>> = Default::default();
        let (i, m, h) = (images.clone(), mode.clone(), hits.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (i, m, h) = (i.clone(), m.clone(), h.clone());
                std::thread::spawn(move || serve(stream, &i, *m.lock().expect("mode"), &h));
            }
        });
        Imgapi { url, images, mode, hits }
    }

    fn add(&self, manifest: &std::path::Path, file: &std::path::Path) -> String {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(manifest).expect("read")).expect("json");
        let uuid = v["uuid"].as_str().expect("uuid").to_string();
        self.images.lock().expect("images").insert(uuid.clone(), (v, std::fs::read(file).expect("read")));
        uuid
    }

    fn set_mode(&self, mode: Mode) {
        *self.mode.lock().expect("mode") = mode;
    }
}

fn respond(s: &mut TcpStream, status: &str, ctype: &str, body: &[u8], send: usize) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(&body[..send.min(body.len())]);
}

fn serve(mut stream: TcpStream, images: &Catalog, mode: Mode, hits: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
            break;
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    hits.lock().expect("hits").push(path.clone());
    if mode == Mode::Garbage {
        respond(&mut stream, "200 OK", "application/json", b"<html>not json", usize::MAX);
        let _ = stream.shutdown(std::net::Shutdown::Both);
        return;
    }
    let images = images.lock().expect("images").clone();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["images"] => {
            let list: Vec<_> = images.values().map(|(m, _)| m.clone()).collect();
            respond(&mut stream, "200 OK", "application/json", &serde_json::to_vec(&list).expect("json"), usize::MAX)
        }
        ["images", uuid] => match images.get(*uuid) {
            Some((m, _)) => {
                respond(&mut stream, "200 OK", "application/json", &serde_json::to_vec(m).expect("json"), usize::MAX)
            }
            None => respond(
                &mut stream,
                "404 Not Found",
                "application/json",
                b"{\"code\":\"ResourceNotFound\"}",
                usize::MAX,
            ),
        },
        ["images", uuid, "file"] => match images.get(*uuid) {
            Some((_, f)) => {
                let send = if mode == Mode::DropFile { f.len() / 2 } else { f.len() };
                respond(&mut stream, "200 OK", "application/octet-stream", f, send)
            }
            None => respond(&mut stream, "404 Not Found", "application/json", b"{}", usize::MAX),
        },
        _ => respond(&mut stream, "404 Not Found", "text/plain", b"no", usize::MAX),
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

#[test]
fn avail_show_import_with_origin_chain() {
    let n = TestNode::new("512M");
    let api = Imgapi::start();
    // A base image and a child whose manifest names it as origin.
    let (bm, bf, base) = n.build(&["--busybox"], "base");
    let layer = n.root().join("layer");
    std::fs::create_dir_all(&layer).expect("mkdir");
    std::fs::write(layer.join("child"), b"child layer").expect("write");
    let (cm, cf, child) = n.build(&["--dir", &layer.to_string_lossy()], "child");
    edit_manifest(&cm, |v| v["origin"] = base.clone().into());
    api.add(&bm, &bf);
    api.add(&cm, &cf);
    n.hull(&["imgadm", "sources", "-a", &api.url]).ok();

    let avail = n.hull(&["imgadm", "avail", "-H", "-o", "uuid,name", "-s", "name"]).ok();
    assert_eq!(avail, format!("{base}\tbase\n{child}\tchild\n"));
    let show: serde_json::Value = serde_json::from_str(&n.hull(&["imgadm", "show", &child]).ok()).expect("json");
    assert_eq!(show["origin"], base.as_str());

    // Importing the child fetches its origin first.
    let out = n.hull(&["imgadm", "import", &child]);
    assert_eq!(out.stderr, "", "no progress output when not on a terminal");
    assert_eq!(out.ok(), format!("Imported image {base} (base@1.0.0)\nImported image {child} (child@1.0.0)\n"));
    assert_eq!(std::fs::read(n.zones().join(&child).join("root/child")).expect("read"), b"child layer");
    assert!(n.zones().join(&child).join("root/bin/busybox").exists());
    let get: serde_json::Value = serde_json::from_str(&n.hull(&["imgadm", "get", &child]).ok()).expect("json");
    assert_eq!(get["source"], api.url.as_str());
    assert!(n.hull(&["imgadm", "import", &child]).ok().contains("already installed"));
    let cache: Vec<_> = std::fs::read_dir(n.root().join("var/imgadm/cache")).expect("cache").collect();
    assert!(cache.is_empty(), "downloads are removed");

    let missing = "9a5e1c2d-0000-4000-8000-000000000009";
    let r = n.hull(&["imgadm", "import", missing]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains(&format!("image {missing} was not found in any image source")), "{}", r.stderr);
}

#[test]
fn bad_sources_leave_nothing() {
    let n = TestNode::new("256M");
    let api = Imgapi::start();
    let (m, f, uuid) = n.build(&["--busybox"], "bb");
    api.add(&m, &f);
    n.hull(&["imgadm", "sources", "-a", &api.url]).ok();

    // A connection dropped half way through the file.
    api.set_mode(Mode::DropFile);
    let r = n.hull(&["imgadm", "import", &uuid]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stderr.contains(&format!("image source {}", api.url)) || r.stderr.contains("has size"), "{}", r.stderr);
    assert!(n.datasets().is_empty());
    assert!(n.lock_is_free(&uuid));

    // Answers that are not JSON.
    api.set_mode(Mode::Garbage);
    for args in [vec!["imgadm", "avail"], vec!["imgadm", "import", &uuid], vec!["imgadm", "show", &uuid]] {
        let r = n.hull(&args);
        assert_eq!(r.code, 1, "{args:?}");
        assert!(r.stderr.contains("answered invalid JSON"), "{args:?}: {}", r.stderr);
    }
    assert!(n.datasets().is_empty());

    // A source whose manifest lies about the file's sha1.
    api.set_mode(Mode::Good);
    api.images.lock().expect("images").get_mut(&uuid).expect("image").0["files"][0]["sha1"] =
        "1111111111111111111111111111111111111111".into();
    let r = n.hull(&["imgadm", "import", &uuid]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("has sha1"), "{}", r.stderr);
    assert!(n.datasets().is_empty());

    // A source nobody listens on.
    let dead = TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_url = format!("http://{}", dead.local_addr().expect("addr"));
    drop(dead);
    n.hull(&["imgadm", "sources", "-d", &api.url]).ok();
    n.hull(&["imgadm", "sources", "-a", &dead_url]).ok();
    let r = n.hull(&["imgadm", "avail"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains(&format!("image source {dead_url}")), "{}", r.stderr);
    assert!(api.hits.lock().expect("hits").iter().any(|h| h.ends_with("/file")));
}
