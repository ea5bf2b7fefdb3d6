//! vmadm update: every change stored, each one reported as applied live, waiting for the
//! next boot, or not yet acted on by hull.

use crate::{Result, VmError, Vmadm, ds};
use hull_spec::vm::model::value;
use hull_spec::vm::props::{self, Apply};
use hull_spec::vm::{Disk, Filesystem, Update};
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

/// `set_X` and `remove_X` on the map property `key`; nothing when neither is given.
fn merge_object(cfg: &mut Map<String, Value>, key: &str, set: Option<&Map<String, Value>>, remove: Option<&[String]>) {
    if set.is_none() && remove.is_none() {
        return;
    }
    let mut obj = cfg.get(key).and_then(Value::as_object).cloned().unwrap_or_default();
    for (k, v) in set.into_iter().flatten() {
        obj.insert(k.clone(), v.clone());
    }
    for k in remove.into_iter().flatten() {
        obj.remove(k);
    }
    cfg.insert(key.into(), Value::Object(obj));
}

/// The list property `key` as stored (empty when unset).
fn list_of(cfg: &Map<String, Value>, key: &str) -> Vec<Value> {
    cfg.get(key).and_then(Value::as_array).cloned().unwrap_or_default()
}

/// Takes the primary flag off every NIC (another is about to have it): a non-primary NIC
/// has no `primary` at all, as SmartOS shows it.
fn clear_primary(nics: &mut [Value]) {
    for n in nics.iter_mut().filter_map(Value::as_object_mut) {
        n.remove("primary");
    }
}

/// Merges `update` into the member of `items` whose `key` is the same as its own.
fn merge_into(items: &mut [Value], key: &str, update: &Value) {
    let key_of = |m: &Value| m.get(key).and_then(Value::as_str).map(str::to_ascii_lowercase);
    if let Some(m) = items.iter_mut().find(|m| key_of(m).is_some() && key_of(m) == key_of(update))
        && let (Value::Object(m), Value::Object(u)) = (m, update)
    {
        for (k, x) in u {
            m.insert(k.clone(), x.clone());
        }
    }
}

/// `add_X`, `update_X` and `remove_X` on the list `list`, whose members are keyed by `key`:
/// an update merges into the member with its key. Nothing when none is given.
fn members(
    cfg: &mut Map<String, Value>,
    list: &str,
    key: &str,
    add: Option<Vec<Value>>,
    update: Option<Vec<Value>>,
    remove: Option<&[String]>,
) {
    if add.is_none() && update.is_none() && remove.is_none() {
        return;
    }
    let mut items = list_of(cfg, list);
    items.extend(add.into_iter().flatten());
    if let Some(gone) = remove {
        items.retain(|m| !m.get(key).and_then(Value::as_str).is_some_and(|k| gone.iter().any(|g| g == k)));
    }
    for u in update.iter().flatten() {
        merge_into(&mut items, key, u);
    }
    cfg.insert(list.into(), Value::Array(items));
}

impl Vmadm {
    /// `add_disks` on an existing KVM VM: each a blank disk of `size` MiB, made beside the
    /// others (the guest sees it from its next boot). A disk from an image is only made at
    /// create.
    fn add_blank_disks(&self, uuid: &str, cfg: &Map<String, Value>, added: &[Disk]) -> Result<Vec<Value>> {
        let have = list_of(cfg, "disks").len();
        let top = self.pool()?.dataset_path(&ds(uuid)?);
        let base = top.join("disks");
        let mut out = Vec::new();
        for (j, d) in added.iter().enumerate() {
            if d.from_image() {
                return Err(VmError::Refused {
                    vm: uuid.into(),
                    reason: format!("add_disks.{j}: a disk from an image is made at create only; give a size"),
                });
            }
            let size = d.size.filter(|s| *s > 0).ok_or_else(|| VmError::Refused {
                vm: uuid.into(),
                reason: format!("add_disks.{j}: needs a size (MiB)"),
            })?;
            let i = have + j;
            let file = base.join(format!("disk{i}.raw"));
            let io = |op| {
                let (vm, path) = (uuid.to_string(), file.clone());
                move |e| VmError::Io { vm, op, path, source: e }
            };
            // No disk of the VM has this file: one left there (a failed update's, or
            // anything the VM's zone put there, a link included) is replaced, never opened.
            let rel = std::path::Path::new("disks").join(format!("disk{i}.raw"));
            let f = hull_exec::tree::Tree::open(&top).and_then(|t| t.create_file(&rel, 0o644)).map_err(io("create"))?;
            f.set_len(size << 20).map_err(io("size"))?;
            let mut d = d.clone();
            d.path = Some(file.to_string_lossy().into_owned());
            d.model.get_or_insert_with(|| "virtio".into());
            d.media.get_or_insert_with(|| "disk".into());
            out.push(value(&d));
        }
        Ok(out)
    }

