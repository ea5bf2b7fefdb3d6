//! vmadm create.

use crate::revert::Revert;
use crate::{PROVISIONING, Result, VmError, Vmadm, ds};
use hull_spec::{Action, Brand};
use serde_json::{Map, Value, json};

/// `vmadm validate`: the payload's own checks and those that need the node (its images
/// installed and of the right type, a disk's `image_size`, the pool's name), acting on
/// nothing. `vm` is the node's vmadm when the node has a pool; without one no image is
/// installed and no pool name is right (and none is made: validation has no side effect).
pub fn validate(
    vm: Option<&Vmadm>,
    action: Action,
    brand: Option<Brand>,
    payload: &Value,
) -> std::result::Result<Map<String, Value>, hull_spec::ValidationErrors> {
    let (mut out, mut errs) = hull_spec::vm::check_payload(action, brand, payload);
    if errs.bad_brand.is_some() {
        return Err(errs);
    }
    let brand = brand.or_else(|| out.get("brand").and_then(Value::as_str).and_then(|b| b.parse().ok()));
    if let Some(b) = brand
        && action != Action::Update
    {
        hull_spec::vm::check_images(b, &mut out, &mut errs, &|u| vm.and_then(|v| v.image_info(u)));
    }
    if let Some(z) = out.get("zpool").and_then(Value::as_str)
        && vm.and_then(|v| v.pool().ok()).is_none_or(|p| p.name() != z)
    {
        errs.bad_values.push("zpool".into());
    }
    if errs.is_empty() { Ok(out) } else { Err(errs) }
}

/// SmartOS's defaults for an OS zone, filled in where the payload is silent (VM.js's
/// applyZoneDefaults, then its fixPayloadMemory), from the property table.
fn defaults(cfg: &mut Map<String, Value>) {
    let brand = hull_spec::Brand::of(cfg);
    for (k, v) in hull_spec::vm::props::defaults(brand.bit()) {
        // The memory cap's default is for a payload silent on both: `ram` sets it otherwise.
        if k == "max_physical_memory" && cfg.contains_key("ram") {
            continue;
        }
        cfg.entry(k.to_string()).or_insert(v);
    }
    for note in hull_spec::vm::memory::fix_os_zone_memory(cfg, &Map::new()) {
        tracing::warn!("{note}");
    }
    // SmartOS shows the System V shared memory cap as the memory cap.
    let mem = cfg.get("max_physical_memory").cloned().unwrap_or(json!(256));
    cfg.entry("max_shm_memory".to_string()).or_insert(mem);
}

/// Gives a new zone a machine id of its own (its uuid, as systemd takes a container's) where
/// its image has `/etc/machine-id`: every zone of an image would otherwise share the image's
/// (journald, D-Bus and DHCP client ids key on it). The zone's tree is the image author's:
/// the file is written without following links, and a link or a directory there is left.
fn own_machine_id(uuid: &str, dataset: &std::path::Path) -> Result<()> {
    let rel = std::path::Path::new("etc/machine-id");
    let tree = hull_exec::tree::Tree::open(dataset).and_then(|t| t.subtree(std::path::Path::new("root")));
    let Ok(tree) = tree else { return Ok(()) };
    if tree.kind(rel).ok().flatten().is_some_and(|k| k.is_file()) {
        let id = format!("{}\n", uuid.replace('-', ""));
        tree.write_file(rel, id.as_bytes(), 0o444).map_err(|e| VmError::Io {
            vm: uuid.into(),
            op: "write",
            path: dataset.join("root").join(rel),
            source: e,
        })?;
    }
    Ok(())
}

impl Vmadm {
    /// What validation needs of an installed image.
    pub(crate) fn image_info(&self, uuid: &str) -> Option<hull_spec::vm::ImageInfo> {
        let m = self.img.manifest(&uuid.parse().ok()?).ok()?;
        Some(hull_spec::vm::ImageInfo { image_type: m.image_type.as_str().to_string(), size_mib: m.image_size })
    }

