//! svc.startd's control socket: one JSON request per line, one JSON response per line.

use crate::{Result, SvcError};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Enable {
        fmri: String,
        temporary: bool,
    },
    Disable {
        fmri: String,
        temporary: bool,
    },
    Restart {
        fmri: String,
    },
    Refresh {
        fmri: String,
    },
    Clear {
        fmri: String,
    },
    Mark {
        fmri: String,
        state: String,
        temporary: bool,
    },
    /// Every instance's state.
    Status,
    /// The repository changed (svccfg): read it again.
    Reload,
    /// Stop every instance, in dependency order, and exit.
    Shutdown,
}

/// One instance as the daemon sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct InstStatus {
    pub fmri: String,
    pub state: String,
    /// The state being moved to, or `-`.
    pub next_state: String,
    /// Why it is in this state.
    pub aux: String,
    pub stime: i64,
    /// The effective enabled flag, and whether a temporary override set it.
    pub enabled: bool,
    pub temporary: bool,
    pub pids: Vec<i32>,
    pub contract: String,
    pub log: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstStatus>,
}

/// Sends one request and reads its response.
pub fn call(socket: &Path, req: &Request) -> Result<Response> {
    let down = |e: std::io::Error| SvcError::Daemon(format!("not reachable at {}: {e}", socket.display()));
    let mut s = UnixStream::connect(socket).map_err(down)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30))).map_err(down)?;
    let mut line = serde_json::to_string(req).map_err(|e| SvcError::Daemon(e.to_string()))?;
    line.push('\n');
    // A daemon that refuses the caller answers and closes before reading the request: the
    // write then fails with EPIPE, and the answer is still there to read.
    let sent = s.write_all(line.as_bytes());
    let mut reply = String::new();
    match BufReader::new(&s).read_line(&mut reply) {
        Ok(n) if n > 0 => {}
        Ok(_) => return Err(down(sent.err().unwrap_or_else(|| std::io::ErrorKind::UnexpectedEof.into()))),
        Err(e) => return Err(down(sent.err().unwrap_or(e))),
    }
    let r: Response =
        serde_json::from_str(&reply).map_err(|e| SvcError::Daemon(format!("bad reply {reply:?}: {e}")))?;
    match (&r.ok, &r.error) {
        (false, Some(e)) => Err(SvcError::Daemon(e.clone())),
        _ => Ok(r),
    }
}
