//! A small QMP client: the greeting, `qmp_capabilities`, then one command at a time.
//! Events that arrive between replies are kept for [`Qmp::events`].

use crate::{QemuError, Result};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    events: Vec<Value>,
    /// qemu's version from the greeting: (major, minor, micro).
    pub version: (u64, u64, u64),
}

fn err(op: &str, e: impl std::fmt::Display) -> QemuError {
    QemuError::Qmp(format!("{op}: {e}"))
}

impl Qmp {
    /// Connects, waiting up to `wait` for the socket to appear (qemu makes it as it starts).
    pub fn connect(path: &Path, wait: Duration) -> Result<Qmp> {
        Qmp::connect_with(&path.display().to_string(), wait, &|| UnixStream::connect(path))
    }

    /// Connects by `open` (a caller's way to reach the socket, such as one that follows no
    /// link), retried for up to `wait`; `what` names the socket in errors.
    pub fn connect_with(what: &str, wait: Duration, open: &dyn Fn() -> std::io::Result<UnixStream>) -> Result<Qmp> {
        let t = Instant::now();
        let stream = loop {
            match open() {
                Ok(s) => break s,
                Err(e) if t.elapsed() >= wait => return Err(err(&format!("connect {what}"), e)),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| err("timeout", e))?;
        let writer = stream.try_clone().map_err(|e| err("clone", e))?;
        let mut q = Qmp { reader: BufReader::new(stream), writer, events: Vec::new(), version: (0, 0, 0) };
        let greeting = q.read()?;
        let v = &greeting["QMP"]["version"]["qemu"];
        q.version =
            (v["major"].as_u64().unwrap_or(0), v["minor"].as_u64().unwrap_or(0), v["micro"].as_u64().unwrap_or(0));
        if greeting.get("QMP").is_none() {
            return Err(err("greeting", format!("not a QMP greeting: {greeting}")));
        }
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).map_err(|e| err("read", e))?;
        if n == 0 {
            return Err(err("read", "qemu closed the connection"));
        }
        serde_json::from_str(&line).map_err(|e| err("parse", format!("{e}: {line:?}")))
    }

    /// Runs a command; its `return`, or its `error` as an error.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let mut msg = json!({"execute": command});
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).map_err(|e| err(command, e))?;
        loop {
            let v = self.read()?;
            if v.get("event").is_some() {
                self.events.push(v);
                continue;
            }
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(QemuError::Qmp(format!(
                    "{command}: {}: {}",
                    e["class"].as_str().unwrap_or("Error"),
                    e["desc"].as_str().unwrap_or("")
                )));
            }
        }
    }

    /// The events seen so far (`POWERDOWN`, `SHUTDOWN`...), emptied.
    pub fn events(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.events)
    }
}
