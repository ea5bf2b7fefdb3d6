//! Networks hull routes for (`hull network`): a subnet whose gateway address the host holds
//! on the network's switch, masqueraded out of the host when it is a NAT network, closed to
//! every other network of the node.
//!
//! The rules live in the node's `inet hull_<prefix>` table, rewritten whole (one atomic
//! batch) whenever a network comes or goes:
//!
//! - **postrouting** (nat): a NAT network's subnet, leaving for anywhere but itself (or only
//!   out of its `uplink`), is masqueraded;
//! - **forward**: nothing is routed from one network of the node into another, and nothing
//!   new from outside into a NAT network (replies pass);
//! - **input**: a network reaches the host only for ICMP, DHCP and DNS (and replies to what
//!   the host began): a tenant's gateway is not a way to the host's own services.

use crate::nic::Network as Attach;
use crate::nl::Netlink;
use crate::{NetError, Result, nl::Link};
use hull_exec::CommandLine;
use hull_spec::node::Network;
use ipnet::{IpNet, Ipv4Net};
use serde_json::{Value, json};
use std::net::Ipv4Addr;

pub fn table(prefix: &str) -> String {
    format!("hull_{prefix}")
}

/// Where a network's NICs attach: a nic tag (VLAN 0) or an overlay's VNI.
pub fn attach(n: &Network) -> Result<Attach> {
    match n.nic_tag.split_once('/') {
        Some((overlay, vni)) => Ok(Attach::Overlay {
            overlay: overlay.to_string(),
            vni: vni.parse().map_err(|_| NetError::Invalid(format!("{:?} is not OVERLAY/VNI", n.nic_tag)))?,
        }),
        None => Ok(Attach::Tag { tag: n.nic_tag.clone(), vlan: 0 }),
    }
}

