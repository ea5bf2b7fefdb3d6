//! A VM's `nics[]` entries, read and checked against the node's nic tags and overlays.

use hull_spec::NodeConfig;
use hull_spec::vm::model::Nic as VmNic;
use ipnet::IpNet;
use serde_json::Value;
use std::net::IpAddr;

/// SmartOS allows 13 extra addresses per NIC (`allowed_ips`).
pub const MAX_ALLOWED_IPS: usize = 13;
/// VXLAN network identifiers are 24 bits; 0 is reserved.
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// Where a NIC's traffic goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Network {
    /// A nic tag and a VLAN (0 for none).
    Tag { tag: String, vlan: u16 },
    /// An overlay network: a VXLAN VNI of a configured overlay.
    Overlay { overlay: String, vni: u32 },
}

impl Network {
    /// `tag/vlan` or `overlay/vni`: the key links are named and marked by.
    pub fn key(&self) -> String {
        match self {
            Network::Tag { tag, vlan } => format!("{tag}/{vlan}"),
            Network::Overlay { overlay, vni } => format!("{overlay}/{vni}"),
        }
    }
}

/// One NIC, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Nic {
    pub interface: String,
    pub mac: [u8; 6],
    pub network: Network,
    /// Static addresses with their prefix lengths.
    pub addrs: Vec<IpNet>,
    /// `dhcp` among the ips: the zone asks for its IPv4 address itself.
    pub dhcp: bool,
    /// `addrconf` among the ips: the zone configures IPv6 itself.
    pub addrconf: bool,
    pub gateways: Vec<IpAddr>,
    pub primary: bool,
    pub mtu: Option<u32>,
    pub allowed_ips: Vec<IpNet>,
    pub allow_ip_spoofing: bool,
    pub allow_mac_spoofing: bool,
    pub allow_dhcp_spoofing: bool,
    pub allow_restricted_traffic: bool,
    /// A cap in bits per second, both directions.
    pub maxbw: Option<u64>,
    /// `dhcp_server`: the zone may answer DHCP on its network.
    pub dhcp_server: bool,
    /// The address hull leased this `dhcp` NIC from its network's range: link protection
    /// allows exactly it (not any IPv4 source, as for a DHCP server hull does not know).
    pub leased: Option<ipnet::Ipv4Net>,
    /// hull answers this NIC's DHCP at its port: its requests go no further.
    pub answered: bool,
    /// The SLAAC address an `addrconf` NIC forms from hull's router advertisements (its
    /// MAC's EUI-64 in the network's /64): link protection allows exactly it.
    pub slaac: Option<std::net::Ipv6Addr>,
}

impl Nic {
    pub fn protection(&self) -> crate::nft::Protection {
        let mut allowed = self.addrs.iter().map(|a| IpNet::from(a.addr())).collect::<Vec<_>>();
        allowed.extend(self.allowed_ips.iter().cloned());
        allowed.extend(self.leased.map(|l| IpNet::from(IpAddr::V4(l.addr()))));
        allowed.extend(self.slaac.map(|a| IpNet::from(IpAddr::V6(a))));
        crate::nft::Protection {
            mac: self.mac,
            mac_nospoof: !self.allow_mac_spoofing,
            ip_nospoof: !self.allow_ip_spoofing,
            dhcp_nospoof: !self.allow_dhcp_spoofing,
            restricted: !self.allow_restricted_traffic,
            allowed,
            dhcp4: self.dhcp && self.leased.is_none(),
            addrconf6: self.addrconf && self.slaac.is_none(),
            dhcp_server: self.dhcp_server,
            answered: self.answered,
        }
    }
}

