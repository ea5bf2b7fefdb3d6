//! Moving a running zone to another node, in Triton RFD 34's shape, driven from the source:
//!
//! - `begin`: the target reserves the VM's uuid and datasets (`POST /migrations?action=begin`
//!   on its API, with the stream header).
//! - `sync`: a transfer snapshot of each dataset (`xfer-N`), sent as a stream incremental on
//!   the last one the target has (the first sends everything, the VM's own snapshots too),
//!   while the zone runs (`PUT /migrations/UUID/stream`). Repeated until the delta is small.
//! - `switch`: the zone stops here, the last delta goes, the target makes the VM (same
//!   uuid, MACs and addresses; link protection comes up there as it starts) and starts it;
//!   the VM here is marked `migrated` and never starts again.
//! - `abort`, at any phase: the target drops what it received, the transfer snapshots here
//!   go, and a zone that switch stopped starts again here.
//!
//! The source keeps where a migration stands in `var/hull/migrations/out/UUID.json`; the
//! target keeps its reservation in `var/hull/migrations/in/UUID.json` (so that the repair
//! every vmadm command runs leaves its staging datasets alone). The target is reached over
//! TLS with a client certificate it signed, kept per target by `hull peer add`.

use crate::Failure;
use hull_img::SourceTls;
use hull_storage::Node;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Stop syncing once a delta is under this many bytes.
pub const SMALL_DELTA: u64 = 4 << 20;
/// Or after this many syncs.
pub const MAX_SYNCS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Vm(#[from] hull_vm::VmError),
    #[error(transparent)]
    Img(#[from] hull_img::ImgError),
    #[error("VM {vm}: {what} on the target {url}: {reason}")]
    Target { vm: String, url: String, what: String, reason: String },
    #[error("VM {0} is not being migrated from this node")]
    NotMigrating(String),
    #[error("VM {vm} is being migrated to {url} already (abort it first)")]
    Migrating { vm: String, url: String },
    #[error("VM {vm}: {what} before {needs}")]
    Order { vm: String, what: &'static str, needs: &'static str },
    #[error("no peer {0}: hull peer add URL --cert --key --ca first")]
    NoPeer(String),
    #[error("VM {0}: another phase of its migration is running")]
    Busy(String),
    #[error(transparent)]
    Storage(#[from] hull_storage::StorageError),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<MigrateError> for Failure {
    fn from(e: MigrateError) -> Failure {
        Failure::new(1, crate::chain(&e))
    }
}

type Result<T, E = MigrateError> = std::result::Result<T, E>;

fn io<'a>(what: &'static str, path: &'a std::path::Path) -> impl FnOnce(std::io::Error) -> MigrateError + 'a {
    move |source| MigrateError::Io { what, path: path.to_path_buf(), source }
}

/// A node this one sends VMs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    pub url: String,
    pub tls: SourceTls,
}

fn peers_dir(node: &Node) -> PathBuf {
    node.root().join("etc/hull/peers")
}

fn peer_dir(node: &Node, url: &str) -> PathBuf {
    let d = ring::digest::digest(&ring::digest::SHA256, url.as_bytes());
    peers_dir(node).join(d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Keeps a peer's URL and the client certificate it signed for this node (copied, root's
/// only); tried once before it is kept.
pub fn add_peer(node: &Node, url: &str, tls: &SourceTls) -> Result<Peer> {
    let url = hull_img::source::check_url(url)?;
    if !url.starts_with("https://") {
        return Err(MigrateError::Img(hull_img::ImgError::BadSourceUrl {
            url,
            reason: "a peer is reached over https://".into(),
        }));
    }
    hull_img::source::agent(&url, Some(tls), false)?;
    let dir = peer_dir(node, &url);
    let kept = tls.keep_in(&dir)?;
    let peer = Peer { url, tls: kept };
    let p = dir.join("peer.json");
    hull_exec::write_atomic(&p, &serde_json::to_vec_pretty(&peer).unwrap_or_default()).map_err(io("write", &p))?;
    Ok(peer)
}

pub fn peers(node: &Node) -> Vec<Peer> {
    let mut out: Vec<Peer> = std::fs::read_dir(peers_dir(node))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| std::fs::read(e.path().join("peer.json")).ok())
                .filter_map(|b| serde_json::from_slice(&b).ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.url.cmp(&b.url));
    out
}

pub fn remove_peer(node: &Node, url: &str) -> Result<bool> {
    let dir = peer_dir(node, url.trim_end_matches('/'));
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io("remove", &dir)(e)),
    }
}

