//! The rules SmartOS's VM.js applies across a VM's NICs at create and update, beyond each
//! property's own type: VRRP, the KVM NIC model, nic tag names, one primary, at most 32
//! addresses a NIC. Pure: every problem is returned, in SmartOS's words.

use serde_json::{Map, Value};

/// The MAC a VRRP NIC has (the VRRP virtual router MAC, RFC 5798).
pub fn vrrp_mac(vrid: u64) -> String {
    format!("00:00:5e:00:01:{:02x}", vrid & 0xff)
}

fn ip_of(cidr: &str) -> &str {
    cidr.split('/').next().unwrap_or(cidr)
}

fn strs(n: &Map<String, Value>, k: &str) -> Vec<String> {
    match n.get(k) {
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_str().map(String::from)).collect(),
        Some(Value::String(s)) => s.split(',').filter(|x| !x.is_empty()).map(String::from).collect(),
        _ => Vec::new(),
    }
}

/// Fills in what a NIC's VRRP id decides (its MAC), before MACs are assigned at random.
pub fn fill_vrrp_macs(added: &mut [Value]) {
    for n in added.iter_mut().filter_map(Value::as_object_mut) {
        if let Some(vrid) = n.get("vrrp_vrid").and_then(Value::as_u64)
            && !n.contains_key("mac")
        {
            n.insert("mac".into(), Value::from(vrrp_mac(vrid)));
        }
    }
}

