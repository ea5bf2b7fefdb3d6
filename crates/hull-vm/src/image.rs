//! imgadm create: an image made from a stopped zone.

use crate::{Result, VmError, Vmadm, ds};
use hull_img::build::{BuildSpec, Built, RootSource};
use hull_spec::Compression;
use hull_spec::manifest::{ImageType, Os, Requirements};
use serde_json::Value;
use std::path::Path;

impl Vmadm {
    /// A zvol image of a KVM VM's boot disk (or its first).
    fn disk_image(
        &self,
        uuid: &str,
        cfg: &serde_json::Map<String, Value>,
        name: &str,
        version: &str,
        compression: Compression,
        out_dir: &Path,
    ) -> Result<Built> {
        let vm = crate::typed(uuid, cfg)?;
        let disks = vm.disks();
        let i = disks.iter().position(|d| d.boot.unwrap_or(false)).or((!disks.is_empty()).then_some(0)).ok_or_else(
            || VmError::Refused { vm: uuid.into(), reason: "the VM has no disk to make an image of".into() },
        )?;
        let stored = cfg.get("disks").and_then(Value::as_array).and_then(|a| a.get(i)).cloned().unwrap_or_default();
        let Some((top, rel)) = self.own_disk_file(uuid, i, &stored)? else {
            return Err(VmError::Refused { vm: uuid.into(), reason: format!("disks.{i} is a cdrom, not a disk") });
        };
        // Opened through the dataset's tree (the VM's zone can write its disks directory:
        // a link there must not put a host file into the image), then read by the builder
        // through this process's descriptor, which names the file opened, not a path.
        let file = hull_exec::tree::Tree::open(&top).and_then(|t| t.open_file(&rel)).map_err(|e| VmError::Io {
            vm: uuid.into(),
            op: "open",
            path: top.join(&rel),
            source: e,
        })?;
        let disk = std::path::PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file)));
        let built = hull_img::build::build(&BuildSpec {
            source: RootSource::Disk(disk),
            name: name.to_string(),
            version: version.to_string(),
            description: Some(format!("made from VM {uuid}")),
            image_type: ImageType::Zvol,
            os: Os::Other,
            compression,
            out_dir: out_dir.to_path_buf(),
            uuid: None,
        })?;
        Ok(built)
    }

    /// Packs a stopped VM's root into a new image in `out_dir`. With `incremental`, the image
    /// holds only what differs from the VM's own image, which becomes its `origin`.
    pub fn image_create(
        &self,
        uuid: &str,
        name: &str,
        version: &str,
        incremental: bool,
        compression: Compression,
        out_dir: &Path,
    ) -> Result<Built> {
        let _lock = self.lock(uuid)?;
        let cfg = self.load(uuid)?;
        let state = self.state(uuid, &cfg).state;
        if state.is_running() {
            return Err(VmError::WrongState { vm: uuid.into(), state, verb: "make an image of" });
        }
        let pool = self.pool()?;
        if hull_spec::Brand::of(&cfg).is_hvm() {
            if incremental {
                return Err(VmError::Refused {
                    vm: uuid.into(),
                    reason: "a KVM VM's image is a whole disk (no -i)".into(),
                });
            }
            return self.disk_image(uuid, &cfg, name, version, compression, out_dir);
        }
        let root = pool.dataset_path(&ds(uuid)?).join("root");
        let origin: Option<uuid::Uuid> = cfg.get("image_uuid").and_then(Value::as_str).and_then(|s| s.parse().ok());
        let mut manifest = hull_img::build::new_manifest(&BuildSpec {
            source: RootSource::Dir(root.clone()),
            name: name.to_string(),
            version: version.to_string(),
            description: Some(format!("made from VM {uuid}")),
            // The type the VM's brand boots from, so a VM of that brand can be made of it.
            image_type: if hull_spec::Brand::of(&cfg) == hull_spec::Brand::Lx {
                ImageType::LxDataset
            } else {
                ImageType::ZoneDataset
            },
            os: Os::Linux,
            compression,
            out_dir: out_dir.to_path_buf(),
            uuid: None,
        });
        manifest.validate().map_err(|source| VmError::Manifest { vm: uuid.into(), source })?;
        manifest.requirements = cfg.get("brand").and_then(Value::as_str).map(|b| Requirements {
            networks: None,
            brand: Some(b.to_string()),
            ssh_key: None,
            min_ram: None,
            max_ram: None,
            min_platform: None,
            max_platform: None,
            bootrom: None,
        });
        let built = if incremental {
            let origin = origin.ok_or_else(|| VmError::Refused {
                vm: uuid.into(),
                reason: "the VM has no image to be incremental on".into(),
            })?;
            // The origin's @final: exactly what the VM started from.
            let origin_root = pool
                .snapshot_path(&ds(&origin.to_string())?.snapshot(hull_img::FINAL)?)
                .map(|p| p.join("root"))
                .unwrap_or_default();
            if !origin_root.is_dir() {
                return Err(VmError::Image {
                    vm: uuid.into(),
                    image: origin.to_string(),
                    reason: "its @final is not readable as a directory".into(),
                });
            }
            manifest.origin = Some(origin);
            // btrfs and ZFS clones keep their origin's inodes; the dir backend copies.
            let shared = pool.backend() != hull_storage::PoolBackend::Dir;
            hull_img::build::emit(manifest, out_dir, compression, |f| {
                hull_img::build::write_layer_file(&root, &origin_root, f, compression, shared)
            })?
        } else {
            hull_img::build::emit(manifest, out_dir, compression, |f| {
                hull_img::build::write_image_file(&root, f, compression)
            })?
        };
        Ok(built)
    }
}
