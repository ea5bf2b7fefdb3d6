//! vmadm update: every change stored, each one reported as applied live, waiting for the
//! next boot, or not yet acted on by hull.

use crate::{Result, VmError, Vmadm, ds};
use hull_spec::vm::props::{self, Apply};
use hull_spec::{Action, Brand};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct UpdateReport {
    /// Applied to the running VM (or to its record) now.
    pub live: Vec<String>,
    /// Stored; take effect at the next boot.
    pub reboot: Vec<String>,
    /// Stored; hull does not act on them yet.
    pub not_yet: Vec<String>,
}

fn merge_object(cfg: &mut Map<String, Value>, key: &str, set: Option<&Value>, remove: Option<&Value>) {
    let mut obj = cfg.get(key).and_then(Value::as_object).cloned().unwrap_or_default();
    if let Some(Value::Object(s)) = set {
        for (k, v) in s {
            obj.insert(k.clone(), v.clone());
        }
    }
    if let Some(Value::Array(r)) = remove {
        for k in r.iter().filter_map(Value::as_str) {
            obj.remove(k);
        }
    }
    cfg.insert(key.into(), Value::Object(obj));
}

impl Vmadm {
    pub fn update(&self, uuid: &str, payload: &Value) -> Result<UpdateReport> {
        let _lock = self.lock(uuid)?;
        let mut cfg = self.load(uuid)?;
        let brand: Brand =
            cfg.get("brand").and_then(Value::as_str).and_then(|b| b.parse().ok()).unwrap_or(Brand::Joyent);
        let (changes, dropped) =
            hull_spec::vm::validate_lenient(Action::Update, Some(brand), payload).map_err(VmError::Invalid)?;
        for p in &dropped {
            tracing::warn!(vm = uuid, "Warning, invalid update property: [{p}] removing from payload.");
        }
        let mut changes = changes;
        let asked_locked = changes.contains_key("max_locked_memory");
        if brand.is_os() {
            for note in hull_spec::vm::memory::fix_os_zone_memory(&mut changes, &cfg) {
                tracing::warn!(vm = uuid, "{note}");
            }
        }
        let mut report = UpdateReport::default();
        let mut next = cfg.clone();
        for (k, v) in &changes {
            match k.as_str() {
                "set_tags" | "remove_tags" => {
                    merge_object(&mut next, "tags", changes.get("set_tags"), changes.get("remove_tags"))
                }
                "set_customer_metadata" | "remove_customer_metadata" => merge_object(
                    &mut next,
                    "customer_metadata",
                    changes.get("set_customer_metadata"),
                    changes.get("remove_customer_metadata"),
                ),
                "set_internal_metadata" | "remove_internal_metadata" => merge_object(
                    &mut next,
                    "internal_metadata",
                    changes.get("set_internal_metadata"),
                    changes.get("remove_internal_metadata"),
                ),
                "add_nics" => {
                    let mut nics = next.get("nics").and_then(Value::as_array).cloned().unwrap_or_default();
                    let taken: Vec<String> = nics
                        .iter()
                        .filter_map(|n| n.get("interface").and_then(Value::as_str))
                        .map(String::from)
                        .collect();
                    let mut added = v.as_array().cloned().unwrap_or_default();
                    hull_spec::vm::nics::fill_vrrp_macs(&mut added);
                    hull_net::nic::assign(&mut added, &taken);
                    nics.extend(added);
                    next.insert("nics".into(), Value::Array(nics));
                }
                "remove_nics" => {
                    let macs: Vec<&str> =
                        v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
                    for m in &macs {
                        if !has_mac(&next, m) {
                            return Err(crate::network::bad_nics(uuid, vec![no_such_nic("remove_nics", m)]));
                        }
                    }
                    let nics: Vec<Value> = next
                        .get("nics")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|n| !n.get("mac").and_then(Value::as_str).is_some_and(|m| macs.contains(&m)))
                        .collect();
                    next.insert("nics".into(), Value::Array(nics));
                }
                "update_nics" => {
                    let mut nics = next.get("nics").and_then(Value::as_array).cloned().unwrap_or_default();
                    for u in v.as_array().into_iter().flatten() {
                        let mac = u.get("mac").and_then(Value::as_str);
                        if !mac.is_some_and(|m| has_mac(&next, m)) {
                            return Err(crate::network::bad_nics(
                                uuid,
                                vec![no_such_nic("update_nics", mac.unwrap_or("(none)"))],
                            ));
                        }
                        if let Some(n) =
                            nics.iter_mut().find(|n| mac.is_some() && n.get("mac").and_then(Value::as_str) == mac)
                            && let (Value::Object(n), Value::Object(u)) = (n, u)
                        {
                            for (k, v) in u {
                                n.insert(k.clone(), v.clone());
                            }
                        }
                    }
                    next.insert("nics".into(), Value::Array(nics));
                }
                // null or blank: the property is unset (SmartOS's `alias: null`).
                _ if v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty()) => {
                    next.remove(k);
                }
                _ => {
                    next.insert(k.clone(), v.clone());
                }
            }
            let nic_change = matches!(k.as_str(), "add_nics" | "remove_nics" | "update_nics");
            let apply = if nic_change {
                // Applied below: live on a running zone, at boot on a stopped one.
                if self.state(uuid, &cfg).state == "running" { Apply::Live } else { Apply::Reboot }
            } else {
                props::lookup(k).map(|p| p.apply).unwrap_or(Apply::NotYet)
            };
            match apply {
                Apply::Live => report.live.push(k.clone()),
                Apply::Reboot => report.reboot.push(k.clone()),
                Apply::NotYet => report.not_yet.push(k.clone()),
            }
        }
        // Live changes are made before anything is stored: a change that fails is reported
        // as an error and not recorded.
        let running = self.state(uuid, &cfg).state == "running";
        if changes.keys().any(|k| matches!(k.as_str(), "add_nics" | "remove_nics" | "update_nics")) {
            let mut checked = next.clone();
            let added = changes.get("add_nics").and_then(Value::as_array).cloned().unwrap_or_default();
            self.check_nics(uuid, &mut checked, Some(&added))?;
            let before = cfg.get("nics").and_then(Value::as_array).cloned().unwrap_or_default();
            let after = checked.get("nics").and_then(Value::as_array).cloned().unwrap_or_default();
            let guest = matches!(cfg.get("brand").and_then(Value::as_str), Some("kvm" | "bhyve"));
            if running && !guest {
                self.net_update(uuid, &before, &after)?;
            } else if running {
                // qemu's NICs are fixed at its start: the change waits for the next boot.
                for k in ["add_nics", "remove_nics", "update_nics"] {
                    if report.live.iter().any(|x| x == k) {
                        report.live.retain(|x| x != k);
                        report.reboot.push(k.into());
                    }
                }
            }
            next = checked;
        }
        let caps = [
            "max_physical_memory",
            "max_swap",
            "max_locked_memory",
            "cpu_cap",
            "cpu_shares",
            "max_lwps",
            "zfs_io_priority",
        ];
        if running && changes.keys().any(|k| caps.contains(&k.as_str())) {
            let limits = crate::start::limits(&next);
            hull_zone::cgroup::apply(uuid, &self.cgroup(uuid), &limits)?;
            if changes.contains_key("max_locked_memory") {
                let bytes = limits.locked_mib.unwrap_or(0) << 20;
                let set = hull_zone::cgroup::set_memlock(uuid, &self.cgroup(uuid), bytes);
                // Moved by a new memory cap rather than asked for: as far as this host lets
                // it go (a zone boots with it clamped the same way).
                match set {
                    Err(e) if !asked_locked => tracing::info!(vm = uuid, "max_locked_memory not raised live: {e}"),
                    r => r?,
                }
            }
        }
        if let Some(p) = changes.get("zfs_io_priority").and_then(Value::as_u64) {
            let applied = running && hull_zone::cgroup::set_io_weight(uuid, &self.cgroup(uuid), p)?;
            if !applied {
                report.live.retain(|k| k != "zfs_io_priority");
                // Stopped: set at the next boot. Running on a host whose IO scheduler does
                // not weigh cgroups: hull cannot apply it, and says so.
                if !running {
                    report.reboot.push("zfs_io_priority".into());
                } else {
                    report.not_yet.push("zfs_io_priority".into());
                }
            }
        }
        if let Some(q) = changes.get("quota").and_then(Value::as_u64) {
            let pool = self.pool()?;
            if pool.caps().quota {
                pool.set_quota(&ds(uuid)?, (q > 0).then_some(q << 30))?;
            } else {
                report.live.retain(|k| k != "quota");
                report.not_yet.push("quota".into());
            }
        }
        hull_exec::failpoint("vm-update-applied");
        let changed: Vec<Value> = next
            .iter()
            .filter(|(k, v)| cfg.get(*k) != Some(*v))
            .map(|(k, v)| hull_zone::events::change(k, cfg.get(k).cloned().unwrap_or(Value::Null), v.clone()))
            .collect();
        cfg = next;
        self.save(uuid, &cfg)?;
        hull_zone::events::emit(&self.node.var_dir(), "modify", uuid, changed);
        Ok(report)
    }
}

fn has_mac(cfg: &Map<String, Value>, mac: &str) -> bool {
    cfg.get("nics").and_then(Value::as_array).is_some_and(|a| {
        a.iter().any(|n| n.get("mac").and_then(Value::as_str).is_some_and(|m| m.eq_ignore_ascii_case(mac)))
    })
}

fn no_such_nic(key: &str, mac: &str) -> hull_net::NicProblem {
    hull_net::NicProblem { field: key.to_string(), reason: format!("the VM has no NIC with MAC {mac}") }
}