fn peer(node: &Node, url: &str) -> Result<Peer> {
    let url = url.trim_end_matches('/');
    peers(node).into_iter().find(|p| p.url == url).ok_or_else(|| MigrateError::NoPeer(url.to_string()))
}

/// Where an outgoing migration stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outgoing {
    pub uuid: String,
    pub target: String,
    /// The datasets, as the target reserved them.
    pub datasets: Vec<String>,
    /// The last transfer snapshot the target has (0: none yet).
    pub synced: u64,
    /// Switch stopped the zone (abort starts it again).
    #[serde(default)]
    pub stopped: bool,
}

/// What one phase moved.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Moved {
    pub bytes: u64,
    pub secs: f64,
    /// Switch: from the zone stopped here to running there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
    /// Switch: how long the zone took to stop here (its own shutdown, before the downtime).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_ms: Option<u64>,
}

/// Bytes so far, for a phase's progress.
pub type Progress<'a> = &'a (dyn Fn(&str, u64) + Sync);

/// One node's outgoing migrations.
pub struct Migrations {
    node: Node,
    exe: PathBuf,
}

fn out_path(node: &Node, uuid: &str) -> PathBuf {
    node.var_dir().join("migrations/out").join(format!("{uuid}.json"))
}

/// The target's record of a reservation.
pub fn in_path(node: &Node, uuid: &str) -> PathBuf {
    hull_vm::send::reservation_path(node, uuid)
}

impl Migrations {
    pub fn new(node: &Node, exe: PathBuf) -> Migrations {
        Migrations { node: node.clone(), exe }
    }

    /// One phase of a VM's migration at a time (the CLI and the API may both ask).
    fn phase_lock(&self, uuid: &str) -> Result<hull_storage::lock::LockGuard> {
        hull_storage::lock::try_lock(&self.node.lock_path(&format!("migrate.{uuid}")))?
            .ok_or_else(|| MigrateError::Busy(uuid.into()))
    }

    fn vmadm(&self) -> Result<hull_vm::Vmadm> {
        Ok(hull_vm::Vmadm::open(&self.node, self.exe.clone())?)
    }

