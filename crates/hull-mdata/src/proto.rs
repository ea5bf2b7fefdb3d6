//! The wire protocol. A client sends lines. Version 1: `GET key`, `KEYS`, `NEGOTIATE V2`,
//! answered `SUCCESS\n<value, lines starting with '.' doubled>\n.\n`, `NOTFOUND\n` or
//! `FAILURE\n`. Version 2: after `NEGOTIATE V2` / `V2_OK`, each request is a frame
//! `V2 <len> <crc32> <reqid> <CODE> [base64 payload]\n`, where len and the CRC32 (IEEE,
//! eight lower-case hex digits) cover `<reqid> <CODE> [payload]`; each answer is a frame with
//! the same request id. PUT's payload is `base64(key) base64(value)`, base64 again.
//!
//! Where the specification is silent this follows smartos-live's agent.js: an empty line,
//! or GET/NEGOTIATE with no argument, is `invalid command\n`; PUT and DELETE exist only in
//! version 2. Where agent.js answers nothing (a V2 frame with a bad length or CRC), hull
//! answers a V2 `FAILURE` with the request id when it can read one, else `invalid command`,
//! so a client is never left waiting. A line longer than [`MAX_LINE`] is answered `FAILURE`
//! and its bytes dropped up to the next newline; the connection lives on.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// The longest request line taken: a PUT of a 512 KiB value, base64 twice, with room.
pub const MAX_LINE: usize = 1 << 20;

pub fn crc32(bytes: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(bytes))
}

/// A frame around `body` (`<reqid> <CODE> [payload]`).
pub fn frame(body: &str) -> String {
    format!("V2 {} {} {}\n", body.len(), crc32(body.as_bytes()), body)
}

/// The metadata a connection reads and writes: one VM's, with its rules.
pub trait Store {
    /// A key's value; None is NOTFOUND. Err is FAILURE with the message.
    fn get(&mut self, key: &str) -> Result<Option<String>, String>;
    /// The keys `KEYS` lists.
    fn keys(&mut self) -> Result<Vec<String>, String>;
    fn put(&mut self, key: &str, value: &str) -> Result<(), String>;
    fn delete(&mut self, key: &str) -> Result<(), String>;
}

/// One request as the client asked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Get(String),
    Keys,
    Put(String, String),
    Delete(String),
    Other(String),
}

/// What a request's answer says.
enum Outcome {
    Value(String),
    NotFound,
    Failure(Option<String>),
}

/// One connection's reader: bytes in, answers out. Requests may arrive split across reads
/// or several in one; each complete line is answered in order.
#[derive(Default)]
pub struct Session {
    buf: Vec<u8>,
    /// Dropping an over-long line's bytes until its newline.
    skipping: bool,
}

fn b64(s: &str) -> String {
    B64.encode(s.as_bytes())
}

fn unb64(s: &str) -> Option<String> {
    B64.decode(s.trim().as_bytes()).ok().and_then(|b| String::from_utf8(b).ok())
}

impl Session {
    pub fn new() -> Session {
        Session::default()
    }

    /// Takes bytes read from the client; returns what to write back.
    pub fn feed(&mut self, bytes: &[u8], store: &mut dyn Store) -> Vec<u8> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                if self.skipping {
                    self.skipping = false;
                    out.extend_from_slice(b"FAILURE\n");
                } else {
                    let line = std::mem::take(&mut self.buf);
                    out.extend_from_slice(answer(&line, store).as_bytes());
                }
                self.buf.clear();
                continue;
            }
            if self.skipping {
                continue;
            }
            if self.buf.len() >= MAX_LINE {
                self.skipping = true;
                self.buf = Vec::new();
                continue;
            }
            self.buf.push(b);
        }
        out
    }
}

