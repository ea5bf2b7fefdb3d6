//! vmadm create-snapshot, rollback-snapshot, delete-snapshot: snapshots of a VM's dataset,
//! named `zones/<uuid>@vmsnap-<name>` as on SmartOS.

use crate::{Result, VmError, Vmadm, ds};
use serde_json::{Map, Value, json};
use std::time::Duration;

const PREFIX: &str = "vmsnap-";

fn check_name(uuid: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
        return Err(VmError::Refused {
            vm: uuid.into(),
            reason: format!("invalid snapshot name {name:?}: 1 to 64 of [A-Za-z0-9_.:-]"),
        });
    }
    Ok(())
}

/// A VM's snapshots in a pool listing, as `get` shows them: `[{name, created_at}]`. A
/// snapshot that came in a stream is as old as it was where it was taken (`times`, kept by
/// receive, by snapshot name), not as its copy here.
pub(crate) fn snapshots_in(uuid: &str, all: &[hull_storage::DatasetInfo], times: &Map<String, Value>) -> Value {
    let prefix = format!("{uuid}@{PREFIX}");
    Value::Array(
        all.iter()
            .filter_map(|d| {
                let n = d.name.strip_prefix(&prefix)?;
                let t = times.get(&format!("{PREFIX}{n}")).and_then(Value::as_i64).unwrap_or(d.creation);
                Some(json!({"name": n, "created_at": crate::iso8601_secs(t)}))
            })
            .collect(),
    )
}

/// Where a received VM keeps its snapshots' creation times.
pub(crate) const SNAPSHOT_TIMES: &str = "config/snapshot-times.json";

impl Vmadm {
    /// The creation times a receive kept for the VM's snapshots.
    pub(crate) fn snapshot_times(&self, uuid: &str) -> Map<String, Value> {
        let Ok(p) = self.pool().and_then(|p| Ok(p.dataset_path(&ds(uuid)?).join(SNAPSHOT_TIMES))) else {
            return Map::new();
        };
        std::fs::read(p).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }
}

impl Vmadm {
    fn snap(&self, uuid: &str, name: &str) -> Result<hull_storage::SnapshotName> {
        check_name(uuid, name)?;
        Ok(ds(uuid)?.snapshot(&format!("{PREFIX}{name}"))?)
    }

    /// A KVM VM's image disks live in datasets beside its own; a snapshot takes them too,
    /// under the same name.
    fn disk_snaps(&self, uuid: &str, name: &str) -> Result<Vec<hull_storage::SnapshotName>> {
        let n = self.load_vm(uuid)?.disks().len();
        let pool = self.pool()?;
        let mut out = Vec::new();
        for i in 0..n {
            let d = ds(&Self::disk_dataset(uuid, i))?;
            if pool.exists(&d) {
                out.push(d.snapshot(&format!("{PREFIX}{name}"))?);
            }
        }
        Ok(out)
    }

    pub fn create_snapshot(&self, uuid: &str, name: &str) -> Result<()> {
        let _lock = self.lock(uuid)?;
        self.load(uuid)?;
        let snap = self.snap(uuid, name)?;
        // A time a receive kept for an earlier snapshot of this name is not this one's.
        let mut times = self.snapshot_times(uuid);
        if times.remove(&snap.snap).is_some() {
            let p = self.pool()?.dataset_path(&ds(uuid)?).join(SNAPSHOT_TIMES);
            hull_exec::write_atomic(&p, &serde_json::to_vec(&times).unwrap_or_default()).map_err(|e| VmError::Io {
                vm: uuid.into(),
                op: "write",
                path: p.clone(),
                source: e,
            })?;
        }
        self.pool()?.snapshot(&snap).map_err(|e| match e {
            hull_storage::StorageError::Exists(_) => VmError::SnapshotExists { vm: uuid.into(), name: name.into() },
            e => e.into(),
        })?;
        let pool = self.pool()?;
        let disks = self.disk_snaps(uuid, name)?;
        for (i, s) in disks.iter().enumerate() {
            if let Err(e) = pool.snapshot(s) {
                // All or nothing: what was taken goes again.
                for t in disks.iter().take(i) {
                    let _ = hull_storage::destroy_snapshot(pool, t, false);
                }
                let _ = hull_storage::destroy_snapshot(pool, &snap, false);
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Puts the VM back to a snapshot; a running VM is stopped first and started after.
    pub fn rollback_snapshot(&self, uuid: &str, name: &str) -> Result<()> {
        let running = {
            let _lock = self.lock(uuid)?;
            let cfg = self.load(uuid)?;
            let snap = self.snap(uuid, name)?;
            let pool = self.pool()?;
            if !pool.list()?.iter().any(|d| d.name == snap.to_string()) {
                return Err(VmError::NoSnapshot { vm: uuid.into(), name: name.into() });
            }
            let running = self.state(uuid, &cfg).state.is_running();
            if running {
                self.stop_locked(uuid, false, Duration::from_secs(60))?;
            }
            pool.rollback(&snap)?;
            for d in self.disk_snaps(uuid, name)? {
                pool.rollback(&d)?;
            }
            running
        };
        if running {
            self.start(uuid)?;
        }
        Ok(())
    }

    pub fn delete_snapshot(&self, uuid: &str, name: &str) -> Result<()> {
        let _lock = self.lock(uuid)?;
        self.load(uuid)?;
        let snap = self.snap(uuid, name)?;
        for d in self.disk_snaps(uuid, name)? {
            hull_storage::destroy_snapshot(self.pool()?, &d, false)?;
        }
        hull_storage::destroy_snapshot(self.pool()?, &snap, false)?;
        Ok(())
    }
}
