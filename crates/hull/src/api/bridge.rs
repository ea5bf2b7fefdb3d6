//! Bodies between the async server and blocking work (vmadm, imgadm, btrfs), through
//! tokio-util's bridges: a response that a blocking writer makes as the client reads it, and
//! a request body that a blocking reader reads as it arrives. Both hold a bounded buffer,
//! so the slower side sets the pace.

use axum::body::Body;
use futures_util::TryStreamExt;
use std::io::Write;
use tokio_util::io::{ReaderStream, StreamReader, SyncIoBridge};

const BUFFER: usize = 256 << 10;

/// A response body that `write` makes on a blocking thread. A client that goes away makes
/// the writer's next write fail (and so stop); a writer that fails ends the body short of
/// its length, which the client sees as a broken transfer.
pub(super) fn streamed_body(write: impl FnOnce(&mut dyn Write) -> Result<(), String> + Send + 'static) -> Body {
    let (tx, rx) = tokio::io::duplex(BUFFER);
    let mut w = SyncIoBridge::new(tx);
    tokio::task::spawn_blocking(move || {
        let res = write(&mut w).and_then(|()| w.flush().map_err(|e| e.to_string()));
        if let Err(e) = res {
            tracing::warn!("a streamed answer stopped: {e}");
        }
        let _ = w.shutdown();
    });
    Body::from_stream(ReaderStream::with_capacity(rx, BUFFER))
}

/// A request body as a blocking reader (for `spawn_blocking`); a body that breaks off is a
/// read error.
pub(super) fn body_reader(body: Body) -> impl std::io::Read + Send + 'static {
    let chunks = body.into_data_stream().map_err(|e| std::io::Error::other(format!("the stream broke off: {e}")));
    SyncIoBridge::new(StreamReader::new(chunks))
}
