//! The stream that `vmadm send` writes and `vmadm receive` reads: its frames and digest,
//! apart from what is done with them (hull-vm's send), so that it can be fuzzed alone.
//!
//! ```text
//! "HULLVM\r\n" u32 version          (big-endian, as every length here)
//! frame*                            u8 kind, u32 length, payload
//!   'H' JSON Header                 the VM's uuid, brand, config and datasets
//!   'P' JSON Part                   one snapshot of one dataset follows...
//!   'D' bytes                       ...as a btrfs send stream, in frames of at most 1 MiB
//!   'E' (empty)                     ...until this
//!   'Z' 32 bytes                    SHA-256 of every byte before this frame
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Digest;
use std::io::{Read, Write};

pub const MAGIC: &[u8; 8] = b"HULLVM\r\n";
pub const VERSION: u32 = 1;
const DATA_FRAME: usize = 1 << 20;
const MAX_JSON: u32 = 16 << 20;

/// Why a stream is not taken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct StreamError(pub String);

pub type Result<T, E = StreamError> = std::result::Result<T, E>;

/// What a stream says of its VM before any data.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub uuid: String,
    pub brand: String,
    /// The datasets, the VM's own first (`<uuid>`, then `<uuid>-diskN`).
    pub datasets: Vec<String>,
    /// The VM's config as the sender had it (the dataset's own `config/vm.json` is what the
    /// receiver keeps; this is to check before anything is received).
    pub config: Map<String, Value>,
}

/// One snapshot of one dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    pub dataset: usize,
    pub snapshot: String,
    /// The snapshot it is incremental on, received before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// When the sender took the snapshot (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
}

fn bad(what: impl Into<String>) -> StreamError {
    StreamError(what.into())
}

/// Writes frames and digests them.
pub struct FrameWriter<'a> {
    out: &'a mut dyn Write,
    sha: sha2::Sha256,
    pub bytes: u64,
    data: Vec<u8>,
}

impl<'a> FrameWriter<'a> {
    pub fn new(out: &'a mut dyn Write) -> std::io::Result<FrameWriter<'a>> {
        let mut w = FrameWriter { out, sha: sha2::Sha256::new(), bytes: 0, data: Vec::new() };
        w.raw(MAGIC)?;
        w.raw(&VERSION.to_be_bytes())?;
        Ok(w)
    }

    fn raw(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.out.write_all(b)?;
        self.sha.update(b);
        self.bytes += b.len() as u64;
        Ok(())
    }

    pub fn frame(&mut self, kind: u8, payload: &[u8]) -> std::io::Result<()> {
        let len = u32::try_from(payload.len()).map_err(|_| std::io::Error::other("frame too large"))?;
        self.raw(&[kind])?;
        self.raw(&len.to_be_bytes())?;
        self.raw(payload)
    }

    pub fn json(&mut self, kind: u8, v: &impl Serialize) -> std::io::Result<()> {
        self.frame(kind, &serde_json::to_vec(v).map_err(std::io::Error::other)?)
    }

    pub fn flush_data(&mut self) -> std::io::Result<()> {
        if !self.data.is_empty() {
            let d = std::mem::take(&mut self.data);
            self.frame(b'D', &d)?;
        }
        Ok(())
    }

    /// The trailer; the stream is whole after it.
    pub fn finish(mut self) -> std::io::Result<u64> {
        let sum = self.sha.clone().finalize();
        self.frame(b'Z', &sum)?;
        self.out.flush()?;
        Ok(self.bytes)
    }
}

/// What a part's btrfs stream is written into: data frames.
impl Write for FrameWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.data.extend_from_slice(buf);
        if self.data.len() >= DATA_FRAME {
            let rest = self.data.split_off(DATA_FRAME);
            self.flush_data()?;
            self.data = rest;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.flush_data()
    }
}

/// Reads frames and digests them.
pub struct FrameReader<'a> {
    inp: &'a mut dyn Read,
    sha: sha2::Sha256,
    pub bytes: u64,
    /// Data of the part being read.
    pending: Vec<u8>,
    at: usize,
    part_done: bool,
}

impl<'a> FrameReader<'a> {
    pub fn new(inp: &'a mut dyn Read) -> Result<FrameReader<'a>> {
        let mut r =
            FrameReader { inp, sha: sha2::Sha256::new(), bytes: 0, pending: Vec::new(), at: 0, part_done: true };
        let mut head = [0u8; 12];
        r.exact(&mut head).map_err(|_| bad("not a hull VM stream: it ends before its header"))?;
        if &head[..8] != MAGIC {
            return Err(bad("not a hull VM stream (vmadm send writes one)"));
        }
        let v = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
        if v != VERSION {
            return Err(bad(format!("a stream of version {v}; this node reads version {VERSION}")));
        }
        Ok(r)
    }

    fn exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        self.inp.read_exact(buf)?;
        self.sha.update(&*buf);
        self.bytes += buf.len() as u64;
        Ok(())
    }

    /// The next frame's kind and length.
    fn head(&mut self) -> Result<(u8, u32)> {
        let mut h = [0u8; 5];
        self.exact(&mut h).map_err(|_| bad("the stream is cut short"))?;
        Ok((h[0], u32::from_be_bytes([h[1], h[2], h[3], h[4]])))
    }

    fn body(&mut self, len: u32) -> Result<Vec<u8>> {
        let mut b = vec![0u8; len as usize];
        self.exact(&mut b).map_err(|_| bad("the stream is cut short"))?;
        Ok(b)
    }

    fn json<T: serde::de::DeserializeOwned>(&mut self, len: u32, what: &str) -> Result<T> {
        if len > MAX_JSON {
            return Err(bad(format!("a {what} of {len} bytes")));
        }
        let b = self.body(len)?;
        serde_json::from_slice(&b).map_err(|e| bad(format!("its {what}: {e}")))
    }

    pub fn header(&mut self) -> Result<Header> {
        match self.head()? {
            (b'H', len) => self.json(len, "header"),
            (k, _) => Err(bad(format!("it starts with a frame {:?}, not its header", k as char))),
        }
    }

    /// The next part, or `None` at the trailer (checked).
    pub fn next_part(&mut self) -> Result<Option<Part>> {
        if !self.part_done {
            return Err(bad("a part was not read to its end"));
        }
        let sum = self.sha.clone().finalize();
        match self.head()? {
            (b'P', len) => {
                self.part_done = false;
                Ok(Some(self.json(len, "part")?))
            }
            (b'Z', 32) => {
                let mut got = [0u8; 32];
                self.inp.read_exact(&mut got).map_err(|_| bad("the stream is cut short"))?;
                if got[..] != sum[..] {
                    return Err(bad("its digest does not match: the stream was corrupted"));
                }
                let mut more = [0u8; 1];
                match self.inp.read(&mut more) {
                    Ok(0) => Ok(None),
                    _ => Err(bad("bytes after the stream's end")),
                }
            }
            (k, _) => Err(bad(format!("a frame {:?} where a part or the end was due", k as char))),
        }
    }
}

/// A part's btrfs stream, read from its data frames.
impl Read for FrameReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.pending.len() {
            if self.part_done {
                return Ok(0);
            }
            let e =
                |v: StreamError| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("the VM stream: {v}"));
            match self.head().map_err(e)? {
                (b'D', len) if len as usize <= DATA_FRAME => {
                    self.pending = self.body(len).map_err(e)?;
                    self.at = 0;
                }
                (b'E', 0) => self.part_done = true,
                (k, len) => {
                    return Err(e(bad(format!("a frame {:?} of {len} bytes inside a part", k as char))));
                }
            }
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
