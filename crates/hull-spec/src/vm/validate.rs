//! Payload validation as SmartOS's `vmadm validate` does it: every problem at once, in the
//! shape `{bad_brand, bad_properties, bad_values, missing_properties}`.

use super::props::{self, ADD, Prop, PropType, UPD};
use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Brand {
    /// What create makes when the payload names no brand.
    #[default]
    Joyent,
    JoyentMinimal,
    Lx,
    Kvm,
    Bhyve,
}

impl Brand {
    pub fn as_str(self) -> &'static str {
        match self {
            Brand::Joyent => "joyent",
            Brand::JoyentMinimal => "joyent-minimal",
            Brand::Lx => "lx",
            Brand::Kvm => "kvm",
            Brand::Bhyve => "bhyve",
        }
    }

    /// The brand's bit in the property table.
    pub fn bit(self) -> u8 {
        match self {
            Brand::Joyent => props::J,
            Brand::JoyentMinimal => props::M,
            Brand::Lx => props::L,
            Brand::Kvm => props::K,
            Brand::Bhyve => props::B,
        }
    }

    /// An OS zone (a container), as opposed to a hardware VM.
    pub fn is_os(self) -> bool {
        self.bit() & props::OS != 0
    }

    /// A hardware VM (qemu in a zone): kvm or bhyve.
    pub fn is_hvm(self) -> bool {
        !self.is_os()
    }

    /// The brand a stored VM says it has (`joyent` when it says none, as create fills in).
    pub fn of(cfg: &serde_json::Map<String, Value>) -> Brand {
        cfg.get("brand").and_then(Value::as_str).and_then(|b| b.parse().ok()).unwrap_or(Brand::Joyent)
    }
}

impl std::str::FromStr for Brand {
    type Err = String;
    fn from_str(s: &str) -> Result<Brand, String> {
        Ok(match s {
            "joyent" => Brand::Joyent,
            "joyent-minimal" => Brand::JoyentMinimal,
            "lx" => Brand::Lx,
            "kvm" => Brand::Kvm,
            "bhyve" => Brand::Bhyve,
            _ => return Err(format!("unknown brand {s:?}")),
        })
    }
}

impl fmt::Display for Brand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    Receive,
}

impl Action {
    /// The brand's bit in the property table.
    pub fn bit(self) -> u8 {
        match self {
            Action::Create => props::C,
            Action::Update => props::U,
            Action::Receive => props::R,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Receive => "receive",
        }
    }
}

impl std::str::FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Action, String> {
        match s {
            "create" => Ok(Action::Create),
            "update" => Ok(Action::Update),
            "receive" => Ok(Action::Receive),
            _ => Err(format!("unknown action {s:?} (create, update or receive)")),
        }
    }
}

/// Everything wrong with a payload, in SmartOS's shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ValidationErrors {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bad_brand: Option<String>,
    pub bad_values: Vec<String>,
    pub bad_properties: Vec<String>,
    pub missing_properties: Vec<String>,
}

impl ValidationErrors {
    pub fn is_empty(&self) -> bool {
        self.bad_brand.is_none()
            && self.bad_values.is_empty()
            && self.bad_properties.is_empty()
            && self.missing_properties.is_empty()
    }

    /// The errors as SmartOS prints them: pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(b) = &self.bad_brand {
            parts.push(format!("bad brand {b:?}"));
        }
        for (what, list) in [
            ("bad values", &self.bad_values),
            ("bad properties", &self.bad_properties),
            ("missing properties", &self.missing_properties),
        ] {
            if !list.is_empty() {
                parts.push(format!("{what}: {}", list.join(", ")));
            }
        }
        write!(f, "invalid payload: {}", parts.join("; "))
    }
}

impl std::error::Error for ValidationErrors {}

