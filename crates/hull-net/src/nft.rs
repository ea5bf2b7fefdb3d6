//! Link protection as nftables rules, written in nft's JSON form (libnftables-json(5)) and
//! applied as one atomic batch with `nft -j -f -`.
//!
//! One `bridge` table per node, `hull_<prefix>`. Its `pre` chain hooks bridge prerouting,
//! so it sees every frame a zone sends into its bridge, and sends each to the chain of the
//! VNIC it came from through the `vnics` verdict map, keyed by the host end's name. A VNIC's
//! chain holds only drop rules; what passes them goes on.
//!
//! Why hand-built JSON and not the `nftables` crate's types: the rules are a dozen fixed
//! shapes, nft validates them itself, and serde_json's `json!` reads like the rules do.

use crate::{NetError, Result};
use hull_exec::CommandLine;
use ipnet::IpNet;
use serde_json::{Value, json};

/// What a VNIC may send, as SmartOS's link protection decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protection {
    pub mac: [u8; 6],
    /// mac-nospoof: frames must carry the NIC's MAC as source.
    pub mac_nospoof: bool,
    /// ip-nospoof: IPv4/IPv6 and ARP sources must be among `allowed`.
    pub ip_nospoof: bool,
    /// dhcp-nospoof: no DHCP server traffic, and a DHCP client's hardware address is the NIC's.
    pub dhcp_nospoof: bool,
    /// restricted: only IPv4, IPv6 and ARP.
    pub restricted: bool,
    /// The NIC's addresses plus `allowed_ips`.
    pub allowed: Vec<IpNet>,
    /// The NIC takes its IPv4 address by DHCP: IPv4 sources cannot be known in advance.
    pub dhcp4: bool,
    /// The NIC configures IPv6 itself (SLAAC): IPv6 sources cannot be known in advance.
    pub addrconf6: bool,
    /// `dhcp_server`: the zone's DHCP answers pass (its requests are still checked).
    pub dhcp_server: bool,
    /// hull answered the NIC's DHCP at its port: requests stop there.
    pub answered: bool,
}

pub fn table(prefix: &str) -> String {
    format!("hull_{prefix}")
}

fn chain(host_if: &str) -> String {
    format!("v_{host_if}")
}

fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

fn drop_unless(left: Value, right: Value) -> Vec<Value> {
    vec![json!({"match": {"op": "!=", "left": left, "right": right}}), json!({"drop": null})]
}

fn addr_set(nets: &[IpNet]) -> Value {
    let items: Vec<Value> = nets
        .iter()
        .map(|n| {
            if n.prefix_len() == n.max_prefix_len() {
                Value::from(n.addr().to_string())
            } else {
                json!({"prefix": {"addr": n.network().to_string(), "len": n.prefix_len()}})
            }
        })
        .collect();
    json!({"set": items})
}

/// IPv6 networks as a set of 128-bit numbers and ranges, for raw payload matches.
fn v6_number_set(nets: &[IpNet]) -> Value {
    let hex = |a: std::net::IpAddr| match a {
        std::net::IpAddr::V6(a) => format!("0x{:032x}", u128::from(a)),
        std::net::IpAddr::V4(_) => String::new(),
    };
    let items: Vec<Value> = nets
        .iter()
        .filter(|n| n.addr().is_ipv6())
        .map(|n| {
            if n.prefix_len() == n.max_prefix_len() {
                Value::from(hex(n.addr()))
            } else {
                json!({"range": [hex(n.network()), hex(n.broadcast())]})
            }
        })
        .collect();
    json!({"set": items})
}

