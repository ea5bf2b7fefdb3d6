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

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn line(b: &Bytes) -> Value {
        serde_json::from_slice(b).expect("an event is JSON")
    }

    #[tokio::test]
    async fn generations_are_line_ends_and_since_resumes_after_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("events.jsonl");
        std::fs::write(&log, "{\"n\":1}\n{\"n\":2}\nnot json\n{\"n\":3}\n").expect("log");
        let all: Vec<Value> = stream(log.clone(), 0).take(3).map(|b| line(&b.expect("ok"))).collect().await;
        assert_eq!(all.iter().map(|e| e["n"].as_u64()).collect::<Vec<_>>(), [Some(1), Some(2), Some(3)]);
        assert_eq!(all[0]["generation"], 8);
        let g1 = all[0]["generation"].as_u64().expect("generation");
        assert_eq!(start(&log, Some(g1)).await.expect("a generation"), g1);
        let next: Vec<Value> = stream(log.clone(), g1).take(1).map(|b| line(&b.expect("ok"))).collect().await;
        assert_eq!(next[0]["n"], 2);
        // Not a line's end, and past the end: refused, differently.
        assert_eq!(start(&log, Some(g1 - 1)).await.expect_err("mid-line").code, "BadGeneration");
        assert_eq!(start(&log, Some(10_000)).await.expect_err("past the end").code, "EventsGone");
        // A line still being written is not sent half.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .and_then(|mut f| {
                use std::io::Write;
                f.write_all(b"{\"n\":4")
            })
            .expect("append");
        let end = std::fs::metadata(&log).expect("stat").len() - 6;
        let mut s = Box::pin(stream(log.clone(), end));
        let early = tokio::time::timeout(Duration::from_millis(200), s.next()).await;
        assert!(early.is_err(), "half a line was sent: {early:?}");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .and_then(|mut f| {
                use std::io::Write;
                f.write_all(b"}\n")
            })
            .expect("append");
        let ev = tokio::time::timeout(Duration::from_secs(5), s.next()).await.expect("in time").expect("an event");
        assert_eq!(line(&ev.expect("ok"))["n"], 4);
    }

    #[tokio::test]
    async fn a_log_that_shrinks_under_a_client_tells_it_and_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("events.jsonl");
        std::fs::write(&log, "{\"n\":1}\n{\"n\":2}\n").expect("log");
        let mut s = Box::pin(stream(log.clone(), 0));
        assert_eq!(line(&s.next().await.expect("one").expect("ok"))["n"], 1);
        assert_eq!(line(&s.next().await.expect("two").expect("ok"))["n"], 2);
        std::fs::write(&log, "").expect("truncate");
        let gone = tokio::time::timeout(Duration::from_secs(5), s.next()).await.expect("in time").expect("told");
        assert_eq!(line(&gone.expect("ok"))["type"], "gone");
        assert!(s.next().await.is_none(), "the stream went on after telling the client");
    }
}
