//! Which keys a VM has, where each comes from, and who may change it, as smartos-live's
//! metadata agent serves them:
//!
//! - `sdc:` keys are read-only, from the VM's own properties: `sdc:nics`, `sdc:resolvers`,
//!   `sdc:tmpfs` (JSON), `sdc:routes` (a list of `{linklocal, dst, gateway}`, a `nics[N]` or
//!   `macs[MAC]` gateway given as that NIC's address), `sdc:operator-script`
//!   (internal_metadata's `operator-script`), `sdc:volumes`, `sdc:tags.NAME`, and the
//!   agent's list of plain fields (`sdc:uuid`, `sdc:alias`, `sdc:hostname`, ...);
//! - a key ending in `_pw`, or whose prefix before `:` is one of the VM's
//!   `internal_metadata_namespaces`, is internal_metadata's; namespaced ones are read-only;
//! - every other key is customer_metadata's, which the tenant may put and delete.
//!
//! `KEYS` lists customer keys (not `_pw`, not namespaced) and internal ones that are `_pw`
//! or namespaced, never `sdc:` keys.

use serde_json::{Map, Value};

/// The plain properties `sdc:NAME` serves (agent.js's sdc_fields).
pub const SDC_FIELDS: &[&str] = &[
    "alias",
    "billing_id",
    "brand",
    "cpu_cap",
    "cpu_shares",
    "create_timestamp",
    "server_uuid",
    "image_uuid",
    "datacenter_name",
    "do_not_inventory",
    "dns_domain",
    "force_metadata_socket",
    "fs_allowed",
    "hostname",
    "internal_metadata_namespaces",
    "limit_priv",
    "last_modified",
    "maintain_resolvers",
    "max_physical_memory",
    "max_locked_memory",
    "max_lwps",
    "max_swap",
    "nics",
    "owner_uuid",
    "package_name",
    "package_version",
    "quota",
    "ram",
    "resolvers",
    "routes",
    "state",
    "tmpfs",
    "uuid",
    "vcpus",
    "vnc_port",
    "zfs_io_priority",
    "zonepath",
    "zonename",
];

fn namespace<'a>(vm: &Map<String, Value>, key: &'a str) -> Option<&'a str> {
    let (prefix, _) = key.split_once(':')?;
    let ns = vm.get("internal_metadata_namespaces")?.as_array()?;
    ns.iter().any(|n| n.as_str() == Some(prefix)).then_some(prefix)
}

/// Which map a tenant's key lives in.
fn which(vm: &Map<String, Value>, key: &str) -> &'static str {
    if key.ends_with("_pw") || namespace(vm, key).is_some() { "internal_metadata" } else { "customer_metadata" }
}

/// A value as the protocol gives it: strings as they are, numbers and booleans written out;
/// anything else is not a value (FAILURE, as agent.js answers).
fn scalar(v: Option<&Value>) -> Result<Option<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(_) => Err("the value is not a string".into()),
    }
}

fn json_of(v: Option<&Value>) -> Option<String> {
    v.filter(|v| !v.is_null()).map(Value::to_string)
}

/// `sdc:routes`: each route, a NIC gateway given as that NIC's address.
fn routes(vm: &Map<String, Value>) -> Option<String> {
    let routes = vm.get("routes")?.as_object()?;
    let nics = vm.get("nics").and_then(Value::as_array).cloned().unwrap_or_default();
    let nic_ip = |n: &Value| {
        let ip = n
            .get("ip")
            .and_then(Value::as_str)
            .or_else(|| n.get("ips").and_then(Value::as_array).and_then(|a| a.first()).and_then(Value::as_str))?;
        let ip = ip.split('/').next().unwrap_or(ip);
        (ip != "dhcp" && ip != "addrconf").then(|| ip.to_string())
    };
    let mut out = Vec::new();
    for (dst, gw) in routes {
        let Some(gw) = gw.as_str() else { continue };
        // The gateway forms validation takes (hull-spec's readers of them).
        let stored_mac = |n: &&Value| n.get("mac").and_then(Value::as_str).and_then(hull_spec::vm::normal_mac);
        let link = if let Some(i) = hull_spec::vm::route_nic(gw) {
            Some(nics.get(i).and_then(nic_ip))
        } else {
            hull_spec::vm::route_mac(gw)
                .map(|mac| nics.iter().find(|n| stored_mac(n).as_deref() == Some(mac.as_str())).and_then(nic_ip))
        };
        match link {
            None => out.push(serde_json::json!({"linklocal": false, "dst": dst, "gateway": gw})),
            Some(Some(ip)) => out.push(serde_json::json!({"linklocal": true, "dst": dst, "gateway": ip})),
            // A link route through a NIC without a static address: left out, as agent.js does.
            Some(None) => {}
        }
    }
    Some(Value::Array(out).to_string())
}

