//! mdata-get, mdata-put, mdata-delete, mdata-list: SmartOS's in-zone metadata tools, one
//! program chosen by its name (and mdata-execute, the first-boot step, below), speaking protocol version 2 to `/.zonecontrol/metadata.sock`.
//! hull builds it statically (no libc in a busybox zone) from this one file, with the
//! standard library only, so its CRC32 and base64 are written out here rather than taken from
//! the crates the host side uses. Exit codes are mdata-client's: 0 done, 1 no such key,
//! 2 an error, 3 a usage error, 10 the metadata service cannot be reached (try again).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::exit;

const SOCKET: &str = "/.zonecontrol/metadata.sock";

pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub(crate) fn b64(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n =
            (chunk[0] as u32) << 16 | (*chunk.get(1).unwrap_or(&0) as u32) << 8 | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub(crate) fn unb64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        if c == b'=' {
            break;
        }
        let v = B64.iter().position(|x| *x == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn fail(code: i32, msg: &str) -> ! {
    eprintln!("{msg}");
    exit(code)
}

/// One request over a fresh connection: (code, decoded payload).
fn request(code: &str, payload: Option<&[u8]>) -> (String, Vec<u8>) {
    let path = std::env::var("MDATA_SOCKET").unwrap_or_else(|_| SOCKET.into());
    let Ok(mut s) = UnixStream::connect(&path) else {
        fail(10, &format!("ERROR: could not reach the metadata service at {path}"))
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(30)));
    let mut r = BufReader::new(s.try_clone().unwrap_or_else(|_| fail(10, "ERROR: socket")));
    let mut line = String::new();
    if s.write_all(b"NEGOTIATE V2\n").is_err() || r.read_line(&mut line).is_err() || line != "V2_OK\n" {
        fail(10, "ERROR: the metadata service does not speak version 2");
    }
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let reqid = format!("{:08x}", nanos ^ std::process::id().rotate_left(16));
    let body = match payload {
        Some(p) => format!("{reqid} {code} {}", b64(p)),
        None => format!("{reqid} {code}"),
    };
    let frame = format!("V2 {} {:08x} {body}\n", body.len(), crc32(body.as_bytes()));
    if s.write_all(frame.as_bytes()).is_err() {
        fail(10, "ERROR: could not send the request");
    }
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => fail(10, "ERROR: no answer from the metadata service"),
            Ok(_) => {}
        }
        let mut f = line.trim_end().splitn(4, ' ');
        let (v, len, crc, rest) = (f.next(), f.next(), f.next(), f.next().unwrap_or(""));
        if v != Some("V2") || len.and_then(|l| l.parse::<usize>().ok()) != Some(rest.len()) {
            continue;
        }
        if crc != Some(&format!("{:08x}", crc32(rest.as_bytes()))[..]) {
            continue;
        }
        let mut parts = rest.splitn(3, ' ');
        if parts.next() != Some(&reqid[..]) {
            continue;
        }
        let code = parts.next().unwrap_or("").to_string();
        let payload = parts.next().map(|p| unb64(p).unwrap_or_default()).unwrap_or_default();
        return (code, payload);
    }
}

/// A key's value, or None when the VM has no such key.
fn get(key: &str) -> Option<Vec<u8>> {
    let (code, p) = request("GET", Some(key.as_bytes()));
    match code.as_str() {
        "SUCCESS" => Some(p),
        "NOTFOUND" => None,
        _ => fail(2, &format!("Error getting metadata for key '{key}': {}", String::from_utf8_lossy(&p))),
    }
}

const STATE: &str = "/var/lib/hull-mdata";

/// Runs a script from the metadata once per provisioning: `STATE/NAME.UUID.done` says it
/// ran for this VM (an image made from the VM and provisioned again is a new VM: it runs
/// there again). Output goes to /var/log/NAME.log.
fn run_once(name: &str, uuid: &str, script: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let done = format!("{STATE}/{name}.{uuid}.done");
    if std::path::Path::new(&done).exists() {
        return;
    }
    let path = format!("{STATE}/{name}");
    if std::fs::write(&path, script).is_err()
        || std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).is_err()
    {
        fail(2, &format!("ERROR: could not write {path}"));
    }
    let log = std::fs::OpenOptions::new().create(true).append(true).open(format!("/var/log/{name}.log"));
    let mut cmd = if script.starts_with(b"#!") {
        std::process::Command::new(&path)
    } else {
        let mut c = std::process::Command::new("/bin/sh");
        c.arg(&path);
        c
    };
    if let Ok(l) = log
        && let Ok(l2) = l.try_clone()
    {
        cmd.stdout(l).stderr(l2);
    }
    match cmd.status() {
        Ok(st) => eprintln!("mdata-execute: {name} exited with {st}"),
        Err(e) => eprintln!("mdata-execute: {name} did not run: {e}"),
    }
    // Ran (whatever its status): not again for this VM.
    let _ = std::fs::write(&done, b"");
}