/// What is wrong with one field of one NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicProblem {
    /// `nics.1.ips`
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for NicProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Gives each NIC what SmartOS's vmadm fills in at creation: an `interface` (`net0`...), a
/// `mac` and one `primary`. `taken` lists the interfaces already in use (live adds).
pub fn assign(nics: &mut [Value], taken: &[String]) {
    let mut used: Vec<String> = taken.to_vec();
    used.extend(nics.iter().filter_map(|n| n.get("interface").and_then(Value::as_str)).map(String::from));
    let any_primary = nics.iter().any(|n| n.get("primary").and_then(Value::as_bool).unwrap_or(false));
    for (i, n) in nics.iter_mut().enumerate() {
        let Value::Object(o) = n else { continue };
        if !o.contains_key("interface") {
            let name = (0..).map(|k| format!("net{k}")).find(|c| !used.contains(c)).unwrap_or_default();
            used.push(name.clone());
            o.insert("interface".into(), Value::from(name));
        }
        if !o.contains_key("mac") {
            o.insert("mac".into(), Value::from(crate::format_mac(&random_mac())));
        }
        if i == 0 && !any_primary && taken.is_empty() {
            o.insert("primary".into(), Value::Bool(true));
        }
    }
}

/// What in `mine` clashes with the NICs of other VMs (`others`, each with its VM's uuid):
/// a MAC is unique on the node, and a static address on its network (tag and VLAN, or
/// overlay and VNI). Two NICs of the same VM are held to the same rules. A VM that takes
/// another's MAC or address steals its traffic, so this is refused, not warned about.
pub fn conflicts(mine: &[Nic], others: &[(String, Nic)]) -> Vec<NicProblem> {
    let mut out = Vec::new();
    for (i, n) in mine.iter().enumerate() {
        let earlier = mine[..i].iter().map(|o| ("this VM", o));
        let theirs = others.iter().map(|(vm, o)| (vm.as_str(), o));
        for (who, o) in earlier.chain(theirs) {
            if o.mac == n.mac {
                out.push(NicProblem {
                    field: format!("nics.{i}.mac"),
                    reason: format!("{} is already {who}'s ({})", crate::format_mac(&n.mac), o.interface),
                });
            }
            if o.network == n.network {
                for a in n.addrs.iter().filter(|a| o.addrs.iter().any(|b| b.addr() == a.addr())) {
                    out.push(NicProblem {
                        field: format!("nics.{i}.ips"),
                        reason: format!("{} is already {who}'s on {}", a.addr(), n.network.key()),
                    });
                }
            }
        }
    }
    out
}

/// A locally administered unicast MAC: 02 and five random bytes.
pub fn random_mac() -> [u8; 6] {
    let mut mac = [2u8, 0, 0, 0, 0, 0];
    let mut buf = [0u8; 5];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut buf);
    }
    mac[1..].copy_from_slice(&buf);
    mac
}

/// An address or a network: `10.0.0.5`, `10.0.0.0/24`, `fd00::1`.
fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>().ok().or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

fn netmask_len(mask: &str) -> Option<u8> {
    let m: std::net::Ipv4Addr = mask.parse().ok()?;
    let bits = u32::from(m);
    (bits.leading_ones() + bits.trailing_zeros() == 32).then_some(bits.leading_ones() as u8)
}

fn check_network(n: &VmNic, cfg: &NodeConfig, p: &mut impl FnMut(&str, String)) -> Option<Network> {
    let Some(tag) = n.nic_tag.as_deref() else {
        p("nic_tag", "is required".into());
        return None;
    };
    let vlan = n.vlan_id.unwrap_or(0);
    let vlan_ok = vlan <= 4095;
    if !vlan_ok {
        p("vlan_id", format!("{vlan} is out of range 0-4095"));
    }
    let network = if let Some((name, vni)) = tag.split_once('/') {
        let Some(_) = cfg.overlays.get(name) else {
            p("nic_tag", format!("no overlay named {name:?} on this node"));
            return None;
        };
        match vni.parse::<u32>() {
            Ok(v) if (1..=MAX_VNI).contains(&v) => Some(Network::Overlay { overlay: name.to_string(), vni: v }),
            _ => {
                p("nic_tag", format!("VNI {vni:?} is out of range 1-{MAX_VNI}"));
                None
            }
        }
    } else if cfg.nic_tags.contains_key(tag) {
        Some(Network::Tag { tag: tag.to_string(), vlan })
    } else {
        p("nic_tag", format!("no nic tag named {tag:?} on this node (see nictagadm list)"));
        None
    };
    network.filter(|_| vlan_ok)
}