    pub fn get(&self, uuid: &str) -> Result<Option<Outgoing>> {
        let p = out_path(&self.node, uuid);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b).map_err(|e| io("read", &p)(std::io::Error::other(e)))?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", &p)(e)),
        }
    }

    fn save(&self, o: &Outgoing) -> Result<()> {
        let p = out_path(&self.node, &o.uuid);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(io("create", d))?;
        }
        hull_exec::write_atomic(&p, &serde_json::to_vec_pretty(o).unwrap_or_default()).map_err(io("write", &p))
    }

    fn forget(&self, uuid: &str) {
        let _ = std::fs::remove_file(out_path(&self.node, uuid));
    }

    fn event(&self, uuid: &str, what: Value) {
        hull_zone::events::emit(&self.node.var_dir(), "migrate", uuid, vec![what]);
    }

    /// The target's agent and URL, and the error of `what` on it.
    fn target(
        &self,
        o: &Outgoing,
        what: String,
    ) -> Result<(ureq::Agent, String, impl Fn(String) -> MigrateError + use<>)> {
        let p = peer(&self.node, &o.target)?;
        let agent = hull_img::source::agent(&p.url, Some(&p.tls), true)?;
        let (vm, url) = (o.uuid.clone(), p.url.clone());
        let fail =
            move |reason: String| MigrateError::Target { vm: vm.clone(), url: url.clone(), what: what.clone(), reason };
        Ok((agent, p.url, fail))
    }

    /// A call to the target; its answer's JSON on a 2xx.
    fn call(&self, o: &Outgoing, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<Value> {
        let (agent, base, fail) = self.target(o, format!("{method} {path}"))?;
        let url = format!("{base}{path}");
        let resp = match (method, body) {
            ("POST", Some(b)) => agent.post(&url).header("content-type", "application/json").send(&b[..]),
            ("POST", None) => agent.post(&url).send_empty(),
            ("DELETE", _) => agent.delete(&url).call(),
            _ => return Err(fail("no such call".into())),
        }
        .map_err(|e| fail(e.to_string()))?;
        answer(resp).map_err(fail)
    }

    /// `begin`: the target reserves the VM.
    pub fn begin(&self, uuid: &str, target: &str) -> Result<Outgoing> {
        let _phase = self.phase_lock(uuid)?;
        if let Some(o) = self.get(uuid)? {
            return Err(MigrateError::Migrating { vm: uuid.into(), url: o.target });
        }
        let target = peer(&self.node, target)?.url;
        let vm = self.vmadm()?;
        let cfg = vm.load(uuid)?;
        if cfg.contains_key("migrated") {
            return Err(
                hull_vm::VmError::Refused { vm: uuid.into(), reason: "it was migrated away already".into() }.into()
            );
        }
        self.refuse_running_hvm(&vm, uuid, &cfg)?;
        let header = vm.stream_header(uuid)?;
        let o = Outgoing { uuid: uuid.into(), target, datasets: header.datasets.clone(), synced: 0, stopped: false };
        self.call(&o, "POST", "/migrations?action=begin", Some(serde_json::to_vec(&header).unwrap_or_default()))?;
        self.save(&o)?;
        self.event(uuid, json!({"migration": "begin", "target": o.target}));
        Ok(o)
    }

    /// A KVM guest's disk copied while it runs is no consistent disk: such VMs move stopped.
    fn refuse_running_hvm(&self, vm: &hull_vm::Vmadm, uuid: &str, cfg: &serde_json::Map<String, Value>) -> Result<()> {
        if hull_spec::Brand::of(cfg).is_hvm() && vm.state(uuid, cfg).state.is_running() {
            return Err(hull_vm::VmError::Refused {
                vm: uuid.into(),
                reason: "a KVM VM migrates stopped (its running disks are not consistent); stop it first".into(),
            }
            .into());
        }
        Ok(())
    }

    /// `sync`: sends what changed since the last sync (everything, the first time).
    pub fn sync(&self, uuid: &str, progress: Progress) -> Result<Moved> {
        let _phase = self.phase_lock(uuid)?;
        self.sync_locked(uuid, progress)
    }

    fn sync_locked(&self, uuid: &str, progress: Progress) -> Result<Moved> {
        let mut o = self.get(uuid)?.ok_or_else(|| MigrateError::NotMigrating(uuid.into()))?;
        let vm = self.vmadm()?;
        self.refuse_running_hvm(&vm, uuid, &vm.load(uuid)?)?;
        let n = o.synced + 1;
        // A sync that died (its process killed) may have left its snapshots.
        let pool = vm.pool()?;
        drop_xfer(pool, &o.datasets, n);
        let t0 = Instant::now();
        let snaps = vm.transfer_snapshots(uuid, n)?;
        tracing::debug!(vm = %uuid, ms = t0.elapsed().as_millis() as u64, "sync: transfer snapshots taken");
        let xfer = format!("{}{n}", hull_vm::send::XFER_PREFIX);
        let parts = if o.synced == 0 {
            vm.whole_parts(uuid, &xfer)?
        } else {
            let last = format!("{}{}", hull_vm::send::XFER_PREFIX, o.synced);
            (0..snaps.len())
                .map(|i| hull_vm::send::Part {
                    dataset: i,
                    snapshot: xfer.clone(),
                    parent: Some(last.clone()),
                    created: None,
                })
                .collect()
        };
        let started = Instant::now();
        let sent = self.put_stream(&o, &parts, progress);
        tracing::debug!(vm = %uuid, ms = t0.elapsed().as_millis() as u64, "sync: stream sent and applied");
        let bytes = match sent {
            Ok(b) => b,
            Err(e) => {
                for s in &snaps {
                    let _ = pool.destroy_snapshot(s);
                }
                self.event(uuid, json!({"migration": "sync", "error": crate::chain(&e)}));
                return Err(e);
            }
        };
        // The target has xfer-N now: the one before is no parent any more.
        if o.synced > 0 {
            drop_xfer(pool, &o.datasets, o.synced);
        }
        o.synced = n;
        self.save(&o)?;
        let secs = started.elapsed().as_secs_f64();
        self.event(uuid, json!({"migration": "sync", "bytes": bytes, "secs": secs, "sync": n}));
        Ok(Moved { bytes, secs, downtime_ms: None, stop_ms: None })
    }

    /// Streams `parts` to the target as they are made (a pipe between `btrfs send` and the
    /// request's body, no copy on disk).
    fn put_stream(&self, o: &Outgoing, parts: &[hull_vm::send::Part], progress: Progress) -> Result<u64> {
        let path = format!("/migrations/{}/stream", o.uuid);
        let (agent, base, fail) = self.target(o, format!("PUT {path}"))?;
        let (mut rx, tx) = std::io::pipe().map_err(|e| fail(format!("a pipe: {e}")))?;
        // 1 MiB in the pipe, not 64 KiB: fewer switches between the stream's writer and
        // the request's sender.
        let _ = nix::fcntl::fcntl(&tx, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
        let (node, exe, uuid, parts) = (self.node.clone(), self.exe.clone(), o.uuid.clone(), parts.to_vec());
        std::thread::scope(|s| {
            let writer = s.spawn(move || -> Result<u64> {
                let mut w = Counting { inner: tx, n: 0, progress, last: Instant::now() };
                let vm = hull_vm::Vmadm::open(&node, exe)?;
                let n = vm.write_stream(&uuid, &parts, &mut w)?;
                Ok(n)
            });
            let resp = agent.put(format!("{base}{path}")).send(ureq::SendBody::from_reader(&mut rx));
            drop(rx);
            let wrote = writer.join().unwrap_or_else(|_| Err(fail("the stream's writer panicked".into())));
            let resp = resp.map_err(|e| fail(e.to_string()))?;
            answer(resp).map_err(fail)?;
            wrote
        })
    }

    /// `switch`: stops the zone here, sends the last delta, and has the target make and
    /// start it. On failure the zone runs here again.
    pub fn switch(&self, uuid: &str, progress: Progress) -> Result<Moved> {
        let _phase = self.phase_lock(uuid)?;
        let mut o = self.get(uuid)?.ok_or_else(|| MigrateError::NotMigrating(uuid.into()))?;
        if o.synced == 0 {
            return Err(MigrateError::Order { vm: uuid.into(), what: "switch", needs: "a first sync" });
        }
        let vm = self.vmadm()?;
        let cfg = vm.load(uuid)?;
        let was_running = vm.state(uuid, &cfg).state.is_running();
        let stopping = Instant::now();
        if was_running {
            vm.stop(uuid, false, Duration::from_secs(30))?;
            o.stopped = true;
            self.save(&o)?;
        }
        let stop_ms = u64::try_from(stopping.elapsed().as_millis()).unwrap_or(u64::MAX);
        // Downtime runs from here: the zone is stopped.
        let stop = Instant::now();
        tracing::debug!(vm = %uuid, ms = stop_ms, "switch: stopped here");
        let done = self.sync_locked(uuid, progress).and_then(|m| {
            tracing::debug!(vm = %uuid, ms = stop.elapsed().as_millis() as u64, "switch: last delta sent");
            let q = if was_running { "?action=switch&start=true" } else { "?action=switch" };
            let o = self.get(uuid)?.unwrap_or(o.clone());
            self.call(&o, "POST", &format!("/migrations/{uuid}{q}"), None)?;
            tracing::debug!(vm = %uuid, ms = stop.elapsed().as_millis() as u64, "switch: running there");
            Ok(m)
        });
        let moved = match done {
            Ok(m) => m,
            Err(e) => {
                if was_running && let Err(e2) = vm.start(uuid) {
                    tracing::error!(vm = %uuid, "switch failed, and the zone did not start here again: {e2}");
                }
                if let Ok(Some(mut o)) = self.get(uuid) {
                    o.stopped = false;
                    let _ = self.save(&o);
                }
                self.event(uuid, json!({"migration": "switch", "error": crate::chain(&e)}));
                return Err(e);
            }
        };
        let downtime = stop.elapsed();
        vm.mark_migrated(uuid, &o.target)?;
        self.drop_transfer_snapshots(&vm, &o);
        self.forget(uuid);
        let ms = u64::try_from(downtime.as_millis()).unwrap_or(u64::MAX);
        self.event(uuid, json!({"migration": "switch", "target": o.target, "downtime_ms": ms}));
        Ok(Moved { downtime_ms: Some(ms), stop_ms: Some(stop_ms), ..moved })
    }

    fn drop_transfer_snapshots(&self, vm: &hull_vm::Vmadm, o: &Outgoing) {
        let Ok(pool) = vm.pool() else { return };
        let Ok(all) = pool.list() else { return };
        for d in &o.datasets {
            let prefix = format!("{d}@{}", hull_vm::send::XFER_PREFIX);
            for s in all.iter().filter(|i| i.name.starts_with(&prefix)) {
                if let Ok(s) = hull_storage::SnapshotName::parse(&s.name) {
                    let _ = pool.destroy_snapshot(&s);
                }
            }
        }
    }

    /// `abort`: back to the zone here, running if it ran; the target forgets the VM.
    pub fn abort(&self, uuid: &str) -> Result<()> {
        let _phase = self.phase_lock(uuid)?;
        let o = self.get(uuid)?.ok_or_else(|| MigrateError::NotMigrating(uuid.into()))?;
        let vm = self.vmadm()?;
        let told = self.call(&o, "DELETE", &format!("/migrations/{uuid}"), None);
        self.drop_transfer_snapshots(&vm, &o);
        if o.stopped {
            let cfg = vm.load(uuid)?;
            if !vm.state(uuid, &cfg).state.is_running() {
                vm.start(uuid)?;
            }
        }
        self.forget(uuid);
        self.event(uuid, json!({"migration": "abort"}));
        if let Err(e) = told {
            // Here is whole again; what the target keeps, its own abort (or delete) removes.
            tracing::warn!(vm = %uuid, "the target did not take the abort: {e}");
        }
        Ok(())
    }
}

/// Destroys transfer snapshot `xfer-N` of each dataset, where it is.
fn drop_xfer(pool: &dyn hull_storage::Pool, datasets: &[String], n: u64) {
    for d in datasets {
        let name = format!("{d}@{}{n}", hull_vm::send::XFER_PREFIX);
        if let Ok(s) = hull_storage::SnapshotName::parse(&name) {
            let _ = pool.destroy_snapshot(&s);
        }
    }
}

/// A 2xx answer's JSON; otherwise the error the other side said.
fn answer(resp: ureq::http::Response<ureq::Body>) -> std::result::Result<Value, String> {
    let status = resp.status().as_u16();
    let text = resp.into_body().with_config().limit(1 << 20).read_to_string().unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        Ok(v)
    } else {
        let msg = v.get("message").and_then(Value::as_str).map(str::to_string).unwrap_or(text);
        Err(format!("HTTP {status}: {msg}"))
    }
}