fn m(left: Value, op: &str, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn prefix(n: &Ipv4Net) -> Value {
    json!({"prefix": {"addr": n.network().to_string(), "len": n.prefix_len()}})
}

fn set(items: Vec<Value>) -> Value {
    if items.len() == 1 { items.into_iter().next().unwrap_or(Value::Null) } else { json!({"set": items}) }
}

/// The node's whole `inet` table for these networks, each with the name of its switch.
/// Deleting and adding the table in one batch replaces it atomically; with no networks the
/// batch only removes it.
pub fn batch(prefix_: &str, nets: &[(String, Network)]) -> Value {
    let t = table(prefix_);
    let mut cmds = vec![
        json!({"add": {"table": {"family": "inet", "name": t}}}),
        json!({"delete": {"table": {"family": "inet", "name": t}}}),
    ];
    if nets.is_empty() {
        return json!({"nftables": cmds});
    }
    cmds.push(json!({"add": {"table": {"family": "inet", "name": t}}}));
    for (name, ty, hook, prio) in [
        ("forward", "filter", "forward", 0),
        ("input", "filter", "input", 0),
        ("postrouting", "nat", "postrouting", 100),
    ] {
        cmds.push(json!({"add": {"chain": {"family": "inet", "table": t, "name": name, "type": ty,
            "hook": hook, "prio": prio, "policy": "accept"}}}));
    }
    let rule = |chain: &str, expr: Vec<Value>| json!({"add": {"rule": {"family": "inet", "table": t, "chain": chain, "expr": expr}}});
    let established = m(json!({"ct": {"key": "state"}}), "in", json!(["established", "related"]));
    let all: Vec<Value> = nets.iter().map(|(sw, _)| json!(sw)).collect();
    for (sw, n) in nets {
        // Within one network: where br_netfilter is loaded, frames bridged between its own
        // ports pass the inet hooks too, with the switch as both ends.
        cmds.push(rule(
            "forward",
            vec![m(meta("iifname"), "==", json!(sw)), m(meta("oifname"), "==", json!(sw)), json!({"accept": null})],
        ));
        // No network routes into another of the node's.
        let others: Vec<Value> = all.iter().filter(|o| *o != &json!(sw)).cloned().collect();
        if !others.is_empty() {
            cmds.push(rule(
                "forward",
                vec![m(meta("iifname"), "==", set(others)), m(meta("oifname"), "==", json!(sw)), json!({"drop": null})],
            ));
        }
        if n.nat {
            cmds.push(rule(
                "forward",
                vec![m(meta("oifname"), "==", json!(sw)), established.clone(), json!({"accept": null})],
            ));
            cmds.push(rule("forward", vec![m(meta("oifname"), "==", json!(sw)), json!({"drop": null})]));
            let mut expr = vec![
                m(json!({"payload": {"protocol": "ip", "field": "saddr"}}), "==", prefix(&n.subnet)),
                m(json!({"payload": {"protocol": "ip", "field": "daddr"}}), "!=", prefix(&n.subnet)),
            ];
            if let Some(up) = &n.uplink {
                expr.push(m(meta("oifname"), "==", json!(up)));
            }
            expr.push(json!({"masquerade": null}));
            cmds.push(rule("postrouting", expr));
            if let Some(s6) = &n.subnet6 {
                let p6 = json!({"prefix": {"addr": s6.network().to_string(), "len": s6.prefix_len()}});
                let mut expr = vec![
                    m(json!({"payload": {"protocol": "ip6", "field": "saddr"}}), "==", p6.clone()),
                    m(json!({"payload": {"protocol": "ip6", "field": "daddr"}}), "!=", p6),
                    // Neither link-local nor multicast traffic is routed, let alone NATed.
                    m(
                        json!({"payload": {"protocol": "ip6", "field": "daddr"}}),
                        "!=",
                        json!({"prefix": {"addr": "fe80::", "len": 10}}),
                    ),
                ];
                if let Some(up) = &n.uplink {
                    expr.push(m(meta("oifname"), "==", json!(up)));
                }
                expr.push(json!({"masquerade": null}));
                cmds.push(rule("postrouting", expr));
            }
        }
        let from = || m(meta("iifname"), "==", json!(sw));
        cmds.push(rule("input", vec![from(), established.clone(), json!({"accept": null})]));
        cmds.push(rule(
            "input",
            vec![from(), m(meta("l4proto"), "==", json!({"set": ["icmp", "ipv6-icmp"]})), json!({"accept": null})],
        ));
        cmds.push(rule(
            "input",
            vec![
                from(),
                m(json!({"payload": {"protocol": "udp", "field": "dport"}}), "==", json!({"set": [53, 67]})),
                json!({"accept": null}),
            ],
        ));
        cmds.push(rule(
            "input",
            vec![
                from(),
                m(json!({"payload": {"protocol": "tcp", "field": "dport"}}), "==", json!(53)),
                json!({"accept": null}),
            ],
        ));
        cmds.push(rule("input", vec![from(), json!({"drop": null})]));
    }
    json!({"nftables": cmds})
}

fn apply(batch: &Value) -> Result<()> {
    let text = serde_json::to_vec(batch).map_err(|e| NetError::Invalid(format!("nft batch: {e}")))?;
    CommandLine::new(hull_exec::tool("nft")).args(["-j", "-f", "-"]).stdin(text).run()?;
    Ok(())
}

/// Removes the node's `inet` table (`hull net destroy`).
pub fn destroy(prefix: &str) -> Result<()> {
    apply(&batch(prefix, &[]))
}

/// Whether two networks share any address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// What `subnet` would collide with: the host's routes (but default routes) and the other
/// networks' subnets. Each is said as an operator reads it.
pub fn collisions(subnet: &IpNet, routes: &[(IpNet, String)], others: &[(String, IpNet)]) -> Vec<String> {
    let mine = *subnet;
    let mut out: Vec<String> = routes
        .iter()
        .filter(|(r, _)| r.prefix_len() > 0 && overlaps(r, &mine))
        .map(|(r, dev)| format!("the host's route to {r} on {dev}"))
        .collect();
    out.extend(others.iter().filter(|(_, o)| overlaps(o, &mine)).map(|(n, o)| format!("network {n} ({o})")));
    out
}

/// A free /24 in 10.0.0.0/8, starting from a place the name picks (so two nodes seldom pick
/// the same for different names, and the same name picks the same where it is free).
pub fn pick_subnet(name: &str, routes: &[(IpNet, String)], others: &[(String, IpNet)]) -> Option<Ipv4Net> {
    let start = name.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193)) % 65536;
    (0..65536u32).map(|i| (start + i) % 65536).find_map(|i| {
        let net = Ipv4Net::new(Ipv4Addr::new(10, (i >> 8) as u8, (i & 0xff) as u8, 0), 24).ok()?;
        collisions(&IpNet::V4(net), routes, others).is_empty().then_some(net)
    })
}

