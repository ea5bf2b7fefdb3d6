//! A VM as a type: what `vmadm get` prints and what hull stores, parsed once where it is read
//! and passed down typed.
//!
//! The fields hull acts on are typed; every other property (there are about 150, most of them
//! stored and shown only) is kept, untouched, in `rest`, so that a VM read and written back is
//! the same JSON: serialising a [`Vm`] gives SmartOS's form. Values were normalised by
//! validation before they were stored (`"512"` became `512`, `"a,b"` a list), so the types here
//! are the normal forms; a stored config that does not fit is an error naming the property.

use super::Brand;
use super::state::State;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A part of the model as JSON, to store in a config map. Serialising these types cannot
/// fail (string keys, no floats); a failure would give null rather than a panic.
pub fn value<T: Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

/// A list as validation leaves it: an array of strings or numbers.
fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let v: Option<Vec<Value>> = Option::deserialize(d)?;
    v.map(|items| {
        items
            .into_iter()
            .map(|x| match x {
                Value::String(s) => Ok(s),
                Value::Number(n) => Ok(n.to_string()),
                other => Err(serde::de::Error::custom(format!("a list holds {other}, not a string or a number"))),
            })
            .collect()
    })
    .transpose()
}

/// One NIC of a VM (`nics`), as nic.js describes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Nic {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan_id: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "list")]
    pub ips: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netmask: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "list")]
    pub gateways: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "list")]
    pub allowed_ips: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_ip_spoofing: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_mac_spoofing: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_dhcp_spoofing: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_restricted_traffic: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp_server: Option<bool>,
    /// The rest of nic.js's properties (`maxbw`, VRRP, ...), as stored.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl Nic {
    /// NICs as stored or validated (a `nics` array); one that does not fit is named by its
    /// path, `nics.1.vlan_id`.
    pub fn from_values(nics: &[Value]) -> Result<Vec<Nic>, ModelError> {
        nics.iter()
            .enumerate()
            .map(|(i, n)| {
                serde_path_to_error::deserialize(n)
                    .map_err(|e| ModelError { path: format!("nics.{i}.{}", e.path()), reason: e.inner().to_string() })
            })
            .collect()
    }
}

/// One disk of a KVM or bhyve VM (`disks`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    /// The disk's file on the host (hull's zvol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// MiB; none for a disk cloned from an image (its size is the image's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<u64>,
    /// `disk` (the default) or `cdrom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u64>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl Disk {
    /// Cloned from an image, rather than made blank.
    pub fn from_image(&self) -> bool {
        self.image_uuid.is_some()
    }

    /// A data disk (not a cdrom).
    pub fn is_disk(&self) -> bool {
        self.media.as_deref().is_none_or(|m| m == "disk")
    }

    /// [`Disk::is_disk`] of a disk as stored JSON.
    pub fn is_disk_value(d: &Value) -> bool {
        d.get("media").and_then(Value::as_str).is_none_or(|m| m == "disk")
    }
}

/// One filesystem mounted into an OS zone (`filesystems`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Filesystem {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub fs_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "list")]
    pub options: Option<Vec<String>>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// A VM: its stored config, with what hull acts on typed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Vm {
    /// Empty in a payload that names none (create makes one).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uuid: String,
    /// `joyent` when the config names none, as create fills in.
    #[serde(default)]
    pub brand: Brand,
    /// What `vmadm get` shows; not stored (the supervisor's record is the truth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoboot: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_uuid: Option<String>,
    /// MiB: a KVM guest's memory; an OS zone's is `max_physical_memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_physical_memory: Option<u64>,
    /// GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_init: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "list")]
    pub resolvers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic_driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vnc_port: Option<i64>,
    /// Set when a boot failed or init kept dying; `start` clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nics: Option<Vec<Nic>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disks: Option<Vec<Disk>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystems: Option<Vec<Filesystem>>,
    /// Destination → gateway (an address, `nics[N]` or `macs[MAC]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<BTreeMap<String, String>>,
    /// Every other property, as stored.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// A `vmadm update` payload once validated, typed: SmartOS's verbs on a VM's lists and maps