/// Counts what goes through to the pipe and reports it now and then.
struct Counting<'a, W: std::io::Write> {
    inner: W,
    n: u64,
    progress: Progress<'a>,
    last: Instant,
}

impl<W: std::io::Write> std::io::Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        if self.last.elapsed() > Duration::from_millis(200) {
            (self.progress)("sync", self.n);
            self.last = Instant::now();
        }
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `hull migrate`: moves a VM to another node.
#[derive(clap::Args)]
pub struct MigrateArgs {
    /// The VM.
    pub uuid: String,
    /// The target node's API, a peer of this node (`hull peer add`); begin needs it.
    #[arg(long)]
    pub to: Option<String>,
    /// Run this phase only; without it: begin, sync until the delta is small, switch
    /// (an abort if any of them fails).
    #[arg(long, value_parser = ["begin", "sync", "switch", "abort"])]
    pub phase: Option<String>,
    /// One JSON line per phase.
    #[arg(short = 'j')]
    pub json: bool,
}

/// `hull peer`: nodes this one migrates VMs to, with the certificate each signed for it.
#[derive(clap::Subcommand)]
pub enum PeerCmd {
    /// Add a peer: its API's URL, a client certificate it signed for this node (`hull api
    /// trust add` there), its key, and the peer's CA (`hull api ca` there).
    Add {
        url: String,
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        ca: PathBuf,
    },
    /// List the peers.
    List,
    /// Forget a peer.
    Remove { url: String },
}