fn mac_number(mac: &[u8; 6]) -> u64 {
    mac.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

/// The drop rules of one VNIC's chain, each a list of statements.
pub fn rules(p: &Protection) -> Vec<Vec<Value>> {
    let mac = crate::format_mac(&p.mac);
    let mut out = Vec::new();
    if p.restricted {
        out.push(drop_unless(payload("ether", "type"), json!({"set": ["ip", "ip6", "arp"]})));
    }
    if p.mac_nospoof {
        out.push(drop_unless(payload("ether", "saddr"), Value::from(mac.clone())));
        out.push(drop_unless(payload("arp", "saddr ether"), Value::from(mac.clone())));
    }
    if p.ip_nospoof {
        let v4: Vec<IpNet> = p.allowed.iter().filter(|n| n.addr().is_ipv4()).cloned().collect();
        let v6: Vec<IpNet> = p.allowed.iter().filter(|n| n.addr().is_ipv6()).cloned().collect();
        if !p.dhcp4 {
            // 0.0.0.0 is a DHCP client's source before it has an address, and an ARP probe's.
            let mut ok4 = v4.clone();
            ok4.push("0.0.0.0/32".parse().expect("literal"));
            out.push(drop_unless(payload("ip", "saddr"), addr_set(&ok4)));
            out.push(drop_unless(payload("arp", "saddr ip"), addr_set(&ok4)));
        }
        if !p.addrconf6 {
            // Link-local addresses (neighbour discovery) and :: (duplicate address detection).
            let mut ok6 = v6.clone();
            ok6.push("fe80::/10".parse().expect("literal"));
            ok6.push("::/128".parse().expect("literal"));
            out.push(drop_unless(payload("ip6", "saddr"), addr_set(&ok6)));
            // A neighbour advertisement's target (8 bytes into the ICMPv6 header) must be
            // one of the NIC's addresses too: with the override flag, an NA for another
            // zone's address from a link-local source rewrites neighbours' caches (ARP's
            // equivalent is the `arp saddr ip` rule). nft 1.0.6 has no `icmpv6 taddr`, so
            // the raw field is matched against the addresses as 128-bit numbers.
            let mut ok_target: Vec<IpNet> = v6.clone();
            ok_target.push("fe80::/10".parse().expect("literal"));
            out.push(vec![
                json!({"match": {"op": "==", "left": payload("icmpv6", "type"), "right": "nd-neighbor-advert"}}),
                json!({"match": {"op": "!=", "left": {"payload": {"base": "th", "offset": 64, "len": 128}}, "right": v6_number_set(&ok_target)}}),
                json!({"drop": null}),
            ]);
        }
    }
    if p.answered {
        // hull answered at the port: the request reaches no other server.
        out.push(vec![
            json!({"match": {"op": "==", "left": payload("udp", "dport"), "right": 67}}),
            json!({"drop": null}),
        ]);
    }
    if p.dhcp_nospoof {
        // The zone may not answer as a DHCP server (v4 or v6), unless it is one...
        for (proto, port) in [("udp", 67), ("udp", 547)] {
            if p.dhcp_server {
                break;
            }
            out.push(vec![
                json!({"match": {"op": "==", "left": payload(proto, "sport"), "right": port}}),
                json!({"drop": null}),
            ]);
        }
        // ...and a DHCPv4 request's client hardware address (chaddr, 28 bytes into the
        // BOOTP message after the 8-byte UDP header) must be the NIC's own.
        out.push(vec![
            json!({"match": {"op": "==", "left": payload("udp", "dport"), "right": 67}}),
            json!({"match": {"op": "!=", "left": {"payload": {"base": "th", "offset": 288, "len": 48}}, "right": mac_number(&p.mac)}}),
            json!({"drop": null}),
        ]);
    }
    out
}

/// The table, its map and its `pre` chain, made when the table is not there yet.
fn base(prefix: &str) -> Vec<Value> {
    let t = table(prefix);
    vec![
        json!({"add": {"table": {"family": "bridge", "name": t}}}),
        json!({"add": {"map": {"family": "bridge", "table": t, "name": "vnics", "type": "ifname", "map": "verdict"}}}),
        json!({"add": {"chain": {"family": "bridge", "table": t, "name": "pre", "type": "filter", "hook": "prerouting", "prio": -200, "policy": "accept"}}}),
        json!({"add": {"rule": {"family": "bridge", "table": t, "chain": "pre", "expr": [
            {"vmap": {"key": {"meta": {"key": "iifname"}}, "data": "@vnics"}}
        ]}}}),
    ]
}

/// What the node's table holds now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub table: bool,
    /// The VNICs (host end names) with a chain.
    pub vnics: Vec<String>,
}

/// The batch that (re)writes a VNIC's chain and points the map at it. Removing rules costs
/// the kernel an RCU grace period (about 12 ms here), so a new VNIC's chain is only added
/// to, and only an existing one is flushed first.
pub fn protect_batch(prefix: &str, host_if: &str, p: &Protection, state: &State) -> Value {
    let t = table(prefix);
    let c = chain(host_if);
    let mut cmds = if state.table { Vec::new() } else { base(prefix) };
    if state.vnics.iter().any(|v| v == host_if) {
        cmds.push(json!({"flush": {"chain": {"family": "bridge", "table": t, "name": c}}}));
    } else {
        cmds.push(json!({"add": {"chain": {"family": "bridge", "table": t, "name": c}}}));
    }
    for expr in rules(p) {
        cmds.push(json!({"add": {"rule": {"family": "bridge", "table": t, "chain": c, "expr": expr}}}));
    }
    cmds.push(json!({"add": {"element": {"family": "bridge", "table": t, "name": "vnics", "elem": [
        [host_if, {"jump": {"target": c}}]
    ]}}}));
    json!({"nftables": cmds})
}