/// Checks one value against a type; returns it normalised (`"512"` becomes `512`, `"true"`
/// becomes `true`, `"a,b"` becomes `["a","b"]`), or None when it is not of that type.
fn check_type(ty: PropType, v: &Value) -> Option<Value> {
    // SmartOS keeps a null or blank string or integer: it unsets the property.
    let blank = |v: &Value| v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty());
    match ty {
        PropType::Boolean => match v {
            Value::Bool(_) => Some(v.clone()),
            Value::String(s) if s == "true" || s == "false" => Some(Value::Bool(s == "true")),
            // Deprecated in SmartOS, still taken: 1 for true (0 is refused there too).
            Value::Number(n) if n.as_u64() == Some(1) => Some(Value::Bool(true)),
            Value::String(s) if s == "1" => Some(Value::Bool(true)),
            _ => None,
        },
        PropType::Integer { .. } if blank(v) => Some(Value::Null),
        PropType::Integer { min, max } => {
            let n = match v {
                Value::Number(n) => match n.as_i64() {
                    Some(i) => i,
                    // A whole number written as a float (512.0), as JavaScript has it.
                    None => n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64)?,
                },
                Value::String(s) => {
                    let t = s.trim();
                    if !t.is_empty() && t.trim_start_matches('-').chars().all(|c| c.is_ascii_digit()) {
                        t.parse().ok()?
                    } else {
                        return None;
                    }
                }
                _ => return None,
            };
            (min..=max).contains(&n).then(|| Value::from(n))
        }
        PropType::String if blank(v) => Some(if v.is_null() { Value::Null } else { v.clone() }),
        PropType::String => v.is_string().then(|| v.clone()),
        // SmartOS's isUUID: lowercase hex only.
        PropType::Uuid => v
            .as_str()
            .filter(|s| !s.chars().any(|c| c.is_ascii_uppercase()))
            .and_then(|s| uuid::Uuid::parse_str(s).ok().filter(|_| s.len() == 36))
            .map(|u| Value::from(u.to_string())),
        PropType::List => match v {
            // An element may not hold a comma: the list is also stored as one string.
            Value::Array(a) => {
                a.iter().all(|x| x.is_number() || x.as_str().is_some_and(|s| !s.contains(','))).then(|| v.clone())
            }
            Value::String(s) => {
                Some(Value::Array(s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(Value::from).collect()))
            }
            _ => None,
        },
        PropType::FlatObject => match v {
            Value::Object(o) => o.values().all(|x| x.is_string() || x.is_number() || x.is_boolean()).then(|| v.clone()),
            _ => None,
        },
        PropType::ObjectArray => match v {
            Value::Array(a) => a.iter().all(Value::is_object).then(|| v.clone()),
            _ => None,
        },
        PropType::Zpool => v.as_str().filter(|s| !s.is_empty() && !s.contains('/')).map(|_| v.clone()),
    }
}

/// Checks that go beyond the type.
fn check_value(name: &str, v: &Value) -> bool {
    if v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty()) {
        return true; // unsets the property
    }
    match name {
        "nics.*.mac" => v.as_str().and_then(normal_mac).is_some(),
        "resolvers" => v
            .as_array()
            .is_some_and(|a| a.iter().all(|r| r.as_str().is_some_and(|s| s.parse::<std::net::IpAddr>().is_ok()))),
        "alias" => v.as_str().is_some_and(|s| s.len() <= 4096 && !s.chars().any(char::is_control)),
        "hostname" => v.as_str().is_some_and(valid_hostname),
        "routes" | "set_routes" => v
            .as_object()
            .is_some_and(|o| o.iter().all(|(dst, gw)| valid_route_dst(dst) && gw.as_str().is_some_and(valid_route_gw))),
        "dns_domain" => v.as_str().is_some_and(|s| s.len() <= 253 && valid_dns_chars(s)),
        _ => true,
    }
}

/// A name the kernel takes as a hostname (at most 64 bytes) and resolvers understand:
/// letters, digits, `-` and `.`, not starting with `-` or `.`.
pub fn valid_hostname(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && !s.starts_with(['-', '.']) && valid_dns_chars(s)
}

/// A route's destination: an address, or an address with a prefix length.
fn valid_route_dst(s: &str) -> bool {
    let (addr, len) = s.split_once('/').map_or((s, None), |(a, l)| (a, Some(l)));
    let Ok(ip) = addr.parse::<std::net::IpAddr>() else { return false };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    len.is_none_or(|l| l.parse::<u8>().is_ok_and(|n| n <= max))
}

/// A route's gateway: an address, or `nics[N]` or `macs[MAC]` (the route goes out of that
/// NIC, as VM.js's validLocalRoute has them).
fn valid_route_gw(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok() || route_nic(s).is_some() || route_mac(s).is_some()
}

/// The MAC of a `macs[MAC]` route gateway, written as stored (two lowercase digits an octet).
pub fn route_mac(gw: &str) -> Option<String> {
    gw.strip_prefix("macs[").and_then(|r| r.strip_suffix(']')).and_then(normal_mac)
}