pub fn peer_cmd(node: &Node, cmd: PeerCmd) -> crate::CmdResult {
    match cmd {
        PeerCmd::Add { url, cert, key, ca } => {
            let p = add_peer(node, &url, &SourceTls { cert, key, ca })?;
            println!("Added peer {}", p.url);
        }
        PeerCmd::List => {
            for p in peers(node) {
                println!("{}", p.url);
            }
        }
        PeerCmd::Remove { url } => {
            if !remove_peer(node, &url)? {
                return Err(Failure::new(1, format!("no peer {url}")));
            }
            println!("Removed peer {url}");
        }
    }
    Ok(())
}

fn report(json: bool, phase: &str, uuid: &str, m: &Moved) {
    if json {
        let mut v = serde_json::to_value(m).unwrap_or_default();
        v["phase"] = json!(phase);
        v["uuid"] = json!(uuid);
        println!("{v}");
    } else {
        let rate = if m.secs > 0.0 { m.bytes as f64 / m.secs / 1048576.0 } else { 0.0 };
        let down = match (m.stop_ms, m.downtime_ms) {
            (Some(s), Some(d)) => format!(", stopped in {s} ms, then down {d} ms"),
            _ => String::new(),
        };
        println!("{phase}: {} bytes in {:.2} s ({rate:.1} MiB/s){down}", m.bytes, m.secs);
    }
}