    /// What every VM's config says of itself: uuid, zone name, dataset, path, pool, time.
    fn identify(&self, uuid: &str, cfg: &mut Map<String, Value>) -> Result<()> {
        let pool = self.pool()?;
        cfg.insert("uuid".into(), json!(uuid));
        cfg.insert("zonename".into(), json!(uuid));
        cfg.insert("zfs_filesystem".into(), json!(format!("{}/{uuid}", pool.name())));
        cfg.insert("zonepath".into(), json!(pool.dataset_path(&ds(uuid)?)));
        cfg.insert("zpool".into(), json!(pool.name()));
        // SmartOS's form: ISO 8601, UTC, milliseconds.
        cfg.insert("create_timestamp".into(), json!(crate::iso8601(std::time::SystemTime::now())));
        Ok(())
    }

    /// Boots a VM just made, when its autoboot says so; a failed boot marks it `failed`.
    fn autoboot(&self, uuid: String, cfg: &Map<String, Value>) -> Result<String> {
        if crate::typed(&uuid, cfg)?.autoboot()
            && let Err(e) = self.start(&uuid)
        {
            self.set_failed(&uuid)?;
            return Err(VmError::BootFailed { vm: uuid, source: Box::new(e) });
        }
        Ok(uuid)
    }

    /// Creates a KVM (or bhyve) VM: its dataset with blank disks, then boots it.
    fn create_hvm(&self, uuid: String, mut cfg: Map<String, Value>) -> Result<String> {
        if let Some(i) = cfg.get("image_uuid").and_then(Value::as_str) {
            return Err(VmError::Image {
                vm: uuid,
                image: i.to_string(),
                reason: "a KVM VM boots from its disks; give the image as disks.0.image_uuid".into(),
            });
        }
        self.check_nics(&uuid, &mut cfg, None, &[])?;
        self.check_kvm(&uuid, &mut cfg)?;
        let pool = self.pool()?;
        let _lock = self.lock(&uuid)?;
        if pool.exists(&ds(&uuid)?) {
            return Err(VmError::Exists(uuid));
        }
        for (k, v) in hull_spec::vm::props::defaults(hull_spec::Brand::of(&cfg).bit()) {
            cfg.entry(k.to_string()).or_insert(v);
        }
        self.identify(&uuid, &mut cfg)?;
        let part = ds(&format!("{uuid}{PROVISIONING}"))?;
        let mut revert = Revert::new();
        revert.push("destroy the dataset", || {
            let _ = hull_storage::destroy(pool, &part, true);
        });
        let disks = self.clone_disks(&uuid, &mut cfg)?;
        revert.push("destroy the disk clones", move || {
            for d in &disks {
                let _ = hull_storage::destroy(pool, d, true);
            }
        });
        self.create_kvm_dataset(&part, &mut cfg)?;
        crate::write_config(&uuid, &pool.dataset_path(&part).join("config/vm.json"), &cfg)?;
        pool.rename(&part, &ds(&uuid)?)?;
        revert.disarm();
        hull_zone::events::emit(&self.node.var_dir(), "create", &uuid, Vec::new());
        drop(_lock);
        self.autoboot(uuid, &cfg)
    }

    /// Creates a VM from a payload; boots it when `autoboot` (the default) is true.
    /// Returns the VM's uuid.
    pub fn create(&self, payload: &Value) -> Result<String> {
        let given = payload.get("uuid").and_then(Value::as_str).unwrap_or("");
        let mut p = hull_exec::probes::VmVerb::begin("create", given);
        let r = self.create_untraced(payload);
        if let Ok(uuid) = &r {
            p.uuid(uuid);
        }
        p.finish(&r);
        r
    }