/// The NIC index of a `nics[N]` route gateway (SmartOS: the route goes out of the VM's Nth
/// NIC, with no gateway address).
pub fn route_nic(gw: &str) -> Option<usize> {
    gw.strip_prefix("nics[").and_then(|r| r.strip_suffix(']')).and_then(|n| n.parse::<u16>().ok()).map(usize::from)
}

fn valid_dns_chars(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
}

/// A MAC address as SmartOS takes it (six octets of one or two hex digits, separated by
/// colons: `1:2:3:4:5:6` too), written the way it stores it: two lowercase digits each.
pub fn normal_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split(':').collect();
    (parts.len() == 6 && parts.iter().all(|p| (1..=2).contains(&p.len()) && p.chars().all(|c| c.is_ascii_hexdigit())))
        .then(|| parts.iter().map(|p| format!("{:0>2}", p.to_ascii_lowercase())).collect::<Vec<_>>().join(":"))
}

fn check_members(
    base: &str,
    key: &str,
    items: &mut [Value],
    brand: u8,
    member_action: u8,
    errs: &mut ValidationErrors,
) {
    for (i, item) in items.iter_mut().enumerate() {
        let Value::Object(obj) = item else { continue };
        for (k, v) in obj.iter_mut() {
            let row = format!("{base}.*.{k}");
            let shown = format!("{key}.{i}.{k}");
            match props::lookup(&row) {
                Some(p) if p.allows(brand, member_action) => match check_type(p.ty, v) {
                    Some(n) if check_value(&row, &n) => {
                        *v = match (row.as_str(), n.as_str().and_then(normal_mac)) {
                            ("nics.*.mac", Some(m)) => Value::from(m),
                            _ => n,
                        }
                    }
                    _ => errs.bad_values.push(shown),
                },
                _ => errs.bad_properties.push(shown),
            }
        }
    }
}

/// SmartOS's rule for where a KVM or bhyve disk comes from (VM.js, validateDiskSource): from
/// an image (`image_uuid`; then no `block_size`, and no `size` unless the VM has
/// `flexible_disk_size`), or blank (`size` given; then no `image_name` nor `image_size`).
/// A cdrom is neither. `image_size` is checked against the image where the node is known
/// ([`check_images`]).
fn disk_sources(input: &Map<String, Value>, errs: &mut ValidationErrors) {
    for list in ["disks", "add_disks"] {
        let Some(Value::Array(disks)) = input.get(list) else { continue };
        for (i, d) in disks.iter().enumerate() {
            let Value::Object(d) = d else { continue };
            if d.get("media").and_then(Value::as_str).is_some_and(|m| m != "disk") {
                continue;
            }
            let at = |k: &str| format!("{list}.{i}.{k}");
            if d.contains_key("image_uuid") {
                if d.contains_key("size") && !input.contains_key("flexible_disk_size") {
                    errs.bad_properties.push(at("size"));
                }
                if d.contains_key("block_size") {
                    errs.bad_properties.push(at("block_size"));
                }
            } else {
                if !d.contains_key("size") {
                    errs.missing_properties.push(at("size"));
                }
                for k in ["image_name", "image_size"] {
                    if d.contains_key(k) {
                        errs.bad_properties.push(at(k));
                    }
                }
            }
        }
    }
}

/// The image types a brand's zone root may come from (proptable.js's
/// `zoneroot_image_types`): lx takes Linux images (`lx-dataset`, `docker`), the joyent
/// brands `zone-dataset`.
pub fn zone_root_types(brand: Brand) -> &'static [&'static str] {
    match brand {
        Brand::Lx => &["lx-dataset", "docker"],
        _ => &["zone-dataset"],
    }
}

/// What a node knows of an installed image, for [`check_images`].
pub struct ImageInfo {
    /// IMGAPI's `type` (`zone-dataset`, `lx-dataset`, `zvol`, ...).
    pub image_type: String,
    /// A zvol image's size, MiB.
    pub size_mib: Option<u64>,
}