/// carry their members; every plain property is in `set`, where null means unset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Update {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_tags: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "list")]
    pub remove_tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_customer_metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "list")]
    pub remove_customer_metadata: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_internal_metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "list")]
    pub remove_internal_metadata: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_routes: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "list")]
    pub remove_routes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_nics: Option<Vec<Nic>>,
    /// Each names its NIC by `mac`; the fields it has replace the NIC's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_nics: Option<Vec<Nic>>,
    /// MACs.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "list")]
    pub remove_nics: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_disks: Option<Vec<Disk>>,
    /// Each names its disk by `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_disks: Option<Vec<Disk>>,
    /// Paths.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "list")]
    pub remove_disks: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_filesystems: Option<Vec<Filesystem>>,
    /// Each names its filesystem by `target`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_filesystems: Option<Vec<Filesystem>>,
    /// Targets.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "list")]
    pub remove_filesystems: Option<Vec<String>>,
    /// Every other property: its new value, or null to unset it.
    #[serde(flatten)]
    pub set: Map<String, Value>,
}

impl Update {
    /// Reads a validated update payload; what does not fit names the property.
    pub fn from_map(changes: &Map<String, Value>) -> Result<Update, ModelError> {
        serde_path_to_error::deserialize(Value::Object(changes.clone()))
            .map_err(|e| ModelError { path: e.path().to_string(), reason: e.inner().to_string() })
    }

    /// The properties it changes, by name, in the order `vmadm update` reports them.
    pub fn keys(&self) -> Vec<String> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Adds, removes or changes a NIC.
    pub fn touches_nics(&self) -> bool {
        self.add_nics.is_some() || self.update_nics.is_some() || self.remove_nics.is_some()
    }
}

/// A stored config that does not fit the model: which property, and why.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ModelError {
    pub path: String,
    pub reason: String,
}

impl Vm {
    /// Reads a config as stored (or a payload after validation).
    pub fn from_map(cfg: &Map<String, Value>) -> Result<Vm, ModelError> {
        // Through a Value: serde's flatten buffers anyway, and the path of a bad field is kept.
        let v = Value::Object(cfg.clone());
        serde_path_to_error::deserialize(v)
            .map_err(|e| ModelError { path: e.path().to_string(), reason: e.inner().to_string() })
    }

