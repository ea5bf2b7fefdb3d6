//! `GET /events`: the node's event log (`var/hull/events.jsonl`, which vmadm, zoneadmd and
//! the API's jobs append to) as newline-delimited JSON. Each event carries `generation`: the
//! byte offset just past its line in the log. Generations rise, are the same for every client
//! and survive a restart of the server; `?since=GEN` starts right after that event, so a client
//! that reconnects with the last generation it saw misses nothing and sees nothing twice.
//!
//! The stream reads the log itself at the client's pace (the log is the buffer): a slow client
//! is never skipped ahead. A `since` beyond the log's end (a log that was rotated or
//! truncated, or a number this node never gave) is refused with 410 `EventsGone`; if the log
//! shrinks under a connected client, it gets one `{"type": "gone"}` event and is disconnected.

use super::error::ApiError;
use axum::body::Bytes;
use axum::http::StatusCode;
use serde_json::Value;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// How often the log is looked at when there is nothing new.
const POLL: Duration = Duration::from_millis(20);

/// Where a stream starts: `since` checked against the log, or the log's end.
pub async fn start(path: &std::path::Path, since: Option<u64>) -> Result<u64, ApiError> {
    let len = match tokio::fs::metadata(path).await {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(ApiError::internal(format!("event log {}: {e}", path.display()))),
    };
    let Some(since) = since else { return Ok(len) };
    if since > len {
        return Err(ApiError::new(
            StatusCode::GONE,
            "EventsGone",
            format!(
                "generation {since} is past the event log's end ({len}): the log was rotated or truncated, or this \
                 node never gave that generation; read the state again and reconnect without since"
            ),
        ));
    }
    if since > 0 {
        // A generation is the end of a line: the byte before it is a newline.
        let mut f = tokio::fs::File::open(path).await.map_err(|e| ApiError::internal(e.to_string()))?;
        f.seek(SeekFrom::Start(since - 1)).await.map_err(|e| ApiError::internal(e.to_string()))?;
        let mut b = [0u8; 1];
        f.read_exact(&mut b).await.map_err(|e| ApiError::internal(e.to_string()))?;
        if b[0] != b'\n' {
            return Err(ApiError::bad_request("BadGeneration", format!("{since} is not a generation of this node")));
        }
    }
    Ok(since)
}

struct Tail {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    /// The log's offset of `buf`'s first byte.
    pos: u64,
    buf: Vec<u8>,
    done: bool,
}

impl Tail {
    /// The next event, with its generation, as one line of output.
    async fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        loop {
            if let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                self.pos += line.len() as u64;
                let Ok(Value::Object(mut ev)) = serde_json::from_slice::<Value>(&line) else { continue };
                ev.insert("generation".into(), Value::from(self.pos));
                let mut out = Value::Object(ev).to_string();
                out.push('\n');
                return Some(Bytes::from(out));
            }
            if self.file.is_none() {
                match tokio::fs::File::open(&self.path).await {
                    Ok(mut f) => {
                        let at = self.pos + self.buf.len() as u64;
                        if f.seek(SeekFrom::Start(at)).await.is_err() {
                            return self.gone();
                        }
                        self.file = Some(f);
                    }
                    Err(_) => {
                        tokio::time::sleep(POLL).await;
                        continue;
                    }
                }
            }
            let Some(f) = self.file.as_mut() else { continue };
            let mut chunk = vec![0u8; 64 * 1024];
            match f.read(&mut chunk).await {
                Ok(0) => {
                    // Nothing new; a log shorter than where we are was rotated under us.
                    let at = self.pos + self.buf.len() as u64;
                    match tokio::fs::metadata(&self.path).await {
                        Ok(m) if m.len() < at => return self.gone(),
                        Err(_) => return self.gone(),
                        _ => {}
                    }
                    tokio::time::sleep(POLL).await;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return self.gone(),
            }
        }
    }

    fn gone(&mut self) -> Option<Bytes> {
        self.done = true;
        let ev = serde_json::json!({
            "type": "gone",
            "generation": self.pos,
            "message": "the event log was rotated or truncated under this stream; read the state again and reconnect",
        });
        Some(Bytes::from(format!("{ev}\n")))
    }
}

/// The events after `since`, as they come, until the client goes away.
pub fn stream(
    path: PathBuf,
    since: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static {
    let tail = Tail { path, file: None, pos: since, buf: Vec::new(), done: false };
    futures_util::stream::unfold(tail, |mut t| async move { t.next().await.map(|b| (Ok(b), t)) })
}