/// The checks of a payload's images that need the node (VM.js's validateImages): an OS
/// zone's `image_uuid` installed and a zone root, each disk's `image_uuid` installed and a
/// zvol, a disk's `image_size` the image's (filled in when absent). `lookup` answers for an
/// installed image.
pub fn check_images(
    brand: Brand,
    out: &mut Map<String, Value>,
    errs: &mut ValidationErrors,
    lookup: &dyn Fn(&str) -> Option<ImageInfo>,
) {
    if brand.is_os()
        && let Some(u) = out.get("image_uuid").and_then(Value::as_str)
    {
        match lookup(u) {
            Some(i) if zone_root_types(brand).contains(&i.image_type.as_str()) => {}
            _ => errs.bad_values.push("image_uuid".into()),
        }
    }
    for list in ["disks", "add_disks"] {
        let Some(Value::Array(disks)) = out.get_mut(list) else { continue };
        for (i, d) in disks.iter_mut().enumerate() {
            let Value::Object(d) = d else { continue };
            let Some(u) = d.get("image_uuid").and_then(Value::as_str).map(String::from) else { continue };
            match lookup(&u) {
                Some(img) if img.image_type == "zvol" => {
                    match (d.get("image_size").and_then(Value::as_u64), img.size_mib) {
                        (Some(given), Some(size)) if given != size => {
                            errs.bad_values.push(format!("{list}.{i}.image_size"))
                        }
                        (None, Some(size)) => {
                            d.insert("image_size".into(), Value::from(size));
                        }
                        (None, None) => errs.missing_properties.push(format!("{list}.{i}.image_size")),
                        _ => {}
                    }
                }
                _ => {
                    errs.bad_values.push(format!("{list}.{i}.image_uuid"));
                    if !d.contains_key("image_size") {
                        errs.missing_properties.push(format!("{list}.{i}.image_size"));
                    }
                }
            }
        }
    }
}

/// Validates `payload` for `action` on a VM of `brand`.
///
/// For create and receive, `brand` is the one the command names, or None to take it from
/// the payload; for update it is the VM's. Returns the payload normalised, or every problem.
pub fn validate(action: Action, brand: Option<Brand>, payload: &Value) -> Result<Map<String, Value>, ValidationErrors> {
    let (out, errs) = check(action, brand, payload);
    if errs.is_empty() { Ok(out) } else { Err(errs) }
}

/// Validates `payload` as `vmadm create` and `update` take it (SmartOS's VM.js): a bad
/// brand, a bad value or a missing property refuses the payload; properties this brand or
/// action does not have (`bad_properties`) are dropped, members of `nics` and the like
/// included, and named in the returned warnings.
pub fn validate_lenient(
    action: Action,
    brand: Option<Brand>,
    payload: &Value,
) -> Result<(Map<String, Value>, Vec<String>), ValidationErrors> {
    let (mut out, errs) = check(action, brand, payload);
    if errs.bad_brand.is_some() || !errs.bad_values.is_empty() || !errs.missing_properties.is_empty() {
        return Err(errs);
    }
    for bad in &errs.bad_properties {
        // `nics.0.flavour`: a member's property.
        let mut parts = bad.splitn(3, '.');
        if let (Some(list), Some(i), Some(k)) = (parts.next(), parts.next(), parts.next())
            && let Ok(i) = i.parse::<usize>()
            && let Some(Value::Object(m)) = out.get_mut(list).and_then(|l| l.get_mut(i))
        {
            m.remove(k);
        }
    }
    if action == Action::Update {
        out.remove("brand");
    }
    Ok((out, errs.bad_properties))
}

/// Validates without refusing: the payload normalised, and every problem found (empty when
/// there is none). [`validate`] and [`validate_lenient`] decide what refuses.
pub fn check_payload(action: Action, brand: Option<Brand>, payload: &Value) -> (Map<String, Value>, ValidationErrors) {
    check(action, brand, payload)
}