    /// The config as SmartOS's JSON: keys sorted, as `vmadm get` prints them.
    pub fn to_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            // A struct of strings, numbers and maps always serialises to an object.
            _ => Map::new(),
        }
    }

    pub fn nics(&self) -> &[Nic] {
        self.nics.as_deref().unwrap_or_default()
    }

    pub fn disks(&self) -> &[Disk] {
        self.disks.as_deref().unwrap_or_default()
    }

    pub fn filesystems(&self) -> &[Filesystem] {
        self.filesystems.as_deref().unwrap_or_default()
    }

    /// Boots with the node (create's default is true).
    pub fn autoboot(&self) -> bool {
        self.autoboot.unwrap_or(true)
    }

    /// Its hostname: `hostname`, else an alias that is a valid one.
    pub fn hostname(&self) -> Option<&str> {
        self.hostname
            .as_deref()
            .filter(|h| !h.is_empty())
            .or(self.alias.as_deref().filter(|a| super::valid_hostname(a)))
    }

    /// A dead init boots the zone again (SmartOS's default).
    pub fn restart_init(&self) -> bool {
        self.restart_init.unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A KVM VM as `vmadm get` prints it (written for this test, in SmartOS's shape).
    fn kvm() -> Value {
        json!({
            "uuid": "6bb5ed8a-9d0b-4d92-9e3e-7d5a0d6c52a1",
            "brand": "kvm",
            "alias": "web0",
            "autoboot": false,
            "ram": 1024,
            "vcpus": 2,
            "billing_id": "00000000-0000-0000-0000-000000000000",
            "customer_metadata": {"user-script": "#!/bin/sh\n", "n": 1},
            "disks": [
                {"image_uuid": "0b5c9f8e-2f8b-4f41-9a51-0d4b7a3c2e11", "boot": true, "model": "virtio",
                 "path": "/zones/x/disk0", "image_size": 10240, "compression": "lz4"},
                {"size": 2048, "model": "virtio", "media": "disk", "refreservation": 0},
                {"media": "cdrom", "path": "/x.iso", "model": "ide"}
            ],
            "nics": [
                {"interface": "net0", "mac": "02:08:20:aa:bb:cc", "nic_tag": "external", "vlan_id": 12,
                 "ip": "10.0.0.5", "netmask": "255.255.255.0", "ips": ["10.0.0.5/24"], "gateways": ["10.0.0.1"],
                 "primary": true, "model": "virtio", "allow_ip_spoofing": false, "vrrp_vrid": 3}
            ],
            "routes": {"10.1.0.0/16": "nics[0]"},
            "resolvers": ["8.8.8.8"],
            "tags": {"role": "web"},
            "zfs_io_priority": 100,
            "create_timestamp": "2026-12-02T10:00:00.000Z"
        })
    }

    #[test]
    fn a_vm_read_and_written_back_is_the_same_json() {
        let v = kvm();
        let vm = Vm::from_map(v.as_object().expect("object")).expect("fits");
        assert_eq!(vm.brand, Brand::Kvm);
        assert_eq!(vm.disks().len(), 3);
        assert!(vm.disks()[0].from_image() && !vm.disks()[2].is_disk() && vm.disks()[1].is_disk());
        assert_eq!(vm.nics()[0].vlan_id, Some(12));
        assert_eq!(vm.nics()[0].rest.get("vrrp_vrid"), Some(&json!(3)));
        assert_eq!(vm.rest.get("billing_id"), Some(&json!("00000000-0000-0000-0000-000000000000")));
        assert!(!vm.autoboot());
        assert_eq!(Value::Object(vm.to_map()), v);
    }

    #[test]
    fn a_bare_config_gets_smartos_s_defaults() {
        let vm = Vm::from_map(&Map::new()).expect("empty fits");
        assert_eq!(vm.brand, Brand::Joyent);
        assert!(vm.autoboot() && vm.restart_init() && vm.nics().is_empty());
        assert_eq!(vm.to_map().get("brand"), Some(&json!("joyent")));
    }

    #[test]
    fn hostname_falls_back_to_a_valid_alias() {
        let vm = |v: Value| Vm::from_map(v.as_object().expect("object")).expect("fits");
        assert_eq!(vm(json!({"alias": "web0"})).hostname(), Some("web0"));
        assert_eq!(vm(json!({"alias": "not a name"})).hostname(), None);
        assert_eq!(vm(json!({"alias": "a", "hostname": "h"})).hostname(), Some("h"));
    }

    #[test]
    fn every_property_that_validates_fits_the_model() {
        use crate::vm::props::{self, PropType};
        // One sample of each type, in the forms validation normalises from.
        let samples = |ty: PropType| -> Vec<Value> {
            match ty {
                PropType::Boolean => vec![json!(true), json!("false"), json!(1)],
                PropType::Integer { min, max } => vec![json!(min), json!(max.min(1 << 40)), json!(min.to_string())],
                PropType::String => vec![json!("x"), json!("")],
                PropType::Uuid => vec![json!("6bb5ed8a-9d0b-4d92-9e3e-7d5a0d6c52a1")],
                PropType::List => vec![json!(["a", 1]), json!("a,b"), json!(["10.0.0.1"])],
                PropType::FlatObject => vec![json!({"k": "v", "n": 1})],
                PropType::ObjectArray => vec![json!([])],
                PropType::Zpool => vec![json!("zones")],
            }
        };
        let mut checked = 0;
        for (brand, base) in [
            ("joyent", json!({"brand": "joyent", "image_uuid": "0b5c9f8e-2f8b-4f41-9a51-0d4b7a3c2e11"})),
            ("kvm", json!({"brand": "kvm"})),
            ("bhyve", json!({"brand": "bhyve"})),
        ] {
            for p in props::PROPS.iter().filter(|p| !p.name.contains('*')) {
                for v in samples(p.ty) {
                    let mut payload = base.clone();
                    payload[p.name] = v.clone();
                    let Ok((cfg, _)) = crate::vm::validate_lenient(crate::vm::Action::Create, None, &payload) else {
                        continue;
                    };
                    let vm = Vm::from_map(&cfg).unwrap_or_else(|e| panic!("{brand} {}={v}: {e}", p.name));
                    assert_eq!(Value::Object(vm.to_map()), Value::Object(cfg), "{brand} {}={v}", p.name);
                    checked += 1;
                }
            }
        }
        assert!(checked > 200, "only {checked} payloads validated");
    }

    #[test]
    fn every_update_property_that_validates_fits_the_update_type() {
        use crate::vm::props::{self, PropType};
        let samples = |ty: PropType| -> Vec<Value> {
            match ty {
                PropType::Boolean => vec![json!(true), json!("false")],
                PropType::Integer { min, max } => vec![json!(min), json!(max.min(1 << 40))],
                PropType::String => vec![json!("x"), json!(""), Value::Null],
                PropType::Uuid => vec![json!("6bb5ed8a-9d0b-4d92-9e3e-7d5a0d6c52a1")],
                PropType::List => vec![json!(["a", "b"]), json!("a,b")],
                PropType::FlatObject => vec![json!({"k": "v", "n": 1})],
                PropType::ObjectArray => vec![
                    json!([]),
                    json!([{"mac": "02:08:20:aa:bb:cc", "nic_tag": "admin", "ips": ["10.0.0.5/24"], "model": "virtio",
                            "path": "/zones/x/disk1", "size": 2048, "target": "/data", "source": "/s", "type": "lofs"}]),
                ],
                PropType::Zpool => vec![json!("zones")],
            }
        };
        let mut checked = 0;
        for brand in [Brand::Joyent, Brand::Kvm, Brand::Bhyve] {
            for p in props::PROPS.iter().filter(|p| !p.name.contains('*')) {
                for v in samples(p.ty) {
                    let payload = json!({ p.name: v.clone() });
                    let Ok((changes, _)) =
                        crate::vm::validate_lenient(crate::vm::Action::Update, Some(brand), &payload)
                    else {
                        continue;
                    };
                    let u = Update::from_map(&changes).unwrap_or_else(|e| panic!("{brand} {}={v}: {e}", p.name));
                    // Typed and back, it is the same change.
                    assert_eq!(value(&u), Value::Object(changes.clone()), "{brand} {}={v}", p.name);
                    assert_eq!(u.keys(), changes.keys().cloned().collect::<Vec<_>>());
                    checked += 1;
                }
            }
        }
        assert!(checked > 150, "only {checked} update payloads validated");
    }

    #[test]
    fn an_update_s_verbs_are_typed_and_plain_properties_are_set() {
        let changes = json!({
            "alias": null, "ram": 2048, "remove_tags": ["a"], "set_tags": {"b": 1},
            "add_nics": [{"nic_tag": "admin", "ips": ["dhcp"]}],
            "update_nics": [{"mac": "02:08:20:aa:bb:cc", "primary": true}],
            "remove_disks": ["/zones/x/disk1"], "update_disks": [{"path": "/zones/x/disk0", "size": 4096}]
        });
        let u = Update::from_map(changes.as_object().expect("object")).expect("fits");
        assert_eq!(u.add_nics.as_ref().map(|n| n[0].nic_tag.as_deref()), Some(Some("admin")));
        assert_eq!(u.update_nics.as_ref().map(|n| n[0].primary), Some(Some(true)));
        assert_eq!(u.update_disks.as_ref().map(|d| d[0].size), Some(Some(4096)));
        assert_eq!(u.remove_tags.as_deref(), Some(&["a".to_string()][..]));
        assert_eq!(u.set.get("alias"), Some(&Value::Null));
        assert_eq!(u.set.get("ram"), Some(&json!(2048)));
        assert!(u.touches_nics() && !u.set.contains_key("add_nics"));
        let bad = json!({"add_nics": [{"vlan_id": "twelve"}]});
        let e = Update::from_map(bad.as_object().expect("object")).expect_err("refused");
        assert_eq!(e.path, "add_nics[0].vlan_id", "{e}");
    }

    #[test]
    fn a_config_that_does_not_fit_names_the_property() {
        let bad = json!({"nics": [{"vlan_id": "twelve"}]});
        let e = Vm::from_map(bad.as_object().expect("object")).expect_err("refused");
        assert_eq!(e.path, "nics[0].vlan_id", "{e}");
        let bad = json!({"brand": "solaris10"});
        assert!(Vm::from_map(bad.as_object().expect("object")).is_err());
        // A list of numbers (as validation keeps them) reads as strings.
        let ok = json!({"resolvers": ["8.8.8.8"], "filesystems": [{"options": ["ro", 1]}]});
        let vm = Vm::from_map(ok.as_object().expect("object")).expect("fits");
        assert_eq!(vm.filesystems()[0].options.as_deref(), Some(&["ro".to_string(), "1".to_string()][..]));
    }
}