/// Reads one NIC of the typed model against the node: its network, addresses and link
/// protection. Problems name the field as `key.index.field`.
pub fn parse(key: &str, index: usize, nic: &VmNic, cfg: &NodeConfig) -> Result<Nic, Vec<NicProblem>> {
    let mut problems = Vec::new();
    let mut p =
        |field: &str, reason: String| problems.push(NicProblem { field: format!("{key}.{index}.{field}"), reason });
    let network = check_network(nic, cfg, &mut p);
    let interface = nic.interface.clone().unwrap_or_default();
    if interface.is_empty()
        || interface.len() > 15
        || !interface.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        p("interface", format!("{interface:?} is not a usable interface name"));
    }
    let mac = nic.mac.as_deref().and_then(crate::parse_mac);
    match mac {
        Some([0, 0, 0, 0, 0, 0]) => p("mac", "is all zeros".into()),
        Some(_) => {}
        None => p("mac", "is missing or not six hex octets".into()),
    }
    let (mut addrs, mut dhcp, mut addrconf) = (Vec::new(), false, false);
    let mut ips: Vec<String> = nic.ips.clone().unwrap_or_default();
    // The older form: `ip` and `netmask`, used only when `ips` is absent (nic.js: `vmadm get`
    // shows both, and a payload copied from it carries both).
    if let Some(ip) = nic.ip.as_deref().filter(|_| nic.ips.is_none()) {
        match nic.netmask.as_deref() {
            _ if ip == "dhcp" => ips.push(ip.to_string()),
            Some(mask) => match netmask_len(mask) {
                Some(len) => ips.push(format!("{ip}/{len}")),
                None => p("netmask", format!("{mask:?} is not a netmask")),
            },
            None => p("netmask", "is required with ip".into()),
        }
    }
    for ip in &ips {
        match ip.as_str() {
            "dhcp" => dhcp = true,
            "addrconf" => addrconf = true,
            s => match s.parse::<IpNet>() {
                Ok(n) if n.addr().is_unspecified() || n.addr().is_multicast() || n.addr().is_loopback() => {
                    p("ips", format!("{s} cannot be a NIC's address"))
                }
                Ok(n) if addrs.iter().any(|a: &IpNet| a.addr() == n.addr()) => p("ips", format!("{s} is listed twice")),
                Ok(n) => addrs.push(n),
                Err(_) => {
                    p("ips", format!("{s:?} is not an address with a prefix length (10.0.0.5/24), dhcp or addrconf"))
                }
            },
        }
    }
    let mut gateways = Vec::new();
    let mut gws: Vec<String> = nic.gateways.clone().unwrap_or_default();
    if let Some(g) = nic.gateway.as_ref().filter(|_| nic.gateways.is_none()) {
        gws.push(g.clone());
    }
    for g in gws {
        match g.parse::<IpAddr>() {
            Ok(a) => gateways.push(a),
            Err(_) => p("gateways", format!("{g:?} is not an IP address")),
        }
    }
    let listed = nic.allowed_ips.as_deref().unwrap_or_default();
    let mut allowed_ips = Vec::new();
    if listed.len() > MAX_ALLOWED_IPS {
        p("allowed_ips", format!("lists {} addresses; at most {MAX_ALLOWED_IPS} are allowed", listed.len()));
    }
    for a in listed {
        match parse_net(a) {
            Some(n) => allowed_ips.push(n),
            None => p("allowed_ips", format!("{a:?} is not an address or network")),
        }
    }
    let mtu = nic.mtu;
    if let Some(m) = mtu
        && !(576..=9000).contains(&m)
    {
        p("mtu", format!("{m} is out of range 576-9000"));
    }
    let maxbw = match nic.rest.get("maxbw") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let r = crate::tc::parse_maxbw(v);
            if r.is_none() {
                p("maxbw", format!("{v} is not a bandwidth (Mbit/s, or a number with K, M or G)"));
            }
            r
        }
    };
    let on = |b: Option<bool>| b.unwrap_or(false);
    match (network, mac, problems.is_empty()) {
        (Some(network), Some(mac), true) => Ok(Nic {
            interface,
            mac,
            network,
            addrs,
            dhcp,
            addrconf,
            gateways,
            primary: on(nic.primary),
            mtu,
            allowed_ips,
            allow_ip_spoofing: on(nic.allow_ip_spoofing),
            allow_mac_spoofing: on(nic.allow_mac_spoofing),
            allow_dhcp_spoofing: on(nic.allow_dhcp_spoofing),
            allow_restricted_traffic: on(nic.allow_restricted_traffic),
            maxbw,
            dhcp_server: on(nic.dhcp_server),
            leased: None,
            answered: false,
            slaac: None,
        }),
        _ => Err(problems),
    }
}