/// The first-boot step a zone's image runs at each boot (an init script, a systemd unit):
/// root's authorized keys from `root_authorized_keys` when the image has an SSH server
/// (merged in, every boot); `sdc:operator-script`, then `user-script`, once per provisioning.
fn execute() {
    use std::os::unix::fs::PermissionsExt;
    // At boot the service may come up a moment after init: wait for it, a while.
    let path = std::env::var("MDATA_SOCKET").unwrap_or_else(|_| SOCKET.into());
    for _ in 0..300 {
        if UnixStream::connect(&path).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let Some(uuid) = get("sdc:uuid").map(|u| String::from_utf8_lossy(&u).trim().to_string()) else {
        fail(2, "ERROR: the metadata service has no sdc:uuid");
    };
    let _ = std::fs::create_dir_all(STATE);
    let _ = std::fs::set_permissions(STATE, std::fs::Permissions::from_mode(0o700));
    let sshd =
        ["/usr/sbin/sshd", "/usr/bin/sshd", "/usr/sbin/dropbear"].iter().any(|p| std::path::Path::new(p).exists());
    if let (true, Some(keys)) = (sshd, get("root_authorized_keys")) {
        let _ = std::fs::create_dir_all("/root/.ssh");
        let _ = std::fs::set_permissions("/root/.ssh", std::fs::Permissions::from_mode(0o700));
        let file = "/root/.ssh/authorized_keys";
        let mut have = std::fs::read_to_string(file).unwrap_or_default();
        for k in String::from_utf8_lossy(&keys).lines().map(str::trim).filter(|k| !k.is_empty()) {
            if !have.lines().any(|l| l.trim() == k) {
                if !have.is_empty() && !have.ends_with('\n') {
                    have.push('\n');
                }
                have.push_str(k);
                have.push('\n');
            }
        }
        if std::fs::write(file, &have).is_ok() {
            let _ = std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600));
        }
    }
    if let Some(s) = get("sdc:operator-script") {
        run_once("operator-script", &uuid, &s);
    }
    if let Some(s) = get("user-script") {
        run_once("user-script", &uuid, &s);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args.first().map(|a| a.rsplit('/').next().unwrap_or(a).to_string()).unwrap_or_default();
    let rest = &args[1.min(args.len())..];
    if rest.iter().any(|a| a == "-h" || a == "--help") {
        eprintln!("Usage: mdata-get KEY | mdata-put KEY [VALUE] | mdata-delete KEY | mdata-list");
        exit(0);
    }
    let text = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    match name.as_str() {
        "mdata-get" => {
            let [key] = rest else { fail(3, "Usage: mdata-get <keyname>") };
            let (code, p) = request("GET", Some(key.as_bytes()));
            match code.as_str() {
                "SUCCESS" => {
                    let mut out = std::io::stdout();
                    let _ = out.write_all(&p);
                    if !p.ends_with(b"\n") {
                        let _ = out.write_all(b"\n");
                    }
                }
                "NOTFOUND" => fail(1, &format!("No metadata for '{key}'")),
                _ => fail(2, &format!("Error getting metadata for key '{key}': {}", text(&p))),
            }
        }
        "mdata-put" => {
            let value = match rest {
                [_, v] => v.clone().into_bytes(),
                [_] => {
                    let mut v = Vec::new();
                    if std::io::stdin().read_to_end(&mut v).is_err() {
                        fail(2, "ERROR: could not read the value from standard input");
                    }
                    v
                }
                _ => fail(3, "Usage: mdata-put <keyname> [ <value> ]"),
            };
            let key = &rest[0];
            let kv = format!("{} {}", b64(key.as_bytes()), b64(&value));
            let (code, p) = request("PUT", Some(kv.as_bytes()));
            if code != "SUCCESS" {
                fail(2, &format!("Error putting metadata for key '{key}': {}", text(&p)));
            }
        }
        "mdata-delete" => {
            let [key] = rest else { fail(3, "Usage: mdata-delete <keyname>") };
            let (code, p) = request("DELETE", Some(key.as_bytes()));
            if code != "SUCCESS" {
                fail(2, &format!("Error deleting metadata for key '{key}': {}", text(&p)));
            }
        }
        "mdata-list" => {
            if !rest.is_empty() {
                fail(3, "Usage: mdata-list");
            }
            let (code, p) = request("KEYS", None);
            match code.as_str() {
                "SUCCESS" => {
                    let mut out = std::io::stdout();
                    let _ = out.write_all(&p);
                    if !p.is_empty() && !p.ends_with(b"\n") {
                        let _ = out.write_all(b"\n");
                    }
                }
                "NOTFOUND" => fail(1, "No metadata"),
                _ => fail(2, &format!("Error getting metadata: {}", text(&p))),
            }
        }
        "mdata-execute" => execute(),
        other => {
            fail(3, &format!("{other}: call me as mdata-get, mdata-put, mdata-delete, mdata-list or mdata-execute"))
        }
    }
}
