//! Payload validation as SmartOS's `vmadm validate` does it: every problem at once, in the
//! shape `{bad_brand, bad_properties, bad_values, missing_properties}`.

use super::props::{self, ADD, Prop, PropType, UPD};
use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Brand {
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

    fn bit(self) -> u8 {
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
    fn bit(self) -> u8 {
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
    match ty {
        PropType::Boolean => match v {
            Value::Bool(_) => Some(v.clone()),
            Value::String(s) if s == "true" || s == "false" => Some(Value::Bool(s == "true")),
            _ => None,
        },
        PropType::Integer { min, max } => {
            let n = match v {
                Value::Number(n) => n.as_i64()?,
                Value::String(s) if !s.is_empty() && s.trim_start_matches('-').chars().all(|c| c.is_ascii_digit()) => {
                    s.parse().ok()?
                }
                _ => return None,
            };
            (min..=max).contains(&n).then(|| Value::from(n))
        }
        PropType::String => v.is_string().then(|| v.clone()),
        PropType::Uuid => v.as_str().and_then(|s| uuid::Uuid::parse_str(s).ok()).map(|u| Value::from(u.to_string())),
        PropType::List => match v {
            Value::Array(a) => a.iter().all(|x| x.is_string() || x.is_number()).then(|| v.clone()),
            Value::String(s) if s.is_empty() => Some(Value::Array(Vec::new())),
            Value::String(s) => Some(Value::Array(s.split(',').map(|x| Value::from(x.trim())).collect())),
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
    match name {
        "nics.*.mac" => v.as_str().is_some_and(valid_mac),
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

/// A route's gateway: an address, or `nics[N]` (the route goes out of that NIC).
fn valid_route_gw(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok() || route_nic(s).is_some()
}

/// The NIC index of a `nics[N]` route gateway (SmartOS: the route goes out of the VM's Nth
/// NIC, with no gateway address).
pub fn route_nic(gw: &str) -> Option<usize> {
    gw.strip_prefix("nics[").and_then(|r| r.strip_suffix(']')).and_then(|n| n.parse::<u16>().ok()).map(usize::from)
}

fn valid_dns_chars(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
}

fn valid_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
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
                    Some(n) if check_value(&row, &n) => *v = n,
                    _ => errs.bad_values.push(shown),
                },
                _ => errs.bad_properties.push(shown),
            }
        }
    }
}

/// Validates `payload` for `action` on a VM of `brand`.
///
/// For create and receive, `brand` is the one the command names, or None to take it from
/// the payload; for update it is the VM's. Returns the payload normalised, or every problem.
pub fn validate(action: Action, brand: Option<Brand>, payload: &Value) -> Result<Map<String, Value>, ValidationErrors> {
    let mut errs = ValidationErrors::default();
    let Value::Object(input) = payload else {
        errs.bad_values.push("payload is not a JSON object".into());
        return Err(errs);
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
                return Err(errs);
            }
        },
        (None, Some(other)) => {
            errs.bad_brand = Some(other.to_string());
            return Err(errs);
        }
        (None, None) => {
            errs.missing_properties.push("brand".into());
            return Err(errs);
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
    if matches!(action, Action::Create | Action::Receive) {
        for p in props::PROPS.iter().filter(|p: &&Prop| p.required & b != 0) {
            // A brand named on the command line stands for the payload's.
            if !input.contains_key(p.name) && p.name != "brand" {
                errs.missing_properties.push(p.name.to_string());
            }
        }
    }
    if errs.is_empty() {
        out.insert("brand".into(), Value::from(brand.as_str()));
        if action == Action::Update {
            out.remove("brand");
        }
        Ok(out)
    } else {
        Err(errs)
    }
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
        let errs = validate(Action::Create, None, &json!({"image_uuid": IMG})).expect_err("no brand");
        assert_eq!(errs.missing_properties, vec!["brand"]);
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