fn check(action: Action, brand: Option<Brand>, payload: &Value) -> (Map<String, Value>, ValidationErrors) {
    let mut errs = ValidationErrors::default();
    let Value::Object(input) = payload else {
        errs.bad_values.push("payload is not a JSON object".into());
        return (Map::new(), errs);
    };
    let brand = match (brand, input.get("brand")) {
        (Some(b), Some(given)) if action != Action::Update => {
            if given.as_str() != Some(b.as_str()) {
                errs.bad_values.push("brand".into());
            }
            b
        }
        (Some(b), _) => b,
        (None, Some(Value::String(s))) => match s.parse() {
            Ok(b) => b,
            Err(_) => {
                errs.bad_brand = Some(s.clone());
                return (Map::new(), errs);
            }
        },
        (None, Some(other)) => {
            errs.bad_brand = Some(other.to_string());
            return (Map::new(), errs);
        }
        // SmartOS's answer to a payload with no brand to check it against (create fills in
        // `joyent` before it validates).
        (None, None) => {
            errs.bad_brand = Some("undefined".into());
            return (Map::new(), errs);
        }
    };
    let (b, a) = (brand.bit(), action.bit());
    let mut out = Map::new();
    for (key, value) in input {
        let Some(p) = props::lookup(key).filter(|p| !p.name.contains('*')) else {
            errs.bad_properties.push(key.clone());
            continue;
        };
        if !p.allows(b, a) {
            errs.bad_properties.push(key.clone());
            continue;
        }
        let Some(mut v) = check_type(p.ty, value).filter(|v| check_value(p.name, v)) else {
            errs.bad_values.push(key.clone());
            continue;
        };
        if p.ty == PropType::ObjectArray
            && let Value::Array(items) = &mut v
        {
            let base = p.check_as.unwrap_or(p.name);
            let member_action = if key.starts_with("update_") { UPD } else { ADD };
            check_members(base, key, items, b, member_action, &mut errs);
        }
        out.insert(key.clone(), v);
    }
    if b & props::HW != 0 {
        disk_sources(input, &mut errs);
    }
    if matches!(action, Action::Create | Action::Receive) {
        for p in props::PROPS.iter().filter(|p: &&Prop| p.required & b != 0) {
            // As VM.validate: the payload must say its brand even when the caller names one
            // (`vmadm create` fills in joyent before it validates).
            if !input.contains_key(p.name) {
                errs.missing_properties.push(p.name.to_string());
            }
        }
    }
    if action != Action::Update {
        out.insert("brand".into(), Value::from(brand.as_str()));
    }
    (out, errs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const IMG: &str = "c02a2044-c1bd-11e4-bd8c-dfc1db8b0182";

    #[test]
    fn a_smartos_payload_is_accepted_and_normalised() {
        let p = json!({
            "brand": "joyent-minimal",
            "image_uuid": IMG,
            "alias": "web01",
            "hostname": "web01",
            "max_physical_memory": "512",
            "cpu_cap": 100,
            "autoboot": "true",
            "resolvers": "8.8.8.8,8.8.4.4",
            "quota": 10,
            "customer_metadata": {"user-script": "#!/bin/sh\necho hi"},
            "tags": {"role": "web", "weight": 3},
            "nics": [{"nic_tag": "admin", "ips": ["10.0.0.5/24"], "gateways": ["10.0.0.1"], "primary": true, "vlan_id": 12}]
        });
        let out = validate(Action::Create, None, &p).expect("valid");
        assert_eq!(out["max_physical_memory"], json!(512));
        assert_eq!(out["autoboot"], json!(true));
        assert_eq!(out["resolvers"], json!(["8.8.8.8", "8.8.4.4"]));
        assert_eq!(out["brand"], json!("joyent-minimal"));
    }

    #[test]
    fn numbers_and_names_that_cannot_be_applied_are_refused() {
        let bad = |k: &str, v: Value| {
            let mut p = json!({"brand": "joyent-minimal", "image_uuid": IMG});
            p[k] = v;
            validate(Action::Create, None, &p).err().map(|e| e.to_json()).unwrap_or_default()
        };
        // 2^34 + 1 GiB wrapped to 1 GiB; 10^15 GiB overflows bytes.
        assert!(bad("quota", json!(17_179_869_185u64)).contains("quota"));
        assert!(bad("quota", json!(1_000_000_000_000_000u64)).contains("quota"));
        assert!(bad("quota", json!(17_179_869_183u64)).is_empty());
        assert!(bad("max_lwps", json!(0)).contains("max_lwps"), "0 is no limit in the cgroup, so refused");
        assert!(bad("max_physical_memory", json!(i64::MAX)).contains("max_physical_memory"));
        assert!(bad("cpu_cap", json!(i64::MAX)).contains("cpu_cap"));
        assert!(bad("hostname", json!("h".repeat(5000))).contains("hostname"));
        assert!(bad("hostname", json!("a b")).contains("hostname"));
        assert!(bad("dns_domain", json!("example.com\nnameserver 6.6.6.6")).contains("dns_domain"));
        assert!(bad("alias", json!("a".repeat(65_536))).contains("alias"));
        assert!(bad("routes", json!({"10.0.0.0/99": "10.0.0.1"})).contains("routes"));
        assert!(bad("routes", json!({"10.2.0.0/16": "gateway"})).contains("routes"));
        assert!(bad("routes", json!({"10.2.0.0/16": "10.0.0.1", "10.3.0.1": "nics[1]"})).is_empty());
        assert!(bad("routes", json!({"10.4.0.0/16": "macs[2:0:0:0:0:1]"})).is_empty());
        assert!(bad("routes", json!({"10.4.0.0/16": "macs[nope]"})).contains("routes"));
        assert!(bad("hostname", json!("web-01.example.com")).is_empty());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let p = json!({
            "brand": "joyent",
            "colour": "blue",
            "vcpus": 2,
            "max_physical_memory": -5,
            "max_swap": 100,
            "cpu_cap": 1.5,
            "uuid": "nope",
            "nics": [{"nic_tag": "admin", "vlan_id": 5000, "mac": "zz:00", "flavour": 1}],
            "resolvers": ["not-an-ip"]
        });
        let errs = validate(Action::Create, None, &p).expect_err("invalid");
        assert_eq!(errs.bad_brand, None);
        assert_eq!(errs.bad_properties, vec!["colour", "nics.0.flavour", "vcpus"]);
        assert_eq!(
            errs.bad_values,
            vec!["cpu_cap", "max_physical_memory", "max_swap", "nics.0.mac", "nics.0.vlan_id", "resolvers", "uuid"]
        );
        assert_eq!(errs.missing_properties, vec!["image_uuid"]);
        let shape: Value = serde_json::from_str(&errs.to_json()).expect("json");
        assert!(shape.get("bad_values").is_some() && shape.get("missing_properties").is_some());
    }

    #[test]
    fn brand_problems() {
        // SmartOS's validate names the brand it could not check against; create fills in
        // joyent first (hull-vm), so only validate says this.
        let errs = validate(Action::Create, None, &json!({"image_uuid": IMG})).expect_err("no brand");
        assert_eq!(errs.bad_brand.as_deref(), Some("undefined"));
        let errs = validate(Action::Create, None, &json!({"brand": "solaris8"})).expect_err("bad brand");
        assert_eq!(errs.bad_brand.as_deref(), Some("solaris8"));
        let errs = validate(Action::Create, Some(Brand::Lx), &json!({"brand": "joyent", "image_uuid": IMG}))
            .expect_err("mismatch");
        assert_eq!(errs.bad_values, vec!["brand"]);
        assert_eq!(errs.missing_properties, vec!["kernel_version"], "lx needs kernel_version, as on SmartOS");
        assert!(validate(Action::Create, None, &json!([1, 2])).is_err());
    }

    #[test]
    fn update_takes_update_properties_only() {
        let ok = validate(
            Action::Update,
            Some(Brand::Joyent),
            &json!({"max_physical_memory": 1024, "set_tags": {"a": "b"}, "update_nics": [{"mac": "02:00:00:00:00:01", "primary": true}]}),
        )
        .expect("valid update");
        assert_eq!(ok["max_physical_memory"], json!(1024));
        let errs =
            validate(Action::Update, Some(Brand::Joyent), &json!({"image_uuid": IMG, "brand": "lx"})).expect_err("no");
        assert_eq!(errs.bad_properties, vec!["brand", "image_uuid"]);
        let errs = validate(Action::Update, Some(Brand::Joyent), &json!({"update_nics": [{"image_uuid": IMG}]}))
            .expect_err("no");
        assert_eq!(errs.bad_properties, vec!["update_nics.0.image_uuid"]);
    }

    #[test]
    fn unknown_properties_are_dropped_with_a_warning_when_applied() {
        let p = json!({"brand": "joyent", "image_uuid": IMG, "colour": "blue",
            "nics": [{"nic_tag": "admin", "ips": ["10.0.0.5/24"], "flavour": 1}]});
        assert!(validate(Action::Create, None, &p).is_err(), "validate still reports them");
        let (out, dropped) = validate_lenient(Action::Create, None, &p).expect("applied");
        assert_eq!(dropped, vec!["colour", "nics.0.flavour"]);
        assert!(!out.contains_key("colour"));
        assert_eq!(out["nics"][0], json!({"nic_tag": "admin", "ips": ["10.0.0.5/24"]}));
        // A bad value still refuses the payload.
        let bad = json!({"brand": "joyent", "image_uuid": IMG, "colour": "blue", "cpu_cap": "lots"});
        assert_eq!(validate_lenient(Action::Create, None, &bad).expect_err("bad value").bad_values, vec!["cpu_cap"]);
        // And so does an update of something update cannot change.
        let (_, dropped) =
            validate_lenient(Action::Update, Some(Brand::Joyent), &json!({"alias": "x", "brand": "lx"})).expect("ok");
        assert_eq!(dropped, vec!["brand"]);
    }

    #[test]
    fn null_and_blank_unset_strings_and_numbers() {
        let (out, _) = validate_lenient(
            Action::Update,
            Some(Brand::Joyent),
            &json!({"alias": null, "zfs_filesystem_limit": "", "cpu_cap": null, "hostname": "  "}),
        )
        .expect("unsets");
        assert_eq!(out["alias"], Value::Null);
        assert_eq!(out["cpu_cap"], Value::Null);
        assert_eq!(out["zfs_filesystem_limit"], Value::Null);
        assert!(validate(Action::Update, Some(Brand::Joyent), &json!({"autoboot": null})).is_err(), "not a boolean");
    }

    #[test]
    fn values_as_smartos_takes_them() {
        let ok = |k: &str, v: Value| {
            let mut p = json!({"brand": "joyent", "image_uuid": IMG});
            p[k] = v;
            validate(Action::Create, None, &p).map(|o| o[k].clone())
        };
        assert_eq!(ok("max_physical_memory", json!(512.0)).expect("whole float"), json!(512));
        assert!(ok("max_physical_memory", json!(512.5)).is_err());
        assert!(ok("max_physical_memory", json!(true)).is_err());
        assert_eq!(ok("autoboot", json!(1)).expect("deprecated 1"), json!(true));
        assert_eq!(ok("autoboot", json!("1")).expect("deprecated \"1\""), json!(true));
        assert!(ok("autoboot", json!(0)).is_err(), "SmartOS takes 1 but not 0");
        assert_eq!(ok("resolvers", json!("8.8.8.8,,8.8.4.4")).expect("list"), json!(["8.8.8.8", "8.8.4.4"]));
        assert!(ok("fs_allowed", json!(["ufs,pcfs"])).is_err(), "a member may not hold a comma");
        assert!(ok("image_uuid", json!(IMG.to_uppercase())).is_err(), "uuids are lowercase");
        let nic = |mac: &str| {
            let p = json!({"brand": "joyent", "image_uuid": IMG, "nics": [{"nic_tag": "admin", "mac": mac}]});
            validate(Action::Create, None, &p).map(|o| o["nics"][0]["mac"].clone())
        };
        assert_eq!(nic("01:02:03:04:05:06").expect("SmartOS's own tests use it"), json!("01:02:03:04:05:06"));
        assert_eq!(nic("2:0:A:b:c:D").expect("short octets"), json!("02:00:0a:0b:0c:0d"));
        assert!(nic("02-00-00-00-00-01").is_err());
        assert!(nic("02:00:00:00:00").is_err());
        assert!(nic("002:00:00:00:00:01").is_err());
    }

    proptest::proptest! {
        // Untrusted payloads: any JSON value, any brand, any action: Ok or Err, never a panic.
        #[test]
        fn never_panics(text in ".{0,300}", brand in 0usize..6, action in 0usize..3) {
            let brands = [None, Some(Brand::Joyent), Some(Brand::JoyentMinimal), Some(Brand::Lx), Some(Brand::Kvm), Some(Brand::Bhyve)];
            let actions = [Action::Create, Action::Update, Action::Receive];
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                let _ = validate(actions[action], brands[brand], &v);
            }
        }

        #[test]
        fn never_panics_on_structured(keys in proptest::collection::vec("[a-z_.*0-9]{1,24}", 0..8), n in proptest::prelude::any::<i64>(), s in ".{0,12}") {
            let mut m = Map::new();
            for (i, k) in keys.iter().enumerate() {
                let v = match i % 5 { 0 => json!(n), 1 => json!(s), 2 => json!([s, n]), 3 => json!({k: s}), _ => json!([{k: n}]) };
                m.insert(k.clone(), v);
            }
            m.insert("brand".into(), json!("joyent"));
            let _ = validate(Action::Create, None, &Value::Object(m.clone()));
            let _ = validate(Action::Update, Some(Brand::Lx), &Value::Object(m));
        }
    }
}