/// A key's value in the VM `vm` (as `vmadm get` shows it).
pub fn get(vm: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    if let Some(k) = key.strip_prefix("sdc:") {
        let internal = vm.get("internal_metadata");
        return match k {
            "nics" | "resolvers" | "tmpfs" => Ok(json_of(vm.get(k))),
            "routes" => Ok(routes(vm)),
            "operator-script" => scalar(internal.and_then(|m| m.get("operator-script"))),
            "volumes" => scalar(internal.and_then(|m| m.get("sdc:volumes"))),
            _ => {
                if let Some(tag) = k.strip_prefix("tags.") {
                    return scalar(vm.get("tags").and_then(|t| t.get(tag)));
                }
                let top = k.split('.').next().unwrap_or(k);
                if !SDC_FIELDS.contains(&top) {
                    return Ok(None);
                }
                // A dotted name reaches inside a field (`sdc:nics.0.ip`), as VM.flatten does.
                let mut v = vm.get(top);
                for part in k.split('.').skip(1) {
                    v = v.and_then(|x| match x {
                        Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
                        Value::Object(o) => o.get(part),
                        _ => None,
                    });
                }
                scalar(v)
            }
        };
    }
    let map = which(vm, key);
    scalar(vm.get(map).and_then(|m| m.get(key)))
}

/// What `KEYS` lists.
pub fn keys(vm: &Map<String, Value>) -> Vec<String> {
    let names = |m: &str| -> Vec<String> {
        vm.get(m).and_then(Value::as_object).map(|o| o.keys().cloned().collect()).unwrap_or_default()
    };
    let mut out: Vec<String> =
        names("customer_metadata").into_iter().filter(|k| which(vm, k) == "customer_metadata").collect();
    out.extend(names("internal_metadata").into_iter().filter(|k| which(vm, k) == "internal_metadata"));
    out
}

/// The longest key a tenant may put.
pub const MAX_KEY: usize = 256;
/// The largest value a tenant may put (a user-script fits many times over).
pub const MAX_VALUE: usize = 256 * 1024;
/// The most a VM's customer and internal metadata may hold together after a tenant's PUT:
/// the tenant writes the host's records (the VM's config, the event log), so it is bounded.
pub const MAX_TOTAL: usize = 1 << 20;

/// Where a tenant's PUT of `key` = `value` goes, as [`writable`], and whether it fits.
pub fn check_put(vm: &Map<String, Value>, key: &str, value: &str) -> Result<&'static str, String> {
    let which = writable(vm, key)?;
    if key.len() > MAX_KEY {
        return Err(format!("the key is longer than {MAX_KEY} bytes"));
    }
    if value.len() > MAX_VALUE {
        return Err(format!("the value is larger than {MAX_VALUE} bytes"));
    }
    let size = |m: &str, skip: Option<&str>| -> usize {
        vm.get(m)
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| Some(k.as_str()) != skip)
                    .map(|(k, v)| k.len() + v.as_str().map(str::len).unwrap_or_else(|| v.to_string().len()))
                    .sum()
            })
            .unwrap_or(0)
    };
    let others = if which == "customer_metadata" {
        size("customer_metadata", Some(key)) + size("internal_metadata", None)
    } else {
        size("customer_metadata", None) + size("internal_metadata", Some(key))
    };
    if others + key.len() + value.len() > MAX_TOTAL {
        return Err(format!("the VM's metadata would be larger than {MAX_TOTAL} bytes"));
    }
    Ok(which)
}