/// The answer to one line (without its newline).
pub fn answer(line: &[u8], store: &mut dyn Store) -> String {
    let Ok(text) = std::str::from_utf8(line) else { return "invalid command\n".into() };
    let text = text.trim_end_matches(['\r', ' ', '\t']);
    let (cmd, arg) = match text.split_once(char::is_whitespace) {
        Some((c, a)) => (c, a.trim_start()),
        None => (text, ""),
    };
    if cmd.is_empty() {
        return "invalid command\n".into();
    }
    match cmd {
        "V2" => v2(arg, store),
        "NEGOTIATE" if arg.is_empty() => "invalid command\n".into(),
        "NEGOTIATE" => if arg == "V2" { "V2_OK\n" } else { "FAILURE\n" }.into(),
        "GET" if arg.trim().is_empty() => "invalid command\n".into(),
        "GET" => v1(run(Request::Get(arg.trim().to_string()), store)),
        "KEYS" => v1(run(Request::Keys, store)),
        _ => v1(run(Request::Other(cmd.to_string()), store)),
    }
}

fn run(req: Request, store: &mut dyn Store) -> Outcome {
    let done = |r: Result<(), String>| match r {
        Ok(()) => Outcome::Value(String::new()),
        Err(e) => Outcome::Failure(Some(e)),
    };
    match req {
        Request::Get(k) => match store.get(&k) {
            Ok(Some(v)) => Outcome::Value(v),
            Ok(None) => Outcome::NotFound,
            Err(e) => Outcome::Failure(Some(e)),
        },
        Request::Keys => match store.keys() {
            Ok(k) => Outcome::Value(k.join("\n")),
            Err(e) => Outcome::Failure(Some(e)),
        },
        Request::Put(k, v) => done(store.put(&k, &v)),
        Request::Delete(k) => done(store.delete(&k)),
        Request::Other(c) => Outcome::Failure(Some(format!("Unknown command {c}"))),
    }
}

/// A version 1 answer: the value with leading dots doubled, then a line of one dot.
fn v1(o: Outcome) -> String {
    match o {
        Outcome::Value(v) => {
            let stuffed: Vec<String> =
                v.split('\n').map(|l| if l.starts_with('.') { format!(".{l}") } else { l.to_string() }).collect();
            format!("SUCCESS\n{}\n.\n", stuffed.join("\n"))
        }
        Outcome::NotFound => "NOTFOUND\n".into(),
        Outcome::Failure(_) => "FAILURE\n".into(),
    }
}

