//! vmadm send and receive: a VM as one self-describing stream, and the pieces migration
//! builds on.
//!
//! The stream's frames, header, parts and digest are [`hull_spec::stream`]'s (version
//! [`VERSION`]).
//!
//! Every dataset the VM has goes, KVM disks included (SmartOS's send drops some, smartos-live
//! #270), each with its snapshots: the VM's own (`vmsnap-*`) in order, each a btrfs stream
//! incremental on the one before, then a transfer snapshot of what the dataset holds now.
//! A receiver applies parts as they come into staging datasets (`<name>-receiving`, which
//! nothing else lists) and makes the VM only once the trailer's digest matches; a stream
//! that is cut, corrupted, from another version or crafted leaves nothing (parts received
//! by this stream are destroyed, staging made for it goes).

use crate::{Result, VmError, Vmadm, ds};
use hull_storage::{DatasetName, SnapshotName};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::io::{Read, Write};

pub use hull_spec::stream::{FrameReader, FrameWriter, Header, MAGIC, Part, VERSION};

fn bad(what: impl Into<String>) -> VmError {
    VmError::Stream(what.into())
}
/// Staging datasets are named `<dataset>-receiving`.
pub const RECEIVING: &str = "-receiving";
/// Snapshots made to send a dataset's current contents.
pub const XFER_PREFIX: &str = "xfer-";
const USER_PREFIX: &str = "vmsnap-";

/// Where a node that receives a VM by migration notes the reservation: while it is there,
/// the VM's staging datasets are a migration's, not the remains of a crashed receive.
pub fn reservation_path(node: &hull_storage::Node, uuid: &str) -> std::path::PathBuf {
    node.var_dir().join("migrations/in").join(format!("{uuid}.json"))
}

/// The staging dataset of a dataset.
pub fn staging(name: &str) -> Result<DatasetName> {
    ds(&format!("{name}{RECEIVING}"))
}

/// Checks a header's names: a uuid, its dataset, then its disks' in order.
pub fn check_header(h: &Header) -> Result<()> {
    let u: uuid::Uuid = h.uuid.parse().map_err(|_| bad(format!("its VM uuid {:?} is not a uuid", h.uuid)))?;
    if u.to_string() != h.uuid {
        return Err(bad(format!("its VM uuid {:?} is not in canonical form", h.uuid)));
    }
    if h.datasets.first() != Some(&h.uuid) || h.datasets.len() > 65 {
        return Err(bad("its datasets are not the VM's"));
    }
    for d in h.datasets.iter().skip(1) {
        let disk = d.strip_prefix(&format!("{}-disk", h.uuid)).and_then(|n| n.parse::<u8>().ok());
        if disk.is_none_or(|n| n >= 64 || *d != Vmadm::disk_dataset(&h.uuid, n.into())) {
            return Err(bad(format!("dataset {d:?} is not one of VM {}'s", h.uuid)));
        }
    }
    let mut seen = h.datasets.clone();
    seen.sort();
    seen.dedup();
    if seen.len() != h.datasets.len() {
        return Err(bad("a dataset named twice"));
    }
    if h.config.get("uuid").and_then(Value::as_str) != Some(h.uuid.as_str()) {
        return Err(bad("its config is not its VM's"));
    }
    Ok(())
}

/// What a receive did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Applied {
    pub parts: Vec<Part>,
    pub bytes: u64,
}

