//! vmadm delete.

use crate::{Result, Vmadm, ds};
use std::time::Duration;

impl Vmadm {
    /// Deletes a VM: kills its zone if it runs, then removes its dataset (snapshots included)
    /// and its runtime files.
    pub fn delete(&self, uuid: &str) -> Result<()> {
        hull_exec::probes::vm_verb("delete", uuid, || self.delete_untraced(uuid))
    }

    fn delete_untraced(&self, uuid: &str) -> Result<()> {
        let _lock = self.lock(uuid)?;
        let cfg = self.load(uuid)?;
        // As SmartOS: an operator's guard against deleting the wrong VM; unset it first.
        for flag in ["indestructible_zoneroot", "indestructible_delegated"] {
            if cfg.get(flag).and_then(serde_json::Value::as_bool) == Some(true) {
                return Err(crate::VmError::Indestructible { vm: uuid.into(), flag });
            }
        }
        if self.running_or_false(uuid) {
            self.stop_locked(uuid, true, Duration::from_secs(0))?;
        }
        hull_exec::failpoint("vm-delete-stopped");
        self.rt.delete(uuid, &self.cgroup(uuid))?;
        self.host.net_down(uuid)?;
        let dir = self.run_dir(uuid);
        let n = self.load(uuid)?.get("disks").and_then(|d| d.as_array()).map(Vec::len).unwrap_or(0);
        for i in 0..n {
            let d = ds(&Self::disk_dataset(uuid, i))?;
            if self.pool()?.exists(&d) {
                hull_storage::destroy(self.pool()?, &d, true)?;
            }
        }
        hull_storage::destroy(self.pool()?, &ds(uuid)?, true)?;
        hull_exec::failpoint("vm-delete-destroyed");
        self.release_idmap_slot(uuid);
        if dir.exists() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        hull_zone::events::emit(&self.node.var_dir(), "delete", uuid, Vec::new());
        Ok(())
    }

    fn running_or_false(&self, uuid: &str) -> bool {
        self.load(uuid).map(|cfg| self.state(uuid, &cfg).state.is_running()).unwrap_or(false)
    }
}