/// A version 2 frame's answer; `frame` is what follows `V2 `.
fn v2(frame_text: &str, store: &mut dyn Store) -> String {
    let mut parts = frame_text.splitn(3, ' ');
    let (len, crc, body) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let reqid = body.split(' ').next().filter(|r| r.len() == 8 && r.bytes().all(|b| b.is_ascii_hexdigit()));
    let fail = |why: &str| match reqid {
        Some(r) => frame(&format!("{r} FAILURE {}", b64(why))),
        None => "invalid command\n".to_string(),
    };
    if len.parse::<usize>().ok() != Some(body.len()) || body.is_empty() {
        return fail("bad frame length");
    }
    if crc != crc32(body.as_bytes()) {
        return fail("bad frame checksum");
    }
    let Some(reqid) = reqid else { return "invalid command\n".into() };
    let rest = &body[reqid.len()..].trim_start();
    let (code, payload) = match rest.split_once(' ') {
        Some((c, p)) => (c, Some(p)),
        None => (*rest, None),
    };
    let arg = match payload {
        Some(p) => match unb64(p) {
            Some(a) => Some(a),
            None => return fail("the payload is not base64 of UTF-8"),
        },
        None => None,
    };
    let req = match (code, arg) {
        ("GET", Some(k)) if !k.trim().is_empty() => Request::Get(k.trim().to_string()),
        ("GET", _) => return fail("Invalid GET Request"),
        ("KEYS", _) => Request::Keys,
        ("DELETE", Some(k)) if !k.trim().is_empty() => Request::Delete(k.trim().to_string()),
        ("DELETE", _) => return fail("Invalid DELETE Request"),
        ("PUT", Some(kv)) => {
            let terms: Vec<&str> = kv.trim().split(' ').collect();
            let decoded = match terms.as_slice() {
                [k, v] => unb64(k).map(|k| k.trim().to_string()).zip(unb64(v)),
                _ => None,
            };
            match decoded {
                Some((k, v)) if !k.is_empty() => Request::Put(k, v),
                _ => return fail("Invalid PUT Request"),
            }
        }
        ("PUT", None) => return fail("Invalid PUT Request"),
        (other, _) => Request::Other(other.to_string()),
    };
    match run(req, store) {
        Outcome::Value(v) if v.is_empty() => frame(&format!("{reqid} SUCCESS")),
        Outcome::Value(v) => frame(&format!("{reqid} SUCCESS {}", b64(&v))),
        Outcome::NotFound => frame(&format!("{reqid} NOTFOUND")),
        Outcome::Failure(Some(m)) => frame(&format!("{reqid} FAILURE {}", b64(&m))),
        Outcome::Failure(None) => frame(&format!("{reqid} FAILURE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct Mem(BTreeMap<String, String>);

    impl Store for Mem {
        fn get(&mut self, key: &str) -> Result<Option<String>, String> {
            if key == "sdc:fail" {
                return Err("it failed".into());
            }
            Ok(self.0.get(key).cloned())
        }
        fn keys(&mut self) -> Result<Vec<String>, String> {
            Ok(self.0.keys().cloned().collect())
        }
        fn put(&mut self, key: &str, value: &str) -> Result<(), String> {
            if key.starts_with("sdc:") {
                return Err("Cannot update the \"sdc\" Namespace.".into());
            }
            self.0.insert(key.into(), value.into());
            Ok(())
        }
        fn delete(&mut self, key: &str) -> Result<(), String> {
            self.0.remove(key);
            Ok(())
        }
    }

    fn store() -> Mem {
        let mut m = Mem::default();
        m.0.insert("empty".into(), "[]".into());
        m.0.insert("dots".into(), ".one\ntwo\n.".into());
        m
    }

    fn req(reqid: &str, code: &str, payload: Option<&str>) -> String {
        match payload {
            Some(p) => frame(&format!("{reqid} {code} {}", b64(p))),
            None => frame(&format!("{reqid} {code}")),
        }
    }

    #[test]
    fn the_specification_s_example_frame_byte_for_byte() {
        // §4.4: a SUCCESS answer to a GET whose value is "[]".
        assert_eq!(frame("dc4fae17 SUCCESS W10="), "V2 21 265ae1d8 dc4fae17 SUCCESS W10=\n");
        let mut s = store();
        let out = answer(req("dc4fae17", "GET", Some("empty")).trim_end().as_bytes(), &mut s);
        assert_eq!(out, "V2 21 265ae1d8 dc4fae17 SUCCESS W10=\n");
    }

    #[test]
    fn negotiation_and_version_1() {
        let mut s = store();
        assert_eq!(answer(b"NEGOTIATE V2", &mut s), "V2_OK\n");
        assert_eq!(answer(b"NEGOTIATE V3", &mut s), "FAILURE\n");
        assert_eq!(answer(b"NEGOTIATE", &mut s), "invalid command\n");
        assert_eq!(answer(b"", &mut s), "invalid command\n");
        assert_eq!(answer(b"GET", &mut s), "invalid command\n");
        assert_eq!(answer(b"GET empty", &mut s), "SUCCESS\n[]\n.\n");
        // A line that starts with a dot is doubled; the terminator is a lone dot.
        assert_eq!(answer(b"GET dots", &mut s), "SUCCESS\n..one\ntwo\n..\n.\n");
        assert_eq!(answer(b"GET nope", &mut s), "NOTFOUND\n");
        assert_eq!(answer(b"GET sdc:fail", &mut s), "FAILURE\n");
        assert_eq!(answer(b"KEYS", &mut s), "SUCCESS\ndots\nempty\n.\n");
        // PUT and DELETE are version 2 only.
        assert_eq!(answer(b"PUT a b", &mut s), "FAILURE\n");
        assert_eq!(answer(b"DELETE empty", &mut s), "FAILURE\n");
        assert!(s.0.contains_key("empty"));
    }

    #[test]
    fn version_2_put_get_delete_keys() {
        let mut s = store();
        let kv = format!("{} {}", b64("user-script"), b64("#!/bin/sh\necho hi\n"));
        assert_eq!(answer(req("00000001", "PUT", Some(&kv)).trim_end().as_bytes(), &mut s), frame("00000001 SUCCESS"));
        assert_eq!(
            answer(req("00000002", "GET", Some("user-script")).trim_end().as_bytes(), &mut s),
            frame(&format!("00000002 SUCCESS {}", b64("#!/bin/sh\necho hi\n")))
        );
        assert_eq!(
            answer(req("00000003", "KEYS", None).trim_end().as_bytes(), &mut s),
            frame(&format!("00000003 SUCCESS {}", b64("dots\nempty\nuser-script")))
        );
        assert_eq!(
            answer(req("00000004", "DELETE", Some("user-script")).trim_end().as_bytes(), &mut s),
            frame("00000004 SUCCESS")
        );
        assert_eq!(
            answer(req("00000005", "GET", Some("user-script")).trim_end().as_bytes(), &mut s),
            frame("00000005 NOTFOUND")
        );
        let sdc = format!("{} {}", b64("sdc:uuid"), b64("x"));
        assert_eq!(
            answer(req("00000006", "PUT", Some(&sdc)).trim_end().as_bytes(), &mut s),
            frame(&format!("00000006 FAILURE {}", b64("Cannot update the \"sdc\" Namespace.")))
        );
        assert_eq!(
            answer(req("00000007", "FROB", None).trim_end().as_bytes(), &mut s),
            frame(&format!("00000007 FAILURE {}", b64("Unknown command FROB")))
        );
    }

    #[test]
    fn bad_frames_get_an_answer_and_the_session_goes_on() {
        let mut s = store();
        let good = req("0000abcd", "GET", Some("empty"));
        // A wrong CRC, a wrong length: FAILURE with the request id.
        let bad_crc = good.replacen(&crc32(b"x"), "00000000", 1).replace(&good[6..14], "00000000");
        let out = answer(bad_crc.trim_end().as_bytes(), &mut s);
        assert!(out.starts_with("V2 ") && out.contains("0000abcd FAILURE"), "{out}");
        let body = format!("0000abcd GET {}", b64("empty"));
        let bad_len = format!("V2 {} {} {body}", body.len() + 1, crc32(body.as_bytes()));
        assert!(answer(bad_len.as_bytes(), &mut s).contains("0000abcd FAILURE"));
        assert_eq!(answer(b"V2 3 zzzz abc", &mut s), "invalid command\n");
        assert_eq!(answer(&[0xff, 0xfe, b'G'], &mut s), "invalid command\n");
        // Split across reads, two in one read, an over-long line between: each answered.
        let mut sess = Session::new();
        let mut out = Vec::new();
        let (a, b) = good.split_at(10);
        out.extend(sess.feed(a.as_bytes(), &mut s));
        assert!(out.is_empty());
        out.extend(sess.feed(b.as_bytes(), &mut s));
        out.extend(sess.feed(&vec![b'x'; MAX_LINE + 10], &mut s));
        out.extend(sess.feed(format!("\nGET empty\n{good}").as_bytes(), &mut s));
        let text = String::from_utf8(out).expect("text");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], frame(&format!("0000abcd SUCCESS {}", b64("[]"))).trim_end());
        assert_eq!(lines[1], "FAILURE", "{text}");
        assert_eq!(&lines[2..5], ["SUCCESS", "[]", "."]);
        assert_eq!(lines[5], lines[0]);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_get_answers_and_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), 0..8)) {
            let mut s = store();
            let mut sess = Session::new();
            let mut newlines = 0;
            let mut out = Vec::new();
            for c in &chunks {
                newlines += c.iter().filter(|b| **b == b'\n').count();
                out.extend(sess.feed(c, &mut s));
            }
            // Every complete line gets at least one line of answer.
            proptest::prop_assert!(out.iter().filter(|b| **b == b'\n').count() >= newlines);
        }
    }
}