fn apply(batch: &Value) -> Result<()> {
    let text = serde_json::to_vec(batch).map_err(|e| NetError::Invalid(format!("nft batch: {e}")))?;
    CommandLine::new(hull_exec::tool("nft")).args(["-j", "-f", "-"]).stdin(text).run()?;
    Ok(())
}

/// Applies a VNIC's protection, replacing what it had.
pub fn protect(prefix: &str, host_if: &str, p: &Protection) -> Result<()> {
    apply(&protect_batch(prefix, host_if, p, &state(prefix)?))
}

/// Reads the node's table (a missing table is an empty state).
pub fn state(prefix: &str) -> Result<State> {
    let out = CommandLine::new(hull_exec::tool("nft")).args(["-j", "list", "table", "bridge", &table(prefix)]).run();
    let Ok(out) = out else { return Ok(State::default()) };
    let v: Value = serde_json::from_str(&out).map_err(|e| NetError::Invalid(format!("nft list: {e}")))?;
    let objects = v["nftables"].as_array().cloned().unwrap_or_default();
    Ok(State {
        table: objects.iter().any(|o| o["table"].is_object()),
        vnics: objects
            .iter()
            .filter_map(|o| o["chain"]["name"].as_str())
            .filter_map(|n| n.strip_prefix("v_"))
            .map(String::from)
            .collect(),
    })
}

/// The names of the VNICs the table has chains for.
pub fn protected(prefix: &str) -> Result<Vec<String>> {
    Ok(state(prefix)?.vnics)
}

/// Removes a VNIC's chain and map entry; a VNIC without them is fine.
pub fn unprotect(prefix: &str, host_if: &str) -> Result<()> {
    if !protected(prefix)?.iter().any(|n| n == host_if) {
        return Ok(());
    }
    let t = table(prefix);
    let batch = json!({"nftables": [
        {"delete": {"element": {"family": "bridge", "table": t, "name": "vnics", "elem": [host_if]}}},
        {"delete": {"chain": {"family": "bridge", "table": t, "name": chain(host_if)}}},
    ]});
    // The map entry may already be gone (a half-done removal): the chain alone then.
    if apply(&batch).is_err() {
        apply(&json!({"nftables": [{"delete": {"chain": {"family": "bridge", "table": t, "name": chain(host_if)}}}]}))?;
    }
    Ok(())
}

/// Removes the node's whole table.
pub fn destroy(prefix: &str) -> Result<()> {
    let exists = CommandLine::new(hull_exec::tool("nft")).args(["list", "table", "bridge", &table(prefix)]).run();
    if exists.is_ok() {
        apply(&json!({"nftables": [{"delete": {"table": {"family": "bridge", "name": table(prefix)}}}]}))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prot() -> Protection {
        Protection {
            mac: [0x90, 0xb8, 0xd0, 0, 0, 1],
            mac_nospoof: true,
            ip_nospoof: true,
            dhcp_nospoof: true,
            restricted: true,
            allowed: vec!["10.0.0.5/32".parse().expect("ip"), "10.1.0.0/16".parse().expect("net")],
            dhcp4: false,
            addrconf6: false,
            dhcp_server: false,
            answered: false,
        }
    }

    #[test]
    fn every_protection_has_its_rules() {
        let all = serde_json::to_string(&rules(&prot())).expect("json");
        for needle in
            ["\"type\"", "\"saddr\"", "saddr ether", "saddr ip", "\"ip6\"", "10.1.0.0", "fe80::", "547", "288"]
        {
            assert!(all.contains(needle), "{needle} missing from {all}");
        }
        let none =
            Protection { mac_nospoof: false, ip_nospoof: false, dhcp_nospoof: false, restricted: false, ..prot() };
        assert!(rules(&none).is_empty());
    }

    #[test]
    fn dhcp_and_addrconf_leave_their_family_unchecked() {
        let p = Protection {
            dhcp4: true,
            addrconf6: true,
            mac_nospoof: false,
            dhcp_nospoof: false,
            restricted: false,
            ..prot()
        };
        assert!(rules(&p).is_empty());
    }

    #[test]
    fn only_an_existing_chain_is_flushed_and_only_a_new_table_is_made() {
        let fresh = protect_batch("n1", "n1vx", &prot(), &State::default()).to_string();
        assert!(fresh.contains("\"table\":{\"family\":\"bridge\",\"name\":\"hull_n1\"}"), "{fresh}");
        assert!(!fresh.contains("flush"), "{fresh}");
        let known = State { table: true, vnics: vec!["n1vx".into()] };
        let again = protect_batch("n1", "n1vx", &prot(), &known).to_string();
        assert!(again.contains("flush") && !again.contains("prerouting"), "{again}");
    }

    #[test]
    fn chaddr_is_the_mac_as_a_number() {
        assert_eq!(mac_number(&[0, 0, 0, 0, 1, 2]), 0x0102);
    }
}