/// The host's routes as (destination, link name).
pub fn host_routes(nl: &mut Netlink) -> Result<Vec<(IpNet, String)>> {
    let links = nl.links()?;
    let name = |i: Option<u32>| {
        i.and_then(|i| links.iter().find(|l| l.index == i)).map(|l| l.name.clone()).unwrap_or_else(|| "?".into())
    };
    Ok(nl
        .routes()?
        .into_iter()
        .filter_map(|r| Some((IpNet::new(r.dst, r.prefix).ok()?.trunc(), name(r.oif))))
        .collect())
}

impl crate::Net {
    /// Every network of the node with its switch's name.
    fn switches(&self) -> Result<Vec<(String, Network)>> {
        self.cfg.networks.values().map(|n| Ok((self.switch_name(&attach(n)?), n.clone()))).collect()
    }

    /// Makes each network's switch with its gateway address, writes the node's table for
    /// them, and turns IPv4 forwarding on when a network needs it. Safe to run again.
    pub fn apply_networks(&self) -> Result<()> {
        let mut nl = Netlink::open()?;
        for n in self.cfg.networks.values() {
            let (sw, _) = self.ensure_switch(&mut nl, &attach(n)?)?;
            ensure_gateway(&mut nl, &sw, n)?;
        }
        apply(&batch(&self.prefix, &self.switches()?))?;
        if self.cfg.networks.values().any(|n| n.nat) {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
                .map_err(|e| NetError::Invalid(format!("turning on IPv4 forwarding: {e}")))?;
        }
        if self.cfg.networks.values().any(|n| n.subnet6.is_some()) {
            std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1")
                .map_err(|e| NetError::Invalid(format!("turning on IPv6 forwarding: {e}")))?;
        }
        Ok(())
    }

    /// After a NIC's switch was made: when it is a network's and lacks its gateway (made
    /// again after the last VM left, or after the host rebooted), everything is applied.
    pub fn ensure_network_of(&self, nl: &mut Netlink, sw: &Link, on: &Attach) -> Result<()> {
        let Some(n) = self.cfg.networks.values().find(|n| attach(n).is_ok_and(|a| &a == on)) else { return Ok(()) };
        let has = nl.addresses(sw.index)?.iter().any(|(a, _)| *a == std::net::IpAddr::V4(n.gateway));
        if !has {
            self.apply_networks()?;
        }
        Ok(())
    }

    /// Takes a network's gateway off its switch and rewrites the table without it (the
    /// config passed in still holds the network; `rest` is the node's config without it).
    pub fn remove_network(&self, n: &Network, rest: &crate::Net) -> Result<()> {
        let mut nl = Netlink::open()?;
        if let Some(sw) = nl.link(&self.switch_name(&attach(n)?))? {
            nl.del_address(sw.index, n.gateway.into(), n.subnet.prefix_len())?;
            if let (Some(s6), Some(g6)) = (n.subnet6, n.gateway6) {
                nl.del_address(sw.index, g6.into(), s6.prefix_len())?;
            }
        }
        apply(&batch(&rest.prefix, &rest.switches()?))?;
        rest.collect_switches()
    }
}

fn ensure_gateway(nl: &mut Netlink, sw: &Link, n: &Network) -> Result<()> {
    nl.add_address(sw.index, n.gateway.into(), n.subnet.prefix_len())?;
    if let (Some(s6), Some(g6)) = (n.subnet6, n.gateway6) {
        // The switch's MAC, set once so that a port joining cannot change it, and its
        // link-local address from it: what router advertisements name as the router.
        if let Some(mac) = sw.mac {
            nl.set_mac(sw.index, mac)?;
            nl.add_address(sw.index, link_local(&mac).into(), 64)?;
        }
        nl.add_address(sw.index, g6.into(), s6.prefix_len())?;
    }
    Ok(())
}

