//! The node API (`hull api serve`) over its unix socket, driven with curl as an operator
//! would: a VM's life through jobs, the events stream and its replay, bad requests, who may
//! call, and a server killed in the middle of a job.

mod common;
use common::*;
// The server's own types: answers are read into what the server serialised them from.
use hull::api::error::ApiError;
use hull::api::jobs::{Execution, Job};
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn generation(e: &Value) -> u64 {
    e["generation"].as_u64().expect("generation")
}

#[test]
fn a_vm_s_life_through_the_api_with_its_events_in_order() {
    let n = TestNode::new("512M");
    let image = n.busybox();
    let api = Server::start(&n, &[], &[]);
    let (code, ping) = api.call("GET", "/ping", None);
    assert_eq!((code, ping["ping"].as_str()), (200, Some("pong")));
    let (code, info) = api.call("GET", "/sysinfo", None);
    assert_eq!(code, 200);
    assert_eq!(info["Zpool"], "zones");
    assert!(info["UUID"].as_str().is_some_and(|u| u.len() == 36) && info["MiB of Memory"].as_u64() > Some(0));

    // A live stream from now, beside the calls.
    let mut live = Command::new("curl")
        .args(["-sSN", "--max-time", "200", "--unix-socket"])
        .arg(&api.sock)
        .arg("http://hull/events")
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl events");
    std::thread::sleep(Duration::from_millis(300));

    let payload = json!({"brand": "joyent-minimal", "image_uuid": image, "alias": "api0", "max_physical_memory": 128,
                         "no_such_property": 1});
    let (code, made) = api.call("POST", "/vms", Some(&payload.to_string()));
    assert_eq!(code, 202, "{made}");
    // Dropped as vmadm create drops it, and said so.
    assert_eq!(made["warnings"], json!(["no_such_property"]), "{made}");
    let vm = made["vm_uuid"].as_str().expect("vm_uuid").to_string();
    let job = api.wait(made["job_uuid"].as_str().expect("job"));
    assert_eq!(job.execution, Execution::Succeeded, "{job:?}");
    assert_eq!(job.result.as_ref().map(|r| r["state"].clone()), Some(json!("running")), "{job:?}");
    assert_eq!((job.action.as_str(), job.vm_uuid.as_deref()), ("create", made["vm_uuid"].as_str()));
    let (code, got) = api.call("GET", &format!("/vms/{vm}"), None);
    assert_eq!((code, got["alias"].as_str(), got["state"].as_str()), (200, Some("api0"), Some("running")), "{got}");
    // The same VM vmadm sees.
    let cli: Value = serde_json::from_str(&n.hull(&["vmadm", "get", &vm]).ok()).expect("vmadm get");
    assert_eq!(cli["uuid"], got["uuid"]);
    assert!(cli.get("no_such_property").is_none());
    let (_, running) = api.call("GET", "/vms?state=running&alias=api0", None);
    assert_eq!(running.as_array().map(Vec::len), Some(1), "{running}");
    let (_, none) = api.call("GET", "/vms?state=stopped", None);
    assert_eq!(none, json!([]));
    // The console's tail, as text (a string that is not JSON comes back as a string here).
    n.hull(&["zlogin", &vm, "sh", "-c", "echo HULL-API-CONSOLE > /dev/console"]).ok();
    let (code, text) = api.call("GET", &format!("/vms/{vm}/console"), None);
    assert_eq!(code, 200);
    assert!(text.as_str().is_some_and(|t| t.contains("HULL-API-CONSOLE")), "{text}");
    let (code, tail) = api.call("GET", &format!("/vms/{vm}/console?bytes=5"), None);
    assert_eq!((code, tail.as_str().map(str::len)), (200, Some(5)), "{tail}");
    for bad in ["bytes=0", "bytes=x", "bytes=2000000"] {
        let (code, e) = api.call("GET", &format!("/vms/{vm}/console?{bad}"), None);
        assert_eq!((code, e["code"].as_str()), (400, Some("BadParameter")), "{bad}: {e}");
    }
    let (code, e) = api.call("GET", "/vms/2b3d4f5a-0000-4000-8000-000000000009/console", None);
    assert_eq!((code, e["code"].as_str()), (404, Some("VmNotFound")), "{e}");

    api.change("POST", &format!("/vms/{vm}?action=update"), Some(r#"{"alias": "api1"}"#));
    api.change("POST", &format!("/vms/{vm}?action=stop&force=true"), None);
    assert_eq!(api.call("GET", &format!("/vms/{vm}"), None).1["state"], "stopped");
    api.change("DELETE", &format!("/vms/{vm}"), None);
    let (code, gone) = api.call("GET", &format!("/vms/{vm}"), None);
    assert_eq!((code, gone["code"].as_str()), (404, Some("VmNotFound")), "{gone}");

    // Everything that happened, from the log's start: each change once, in order.
    let all = api.events("?since=0", "2");
    let gens: Vec<u64> = all.iter().map(generation).collect();
    assert!(gens.windows(2).all(|w| w[0] < w[1]), "generations do not rise: {gens:?}");
    let mine: Vec<String> = all
        .iter()
        .filter(|e| e["uuid"] == vm.as_str())
        .map(|e| match e["type"].as_str() {
            Some("job") => format!("{}:{}", e["action"].as_str().unwrap_or(""), e["execution"].as_str().unwrap_or("")),
            Some("modify") => {
                let state = e["changes"].as_array().and_then(|c| c.iter().find(|c| c["prettyPath"] == "state"));
                match state {
                    Some(c) => format!("state:{}", c["newValue"].as_str().unwrap_or("")),
                    None => "modify".into(),
                }
            }
            other => other.unwrap_or("").to_string(),
        })
        .collect();
    let want = [
        "create:queued",
        "create:running",
        "create",
        "state:running",
        "create:succeeded",
        "update:queued",
        "update:running",
        "modify",
        "update:succeeded",
        "stop:queued",
        "stop:running",
        "state:stopped",
        "stop:succeeded",
        "delete:queued",
        "delete:running",
        "delete",
        "delete:succeeded",
    ];
    assert_eq!(mine, want, "{all:#?}");

    // The live stream saw the same events, with the same generations.
    std::thread::sleep(Duration::from_millis(300));
    let _ = live.kill();
    let out = live.wait_with_output().expect("live events");
    let seen = lines(&String::from_utf8_lossy(&out.stdout));
    let first = all.iter().position(|e| e["uuid"] == vm.as_str()).expect("the VM's first event");
    assert_eq!(seen, all[first..].to_vec(), "live and replayed streams differ");

    // A reconnect after the update's job replays from the next event exactly.
    let at = all.iter().find(|e| e["action"] == "update" && e["execution"] == "succeeded").expect("update done");
    let replay = api.events(&format!("?since={}", generation(at)), "1");
    let after: Vec<Value> = all.iter().filter(|e| generation(e) > generation(at)).cloned().collect();
    assert_eq!(replay, after);
    // A generation this node never gave is refused, not guessed at.
    let (code, e) = api.call("GET", &format!("/events?since={}", generation(at) - 1), None);
    assert_eq!((code, e["code"].as_str()), (400, Some("BadGeneration")), "{e}");
    let (code, e) = api.call("GET", "/events?since=99999999", None);
    assert_eq!((code, e["code"].as_str()), (410, Some("EventsGone")), "{e}");
}

#[test]
fn bad_requests_are_refused_with_one_shape_and_change_nothing() {
    let n = TestNode::new("256M");
    let api = Server::start(&n, &[], &[]);
    let before = n.datasets();
    let vm = "6f7a8b9c-0d1e-4f2a-8b3c-4d5e6f7a8b9c";
    let cases: Vec<(&str, String, Option<String>, u16, &str)> = vec![
        ("POST", "/vms".into(), Some("{not json".into()), 400, "InvalidJson"),
        ("POST", "/vms".into(), Some("[1, 2]".into()), 400, "InvalidJson"),
        ("POST", "/vms".into(), None, 400, "InvalidJson"),
        ("POST", "/vms".into(), Some(r#"{"brand": "kvm", "ram": "lots"}"#.into()), 422, "ValidationFailed"),
        ("POST", "/vms".into(), Some(r#"{"brand": "solaris"}"#.into()), 422, "ValidationFailed"),
        ("POST", "/vms".into(), Some(format!(r#"{{"alias": "{}"}}"#, "a".repeat(2 << 20))), 413, "BodyTooLarge"),
        ("GET", format!("/vms/{vm}"), None, 404, "VmNotFound"),
        ("GET", "/vms/..%2f..%2fetc".into(), None, 404, "VmNotFound"),
        ("POST", format!("/vms/{vm}?action=start"), None, 404, "VmNotFound"),
        ("DELETE", format!("/vms/{vm}"), None, 404, "VmNotFound"),
        ("GET", format!("/jobs/{vm}"), None, 404, "JobNotFound"),
        ("GET", format!("/images/{vm}"), None, 404, "ImageNotFound"),
        ("DELETE", format!("/images/{vm}"), None, 404, "ImageNotFound"),
        ("POST", "/images?action=import".into(), Some("{}".into()), 400, "MissingParameter"),
        ("POST", format!("/images?action=import&uuid={vm}"), None, 409, "NoSources"),
        ("POST", "/images?action=export".into(), None, 400, "UnknownAction"),
        ("GET", "/vms?=running".into(), None, 400, "BadFilter"),
        ("PUT", "/vms".into(), None, 405, "BadMethod"),
        ("GET", "/nowhere".into(), None, 404, "ResourceNotFound"),
        ("GET", "/events?since=ten".into(), None, 400, "BadGeneration"),
    ];
    for (method, path, body, status, code) in &cases {
        let (got, v) = api.call(method, path, body.as_deref());
        let e: ApiError = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{method} {path}: {e}: {v}"));
        assert_eq!((got, e.code.as_str()), (*status, *code), "{method} {path}: {v}");
        assert!(!e.message.is_empty(), "{method} {path}: {v}");
    }
    // vmadm's own lists, in vmadm's words.
    let (_, v) = api.call("POST", "/vms", Some(r#"{"brand": "kvm", "ram": "lots", "vcpus": "x"}"#));
    assert_eq!(v["bad_values"], json!(["ram", "vcpus"]), "{v}");
    let file = n.root().join("bad.json");
    std::fs::write(&file, r#"{"brand": "kvm", "ram": "lots", "vcpus": "x"}"#).expect("write payload");
    let r = n.hull(&["vmadm", "create", "-f", &file.to_string_lossy()]);
    assert_ne!(r.code, 0);
    let cli: Value = serde_json::Deserializer::from_str(&r.stderr)
        .into_iter::<Value>()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("vmadm create printed no JSON first: {}", r.stderr));
    assert_eq!(cli["bad_values"], v["bad_values"]);
    // Nothing was made, queued or left behind.
    assert_eq!(api.call("GET", "/jobs", None).1, json!([]));
    assert_eq!(api.call("GET", "/vms", None).1, json!([]));
    assert_eq!(n.datasets(), before);
}

#[test]
fn only_root_and_the_api_s_group_may_use_the_unix_socket() {
    let n = TestNode::new("256M");
    // The path to the socket is open to all; the peer's credentials decide.
    for dir in [n.root().to_path_buf(), n.root().join("var"), n.root().join("var/run")] {
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    }
    let nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
    // The same user, running without that group: the process's groups count, not the user's.
    let daemon_group = ["setpriv", "--reuid=65534", "--regid=1", "--clear-groups"];
    let supplementary = ["setpriv", "--reuid=65534", "--regid=1", "--groups=65534"];
    {
        let api = Server::start(&n, &[], &[]);
        let (code, v) = api.call_as(&nobody, "GET", "/vms", None);
        assert_eq!((code, v["code"].as_str()), (403, Some("Forbidden")), "{v}");
        let (code, v) = api.call_as(&nobody, "POST", "/vms", Some(r#"{"brand": "kvm"}"#));
        assert_eq!(code, 403, "{v}");
        assert_eq!(api.call("GET", "/vms", None).0, 200);
    }
    // 65534's group is nogroup: with --group nogroup it may; someone of another group may not.
    let api = Server::start(&n, &["--group", "nogroup"], &[]);
    assert_eq!(api.call_as(&nobody, "GET", "/ping", None).0, 200);
    assert_eq!(api.call_as(&daemon_group, "GET", "/ping", None).0, 403);
    assert_eq!(api.call_as(&supplementary, "GET", "/ping", None).0, 200);
    assert_eq!(api.call("GET", "/jobs", None).1, json!([]));
}

#[test]
fn a_server_killed_in_the_middle_of_a_create_leaves_no_half_vm_and_marks_the_job() {
    let n = TestNode::new("512M");
    let image = n.busybox();
    let payload = json!({"brand": "joyent-minimal", "image_uuid": image, "autoboot": false}).to_string();
    let job = {
        // The server dies (abort, as kill -9) once the VM's dataset is cloned.
        let mut api = Server::start(&n, &[], &[("HULL_FAILPOINT", "vm-create-cloned")]);
        let (code, made) = api.call("POST", "/vms", Some(&payload));
        assert_eq!(code, 202, "{made}");
        let status = api.child.wait().expect("server exits");
        assert!(!status.success(), "the failpoint did not stop the server");
        made["job_uuid"].as_str().expect("job").to_string()
    };
    let api = Server::start(&n, &[], &[]);
    let (code, j) = api.call("GET", &format!("/jobs/{job}"), None);
    assert_eq!(code, 200, "{j}");
    let j: Job = serde_json::from_value(j).expect("a Job");
    assert_eq!(
        (j.execution, j.error.as_ref().map(|e| e.code.as_str())),
        (Execution::Failed, Some("Interrupted")),
        "{j:?}"
    );
    assert_eq!(api.call("GET", "/vms", None).1, json!([]));
    assert!(n.datasets().iter().all(|d| !d.contains("provisioning")), "{:?}", n.datasets());
    // And the node works: the same create succeeds.
    let job = api.change("POST", "/vms", Some(&payload));
    assert_eq!(job.result.as_ref().map(|r| r["state"].clone()), Some(json!("stopped")), "{job:?}");
}

#[test]
fn fifty_creates_at_once_leave_fifty_whole_vms_and_one_vm_s_jobs_run_in_order() {
    let n = TestNode::new("1G");
    let image = n.busybox();
    let api = std::sync::Arc::new(Server::start(&n, &[], &[]));
    let payload = json!({"brand": "joyent-minimal", "image_uuid": image, "autoboot": false}).to_string();
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let (api, payload) = (std::sync::Arc::clone(&api), payload.clone());
            std::thread::spawn(move || {
                let (code, v) = api.call("POST", "/vms", Some(&payload));
                assert_eq!(code, 202, "{v}");
                v["job_uuid"].as_str().expect("job").to_string()
            })
        })
        .collect();
    let jobs: Vec<String> = handles.into_iter().map(|h| h.join().expect("create thread")).collect();
    for j in &jobs {
        let job = api.wait(j);
        assert_eq!(job.execution, Execution::Succeeded, "{job:?}");
    }
    let (_, vms) = api.call("GET", "/vms", None);
    let vms = vms.as_array().cloned().unwrap_or_default();
    assert_eq!(vms.len(), 50);
    assert!(vms.iter().all(|v| v["state"] == "stopped"), "{vms:?}");
    let listed = n.hull(&["vmadm", "list", "-H", "-o", "uuid"]).ok();
    assert_eq!(listed.lines().count(), 50);

    // Three changes to one VM asked at once run in the order they were asked.
    let vm = vms[0]["uuid"].as_str().expect("uuid").to_string();
    let asked: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|alias| {
            let (code, v) =
                api.call("POST", &format!("/vms/{vm}?action=update"), Some(&format!(r#"{{"alias": "{alias}"}}"#)));
            assert_eq!(code, 202, "{v}");
            v["job_uuid"].as_str().expect("job").to_string()
        })
        .collect();
    let done: Vec<Job> = asked.iter().map(|j| api.wait(j)).collect();
    for w in done.windows(2) {
        assert!(w[0].ended.is_some() && w[0].ended <= w[1].started, "jobs overlapped: {w:?}");
    }
    assert_eq!(api.call("GET", &format!("/vms/{vm}"), None).1["alias"], "c");
}

/// curl over TLS to the API; (curl's exit status, HTTP status or 0, body).
fn tls_get(port: u16, dir: &std::path::Path, cert: Option<(&str, &str)>, path: &str) -> (i32, u16, String) {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "20", "--cacert"]).arg(dir.join("ca.crt"));
    if let Some((crt, key)) = cert {
        c.arg("--cert").arg(dir.join(crt)).arg("--key").arg(dir.join(key));
    }
    c.args(["-w", "\n%{http_code}"]).arg(format!("https://127.0.0.1:{port}{path}"));
    let out = c.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (out.status.code().unwrap_or(-1), code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn tls_lets_in_only_client_certificates_the_node_signed_and_trusts() {
    let n = TestNode::new("256M");
    let dir = n.root().join("client");
    let d = dir.to_string_lossy().into_owned();
    n.hull(&["api", "trust", "add", "ops", "--out", &d]).ok();
    // A client with its own key: the node signs its request, and never sees the key. The
    // request asks to be a CA; what comes back is a client's certificate all the same.
    let key = dir.join("own.key");
    let csr = dir.join("own.csr");
    let made = Command::new("openssl")
        .args(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=root"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .output()
        .expect("openssl req");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let own = dir.join("own");
    n.hull(&["api", "trust", "add", "own", "--csr", &csr.to_string_lossy(), "--out", &own.to_string_lossy()]).ok();
    assert!(!own.join("own.key").exists(), "a key was made for a CSR");
    std::fs::copy(&key, own.join("own.key")).expect("client key");
    let text = Command::new("openssl").args(["x509", "-noout", "-text", "-in"]).arg(own.join("own.crt")).output();
    let text = String::from_utf8_lossy(&text.expect("openssl x509").stdout).into_owned();
    assert!(text.contains("CA:FALSE") && text.contains("TLS Web Client Authentication"), "{text}");
    assert!(text.contains("CN = own") || text.contains("CN=own"), "{text}");
    // A certificate of another CA, with the same name.
    let other = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=ops"])
        .args(["-days", "2", "-keyout"])
        .arg(dir.join("other.key"))
        .arg("-out")
        .arg(dir.join("other.crt"))
        .output()
        .expect("openssl req -x509");
    assert!(other.status.success());

    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let _api = Server::start(&n, &["--tls", &format!("127.0.0.1:{port}")], &[]);
    let (rc, code, body) = tls_get(port, &dir, Some(("ops.crt", "ops.key")), "/ping");
    assert_eq!((rc, code), (0, 200), "{body}");
    let (rc, code, body) = tls_get(port, &own, Some(("own.crt", "own.key")), "/vms");
    assert_eq!((rc, code, body.as_str()), (0, 200, "[]"));
    // No certificate, or one the node did not sign: the handshake fails, no HTTP at all.
    let (rc, code, _) = tls_get(port, &dir, None, "/ping");
    assert!(rc != 0 && code == 0, "no certificate got an answer: {rc} {code}");
    let (rc, code, _) = tls_get(port, &dir, Some(("other.crt", "other.key")), "/ping");
    assert!(rc != 0 && code == 0, "a stranger's certificate got an answer: {rc} {code}");
    // Plain HTTP to the TLS port is no way in either.
    let out =
        Command::new("curl").args(["-sS", "--max-time", "5"]).arg(format!("http://127.0.0.1:{port}/ping")).output();
    assert!(!out.expect("curl").status.success());
    // Taken back: signed by the node, but no longer trusted.
    n.hull(&["api", "trust", "remove", "ops"]).ok();
    let (rc, code, body) = tls_get(port, &dir, Some(("ops.crt", "ops.key")), "/vms");
    assert_eq!((rc, code), (0, 403), "{body}");
    assert!(body.contains("Forbidden"), "{body}");
    let listed = n.hull(&["api", "trust", "list", "-j"]).ok();
    let listed: Value = serde_json::from_str(&listed).expect("trust list -j");
    assert_eq!(
        listed.as_array().map(|a| a.iter().map(|t| t["name"].clone()).collect::<Vec<_>>()),
        Some(vec![json!("own")])
    );
    // A name that is not one is refused before anything is made.
    let bad = n.hull(&["api", "trust", "add", "../x", "--out", &d]);
    assert_ne!(bad.code, 0);
    assert!(!dir.join("../x.crt").exists());
}

/// docs/api/openapi.json is what the code generates (`HULL_BLESS=1` rewrites it), and every
/// operation it lists is one the server routes.
#[test]
fn the_openapi_document_is_the_code_s_and_lists_what_is_served() {
    let n = TestNode::new("256M");
    let doc = n.hull(&["api", "openapi"]).ok();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/api/openapi.json");
    if std::env::var_os("HULL_BLESS").is_some() {
        std::fs::write(&path, &doc).expect("bless openapi.json");
    }
    let kept = std::fs::read_to_string(&path).expect("docs/api/openapi.json");
    assert!(
        kept == doc,
        "docs/api/openapi.json is stale: run HULL_BLESS=1 cargo nextest run -p hull --test api openapi"
    );
    let doc: Value = serde_json::from_str(&doc).expect("JSON");
    let api = Server::start(&n, &[], &[]);
    let some = "6f7a8b9c-0d1e-4f2a-8b3c-4d5e6f7a8b9c";
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for (method, _) in ops.as_object().expect("operations") {
            let concrete = path.replace("{uuid}", some);
            // Never wait on a stream or a job here.
            let concrete = if concrete == "/events" { "/events?since=99999999999".into() } else { concrete };
            let (code, v) = api.call(&method.to_uppercase(), &concrete, None);
            assert!(
                !matches!(v["code"].as_str(), Some("ResourceNotFound" | "BadMethod")),
                "{method} {path} is documented but not served: {code} {v}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 16, "{checked}");
}

/// schemathesis (from PyPI; .ci/deps puts it in /var/cache/hull/st-venv) against the committed
/// document and a running server over TLS: no 5xx, no answer that breaks the schema, no
/// status or content type the document does not list. The events stream is left out: it
/// never ends, and schemathesis reads whole bodies.
#[test]
fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let st = std::env::var("HULL_SCHEMATHESIS").unwrap_or_else(|_| "/var/cache/hull/st-venv/bin/st".into());
    assert!(std::path::Path::new(&st).exists(), "{st} is missing: run .ci/deps (it installs schemathesis)");
    let n = TestNode::new("512M");
    n.busybox();
    let dir = n.root().join("client");
    n.hull(&["api", "trust", "add", "st", "--out", &dir.to_string_lossy()]).ok();
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let _api = Server::start(&n, &["--tls", &format!("127.0.0.1:{port}")], &[]);
    let doc = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/api/openapi.json");
    let out = Command::new(&st)
        .arg("run")
        .arg(&doc)
        .args(["-u", &format!("https://127.0.0.1:{port}"), "--tls-verify"])
        .arg(dir.join("ca.crt"))
        .arg("--request-cert")
        .arg(dir.join("st.crt"))
        .arg("--request-cert-key")
        .arg(dir.join("st.key"))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--exclude-operation-id", "Events", "--max-examples", "15", "--request-timeout", "120"])
        .args(["--phases", "examples,coverage,fuzzing,stateful", "--no-color"])
        .env("HOME", n.root())
        // Its cache (.schemathesis/) goes with the test's node, not into the source tree.
        .current_dir(n.root())
        .output()
        .expect("run schemathesis");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schemathesis failed:\n{text}");
    assert!(text.contains("passed") && !text.contains(" failed"), "{text}");
}

/// A raw upload with curl: (status, body as JSON).
/// PUT of a file's bytes. `Expect: 100-continue`, as a careful client sends it: a refusal
/// before the body (no upload started) then comes back before any byte is sent. Without it
/// curl sent the body into a connection the server had answered and closed, and under load
/// saw the reset before the answer (code 0).
fn put_file(api: &Server, path: &str, file: &std::path::Path) -> (u16, Value) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "300", "--unix-socket"])
        .arg(&api.sock)
        .args(["-X", "PUT", "-H", "content-type: application/octet-stream", "-H", "Expect: 100-continue"])
        .args(["--expect100-timeout", "30", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .args(["-w", "\n%{http_code}"])
        .arg(format!("http://hull{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    match code.trim().parse() {
        Ok(c) if c != 0 => (c, serde_json::from_str(body).unwrap_or(Value::Null)),
        // No answer: what curl said, for the failure's message.
        _ => (0, Value::String(String::from_utf8_lossy(&out.stderr).into_owned())),
    }
}

fn sha1_of(path: &std::path::Path) -> String {
    let out = Command::new("sha1sum").arg(path).output().expect("sha1sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string()
}

#[test]
fn an_image_of_a_vm_goes_out_through_the_api_and_comes_back_in_checked() {
    let n = TestNode::new("1G");
    let image = n.busybox();
    let api = Server::start(&n, &[], &[]);
    let payload =
        json!({"brand": "joyent-minimal", "image_uuid": image, "alias": "imgsrc", "max_physical_memory": 128});
    let made = api.change("POST", "/vms", Some(&payload.to_string()));
    let vm = made.vm_uuid.clone().expect("vm_uuid");
    n.hull(&["zlogin", &vm, "sh", "-c", "echo made-in-the-zone > /marker"]).ok();
    let new_image = "0c5e0a5e-1b1b-4c4c-8d8d-0123456789ab";
    let ask = format!("/vms/{vm}?action=create_image&name=snap&version=2.0&image_uuid={new_image}");

    // A running VM is refused (imgadm create's rule), and nothing is kept.
    let (code, v) = api.call("POST", &ask, None);
    assert_eq!(code, 202, "{v}");
    let job = api.wait(v["job_uuid"].as_str().expect("job"));
    assert_eq!(job.execution, Execution::Failed, "{job:?}");
    assert_eq!(job.error.as_ref().map(|e| e.code.as_str()), Some("WrongState"), "{job:?}");
    let exports = n.root().join("var/hull/api/exports");
    assert_eq!(std::fs::read_dir(&exports).map(|d| d.count()).unwrap_or(0), 0, "a failed create_image left a file");

    api.change("POST", &format!("/vms/{vm}?action=stop"), None);
    let job = api.change("POST", &ask, None);
    let result = job.result.expect("result");
    let manifest = result["manifest"].clone();
    assert_eq!((manifest["uuid"].as_str(), manifest["name"].as_str()), (Some(new_image), Some("snap")), "{result}");
    assert_eq!(manifest["version"], "2.0");
    assert_eq!(result["file"], format!("/images/{new_image}/file"));
    // Kept, not installed.
    let (code, e) = api.call("GET", &format!("/images/{new_image}"), None);
    assert_eq!((code, e["code"].as_str()), (404, Some("ImageNotFound")), "{e}");
    // The same uuid twice is refused.
    let (_, v) = api.call("POST", &ask, None);
    let again = api.wait(v["job_uuid"].as_str().expect("job"));
    assert_eq!(again.error.as_ref().map(|e| e.code.as_str()), Some("ImageExists"), "{again:?}");

    // The file, streamed, is the manifest's (size and sha1).
    let got = n.root().join("downloaded");
    api.download(&format!("/images/{new_image}/file"), &got);
    let size = std::fs::metadata(&got).expect("downloaded").len();
    assert_eq!(Some(size), manifest["files"][0]["size"].as_u64(), "{manifest}");
    assert_eq!(Some(sha1_of(&got).as_str()), manifest["files"][0]["sha1"].as_str());
    assert_eq!(
        Command::new("sh")
            .arg("-c")
            .arg(format!("gzip -dc {} | tar t | grep -c marker", got.display()))
            .output()
            .map(|o| o.status.success())
            .ok(),
        Some(true),
        "the image holds no /marker"
    );
    let (code, _) = api.call("DELETE", &format!("/images/{new_image}/file"), None);
    assert_eq!(code, 204);
    let (code, e) = api.call("DELETE", &format!("/images/{new_image}/file"), None);
    assert_eq!((code, e["code"].as_str()), (404, Some("ImageNotFound")), "{e}");

    // Back in: a file before its manifest is refused.
    let (code, e) = put_file(&api, &format!("/images/{new_image}/file"), &got);
    assert_eq!((code, e["code"].as_str()), (404, Some("UploadNotStarted")), "{e}");
    let (code, e) = api.call("POST", "/images?action=install", Some(r#"{"uuid": "not-a-uuid"}"#));
    assert_eq!((code, e["code"].as_str()), (400, Some("BadManifest")), "{e}");
    let (code, v) = api.call("POST", "/images?action=install", Some(&manifest.to_string()));
    assert_eq!((code, v["upload"].as_str()), (201, Some(format!("/images/{new_image}/file").as_str())), "{v}");
    // Short, long, then the right size with the wrong bytes: each refused, nothing installed.
    let short = n.root().join("short");
    std::fs::write(&short, b"abc").expect("write");
    let (code, e) = put_file(&api, &format!("/images/{new_image}/file"), &short);
    assert_eq!((code, e["code"].as_str()), (400, Some("BadBody")), "{e}");
    let long = n.root().join("long");
    std::fs::write(&long, vec![0u8; size as usize + 1]).expect("write");
    let (code, e) = put_file(&api, &format!("/images/{new_image}/file"), &long);
    assert_eq!((code, e["code"].as_str()), (413, Some("BodyTooLarge")), "{e}");
    let wrong = n.root().join("wrong");
    std::fs::write(&wrong, vec![7u8; size as usize]).expect("write");
    let (code, v) = put_file(&api, &format!("/images/{new_image}/file"), &wrong);
    assert_eq!(code, 202, "{v}");
    let bad = api.wait(v["job_uuid"].as_str().expect("job"));
    assert_eq!(bad.execution, Execution::Failed, "{bad:?}");
    assert!(bad.error.as_ref().is_some_and(|e| e.message.contains("sha1")), "{bad:?}");
    assert_eq!(api.call("GET", &format!("/images/{new_image}"), None).0, 404);
    // A refused install ends the upload: a retry starts with the manifest again.
    let (code, e) = put_file(&api, &format!("/images/{new_image}/file"), &got);
    assert_eq!((code, e["code"].as_str()), (404, Some("UploadNotStarted")), "{e}");
    let (code, _) = api.call("POST", "/images?action=install", Some(&manifest.to_string()));
    assert_eq!(code, 201);
    // The right file installs it, and a VM made from it holds what the zone wrote.
    let (code, v) = put_file(&api, &format!("/images/{new_image}/file"), &got);
    assert_eq!(code, 202, "{v}");
    let ok = api.wait(v["job_uuid"].as_str().expect("job"));
    assert_eq!(ok.execution, Execution::Succeeded, "{ok:?}");
    let (code, m) = api.call("GET", &format!("/images/{new_image}"), None);
    assert_eq!((code, m["name"].as_str()), (200, Some("snap")), "{m}");
    // Installed, its file is served from the dataset, as the served manifest describes it.
    let served = n.root().join("served");
    api.download(&format!("/images/{new_image}/file"), &served);
    assert_eq!(m["files"][0]["compression"], "zstd", "{m}");
    assert_eq!(Some(std::fs::metadata(&served).expect("served").len()), m["files"][0]["size"].as_u64(), "{m}");
    assert_eq!(Some(sha1_of(&served).as_str()), m["files"][0]["sha1"].as_str(), "{m}");
    let (code, e) = api.call("POST", "/images?action=install", Some(&manifest.to_string()));
    assert_eq!((code, e["code"].as_str()), (409, Some("ImageExists")), "{e}");
    let child =
        json!({"brand": "joyent-minimal", "image_uuid": new_image, "alias": "imgdst", "max_physical_memory": 128});
    let made = api.change("POST", "/vms", Some(&child.to_string()));
    let child = made.vm_uuid.expect("vm_uuid");
    assert_eq!(n.hull(&["zlogin", &child, "cat", "/marker"]).ok().trim(), "made-in-the-zone");
    // Nothing of the uploads is left.
    let left: Vec<_> = std::fs::read_dir(n.root().join("var/hull/api/uploads"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in uploads: {left:?}");
    for v in [&vm, &child] {
        api.change("DELETE", &format!("/vms/{v}"), None);
    }
}

/// A KVM VM's qemu zone can write its run directory, so `console.log` there may be what a
/// tenant made it: a link to a host file, or a FIFO that no one writes. Neither is read
/// through, and neither holds the server.
#[test]
fn a_console_log_made_a_link_or_a_fifo_gives_nothing_of_the_host_and_holds_nothing() {
    let n = TestNode::new("512M");
    let image = n.busybox();
    let api = Server::start(&n, &[], &[]);
    let payload = json!({"brand": "joyent-minimal", "image_uuid": image, "alias": "con", "max_physical_memory": 64});
    let vm = api.change("POST", "/vms", Some(&payload.to_string())).vm_uuid.expect("vm_uuid");
    api.change("POST", &format!("/vms/{vm}?action=stop&force=true"), None);
    let log = n.root().join(format!("var/hull/z/{vm}/console.log"));
    let secret = n.root().join("host-secret");
    std::fs::write(&secret, "HOST-SECRET-LINE\n").expect("write secret");
    let get = || {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", "--unix-socket"])
            .arg(&api.sock)
            .args(["-w", "\n%{http_code}"])
            .arg(format!("http://hull/vms/{vm}/console"))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let _ = std::fs::remove_file(&log);
    std::os::unix::fs::symlink(&secret, &log).expect("plant link");
    let answer = get();
    assert!(!answer.contains("HOST-SECRET"), "the link was followed: {answer}");
    assert!(answer.ends_with("\n200"), "{answer}");
    std::fs::remove_file(&log).expect("remove link");
    nix::unistd::mkfifo(&log, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let t = Instant::now();
    let answer = get();
    assert!(answer.ends_with("\n200"), "a FIFO console.log: {answer}");
    assert!(t.elapsed() < Duration::from_secs(10), "a FIFO held the request {:?}", t.elapsed());
    assert_eq!(std::fs::read_to_string(&secret).expect("secret"), "HOST-SECRET-LINE\n");
    // The server still answers.
    assert_eq!(api.call("GET", "/ping", None).0, 200);
    let _ = std::fs::remove_file(&log);
    api.change("DELETE", &format!("/vms/{vm}"), None);
}

#[test]
fn a_refused_upload_is_answered_even_to_a_client_still_sending() {
    let n = TestNode::new("256M");
    let api = Server::start(&n, &[], &[]);
    let body = n.root().join("half-meg");
    std::fs::write(&body, vec![1u8; 512 << 10]).expect("write");
    // No Expect header (curl adds one only past 1 MiB): the body is on its way when the
    // server refuses; the server reads it off before closing, so the answer arrives.
    for _ in 0..5 {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "60", "--unix-socket"])
            .arg(&api.sock)
            .args(["-X", "PUT", "-H", "Expect:", "--data-binary"])
            .arg(format!("@{}", body.display()))
            .args(["-w", "\n%{http_code}"])
            .arg(format!("http://hull/images/{}/file", uuid::Uuid::new_v4()))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.ends_with("\n404") && text.contains("UploadNotStarted"),
            "{text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