/// Where a tenant's PUT or DELETE of `key` goes (`customer_metadata`, or
/// `internal_metadata` for `_pw` keys and `operator-script`), or why it may not.
pub fn writable(vm: &Map<String, Value>, key: &str) -> Result<&'static str, String> {
    if key.starts_with("sdc:") {
        return Err("Cannot update the \"sdc\" Namespace.".into());
    }
    if let Some(ns) = namespace(vm, key) {
        return Err(format!("Cannot update the \"{ns}\" Namespace."));
    }
    Ok(if key.ends_with("_pw") || key == "operator-script" { "internal_metadata" } else { "customer_metadata" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm() -> Map<String, Value> {
        json!({
            "uuid": "6bb5ed8a-9d0b-4d92-9e3e-7d5a0d6c52a1", "alias": "web0", "hostname": "web0",
            "max_physical_memory": 256, "do_not_inventory": true,
            "nics": [{"interface": "net0", "mac": "02:08:20:aa:bb:cc", "ip": "10.0.0.5", "ips": ["10.0.0.5/24"]},
                     {"interface": "net1", "mac": "02:08:20:aa:bb:cd", "ips": ["dhcp"]}],
            "resolvers": ["8.8.8.8"],
            "routes": {"10.1.0.0/16": "10.0.0.1", "10.2.0.0/16": "nics[0]", "10.3.0.0/16": "macs[02:08:20:AA:BB:CC]",
                       "10.4.0.0/16": "nics[1]"},
            "tags": {"role": "web", "n": 3},
            "customer_metadata": {"user-script": "#!/bin/sh", "root_pw": "c", "docker:x": "c"},
            "internal_metadata": {"operator-script": "op", "admin_pw": "s3cret", "docker:env": "[]", "other": "hidden"},
            "internal_metadata_namespaces": ["docker"]
        })
        .as_object()
        .cloned()
        .expect("object")
    }

    #[test]
    fn sdc_keys_come_from_the_vm() {
        let v = vm();
        assert_eq!(get(&v, "sdc:uuid").expect("ok").as_deref(), Some("6bb5ed8a-9d0b-4d92-9e3e-7d5a0d6c52a1"));
        assert_eq!(get(&v, "sdc:max_physical_memory").expect("ok").as_deref(), Some("256"));
        assert_eq!(get(&v, "sdc:do_not_inventory").expect("ok").as_deref(), Some("true"));
        assert_eq!(get(&v, "sdc:resolvers").expect("ok").as_deref(), Some("[\"8.8.8.8\"]"));
        let nics: Value = serde_json::from_str(&get(&v, "sdc:nics").expect("ok").expect("nics")).expect("json");
        assert_eq!(nics[0]["ip"], "10.0.0.5");
        assert_eq!(get(&v, "sdc:nics.0.ip").expect("ok").as_deref(), Some("10.0.0.5"));
        assert_eq!(get(&v, "sdc:tags.role").expect("ok").as_deref(), Some("web"));
        assert_eq!(get(&v, "sdc:tags.n").expect("ok").as_deref(), Some("3"));
        assert_eq!(get(&v, "sdc:tags.none").expect("ok"), None);
        assert_eq!(get(&v, "sdc:operator-script").expect("ok").as_deref(), Some("op"));
        // Not a field the agent serves, and objects are not values.
        assert_eq!(get(&v, "sdc:customer_metadata").expect("ok"), None);
        assert!(get(&v, "sdc:nics.0").is_err());
        assert_eq!(get(&v, "sdc:tags").expect("ok"), None);
        let routes: Value = serde_json::from_str(&get(&v, "sdc:routes").expect("ok").expect("routes")).expect("json");
        assert_eq!(
            routes,
            json!([
                {"linklocal": false, "dst": "10.1.0.0/16", "gateway": "10.0.0.1"},
                {"linklocal": true, "dst": "10.2.0.0/16", "gateway": "10.0.0.5"},
                {"linklocal": true, "dst": "10.3.0.0/16", "gateway": "10.0.0.5"}
            ])
        );
    }

    #[test]
    fn tenant_keys_pw_keys_and_namespaces() {
        let v = vm();
        assert_eq!(get(&v, "user-script").expect("ok").as_deref(), Some("#!/bin/sh"));
        // _pw and namespaced keys are internal_metadata's, whatever customer_metadata says.
        assert_eq!(get(&v, "admin_pw").expect("ok").as_deref(), Some("s3cret"));
        assert_eq!(get(&v, "root_pw").expect("ok"), None);
        assert_eq!(get(&v, "docker:env").expect("ok").as_deref(), Some("[]"));
        assert_eq!(get(&v, "docker:x").expect("ok"), None);
        assert_eq!(get(&v, "other").expect("ok"), None);
        assert_eq!(keys(&v), ["user-script", "admin_pw", "docker:env"]);
        assert_eq!(writable(&v, "user-script"), Ok("customer_metadata"));
        assert_eq!(writable(&v, "my_pw"), Ok("internal_metadata"));
        assert_eq!(writable(&v, "operator-script"), Ok("internal_metadata"));
        assert!(writable(&v, "sdc:uuid").is_err());
        assert_eq!(writable(&v, "docker:env"), Err("Cannot update the \"docker\" Namespace.".into()));
    }

    #[test]
    fn a_tenant_s_puts_are_bounded() {
        let mut v = vm();
        assert_eq!(check_put(&v, "k", "v"), Ok("customer_metadata"));
        assert!(check_put(&v, &"k".repeat(MAX_KEY + 1), "v").is_err());
        assert!(check_put(&v, "k", &"v".repeat(MAX_VALUE + 1)).is_err());
        assert!(check_put(&v, "sdc:uuid", "v").is_err());
        // Four values of the largest size fill it; a fifth does not fit, and replacing one does.
        let big = "v".repeat(MAX_VALUE - 64);
        for i in 0..4 {
            let k = format!("big{i}");
            assert!(check_put(&v, &k, &big).is_ok(), "{k}");
            v["customer_metadata"][k] = json!(big);
        }
        assert!(check_put(&v, "big4", &big).is_err());
        assert!(check_put(&v, "big0", &big).is_ok());
    }
}