    /// Takes disks `removing` (indexes into `cfg`'s disks) off a stopped VM: their files (or
    /// their clones' datasets) go, and the disks after them move down one place each, file
    /// and dataset renamed and path rewritten, so that disk N is always `diskN`. Refused
    /// while the VM has snapshots, which hold the old numbering. Returns the disks left.
    fn remove_disks(&self, uuid: &str, cfg: &Map<String, Value>, removing: &[usize]) -> Result<Vec<Value>> {
        let pool = self.pool()?;
        let listing = pool.list()?;
        if snapshots_of(uuid, &listing) {
            return Err(VmError::Refused {
                vm: uuid.into(),
                reason: "remove_disks: the VM has snapshots, which hold its disks as they are; delete them first"
                    .into(),
            });
        }
        let disks = cfg.get("disks").and_then(Value::as_array).cloned().unwrap_or_default();
        let top = pool.dataset_path(&ds(uuid)?);
        let tree = hull_exec::tree::Tree::open(&top).map_err(|e| VmError::Io {
            vm: uuid.into(),
            op: "open",
            path: top.clone(),
            source: e,
        })?;
        let io = |op: &'static str, path: std::path::PathBuf| {
            let vm = uuid.to_string();
            move |source| VmError::Io { vm, op, path, source }
        };
        let file = |i: usize| std::path::Path::new("disks").join(format!("disk{i}.raw"));
        let mut out = Vec::new();
        for (i, d) in disks.iter().enumerate() {
            let from_image = d.get("image_uuid").is_some();
            if removing.contains(&i) {
                if from_image {
                    let clone = ds(&Self::disk_dataset(uuid, i))?;
                    if pool.exists(&clone) {
                        hull_storage::destroy(pool, &clone, true)?;
                    }
                }
                // A disk from an image has a placeholder file here too.
                tree.remove_all(&file(i)).map_err(io("remove", top.join(file(i))))?;
                continue;
            }
            let j = out.len();
            let mut d = d.clone();
            if j != i {
                if tree.kind(&file(i)).ok().flatten().is_some() {
                    tree.rename(&file(i), &file(j)).map_err(io("rename", top.join(file(i))))?;
                }
                if from_image {
                    let (old, new) = (ds(&Self::disk_dataset(uuid, i))?, ds(&Self::disk_dataset(uuid, j))?);
                    if pool.exists(&old) {
                        pool.rename(&old, &new)?;
                    }
                    if let Value::Object(o) = &mut d {
                        o.insert("zfs_filesystem".into(), Value::from(format!("{}/{new}", pool.name())));
                    }
                }
                if let (Some((dir, rel)), Value::Object(o)) = (self.own_disk_file(uuid, j, &d)?, &mut d) {
                    o.insert("path".into(), Value::from(dir.join(rel).to_string_lossy().into_owned()));
                }
            }
            out.push(d);
        }
        Ok(out)
    }

    /// Where hull keeps disk `i` of a VM, as (dataset directory, file within it): its
    /// clone's file for a disk from an image, else the VM's own `disks/diskI.raw`. None
    /// for a cdrom.
    pub(crate) fn own_disk_file(
        &self,
        uuid: &str,
        i: usize,
        d: &Value,
    ) -> Result<Option<(std::path::PathBuf, std::path::PathBuf)>> {
        if !hull_spec::vm::Disk::is_disk_value(d) {
            return Ok(None);
        }
        self.disk_file(uuid, i, d.get("image_uuid").is_some()).map(Some)
    }

    /// bhyve's `update_disks` with a `size` (MiB): the disk's file grows (shrinking needs
    /// `dangerous_allow_shrink`, as on SmartOS), and a running guest is told by qemu's
    /// `block_resize`, so the new size is live. Returns whether a running guest was resized.
    fn resize_disks(&self, uuid: &str, cfg: &Map<String, Value>, updates: &[Disk], running: bool) -> Result<bool> {
        let disks = list_of(cfg, "disks");
        let mut live = false;
        for u in updates {
            let Some(size) = u.size else { continue };
            let path = u.path.as_deref().unwrap_or_default();
            let Some(i) = disks.iter().position(|d| d.get("path").and_then(Value::as_str) == Some(path)) else {
                return Err(VmError::NoDisk { vm: uuid.into(), verb: "update_disks", path: path.into() });
            };
            // Only a disk hull made, at the file hull made for it: a cdrom's path is the
            // payload's (it may name any host file), and a path is only what the config
            // says. The file is opened through the dataset's tree: the VM's zone can write
            // its disks directory, and a link there must not send the resize to the host.
            let own = self.own_disk_file(uuid, i, &disks[i])?;
            let Some((top, rel)) = own.filter(|(top, rel)| top.join(rel) == std::path::Path::new(path)) else {
                return Err(VmError::Refused {
                    vm: uuid.into(),
                    reason: format!("disks.{i}: {path:?} is not a disk hull made for this VM; it cannot be resized"),
                });
            };
            let file = std::path::Path::new(path);
            let io = |op| {
                let (vm, path) = (uuid.to_string(), file.to_path_buf());
                move |e| VmError::Io { vm, op, path, source: e }
            };
            let opened = hull_exec::tree::Tree::open(&top).and_then(|t| t.open_file_rw(&rel)).map_err(io("open"))?;
            let old = opened.metadata().map_err(io("inspect"))?.len();
            let new = size << 20;
            let shrink_ok = u.rest.get("dangerous_allow_shrink").and_then(Value::as_bool).unwrap_or(false);
            if new < old && !shrink_ok {
                return Err(VmError::Refused {
                    vm: uuid.into(),
                    reason: format!("disks.{i}: {size} MiB is smaller than the disk; set dangerous_allow_shrink"),
                });
            }
            if new == old {
                continue;
            }
            opened.set_len(new).map_err(io("resize"))?;
            if running {
                let args = serde_json::json!({"device": format!("disk{i}"), "size": new});
                self.qmp(uuid)?
                    .execute("block_resize", Some(args))
                    .map_err(|source| VmError::Qmp { vm: uuid.into(), source })?;
                live = true;
            }
        }
        Ok(live)
    }

    pub fn update(&self, uuid: &str, payload: &Value) -> Result<UpdateReport> {
        let _lock = self.lock(uuid)?;
        let mut cfg = self.load(uuid)?;
        let brand: Brand = Brand::of(&cfg);
        let (mut changes, dropped) =
            hull_spec::vm::validate_lenient(Action::Update, Some(brand), payload).map_err(VmError::Invalid)?;
        for p in &dropped {
            tracing::warn!(vm = uuid, "Warning, invalid update property: [{p}] removing from payload.");
        }
        let asked_locked = changes.contains_key("max_locked_memory");
        if brand.is_os() {
            for note in hull_spec::vm::memory::fix_os_zone_memory(&mut changes, &cfg) {
                tracing::warn!(vm = uuid, "{note}");
            }
        }
        // The payload, typed once it is valid: what update reads of it from here on.
        let upd = Update::from_map(&changes).map_err(|source| VmError::Payload { vm: uuid.into(), source })?;
        let running = self.state(uuid, &cfg).state.is_running();
        let mut next = cfg.clone();
        merge_object(&mut next, "tags", upd.set_tags.as_ref(), upd.remove_tags.as_deref());
        merge_object(
            &mut next,
            "customer_metadata",
            upd.set_customer_metadata.as_ref(),
            upd.remove_customer_metadata.as_deref(),
        );
        merge_object(
            &mut next,
            "internal_metadata",
            upd.set_internal_metadata.as_ref(),
            upd.remove_internal_metadata.as_deref(),
        );
        merge_object(&mut next, "routes", upd.set_routes.as_ref(), upd.remove_routes.as_deref());

        let added_nics: Option<Vec<Value>> = upd.add_nics.as_ref().map(|a| a.iter().map(value).collect());
        let updated_nics: Option<Vec<Value>> = upd.update_nics.as_ref().map(|a| a.iter().map(value).collect());
        if let Some(added) = &added_nics {
            let mut nics = list_of(&next, "nics");
            let taken: Vec<String> =
                nics.iter().filter_map(|n| n.get("interface").and_then(Value::as_str)).map(String::from).collect();
            let mut added = added.clone();
            hull_spec::vm::nics::fill_vrrp_macs(&mut added);
            hull_net::nic::assign(&mut added, &taken);
            // A new primary NIC takes the flag from the old one, as on SmartOS.
            if added.iter().any(|n| n.get("primary") == Some(&Value::Bool(true))) {
                clear_primary(&mut nics);
            }
            nics.extend(added);
            next.insert("nics".into(), Value::Array(nics));
        }
        if let Some(macs) = &upd.remove_nics {
            for m in macs {
                if !has_mac(&next, m) {
                    return Err(crate::network::bad_nics(uuid, vec![no_such_nic("remove_nics", m)]));
                }
            }
            let mut nics = list_of(&next, "nics");
            nics.retain(|n| {
                !n.get("mac").and_then(Value::as_str).is_some_and(|m| macs.iter().any(|x| x.eq_ignore_ascii_case(m)))
            });
            next.insert("nics".into(), Value::Array(nics));
        }
        if let Some(updates) = &updated_nics {
            let mut nics = list_of(&next, "nics");
            for u in updates {
                let mac = u.get("mac").and_then(Value::as_str);
                if !mac.is_some_and(|m| has_mac(&next, m)) {
                    return Err(crate::network::bad_nics(
                        uuid,
                        vec![no_such_nic("update_nics", mac.unwrap_or("(none)"))],
                    ));
                }
                if u.get("primary") == Some(&Value::Bool(true)) {
                    clear_primary(&mut nics);
                }
                merge_into(&mut nics, "mac", u);
            }
            next.insert("nics".into(), Value::Array(nics));
        }

        // Members of a list, keyed as SmartOS keys them (a filesystem by its target, a disk
        // by its path): never stored under the verb's own name.
        let values = |l: &Option<Vec<Filesystem>>| l.as_ref().map(|a| a.iter().map(value).collect::<Vec<_>>());
        members(
            &mut next,
            "filesystems",
            "target",
            values(&upd.add_filesystems),
            values(&upd.update_filesystems),
            upd.remove_filesystems.as_deref(),
        );

        if let Some(added) = &upd.add_disks {
            let made = self.add_blank_disks(uuid, &next, added)?;
            members(&mut next, "disks", "path", Some(made), None, None);
        }
        // Indexes of the disks remove_disks takes away.
        let mut removing: Vec<usize> = Vec::new();
        if let Some(gone) = &upd.remove_disks {
            // Taken out of the config here; the files go, and the disks after them move
            // down, once every other change has been checked (below).
            let disks = list_of(&next, "disks");
            for path in gone {
                if !disks.iter().any(|d| d.get("path").and_then(Value::as_str) == Some(path)) {
                    return Err(VmError::NoDisk { vm: uuid.into(), verb: "remove_disks", path: path.clone() });
                }
            }
            if running {
                return Err(VmError::WrongState {
                    vm: uuid.into(),
                    state: hull_spec::State::Running,
                    verb: "remove a disk from (stop it first: its guest has the disk open)",
                });
            }
            removing = disks
                .iter()
                .enumerate()
                .filter(|(_, d)| d.get("path").and_then(Value::as_str).is_some_and(|p| gone.iter().any(|g| g == p)))
                .map(|(i, _)| i)
                .collect();
            members(&mut next, "disks", "path", None, None, Some(gone));
        }
        if let Some(updates) = &upd.update_disks {
            let disks = list_of(&next, "disks");
            for u in updates {
                let path = u.path.as_deref();
                if !disks.iter().any(|d| path.is_some() && d.get("path").and_then(Value::as_str) == path) {
                    return Err(VmError::NoDisk {
                        vm: uuid.into(),
                        verb: "update_disks",
                        path: path.unwrap_or("").into(),
                    });
                }
            }
            members(&mut next, "disks", "path", None, Some(updates.iter().map(value).collect()), None);
        }

        for (k, v) in &upd.set {
            // null or blank: the property is unset (SmartOS's `alias: null`).
            if v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty()) {
                next.remove(k);
            } else {
                next.insert(k.clone(), v.clone());
            }
        }

        let mut report = UpdateReport::default();
        for k in upd.keys() {
            let nic_change = matches!(k.as_str(), "add_nics" | "remove_nics" | "update_nics");
            let apply = if nic_change {
                // Applied below: live on a running zone, at boot on a stopped one.
                if running { Apply::Live } else { Apply::Reboot }
            } else {
                props::lookup(&k).map(|p| p.apply).unwrap_or(Apply::NotYet)
            };
            match apply {
                Apply::Live => report.live.push(k),
                Apply::Reboot => report.reboot.push(k),
                Apply::NotYet => report.not_yet.push(k),
            }
        }
        // Live changes are made before anything is stored: a change that fails is reported
        // as an error and not recorded.
        if let Some(updates) = &upd.update_disks
            && self.resize_disks(uuid, &next, updates, running)?
        {
            // Grown under the running guest: qemu says so to it at once.
            report.reboot.retain(|k| k != "update_disks");
            report.live.push("update_disks".into());
        }
        if upd.touches_nics() {
            let mut checked = next.clone();
            let added = added_nics.unwrap_or_default();
            let updated = updated_nics.unwrap_or_default();
            self.check_nics(uuid, &mut checked, Some(&added), &updated)?;
            let before = cfg.get("nics").and_then(Value::as_array).cloned().unwrap_or_default();
            let after = checked.get("nics").and_then(Value::as_array).cloned().unwrap_or_default();
            let guest = hull_spec::Brand::of(&cfg).is_hvm();
            // A multicast MAC is stored as SmartOS stores it, but no interface can have one:
            // such a change waits for the next boot, which says so.
            let multicast = after.iter().any(|n| {
                n.get("mac").and_then(Value::as_str).and_then(hull_net::parse_mac).is_some_and(|m| m[0] & 1 == 1)
            });
            if multicast && running {
                tracing::warn!(vm = uuid, "a NIC has a multicast MAC: not plugged into the running zone");
            }
            if running && !guest && !multicast {
                self.net_update(uuid, &checked, &before, &after)?;
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
        if running && caps.iter().any(|c| upd.set.contains_key(*c)) {
            let limits = crate::start::limits(&next);
            hull_zone::cgroup::apply(uuid, &self.cgroup(uuid), &limits)?;
            if upd.set.contains_key("max_locked_memory") {
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
        if let Some(p) = upd.set.get("zfs_io_priority").and_then(Value::as_u64) {
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
        // SmartOS: `cpu_cap: 0` removes the cap.
        if next.get("cpu_cap").and_then(Value::as_u64) == Some(0) {
            next.remove("cpu_cap");
        }
        if upd.set.get("quota").is_some_and(Value::is_null) {
            let pool = self.pool()?;
            if pool.caps().quota {
                pool.set_quota(&ds(uuid)?, None)?;
            }
        }
        if let Some(q) = upd.set.get("quota").and_then(Value::as_u64) {
            let pool = self.pool()?;
            if pool.caps().quota {
                pool.set_quota(&ds(uuid)?, (q > 0).then_some(q << 30))?;
            } else {
                report.live.retain(|k| k != "quota");
                report.not_yet.push("quota".into());
            }
        }
        if !removing.is_empty() {
            let disks = self.remove_disks(uuid, &cfg, &removing)?;
            next.insert("disks".into(), Value::Array(disks));
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

/// Whether the VM (or any of its disks' datasets) has a snapshot.
fn snapshots_of(uuid: &str, all: &[hull_storage::DatasetInfo]) -> bool {
    all.iter()
        .any(|d| d.name.split_once('@').is_some_and(|(ds, _)| ds == uuid || ds.starts_with(&format!("{uuid}-disk"))))
}

fn has_mac(cfg: &Map<String, Value>, mac: &str) -> bool {
    cfg.get("nics").and_then(Value::as_array).is_some_and(|a| {
        a.iter().any(|n| n.get("mac").and_then(Value::as_str).is_some_and(|m| m.eq_ignore_ascii_case(mac)))
    })
}

fn no_such_nic(key: &str, mac: &str) -> hull_net::NicProblem {
    hull_net::NicProblem { field: key.to_string(), reason: format!("the VM has no NIC with MAC {mac}") }
}