impl Vmadm {
    /// The datasets a VM has: its own, then each disk's that exists.
    pub fn datasets_of(&self, uuid: &str) -> Result<Vec<DatasetName>> {
        let pool = self.pool()?;
        let cfg = self.load(uuid)?;
        let mut out = vec![ds(uuid)?];
        let n = cfg.get("disks").and_then(Value::as_array).map(Vec::len).unwrap_or(0);
        for i in 0..n {
            let d = ds(&Self::disk_dataset(uuid, i))?;
            if pool.exists(&d) {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// The header of a stream of the VM.
    pub fn stream_header(&self, uuid: &str) -> Result<Header> {
        let cfg = self.load(uuid)?;
        Ok(Header {
            uuid: uuid.to_string(),
            brand: cfg.get("brand").and_then(Value::as_str).unwrap_or("joyent").to_string(),
            datasets: self.datasets_of(uuid)?.iter().map(|d| d.as_str().to_string()).collect(),
            config: cfg,
        })
    }

    /// The VM's own snapshots of a dataset (`vmsnap-*`), oldest first.
    fn user_snapshots(&self, d: &DatasetName) -> Result<Vec<(i64, String)>> {
        let prefix = format!("{d}@{USER_PREFIX}");
        let times = if d.as_str().contains("-disk") { Map::new() } else { self.snapshot_times(d.as_str()) };
        let mut snaps: Vec<(i64, String)> = self
            .pool()?
            .list()?
            .into_iter()
            .filter(|i| i.name.starts_with(&prefix))
            .filter_map(|i| {
                let s = i.name.strip_prefix(&format!("{d}@"))?.to_string();
                Some((times.get(&s).and_then(Value::as_i64).unwrap_or(i.creation), s))
            })
            .collect();
        snaps.sort();
        Ok(snaps)
    }

    /// Takes a transfer snapshot of each of the VM's datasets, named `xfer-<n>`.
    pub fn transfer_snapshots(&self, uuid: &str, n: u64) -> Result<Vec<SnapshotName>> {
        let pool = self.pool()?;
        let mut made = Vec::new();
        for d in self.datasets_of(uuid)? {
            let s = d.snapshot(&format!("{XFER_PREFIX}{n}"))?;
            if let Err(e) = pool.snapshot(&s) {
                for m in &made {
                    let _ = pool.destroy_snapshot(m);
                }
                return Err(e.into());
            }
            made.push(s);
        }
        Ok(made)
    }

    /// Writes the stream of `parts` (of the VM's datasets, as numbered in its header).
    pub fn write_stream(&self, uuid: &str, parts: &[Part], out: &mut dyn Write) -> Result<u64> {
        let pool = self.pool()?;
        let header = self.stream_header(uuid)?;
        let io = |e: std::io::Error| bad(format!("writing VM {uuid}'s stream: {e}"));
        let mut w = FrameWriter::new(out).map_err(io)?;
        w.json(b'H', &header).map_err(io)?;
        for p in parts {
            let d = ds(&header.datasets[p.dataset])?;
            w.json(b'P', p).map_err(io)?;
            let parent = p.parent.as_deref().map(|s| d.snapshot(s)).transpose()?;
            pool.send(&d.snapshot(&p.snapshot)?, parent.as_ref(), &mut w)?;
            w.flush_data().map_err(io)?;
            w.frame(b'E', &[]).map_err(io)?;
            hull_exec::failpoint("vm-send-part");
        }
        w.finish().map_err(io)
    }

    /// The parts that send the VM whole, up to its transfer snapshot `xfer`: each dataset's
    /// own snapshots, each on the one before, then `xfer` on the last of them.
    pub fn whole_parts(&self, uuid: &str, xfer: &str) -> Result<Vec<Part>> {
        let mut parts = Vec::new();
        for (i, d) in self.datasets_of(uuid)?.iter().enumerate() {
            let mut parent: Option<String> = None;
            let own = self.user_snapshots(d)?.into_iter().map(|(t, s)| (Some(t), s));
            for (created, s) in own.chain(std::iter::once((None, xfer.to_string()))) {
                parts.push(Part { dataset: i, snapshot: s.clone(), parent: parent.replace(s), created });
            }
        }
        Ok(parts)
    }

    /// `vmadm send`: a stopped VM, whole, into `out`.
    pub fn send(&self, uuid: &str, out: &mut dyn Write) -> Result<u64> {
        let _lock = self.lock(uuid)?;
        let st = self.state(uuid, &self.load(uuid)?);
        if st.state.is_running() {
            return Err(VmError::WrongState {
                vm: uuid.into(),
                state: st.state,
                verb: "send (stop it first, or migrate it)",
            });
        }
        let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        let snaps = self.transfer_snapshots(uuid, n as u64)?;
        let res = self.whole_parts(uuid, &snaps[0].snap).and_then(|parts| self.write_stream(uuid, &parts, out));
        let pool = self.pool()?;
        for s in &snaps {
            let _ = pool.destroy_snapshot(s);
        }
        res
    }

    /// Reserves a VM's uuid and datasets for streams to come: refused when the node has the
    /// VM, or anything of it, already.
    pub fn receive_begin(&self, h: &Header) -> Result<()> {
        check_header(h)?;
        let pool = self.pool()?;
        let _lock = self.lock(&h.uuid)?;
        for d in &h.datasets {
            if pool.exists(&ds(d)?) || pool.exists(&staging(d)?) {
                return Err(VmError::Exists(h.uuid.clone()));
            }
        }
        let mut made = Vec::new();
        for d in &h.datasets {
            let s = staging(d)?;
            if let Err(e) = pool.receive_begin(&s) {
                for m in &made {
                    let _ = hull_storage::destroy(pool, m, true);
                }
                return Err(e.into());
            }
            made.push(s);
        }
        Ok(())
    }

    /// Applies a stream's parts to the VM's staging datasets; checks its header is the
    /// reserved VM's. On any failure the parts this stream brought are destroyed.
    pub fn receive_apply(&self, input: &mut dyn Read, expect: &str) -> Result<(Header, Applied)> {
        let mut r = FrameReader::new(input)?;
        let h = r.header()?;
        check_header(&h)?;
        if h.uuid != expect {
            return Err(bad(format!("it is VM {}'s, not {expect}'s", h.uuid)));
        }
        let applied = self.apply_parts(&mut r, &h)?;
        Ok((h, applied))
    }

    fn apply_parts(&self, r: &mut FrameReader, h: &Header) -> Result<Applied> {
        let pool = self.pool()?;
        // Waits: a retry may come while a broken stream's parts are still being removed.
        let _lock = self.lock_wait(&h.uuid)?;
        for d in &h.datasets {
            if !pool.exists(&staging(d)?) {
                return Err(bad(format!("dataset {d} is not being received here")));
            }
        }
        let mut applied = Applied::default();
        let res = (|| -> Result<()> {
            while let Some(p) = r.next_part()? {
                let d = h.datasets.get(p.dataset).ok_or_else(|| bad(format!("a part of dataset #{}", p.dataset)))?;
                let s = staging(d)?;
                let have: Vec<String> = pool.received(&s)?.into_iter().map(|(n, _)| n).collect();
                if let Some(parent) = &p.parent
                    && !have.contains(parent)
                {
                    return Err(bad(format!(
                        "part {} of {d} is on {parent}, which this node does not have",
                        p.snapshot
                    )));
                }
                let got = pool.receive(&s, &mut *r)?;
                if got.name != p.snapshot {
                    applied.parts.push(Part {
                        dataset: p.dataset,
                        snapshot: got.name.clone(),
                        parent: None,
                        created: None,
                    });
                    return Err(bad(format!("part {} of {d} holds a snapshot named {}", p.snapshot, got.name)));
                }
                // Whatever btrfs receive left unread of the part must be nothing.
                let mut rest = [0u8; 1];
                if r.read(&mut rest).map_err(|e| bad(e.to_string()))? != 0 {
                    applied.parts.push(p.clone());
                    return Err(bad(format!("part {} of {d} goes on past its btrfs stream", p.snapshot)));
                }
                if let Some(t) = p.created.filter(|_| p.dataset == 0 && p.snapshot.starts_with(USER_PREFIX)) {
                    self.keep_time(&s, &p.snapshot, t)?;
                }
                applied.parts.push(p);
            }
            Ok(())
        })();
        applied.bytes = r.bytes;
        if let Err(e) = res {
            for p in &applied.parts {
                if let Ok(s) = staging(&h.datasets[p.dataset]).and_then(|s| Ok(s.snapshot(&p.snapshot)?)) {
                    let _ = pool.destroy_snapshot(&s);
                }
            }
            return Err(e);
        }
        Ok(applied)
    }

    /// Notes when a received snapshot was taken, in its staging dataset (for finish).
    fn keep_time(&self, staging: &DatasetName, snap: &str, t: i64) -> Result<()> {
        let p = self.pool()?.dataset_path(staging).join("snapshot-times.json");
        let mut times: Map<String, Value> =
            std::fs::read(&p).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        times.insert(snap.to_string(), json!(t));
        hull_exec::write_atomic(&p, &serde_json::to_vec(&times).unwrap_or_default()).map_err(|e| VmError::Io {
            vm: staging.to_string(),
            op: "write",
            path: p.clone(),
            source: e,
        })
    }

    /// Gives up receiving a VM: its staging goes.
    pub fn receive_abort(&self, uuid: &str, datasets: &[String]) -> Result<()> {
        let pool = self.pool()?;
        let _lock = self.lock_wait(uuid)?;
        for d in datasets {
            let s = staging(d)?;
            if pool.exists(&s) {
                hull_storage::destroy(pool, &s, true)?;
            }
        }
        Ok(())
    }

    /// Makes the VM from its staging: each dataset from its latest received snapshot (the
    /// VM's own dataset last, so the VM appears whole or not at all), transfer snapshots
    /// dropped, its config told where it now is. The VM is left stopped.
    pub fn receive_finish(&self, uuid: &str, datasets: &[String]) -> Result<()> {
        let pool = self.pool()?;
        let _lock = self.lock(uuid)?;
        let mut order: Vec<&String> = datasets.iter().skip(1).collect();
        order.extend(datasets.first());
        let mut made: Vec<DatasetName> = Vec::new();
        let res = (|| -> Result<()> {
            for d in order {
                let s = staging(d)?;
                let got = pool.received(&s)?;
                let last = got
                    .iter()
                    .filter(|(n, _)| n.starts_with(XFER_PREFIX))
                    .max_by_key(|(n, _)| n[XFER_PREFIX.len()..].parse::<u64>().unwrap_or(0))
                    .ok_or_else(|| bad(format!("nothing of {d} was received")))?
                    .0
                    .clone();
                let target = if d == uuid { ds(&format!("{uuid}{}", crate::PROVISIONING))? } else { ds(d)? };
                let times = std::fs::read(pool.dataset_path(&s).join("snapshot-times.json")).ok();
                pool.receive_finish(&s, &last, &target)?;
                if let Some(t) = times {
                    let p = pool.dataset_path(&target).join(crate::snapshot::SNAPSHOT_TIMES);
                    hull_exec::write_atomic(&p, &t).map_err(|e| VmError::Io {
                        vm: uuid.into(),
                        op: "write",
                        path: p.clone(),
                        source: e,
                    })?;
                }
                made.push(target.clone());
                for (n, _) in got.iter().filter(|(n, _)| n.starts_with(XFER_PREFIX)) {
                    pool.destroy_snapshot(&target.snapshot(n)?)?;
                }
            }
            let part = ds(&format!("{uuid}{}", crate::PROVISIONING))?;
            let path = pool.dataset_path(&part).join("config/vm.json");
            let text = std::fs::read_to_string(&path).map_err(|e| VmError::Io {
                vm: uuid.into(),
                op: "read",
                path: path.clone(),
                source: e,
            })?;
            let mut cfg: Map<String, Value> = match serde_json::from_str(&text) {
                Ok(Value::Object(m)) if m.get("uuid").and_then(Value::as_str) == Some(uuid) => m,
                _ => return Err(bad("the received dataset's config/vm.json is not the VM's")),
            };
            crate::typed(uuid, &cfg)?;
            cfg.insert("zfs_filesystem".into(), json!(format!("{}/{uuid}", pool.name())));
            cfg.insert("zonepath".into(), json!(pool.dataset_path(&ds(uuid)?)));
            cfg.insert("zpool".into(), json!(pool.name()));
            cfg.remove("migrated");
            if let Some(Value::Array(disks)) = cfg.get_mut("disks") {
                for (i, d) in disks.iter_mut().enumerate() {
                    if let Some(o) = d.as_object_mut()
                        && o.contains_key("zfs_filesystem")
                    {
                        o.insert(
                            "zfs_filesystem".into(),
                            json!(format!("{}/{}", pool.name(), Self::disk_dataset(uuid, i))),
                        );
                    }
                }
            }
            crate::write_config(uuid, &path, &cfg)?;
            // A quota is the pool's, not the data's: it does not travel in a stream.
            if let Some(q) = cfg.get("quota").and_then(Value::as_u64).filter(|q| *q > 0)
                && pool.caps().quota
            {
                pool.set_quota(&part, Some(q << 30))?;
            }
            pool.rename(&part, &ds(uuid)?)?;
            Ok(())
        })();
        if let Err(e) = res {
            for m in made.iter().filter(|m| m.as_str() != uuid) {
                let _ = hull_storage::destroy(pool, m, true);
            }
            return Err(e);
        }
        hull_zone::events::emit(&self.node.var_dir(), "create", uuid, vec![json!({"received": true})]);
        Ok(())
    }

    /// `vmadm receive`: a VM from a stream, made stopped, with the same uuid, MACs and
    /// addresses. Nothing is left of a stream that is refused.
    pub fn receive(&self, input: &mut dyn Read) -> Result<String> {
        let mut r = FrameReader::new(input)?;
        let h = r.header()?;
        self.receive_begin(&h)?;
        let res = self.apply_parts(&mut r, &h).and_then(|_| self.receive_finish(&h.uuid, &h.datasets));
        if let Err(e) = res {
            if let Err(e2) = self.receive_abort(&h.uuid, &h.datasets) {
                tracing::warn!(vm = %h.uuid, "could not remove what a refused stream left: {e2}");
            }
            return Err(e);
        }
        Ok(h.uuid)
    }

    /// Marks a VM that moved to another node: it stays here, stopped, and never starts again
    /// (`start` refuses it, the node's boot skips it); deleting it is the operator's call.
    pub fn mark_migrated(&self, uuid: &str, to: &str) -> Result<()> {
        let _lock = self.lock_wait(uuid)?;
        let mut cfg = self.load(uuid)?;
        cfg.insert("migrated".into(), json!({"to": to, "at": crate::iso8601(std::time::SystemTime::now())}));
        cfg.insert("autoboot".into(), json!(false));
        self.save(uuid, &cfg)
    }
}