/// The link-local address a MAC gives (`fe80::/64` and its EUI-64).
pub fn link_local(mac: &[u8; 6]) -> std::net::Ipv6Addr {
    let ll = ipnet::Ipv6Net::new(std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 64).unwrap_or_default();
    eui64(&ll, mac)
}

/// The modified EUI-64 interface identifier of `mac` in `prefix` (RFC 4291): the address a
/// SLAAC client with that MAC forms, and a switch's link-local address under `fe80::/64`.
pub fn eui64(prefix: &ipnet::Ipv6Net, mac: &[u8; 6]) -> std::net::Ipv6Addr {
    let mut b = prefix.network().octets();
    b[8] = mac[0] ^ 0x02;
    b[9] = mac[1];
    b[10] = mac[2];
    b[11] = 0xff;
    b[12] = 0xfe;
    b[13] = mac[3];
    b[14] = mac[4];
    b[15] = mac[5];
    std::net::Ipv6Addr::from(b)
}

/// A unique local /64 (RFC 4193) that the name picks: `fdXX:XXXX:XXXX::/64`.
pub fn ula_for(name: &str) -> ipnet::Ipv6Net {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let g = h.to_be_bytes();
    let mut b = [0u8; 16];
    b[0] = 0xfd;
    b[1..6].copy_from_slice(&g[..5]);
    ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(b), 64).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(nat: bool) -> Network {
        Network {
            nic_tag: "n1".into(),
            subnet: "10.40.0.0/24".parse().expect("net"),
            gateway: "10.40.0.1".parse().expect("ip"),
            nat,
            uplink: None,
            dhcp: None,
            resolvers: vec![],
            subnet6: None,
            gateway6: None,
        }
    }

    #[test]
    fn a_nat_network_is_masqueraded_and_closed_to_others() {
        let b = batch("p1", &[("p1b1".into(), net(true)), ("p1b2".into(), Network { nat: false, ..net(false) })])
            .to_string();
        assert!(b.contains("\"masquerade\":null"), "{b}");
        assert_eq!(b.matches("masquerade").count(), 1, "only the NAT network: {b}");
        let v: Value = serde_json::from_str(&b).expect("json");
        let drops_into = |from: &str, to: &str| {
            v["nftables"].as_array().expect("list").iter().any(|c| {
                let e = &c["add"]["rule"]["expr"];
                e[0]["match"]["right"] == from && e[1]["match"]["right"] == to && e[2] == json!({"drop": null})
            })
        };
        assert!(drops_into("p1b2", "p1b1") && drops_into("p1b1", "p1b2"), "no network routes into another: {b}");
        assert!(!drops_into("p1b1", "p1b1"), "a network's own traffic passes: {b}");
        assert!(b.contains("\"hook\":\"input\""), "{b}");
        let empty = batch("p1", &[]).to_string();
        assert!(empty.contains("delete") && !empty.contains("chain"), "{empty}");
    }

    #[test]
    fn subnets_avoid_the_host_s_routes_and_each_other() {
        let routes = vec![("10.0.0.0/8".parse().expect("net"), "eth0".to_string())];
        let sub: IpNet = "10.40.0.0/24".parse().expect("net");
        assert_eq!(collisions(&sub, &routes, &[]).len(), 1);
        assert!(pick_subnet("x", &routes, &[]).is_none(), "all of 10/8 is the host's");
        let routes = vec![
            ("0.0.0.0/0".parse().expect("net"), "eth0".to_string()),
            ("10.1.0.0/16".parse().expect("net"), "eth0".to_string()),
        ];
        let others = vec![("a".to_string(), "10.2.0.0/16".parse().expect("net"))];
        for name in ["a", "b", "tenant-7", ""] {
            let p = pick_subnet(name, &routes, &others).expect("room");
            assert!(collisions(&IpNet::V4(p), &routes, &others).is_empty(), "{p}");
            assert_eq!(pick_subnet(name, &routes, &others), Some(p), "stable");
        }
    }
}