/// Reads every NIC of a VM and checks them against each other: interfaces, MACs and
/// addresses are each used once.
pub fn parse_all(nics: &[VmNic], cfg: &NodeConfig) -> Result<Vec<Nic>, Vec<NicProblem>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (i, n) in nics.iter().enumerate() {
        match parse("nics", i, n, cfg) {
            Ok(nic) => {
                let field = |f: &str| format!("nics.{i}.{f}");
                if out.iter().any(|o: &Nic| o.interface == nic.interface) {
                    problems.push(NicProblem {
                        field: field("interface"),
                        reason: format!("{} is used twice", nic.interface),
                    });
                }
                if out.iter().any(|o: &Nic| o.mac == nic.mac) {
                    problems.push(NicProblem {
                        field: field("mac"),
                        reason: format!("{} is used twice", crate::format_mac(&nic.mac)),
                    });
                }
                for a in &nic.addrs {
                    if out.iter().any(|o: &Nic| o.addrs.iter().any(|b| b.addr() == a.addr())) {
                        problems
                            .push(NicProblem { field: field("ips"), reason: format!("{} is used twice", a.addr()) });
                    }
                }
                out.push(nic);
            }
            Err(p) => problems.extend(p),
        }
    }
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hull_spec::node::{NicTag, Overlay};
    use serde_json::json;

    fn cfg() -> NodeConfig {
        let mut c = NodeConfig::default();
        c.nic_tags.insert("admin".into(), NicTag { local: true, ..Default::default() });
        c.overlays.insert(
            "sdc".into(),
            Overlay { underlay: "192.168.0.1".parse().expect("ip"), port: 4789, mtu: 1500, peers: Default::default() },
        );
        c
    }

    fn typed(list: Vec<Value>) -> Vec<VmNic> {
        serde_json::from_value(Value::Array(list)).expect("fits the model")
    }

    fn one(v: Value) -> Result<Vec<Nic>, Vec<NicProblem>> {
        let mut list = vec![v];
        assign(&mut list, &[]);
        parse_all(&typed(list), &cfg())
    }

    #[test]
    fn a_full_nic_reads() {
        let n = one(json!({"nic_tag": "admin", "vlan_id": 12, "ips": ["10.0.0.5/24", "fd00::5/64", "addrconf"],
            "gateways": ["10.0.0.1"], "allowed_ips": ["10.9.0.0/16"], "maxbw": "100M"}))
        .expect("valid")
        .remove(0);
        assert_eq!(n.interface, "net0");
        assert!(n.primary);
        assert_eq!(n.network, Network::Tag { tag: "admin".into(), vlan: 12 });
        assert_eq!(n.addrs.len(), 2);
        assert!(n.addrconf && !n.dhcp);
        assert_eq!(n.maxbw, Some(100_000_000));
        let p = n.protection();
        assert_eq!(p.allowed.len(), 3);
        assert!(p.mac_nospoof && p.ip_nospoof && p.dhcp_nospoof && p.restricted);
    }

    #[test]
    fn the_older_ip_and_netmask_form_reads() {
        let n =
            one(json!({"nic_tag": "admin", "ip": "10.0.0.5", "netmask": "255.255.255.0"})).expect("valid").remove(0);
        assert_eq!(n.addrs, vec!["10.0.0.5/24".parse::<IpNet>().expect("net")]);
        assert!(one(json!({"nic_tag": "admin", "ip": "10.0.0.5", "netmask": "255.0.255.0"})).is_err());
        // `vmadm get` shows both forms; a payload copied from it carries both, and `ips` (and
        // `gateways`) win, as in SmartOS's nic.js.
        let n = one(json!({"nic_tag": "admin", "ip": "10.0.0.5", "netmask": "255.255.255.0", "ips": ["10.0.0.5/24"],
            "gateway": "10.0.0.1", "gateways": ["10.0.0.1"], "mac": "2:8:20:a:b:c"}))
        .expect("both forms")
        .remove(0);
        assert_eq!(n.addrs, vec!["10.0.0.5/24".parse::<IpNet>().expect("net")]);
        assert_eq!(n.gateways.len(), 1);
        assert_eq!(crate::format_mac(&n.mac), "02:08:20:0a:0b:0c");
    }

    #[test]
    fn overlays_take_a_vni() {
        let n = one(json!({"nic_tag": "sdc/4000"})).expect("valid").remove(0);
        assert_eq!(n.network, Network::Overlay { overlay: "sdc".into(), vni: 4000 });
        for bad in ["sdc/0", "sdc/16777216", "sdc/x", "nope/5"] {
            let e = one(json!({"nic_tag": bad})).expect_err(bad);
            assert_eq!(e[0].field, "nics.0.nic_tag", "{bad}");
        }
    }

    #[test]
    fn bad_nics_name_each_problem() {
        let e = one(json!({"nic_tag": "storage", "ips": ["10.0.0.300/24", "10.0.0.5"], "vlan_id": 5000,
            "allowed_ips": (0..14).map(|i| format!("10.1.0.{i}")).collect::<Vec<_>>(), "mac": "00:00:00:00:00:00"}))
        .expect_err("invalid");
        let fields: Vec<&str> = e.iter().map(|p| p.field.as_str()).collect();
        assert!(fields.contains(&"nics.0.nic_tag"), "{e:?}");
        assert!(fields.contains(&"nics.0.mac"), "{e:?}");
        let e = one(json!({"nic_tag": "admin", "ips": ["10.0.0.300/24", "10.0.0.5"],
            "allowed_ips": (0..14).map(|i| format!("10.1.0.{i}")).collect::<Vec<_>>()}))
        .expect_err("invalid");
        let text: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert!(text.iter().any(|t| t.contains("10.0.0.300")), "{text:?}");
        assert!(text.iter().any(|t| t.contains("\"10.0.0.5\"")), "{text:?}");
        assert!(text.iter().any(|t| t.contains("at most 13")), "{text:?}");
    }

    #[test]
    fn duplicates_across_nics_are_refused() {
        let mut list = vec![
            json!({"nic_tag": "admin", "ips": ["10.0.0.5/24"], "mac": "02:00:00:00:00:01"}),
            json!({"nic_tag": "admin", "ips": ["10.0.0.5/24"], "mac": "02:00:00:00:00:01"}),
        ];
        assign(&mut list, &[]);
        let e = parse_all(&typed(list), &cfg()).expect_err("duplicates");
        let fields: Vec<&str> = e.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, vec!["nics.1.mac", "nics.1.ips"]);
    }

    #[test]
    fn assign_fills_interfaces_macs_and_one_primary() {
        let mut list = vec![json!({"nic_tag": "admin"}), json!({"nic_tag": "admin", "interface": "net0"})];
        assign(&mut list, &[]);
        assert_eq!(list[0]["interface"], "net1");
        assert_eq!(list[0]["primary"], true);
        assert!(list[1].get("primary").is_none());
        let m0 = crate::parse_mac(list[0]["mac"].as_str().expect("mac")).expect("mac");
        assert_eq!(m0[0], 2);
        assert_ne!(list[0]["mac"], list[1]["mac"]);
        let mut more = vec![json!({"nic_tag": "admin"})];
        assign(&mut more, &["net0".into(), "net1".into()]);
        assert_eq!(more[0]["interface"], "net2");
        assert!(more[0].get("primary").is_none());
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(text in ".{0,200}") {
            if let Ok(v) = serde_json::from_str::<VmNic>(&text) {
                let _ = parse("nics", 0, &v, &cfg());
            }
        }
    }
}