    fn create_untraced(&self, payload: &Value) -> Result<String> {
        let mut ph = hull_exec::phase::Phases::new("create", "");
        // As SmartOS: a payload without a brand makes a joyent zone; properties the brand
        // does not have are dropped with a warning; null or blank ones are unset.
        let mut payload = payload.clone();
        if let Value::Object(m) = &mut payload {
            m.entry("brand").or_insert(json!("joyent"));
        }
        let (mut cfg, dropped) =
            hull_spec::vm::validate_lenient(Action::Create, None, &payload).map_err(VmError::Invalid)?;
        for p in &dropped {
            tracing::warn!("Warning, invalid create property: [{p}] removing from payload.");
        }
        cfg.retain(|_, v| !v.is_null() && v.as_str().is_none_or(|s| !s.trim().is_empty()));
        let brand: Brand = Brand::of(&cfg);
        // A disk's image_size: filled in from its image, refused when it is not the image's.
        // (A missing image, or one of the wrong type, is said below in more words.)
        let mut errs = hull_spec::ValidationErrors::default();
        hull_spec::vm::check_images(brand, &mut cfg, &mut errs, &|u| self.image_info(u));
        errs.bad_values.retain(|v| v.ends_with(".image_size"));
        errs.missing_properties.clear();
        if !errs.is_empty() {
            return Err(VmError::Invalid(errs));
        }
        // The payload, typed once it is valid: what create reads of it from here on.
        let new_uuid = uuid::Uuid::new_v4().to_string();
        let vm = crate::typed(cfg.get("uuid").and_then(Value::as_str).unwrap_or(&new_uuid), &cfg)?;
        let uuid = if vm.uuid.is_empty() { new_uuid } else { vm.uuid.clone() };
        if !brand.is_os() {
            return self.create_hvm(uuid, cfg);
        }
        let image: uuid::Uuid = vm
            .image_uuid
            .as_deref()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| VmError::Refused { vm: uuid.clone(), reason: "no image_uuid".into() })?;
        let pool = self.pool()?;
        if let Some(z) = vm.rest.get("zpool").or(vm.rest.get("zfs_storage_pool_name")).and_then(Value::as_str)
            && z != pool.name()
        {
            return Err(VmError::Refused {
                vm: uuid,
                reason: format!("zpool {z:?} does not exist (this node's pool is {:?})", pool.name()),
            });
        }
        self.check_nics(&uuid, &mut cfg, None, &[])?;
        ph.mark("validate");
        let _lock = self.lock(&uuid)?;
        if pool.exists(&ds(&uuid)?) {
            return Err(VmError::Exists(uuid));
        }
        let manifest = self.img.manifest(&image).map_err(|e| VmError::Image {
            vm: uuid.clone(),
            image: image.to_string(),
            reason: e.to_string(),
        })?;
        if !hull_spec::vm::zone_root_types(brand).contains(&manifest.image_type.as_str()) {
            return Err(VmError::Image {
                vm: uuid,
                image: image.to_string(),
                reason: format!(
                    "a {} image cannot be a {brand} zone's root (it takes {})",
                    manifest.image_type.as_str(),
                    hull_spec::vm::zone_root_types(brand).join(" or ")
                ),
            });
        }

        defaults(&mut cfg);
        self.identify(&uuid, &mut cfg)?;
        cfg.insert("image_uuid".into(), json!(image.to_string()));

        let part = ds(&format!("{uuid}{PROVISIONING}"))?;
        let mut revert = Revert::new();
        ph.mark("image");
        pool.clone_snapshot(&ds(&image.to_string())?.snapshot(hull_img::FINAL)?, &part)?;
        ph.mark("clone");
        revert.push("destroy the clone", || {
            let _ = hull_storage::destroy(pool, &part, true);
        });
        hull_exec::failpoint("vm-create-cloned");
        // Only root on the host goes into a VM's dataset: its root holds the tenant's set-id
        // files and device nodes (SmartOS keeps zonepaths at 0700 for the same reason).
        let top = pool.dataset_path(&part);
        std::fs::set_permissions(&top, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| VmError::Io { vm: uuid.clone(), op: "chmod", path: top.clone(), source: e })?;
        own_machine_id(&uuid, &top)?;
        if let Some(q) = cfg.get("quota").and_then(Value::as_u64).filter(|q| *q > 0)
            && pool.caps().quota
        {
            pool.set_quota(&part, Some(q << 30))?;
        }
        ph.mark("prepare the dataset");
        crate::write_config(&uuid, &pool.dataset_path(&part).join("config/vm.json"), &cfg)?;
        ph.mark("write the config");
        hull_exec::failpoint("vm-create-configured");
        pool.rename(&part, &ds(&uuid)?)?;
        revert.disarm();
        hull_exec::failpoint("vm-create-whole");
        hull_zone::events::emit(&self.node.var_dir(), "create", &uuid, Vec::new());
        drop(_lock);
        ph.mark("rename, event");

        self.autoboot(uuid, &cfg)
    }
}