pub fn run(node: &Node, a: MigrateArgs) -> crate::CmdResult {
    let exe = std::env::current_exe().map_err(|e| Failure::new(1, e))?;
    let m = Migrations::new(node, exe);
    let uuid = a.uuid.as_str();
    // Progress on a terminal: the first sync's size is the datasets' (an estimate, for an
    // eta); later ones count.
    let estimate = || -> Option<u64> {
        let vm = hull_vm::Vmadm::open(node, std::env::current_exe().ok()?).ok()?;
        let names: Vec<String> = vm.datasets_of(uuid).ok()?.iter().map(|d| d.as_str().to_string()).collect();
        Some(vm.pool().ok()?.list().ok()?.iter().filter(|d| names.contains(&d.name)).map(|d| d.referenced).sum())
    };
    let phase_with_bar = |phase: &str, len: Option<u64>| -> Result<Moved> {
        let pb = std::sync::Mutex::new(hull_img::progress::bytes(len, phase));
        let progress = |_: &str, n: u64| {
            if let Ok(pb) = pb.lock() {
                pb.set_position(n);
            }
        };
        let r = if phase == "switch" { m.switch(uuid, &progress) } else { m.sync(uuid, &progress) };
        if let Ok(pb) = pb.lock() {
            pb.finish_and_clear();
        }
        r
    };
    let begin = |json: bool| -> Result<()> {
        let to = a.to.as_deref().ok_or_else(|| MigrateError::NoPeer("(none given: --to URL)".into()))?;
        let o = m.begin(uuid, to)?;
        if json {
            println!("{}", json!({"phase": "begin", "uuid": uuid, "target": o.target}));
        } else {
            println!("begin: {} reserved on {}", uuid, o.target);
        }
        Ok(())
    };
    match a.phase.as_deref() {
        Some("begin") => begin(a.json)?,
        Some("sync") => {
            let first = m.get(uuid)?.is_some_and(|o| o.synced == 0);
            report(a.json, "sync", uuid, &phase_with_bar("sync", if first { estimate() } else { None })?);
        }
        Some("switch") => report(a.json, "switch", uuid, &phase_with_bar("switch", None)?),
        Some(_) => {
            m.abort(uuid)?;
            println!("abort: {uuid} stays here");
        }
        None => {
            begin(a.json)?;
            let all = (|| -> Result<()> {
                let mut last: Option<u64> = None;
                for i in 0..MAX_SYNCS {
                    let moved = phase_with_bar("sync", if i == 0 { estimate() } else { last })?;
                    report(a.json, "sync", uuid, &moved);
                    // Small enough, or no longer shrinking: switch.
                    if i > 0 && (moved.bytes < SMALL_DELTA || last.is_some_and(|l| moved.bytes >= l)) {
                        break;
                    }
                    last = Some(moved.bytes);
                }
                report(a.json, "switch", uuid, &phase_with_bar("switch", None)?);
                Ok(())
            })();
            if let Err(e) = all {
                if let Err(e2) = m.abort(uuid) {
                    tracing::warn!(vm = %uuid, "the abort after a failure failed too: {e2}");
                }
                return Err(e.into());
            }
        }
    }
    Ok(())
}
