//! mdata-get, mdata-put, mdata-delete, mdata-list: SmartOS's in-zone metadata tools, one
//! program chosen by its name, speaking protocol version 2 to `/.zonecontrol/metadata.sock`.
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
        other => fail(3, &format!("{other}: call me as mdata-get, mdata-put, mdata-delete or mdata-list")),
    }
}