/// Checks the NICs a VM will have (`all`, after the change), of which `added` are new and
/// `updated` the payload's changes to others (`update_nics`), for
/// a VM whose NICs need a model (`model_required`: KVM) unless `nic_driver` gives one.
pub fn check(
    all: &[Value],
    added: &[Value],
    updated: &[Value],
    model_required: bool,
    nic_driver: Option<&str>,
) -> Vec<String> {
    let mut out = Vec::new();
    let objs: Vec<&Map<String, Value>> = all.iter().filter_map(Value::as_object).collect();
    for n in added.iter().filter_map(Value::as_object) {
        let tag_ok = n
            .get("nic_tag")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '/'));
        // An overlay NIC names its network instead of a tag.
        if !tag_ok && !n.contains_key("network_uuid") && !n.contains_key("overlay") {
            out.push(format!("invalid or missing .nic_tag option for NIC: {}", Value::Object(n.clone())));
        }
        if model_required
            && nic_driver.is_none()
            && n.get("model").and_then(Value::as_str).is_none_or(|m| m.is_empty() || m == "undefined")
        {
            out.push(format!("missing .model option for NIC: {}", Value::Object(n.clone())));
        }
        if let Some(vrid) = n.get("vrrp_vrid").and_then(Value::as_u64)
            && let Some(mac) = n.get("mac").and_then(Value::as_str)
            && mac != vrrp_mac(vrid)
        {
            out.push("Cannot set both mac and vrrp_vrid".into());
        }
    }
    let mut vrids = Vec::new();
    for vrid in objs.iter().filter_map(|n| n.get("vrrp_vrid").and_then(Value::as_u64)) {
        if vrids.contains(&vrid) {
            out.push(format!("Cannot add multiple NICs with the same VRID: {vrid}"));
        }
        vrids.push(vrid);
    }
    let primary_ips: Vec<String> = objs.iter().flat_map(|n| strs(n, "vrrp_primary_ip")).collect();
    let mut only_vrrp = true;
    for n in &objs {
        let ips = strs(n, "ips");
        if n.contains_key("vrrp_vrid") {
            if ips.iter().any(|ip| primary_ips.iter().any(|p| p == ip_of(ip))) {
                out.push("Cannot set vrrp_primary_ip to the IP of a VRRP nic".into());
            }
            if !n.contains_key("vrrp_primary_ip") {
                out.push("vrrp_vrid set but not vrrp_primary_ip".into());
            }
        } else {
            only_vrrp = false;
        }
        let count = strs(n, "allowed_ips").len() + usize::from(n.contains_key("vrrp_primary_ip")) + ips.len();
        if count > 32 {
            out.push("More than 32 IPs cannot be associated with a NIC".into());
        }
    }
    if only_vrrp && !objs.is_empty() {
        out.push("VM cannot contain only VRRP nics".into());
    }
    let own: Vec<String> = objs.iter().filter(|n| !n.contains_key("vrrp_vrid")).flat_map(|n| strs(n, "ips")).collect();
    for p in &primary_ips {
        if !own.iter().any(|ip| ip_of(ip) == p) {
            out.push("vrrp_primary_ip must belong to the same VM".into());
        }
    }
    // `primary` is only ever true (a VM always has one); setting it moves it (the caller
    // clears it from the others), and a payload may set it on one NIC only.
    let mut primaries = 0;
    for n in added.iter().chain(updated).filter_map(Value::as_object) {
        match n.get("primary") {
            None => {}
            Some(Value::Bool(true)) => primaries += 1,
            Some(other) => out.push(format!("invalid value for NIC's primary flag: {other} (must be true)")),
        }
    }
    if primaries > 1 {
        out.push("payload specifies more than 1 primary NIC".into());
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(nics: Value, model: bool) -> Vec<String> {
        let mut all = nics.as_array().cloned().expect("array");
        fill_vrrp_macs(&mut all);
        check(&all, &all, &[], model, None)
    }

    #[test]
    fn vrrp_rules() {
        let ok = json!([
            {"nic_tag": "admin", "ips": ["10.0.0.5/24"]},
            {"nic_tag": "admin", "vrrp_vrid": 1, "vrrp_primary_ip": "10.0.0.5", "ips": ["10.0.0.9/24"]}
        ]);
        assert!(run(ok.clone(), false).is_empty(), "{:?}", run(ok, false));
        let mut filled = json!([{"nic_tag": "admin", "vrrp_vrid": 16}]).as_array().cloned().expect("a");
        fill_vrrp_macs(&mut filled);
        assert_eq!(filled[0]["mac"], "00:00:5e:00:01:10");
        let only = run(json!([{"nic_tag": "admin", "vrrp_vrid": 1, "vrrp_primary_ip": "10.0.0.5"}]), false);
        assert!(only.contains(&"VM cannot contain only VRRP nics".to_string()), "{only:?}");
        assert!(only.contains(&"vrrp_primary_ip must belong to the same VM".to_string()), "{only:?}");
        let e = run(json!([{"nic_tag": "admin", "ips": ["10.0.0.5/24"]}, {"nic_tag": "admin", "vrrp_vrid": 2}]), false);
        assert_eq!(e, vec!["vrrp_vrid set but not vrrp_primary_ip"]);
        let e = run(
            json!([{"nic_tag": "admin", "ips": ["10.0.0.5/24"]},
                {"nic_tag": "admin", "vrrp_vrid": 3, "vrrp_primary_ip": "10.0.0.5", "mac": "02:00:00:00:00:01"},
                {"nic_tag": "admin", "vrrp_vrid": 3, "vrrp_primary_ip": "10.0.0.5"}]),
            false,
        );
        assert!(e.contains(&"Cannot set both mac and vrrp_vrid".to_string()), "{e:?}");
        assert!(e.contains(&"Cannot add multiple NICs with the same VRID: 3".to_string()), "{e:?}");
    }

    #[test]
    fn models_tags_primaries_and_counts() {
        let e = run(json!([{"nic_tag": "admin", "ips": ["10.0.0.5/24"]}]), true);
        assert!(e[0].starts_with("missing .model option"), "{e:?}");
        assert!(run(json!([{"nic_tag": "admin", "model": "virtio"}]), true).is_empty());
        let all = json!([{"nic_tag": "admin"}]).as_array().cloned().expect("a");
        assert!(check(&all, &all, &[], true, Some("virtio")).is_empty(), "nic_driver stands for the model");
        // An update may move the flag (the caller clears the old one) but not unset it.
        let all = json!([{"nic_tag": "a", "mac": "02:00:00:00:00:01"}]).as_array().cloned().expect("a");
        let upd = json!([{"mac": "02:00:00:00:00:01", "primary": true}]).as_array().cloned().expect("a");
        assert!(check(&all, &[], &upd, false, None).is_empty());
        let upd = json!([{"mac": "02:00:00:00:00:01", "primary": "blah"}]).as_array().cloned().expect("a");
        assert_eq!(check(&all, &[], &upd, false, None).len(), 1);
        assert!(run(json!([{"nic_tag": "ad min"}]), false)[0].starts_with("invalid or missing .nic_tag"));
        let e = run(json!([{"nic_tag": "a", "primary": true}, {"nic_tag": "b", "primary": true}]), false);
        assert_eq!(e, vec!["payload specifies more than 1 primary NIC"]);
        let e = run(json!([{"nic_tag": "a", "primary": false}]), false);
        assert_eq!(e, vec!["invalid value for NIC's primary flag: false (must be true)"]);
        let many: Vec<String> = (0..33).map(|i| format!("10.0.1.{i}/24")).collect();
        let e = run(json!([{"nic_tag": "a", "ips": many}]), false);
        assert_eq!(e, vec!["More than 32 IPs cannot be associated with a NIC"]);
    }
}
