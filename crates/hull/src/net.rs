//! nictagadm, dladm, and `hull overlay` / `hull net`: the node's network as SmartOS's tools
//! show it.

use crate::table;
use crate::{CmdResult, Failure};
use clap::{Args, Subcommand};
use hull_net::Net;
use hull_net::vnic::Role;
use hull_spec::node::{NicTag, Overlay};
use hull_storage::Node;
use serde_json::{Value, json};

impl From<hull_net::NetError> for Failure {
    fn from(e: hull_net::NetError) -> Failure {
        Failure { code: 1, message: crate::chain(&e) }
    }
}

fn net(node: &Node) -> Result<Net, Failure> {
    Ok(Net::new(node.prefix(), node.load_config()?))
}

/// SmartOS's rule for tag names: letters, digits and `_`, at most 31.
fn check_tag_name(name: &str) -> Result<(), Failure> {
    let ok = !name.is_empty() && name.len() <= 31 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Failure::new(1, format!("invalid nic tag name {name:?}: use 1-31 letters, digits or _")))
    }
}

/// `key=value,key=value`.
fn props(list: &[String]) -> Result<Vec<(String, String)>, Failure> {
    let mut out = Vec::new();
    for item in list.iter().flat_map(|s| s.split(',')) {
        let (k, v) =
            item.split_once('=').ok_or_else(|| Failure::new(1, format!("property {item:?} is not key=value")))?;
        out.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(out)
}

/// Resolves an uplink given as a link name or a MAC address to the link's name.
fn resolve_uplink(given: &str) -> Result<String, Failure> {
    let mut nl = hull_net::nl::Netlink::open()?;
    let links = nl.links()?;
    let found = match hull_net::parse_mac(given) {
        // A bridge shares its first port's MAC: the port is the uplink.
        Some(mac) => links.iter().find(|l| l.mac == Some(mac) && l.kind != "bridge" && l.name != "lo"),
        None => links.iter().find(|l| l.name == given),
    };
    found.map(|l| l.name.clone()).ok_or_else(|| Failure::new(1, format!("no link {given:?} on this host")))
}

fn apply_tag_props(tag: &mut NicTag, list: &[String]) -> Result<(), Failure> {
    for (k, v) in props(list)? {
        match k.as_str() {
            "mtu" => {
                let m: u32 = v
                    .parse()
                    .ok()
                    .filter(|m| (576..=9000).contains(m))
                    .ok_or_else(|| Failure::new(1, format!("mtu {v:?} is not a number in 576-9000")))?;
                tag.mtu = Some(m);
            }
            "mac" | "uplink" => tag.uplink = Some(resolve_uplink(&v)?),
            _ => return Err(Failure::new(1, format!("unknown nic tag property {k:?} (mtu, uplink)"))),
        }
    }
    Ok(())
}

/// Renders rows as dladm does: a table, or with `-p` the `-o` fields separated by `:`, a
/// `:` inside a value escaped as `\:` when there is more than one field.
fn show(rows: &[Value], cols: &[String], parseable: bool, delim: &str) -> String {
    if !parseable {
        return table::render(rows, cols, false);
    }
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = cols
            .iter()
            .map(|c| {
                let v = table::cell(table::lookup(r, c));
                let v = if v == "-" { String::new() } else { v };
                if cols.len() > 1 && delim == ":" { v.replace(':', "\\:") } else { v }
            })
            .collect();
        out.push_str(&cells.join(delim));
        out.push('\n');
    }
    out
}

fn columns(o: &Option<String>, default: &str) -> Vec<String> {
    let s = o.clone().unwrap_or_else(|| default.to_string());
    table::fields(&s.to_lowercase())
}

// ---------------------------------------------------------------- nictagadm

#[derive(Subcommand)]
pub enum NictagCmd {
    /// Adds a tag for an uplink (a link name or its MAC), or with -l a local one (an etherstub).
    Add {
        #[arg(short = 'l')]
        local: bool,
        /// Properties: mtu=N.
        #[arg(short = 'p')]
        props: Vec<String>,
        name: String,
        uplink: Option<String>,
    },
    /// Changes a tag's uplink or properties.
    Update {
        #[arg(short = 'p')]
        props: Vec<String>,
        name: String,
        uplink: Option<String>,
    },
    /// Deletes a tag; -f even when VMs use it.
    Delete {
        #[arg(short = 'f')]
        force: bool,
        name: String,
    },
    /// Exit 0 when every tag named exists.
    Exists {
        #[arg(short = 'l')]
        local: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Lists tags: NAME MACADDRESS LINK TYPE.
    List {
        /// Local tags only.
        #[arg(short = 'l', conflicts_with = "no_local")]
        local: bool,
        /// No local tags.
        #[arg(short = 'L')]
        no_local: bool,
        /// Parseable: no header, fields separated by the delimiter.
        #[arg(short = 'p')]
        parseable: bool,
        #[arg(short = 'd', default_value = ":")]
        delim: String,
    },
    /// Lists the VMs whose NICs use a tag.
    Vms { name: String },
}

fn vms_on_tag(node: &Node, tag: &str) -> Result<Vec<String>, Failure> {
    if node.load_config()?.pool.is_none() {
        return Ok(Vec::new());
    }
    let exe = std::env::current_exe().map_err(|e| Failure::new(1, format!("current exe: {e}")))?;
    let vmadm = hull_vm::Vmadm::open(node, exe).map_err(|e| Failure::new(1, crate::chain(&e)))?;
    let mut out = Vec::new();
    for uuid in vmadm.uuids().map_err(|e| Failure::new(1, crate::chain(&e)))? {
        let cfg = vmadm.load(&uuid).map_err(|e| Failure::new(1, crate::chain(&e)))?;
        let uses = cfg
            .get("nics")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|n| n.get("nic_tag").and_then(Value::as_str).is_some_and(|t| t == tag)));
        if uses {
            out.push(uuid);
        }
    }
    Ok(out)
}

pub fn nictagadm(node: &Node, c: NictagCmd) -> CmdResult {
    let _lock = hull_storage::lock::lock(&node.lock_path("node-config"))?;
    let mut cfg = node.load_config()?;
    match c {
        NictagCmd::Add { local, props: p, name, uplink } => {
            check_tag_name(&name)?;
            if cfg.nic_tags.contains_key(&name) {
                return Err(Failure::new(1, format!("nic tag {name} already exists")));
            }
            let mut tag = NicTag { local, ..Default::default() };
            match (local, uplink) {
                (true, Some(_)) => return Err(Failure::new(1, "a local tag (-l) takes no uplink")),
                (false, None) => return Err(Failure::new(1, "a nic tag needs an uplink (a link name or MAC), or -l")),
                (false, Some(u)) => tag.uplink = Some(resolve_uplink(&u)?),
                (true, None) => {}
            }
            apply_tag_props(&mut tag, &p)?;
            if local {
                let n = Net::new(node.prefix(), cfg.clone());
                n.ensure_etherstub(&mut hull_net::nl::Netlink::open()?, &name)?;
                cfg.etherstubs.insert(name.clone());
            }
            cfg.nic_tags.insert(name.clone(), tag);
            node.save_config(&cfg)?;
            if !local {
                // An uplink with the host's address gets its switch now, and the address
                // moves onto it; undone if that fails, so the tag is not half made.
                if let Err(e) = Net::new(node.prefix(), cfg.clone()).adopt_uplink(&name) {
                    let _ = Net::new(node.prefix(), cfg.clone()).release_tag(&name);
                    cfg.nic_tags.remove(&name);
                    node.save_config(&cfg)?;
                    return Err(Failure::new(1, format!("nic tag {name}: taking the uplink's addresses: {e}")));
                }
            }
        }
        NictagCmd::Update { props: p, name, uplink } => {
            let mut tag =
                cfg.nic_tags.get(&name).cloned().ok_or_else(|| Failure::new(1, format!("no nic tag {name}")))?;
            let mut moved = false;
            if let Some(u) = uplink {
                if tag.local {
                    return Err(Failure::new(1, format!("{name} is a local tag: it has no uplink")));
                }
                let u = resolve_uplink(&u)?;
                moved = tag.uplink.as_deref() != Some(u.as_str());
                tag.uplink = Some(u);
            }
            apply_tag_props(&mut tag, &p)?;
            if moved {
                // The old uplink gets the host's addresses back before the new one is taken.
                net(node)?.release_tag(&name)?;
            }
            cfg.nic_tags.insert(name.clone(), tag);
            node.save_config(&cfg)?;
            if moved {
                Net::new(node.prefix(), cfg.clone()).adopt_uplink(&name)?;
            }
        }
        NictagCmd::Delete { force, name } => {
            let Some(tag) = cfg.nic_tags.get(&name).cloned() else {
                return Err(Failure::new(1, format!("no nic tag {name}")));
            };
            if cfg.networks.contains_key(&name) {
                return Err(Failure::new(1, format!("nic tag {name} is network {name}'s: hull network delete {name}")));
            }
            let users = vms_on_tag(node, &name)?;
            if !users.is_empty() && !force {
                return Err(Failure::new(1, format!("nic tag {name} is used by VMs: {} (use -f)", users.join(", "))));
            }
            if tag.local {
                net(node)?.delete_etherstub(&name)?;
                cfg.etherstubs.remove(&name);
            } else {
                // The host's addresses and routes go back to the uplink.
                net(node)?.release_tag(&name)?;
            }
            cfg.nic_tags.remove(&name);
            node.save_config(&cfg)?;
        }
        NictagCmd::Exists { local, names } => {
            let missing: Vec<&String> =
                names.iter().filter(|n| !cfg.nic_tags.get(*n).is_some_and(|t| !local || t.local)).collect();
            if !missing.is_empty() {
                for m in &missing {
                    eprintln!("nictagadm: {m} does not exist");
                }
                return Err(Failure::new(1, format!("{} nic tag(s) missing", missing.len())));
            }
        }
        NictagCmd::List { local, no_local, parseable, delim } => {
            let mut nl = hull_net::nl::Netlink::open()?;
            let links = nl.links()?;
            let rows: Vec<Value> = cfg
                .nic_tags
                .iter()
                .filter(|(_, t)| (!local || t.local) && (!no_local || !t.local))
                .map(|(name, t)| {
                    let (link, ty) = if t.local {
                        (Net::new(node.prefix(), cfg.clone()).etherstub_link(name), "etherstub")
                    } else {
                        (t.uplink.clone().unwrap_or_default(), "normal")
                    };
                    let mac =
                        links.iter().find(|l| l.name == link).and_then(|l| l.mac).map(|m| hull_net::format_mac(&m));
                    json!({"name": name, "macaddress": mac, "link": link, "type": ty, "mtu": t.mtu})
                })
                .collect();
            print!("{}", show(&rows, &table::fields("name,macaddress,link,type"), parseable, &delim));
        }
        NictagCmd::Vms { name } => {
            if !cfg.nic_tags.contains_key(&name) {
                return Err(Failure::new(1, format!("no nic tag {name}")));
            }
            for v in vms_on_tag(node, &name)? {
                println!("{v}");
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- dladm

#[derive(Args)]
pub struct ShowArgs {
    /// Parseable output (needs -o).
    #[arg(short = 'p', requires = "output")]
    parseable: bool,
    /// Fields to show, comma separated.
    #[arg(short = 'o')]
    output: Option<String>,
    /// Only this link.
    link: Option<String>,
}

#[derive(Subcommand)]
pub enum DladmCmd {
    /// Every link: LINK CLASS MTU STATE BRIDGE OVER.
    ShowLink(ShowArgs),
    /// VNICs: LINK OVER MACADDRESS VID ZONE MAXBW.
    ShowVnic(ShowArgs),
    /// Etherstubs: LINK.
    ShowEtherstub(ShowArgs),
    CreateEtherstub {
        name: String,
    },
    DeleteEtherstub {
        name: String,
    },
}

fn vm_nics(node: &Node) -> Vec<(String, Value)> {
    if node.load_config().map(|c| c.pool.is_none()).unwrap_or(true) {
        return Vec::new();
    }
    let Ok(exe) = std::env::current_exe() else { return Vec::new() };
    let Ok(vmadm) = hull_vm::Vmadm::open(node, exe) else { return Vec::new() };
    let mut out = Vec::new();
    for uuid in vmadm.uuids().unwrap_or_default() {
        if let Ok(cfg) = vmadm.load(&uuid) {
            for n in cfg.get("nics").and_then(Value::as_array).into_iter().flatten() {
                out.push((uuid.clone(), n.clone()));
            }
        }
    }
    out
}

pub fn dladm(node: &Node, c: DladmCmd) -> CmdResult {
    let net = net(node)?;
    match c {
        DladmCmd::CreateEtherstub { name } => {
            check_tag_name(&name)?;
            let _lock = hull_storage::lock::lock(&node.lock_path("node-config"))?;
            let mut cfg = node.load_config()?;
            if cfg.etherstubs.contains(&name) {
                return Err(Failure::new(1, format!("etherstub {name} already exists")));
            }
            net.ensure_etherstub(&mut hull_net::nl::Netlink::open()?, &name)?;
            cfg.etherstubs.insert(name);
            node.save_config(&cfg)?;
        }
        DladmCmd::DeleteEtherstub { name } => {
            let _lock = hull_storage::lock::lock(&node.lock_path("node-config"))?;
            let mut cfg = node.load_config()?;
            if !cfg.etherstubs.contains(&name) {
                return Err(Failure::new(1, format!("no etherstub {name}")));
            }
            if cfg.nic_tags.get(&name).is_some_and(|t| t.local) {
                return Err(Failure::new(1, format!("etherstub {name} carries nic tag {name}: nictagadm delete it")));
            }
            net.delete_etherstub(&name)?;
            cfg.etherstubs.remove(&name);
            node.save_config(&cfg)?;
        }
        DladmCmd::ShowEtherstub(a) => {
            let mut rows: Vec<Value> = net.cfg.etherstubs.iter().map(|n| json!({"link": n})).collect();
            rows.retain(|r| a.link.as_deref().is_none_or(|l| r["link"] == l));
            print!("{}", show(&rows, &columns(&a.output, "link"), a.parseable, ":"));
        }
        DladmCmd::ShowLink(a) => {
            let mut nl = hull_net::nl::Netlink::open()?;
            let links = nl.links()?;
            let owned = net.owned()?;
            let uplinks: Vec<String> = net.cfg.nic_tags.values().filter_map(|t| t.uplink.clone()).collect();
            let name_of = |i: Option<u32>| links.iter().find(|l| Some(l.index) == i).map(|l| l.name.clone());
            let mut rows = Vec::new();
            for l in links.iter().filter(|l| l.name != "lo") {
                let role = owned.iter().find(|o| o.link.index == l.index).map(|o| &o.role);
                let class = match role {
                    Some(Role::Vnic { .. }) => "vnic",
                    Some(Role::Etherstub { .. }) => "etherstub",
                    Some(Role::Switch { .. }) => "bridge",
                    Some(Role::Vxlan { .. }) => "overlay",
                    Some(Role::Vlan { .. }) => "vlan",
                    // Devices and the links nic tags name are the node's uplinks; another
                    // node's objects and the host's other virtual links are not ours to show.
                    None if l.kind.is_empty() || uplinks.contains(&l.name) => "phys",
                    None => continue,
                };
                rows.push(json!({
                    "link": l.name, "class": class, "mtu": l.mtu,
                    "state": if l.up { "up" } else { "down" },
                    "bridge": name_of(l.master), "over": match role {
                        Some(Role::Switch { key }) | Some(Role::Vxlan { key }) | Some(Role::Vlan { key }) => Some(key.clone()),
                        Some(Role::Vnic { vm, .. }) => Some(vm.clone()),
                        _ => None,
                    },
                }));
            }
            rows.retain(|r| a.link.as_deref().is_none_or(|l| r["link"] == l));
            print!("{}", show(&rows, &columns(&a.output, "link,class,mtu,state,bridge,over"), a.parseable, ":"));
        }
        DladmCmd::ShowVnic(a) => {
            let nics = vm_nics(node);
            let mut rows = Vec::new();
            for o in net.owned()? {
                let Role::Vnic { vm, interface } = &o.role else { continue };
                let n = nics.iter().find(|(u, n)| u == vm && n["interface"] == interface.as_str()).map(|(_, n)| n);
                let get = |k: &str| n.and_then(|n| n.get(k)).cloned().unwrap_or(Value::Null);
                rows.push(json!({
                    "link": o.link.name, "over": get("nic_tag"), "macaddress": get("mac"),
                    "vid": n.and_then(|n| n.get("vlan_id")).cloned().unwrap_or(json!(0)),
                    "zone": vm, "interface": interface, "mtu": o.link.mtu, "maxbw": get("maxbw"),
                }));
            }
            rows.retain(|r| a.link.as_deref().is_none_or(|l| r["link"] == l));
            print!("{}", show(&rows, &columns(&a.output, "link,over,macaddress,vid,zone,maxbw"), a.parseable, ":"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- overlays and the whole network

#[derive(Subcommand)]
pub enum OverlayCmd {
    /// Adds an overlay: nic tags `NAME/VNI` then put NICs on VXLAN network VNI.
    Add {
        name: String,
        /// This node's address on the underlay.
        #[arg(long)]
        underlay: std::net::Ipv4Addr,
        #[arg(long, default_value_t = 4789)]
        port: u16,
        /// The underlay's MTU.
        #[arg(long, default_value_t = 1500)]
        mtu: u32,
    },
    /// Sets the underlay addresses of the other nodes on one VNI.
    Peers {
        name: String,
        vni: u32,
        peers: Vec<std::net::IpAddr>,
    },
    Delete {
        name: String,
    },
    List,
}

pub fn overlay(node: &Node, c: OverlayCmd) -> CmdResult {
    let _lock = hull_storage::lock::lock(&node.lock_path("node-config"))?;
    let mut cfg = node.load_config()?;
    match c {
        OverlayCmd::Add { name, underlay, port, mtu } => {
            check_tag_name(&name)?;
            if cfg.overlays.contains_key(&name) || cfg.nic_tags.contains_key(&name) {
                return Err(Failure::new(1, format!("{name} is already a nic tag or overlay")));
            }
            cfg.overlays.insert(name, Overlay { underlay, port, mtu, peers: Default::default() });
        }
        OverlayCmd::Peers { name, vni, peers } => {
            if !(1..=hull_net::nic::MAX_VNI).contains(&vni) {
                return Err(Failure::new(1, format!("VNI {vni} is out of range 1-{}", hull_net::nic::MAX_VNI)));
            }
            let o = cfg.overlays.get_mut(&name).ok_or_else(|| Failure::new(1, format!("no overlay {name}")))?;
            o.peers.insert(vni.to_string(), peers);
        }
        OverlayCmd::Delete { name } => {
            if let Some((net, _)) =
                cfg.networks.iter().find(|(_, n)| n.nic_tag.split_once('/').is_some_and(|(o, _)| o == name))
            {
                return Err(Failure::new(
                    1,
                    format!("overlay {name} carries network {net}: hull network delete {net}"),
                ));
            }
            if cfg.overlays.remove(&name).is_none() {
                return Err(Failure::new(1, format!("no overlay {name}")));
            }
        }
        OverlayCmd::List => {
            crate::print_json(&cfg.overlays);
            return Ok(());
        }
    }
    node.save_config(&cfg)?;
    Ok(())
}

#[derive(Subcommand)]
pub enum NetCmd {
    /// Removes every link, rule and namespace of this node (VMs should be deleted first).
    Destroy,
}

pub fn run(node: &Node, c: NetCmd) -> CmdResult {
    match c {
        NetCmd::Destroy => {
            net(node)?.destroy(&hull_net::vnic::netns_dir(&node.var_dir()))?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- routed networks

#[derive(Subcommand)]
pub enum NetworkCmd {
    /// Adds a network the host routes for: a local nic tag NAME (or an overlay's VNI with
    /// --overlay), the host's gateway address on its switch, NAT out of the host and DHCP.
    Add(NetworkAdd),
    /// Lists the networks: NAME NIC_TAG SUBNET GATEWAY NAT DHCP.
    List {
        /// As JSON.
        #[arg(short = 'j')]
        json: bool,
    },
    /// Prints one network as JSON.
    Get { name: String },
    /// Deletes a network (refused while VMs use it); the host's routes and rules for it go.
    Delete { name: String },
}

#[derive(Args)]
pub struct NetworkAdd {
    name: String,
    /// The subnet (IPv4, CIDR); by default a free /24 in 10.0.0.0/8 that no route of the
    /// host's and no other network touches.
    #[arg(long)]
    subnet: Option<ipnet::Ipv4Net>,
    /// The host's address on the network (the zones' gateway); by default the subnet's first.
    #[arg(long)]
    gateway: Option<std::net::Ipv4Addr>,
    /// A routed network without NAT (the operator routes the subnet to this host).
    #[arg(long)]
    no_nat: bool,
    /// Masquerade only out of this link (by default out of any but the network's own).
    #[arg(long)]
    uplink: Option<String>,
    /// The addresses DHCP hands out, FIRST-LAST; by default the subnet from its 10th host.
    #[arg(long, conflicts_with = "no_dhcp")]
    dhcp_range: Option<String>,
    /// No DHCP on this network: NICs need static `ips`.
    #[arg(long)]
    no_dhcp: bool,
    /// DNS resolvers given with each lease (repeat or comma-separate).
    #[arg(long, value_delimiter = ',')]
    resolvers: Vec<std::net::IpAddr>,
    /// IPv6 too: the host advertises this /64 for SLAAC (router advertisements) and
    /// masquerades it with the IPv4 subnet.
    #[arg(long, conflicts_with = "ipv6")]
    subnet6: Option<ipnet::Ipv6Net>,
    /// IPv6 too, on a unique local /64 (fdXX:...) the name picks.
    #[arg(long)]
    ipv6: bool,
    /// Put the network on an overlay's VNI (`OVERLAY/VNI`) in place of a local nic tag: one
    /// NAT gateway per tenant network, as Triton's fabrics have.
    #[arg(long)]
    overlay: Option<String>,
}

fn network_add(node: &Node, cfg: &mut hull_spec::NodeConfig, a: NetworkAdd) -> Result<(), Failure> {
    use hull_spec::node::Network;
    check_tag_name(&a.name)?;
    if cfg.networks.contains_key(&a.name) {
        return Err(Failure::new(1, format!("network {} already exists", a.name)));
    }
    let nic_tag = match &a.overlay {
        Some(o) => {
            let (ovl, vni) =
                o.split_once('/').ok_or_else(|| Failure::new(1, format!("--overlay {o:?} is not OVERLAY/VNI")))?;
            if !cfg.overlays.contains_key(ovl) {
                return Err(Failure::new(1, format!("no overlay {ovl} (see hull overlay list)")));
            }
            match vni.parse::<u32>() {
                Ok(v) if (1..=hull_net::nic::MAX_VNI).contains(&v) => {}
                _ => return Err(Failure::new(1, format!("VNI {vni:?} is out of range 1-{}", hull_net::nic::MAX_VNI))),
            }
            if cfg.networks.values().any(|n| n.nic_tag == *o) {
                return Err(Failure::new(1, format!("{o} already has a network")));
            }
            o.clone()
        }
        None => {
            if cfg.nic_tags.contains_key(&a.name) || cfg.overlays.contains_key(&a.name) {
                return Err(Failure::new(1, format!("{} is already a nic tag or overlay", a.name)));
            }
            a.name.clone()
        }
    };
    if let Some(u) = &a.uplink {
        resolve_uplink(u)?;
    }
    let mut nl = hull_net::nl::Netlink::open()?;
    let routes = hull_net::routed::host_routes(&mut nl)?;
    let mut others: Vec<(String, ipnet::IpNet)> =
        cfg.networks.iter().map(|(k, n)| (k.clone(), ipnet::IpNet::V4(n.subnet))).collect();
    others.extend(cfg.networks.iter().filter_map(|(k, n)| Some((k.clone(), ipnet::IpNet::V6(n.subnet6?)))));
    let subnet6 = match (a.subnet6, a.ipv6) {
        (Some(s), _) => Some(s.trunc()),
        (None, true) => Some(hull_net::routed::ula_for(&a.name)),
        (None, false) => None,
    };
    if let Some(s6) = subnet6 {
        if s6.prefix_len() != 64 {
            return Err(Failure::new(1, format!("IPv6 subnet {s6} is not a /64 (SLAAC needs one)")));
        }
        let clash = hull_net::routed::collisions(&ipnet::IpNet::V6(s6), &routes, &others);
        if !clash.is_empty() {
            return Err(Failure::new(1, format!("IPv6 subnet {s6} overlaps {}", clash.join(", "))));
        }
    }
    let subnet = match a.subnet {
        Some(s) => {
            let s = s.trunc();
            let clash = hull_net::routed::collisions(&ipnet::IpNet::V4(s), &routes, &others);
            if !clash.is_empty() {
                return Err(Failure::new(1, format!("subnet {s} overlaps {}", clash.join(", "))));
            }
            s
        }
        None => hull_net::routed::pick_subnet(&a.name, &routes, &others)
            .ok_or_else(|| Failure::new(1, "no free /24 in 10.0.0.0/8: give --subnet"))?,
    };
    if subnet.prefix_len() > 30 {
        return Err(Failure::new(1, format!("subnet {subnet} leaves no room for a gateway and zones")));
    }
    let hosts: Vec<std::net::Ipv4Addr> = subnet.hosts().take(1 << 20).collect();
    let gateway = a.gateway.or(hosts.first().copied()).unwrap_or(subnet.network());
    if !subnet.contains(&gateway) || gateway == subnet.network() || gateway == subnet.broadcast() {
        return Err(Failure::new(1, format!("gateway {gateway} is not a host address of {subnet}")));
    }
    let dhcp = if a.no_dhcp {
        None
    } else {
        let (first, last) = match &a.dhcp_range {
            Some(r) => {
                let (f, l) = r
                    .split_once('-')
                    .ok_or_else(|| Failure::new(1, format!("--dhcp-range {r:?} is not FIRST-LAST")))?;
                let p = |s: &str| {
                    s.trim()
                        .parse::<std::net::Ipv4Addr>()
                        .map_err(|_| Failure::new(1, format!("{s:?} is not an IPv4 address")))
                };
                (p(f)?, p(l)?)
            }
            None => {
                let from = hosts.get(9).or(hosts.get(1)).copied().unwrap_or(gateway);
                (from, hosts.last().copied().unwrap_or(gateway))
            }
        };
        if !subnet.contains(&first) || !subnet.contains(&last) || first > last {
            return Err(Failure::new(1, format!("DHCP range {first}-{last} is not within {subnet}")));
        }
        Some((first, last))
    };
    let n = Network {
        nic_tag: nic_tag.clone(),
        subnet,
        gateway,
        nat: !a.no_nat,
        uplink: a.uplink,
        dhcp,
        resolvers: a.resolvers,
        subnet6,
        // `::1` of the prefix.
        gateway6: subnet6.and_then(|s| s.hosts().nth(1)),
    };
    if a.overlay.is_none() {
        cfg.nic_tags.insert(a.name.clone(), NicTag { local: true, ..Default::default() });
        cfg.etherstubs.insert(a.name.clone());
    }
    cfg.networks.insert(a.name.clone(), n);
    let applied = Net::new(node.prefix(), cfg.clone()).apply_networks();
    if let Err(e) = applied {
        // Nothing half made: the rules as they were, the switch and the tag gone.
        let n = cfg.networks.remove(&a.name);
        let before = Net::new(node.prefix(), cfg.clone());
        if let Some(n) = n {
            let _ = Net::new(node.prefix(), {
                let mut c = cfg.clone();
                c.networks.insert(a.name.clone(), n.clone());
                c
            })
            .remove_network(&n, &before);
        }
        if a.overlay.is_none() {
            let _ = before.delete_etherstub(&a.name);
            cfg.nic_tags.remove(&a.name);
            cfg.etherstubs.remove(&a.name);
        }
        return Err(Failure::new(1, format!("network {}: {}", a.name, crate::chain(&e))));
    }
    node.save_config(cfg)?;
    Ok(())
}

fn network_row(name: &str, n: &hull_spec::node::Network) -> Value {
    json!({
        "name": name, "nic_tag": n.nic_tag, "subnet": n.subnet.to_string(), "gateway": n.gateway.to_string(),
        "nat": n.nat, "uplink": n.uplink,
        "dhcp": n.dhcp.map(|(f, l)| format!("{f}-{l}")), "resolvers": n.resolvers,
        "subnet6": n.subnet6.map(|s| s.to_string()), "gateway6": n.gateway6.map(|g| g.to_string()),
    })
}

pub fn network(node: &Node, c: NetworkCmd) -> CmdResult {
    let _lock = hull_storage::lock::lock(&node.lock_path("node-config"))?;
    let mut cfg = node.load_config()?;
    match c {
        NetworkCmd::Add(a) => network_add(node, &mut cfg, a)?,
        NetworkCmd::List { json } => {
            let rows: Vec<Value> = cfg.networks.iter().map(|(k, n)| network_row(k, n)).collect();
            if json {
                crate::print_json(&rows);
            } else {
                print!("{}", table::render(&rows, &table::fields("name,nic_tag,subnet,gateway,nat,dhcp"), false));
            }
        }
        NetworkCmd::Get { name } => {
            let n = cfg.networks.get(&name).ok_or_else(|| Failure::new(1, format!("no network {name}")))?;
            crate::print_json(&network_row(&name, n));
        }
        NetworkCmd::Delete { name } => {
            let n = cfg.networks.get(&name).cloned().ok_or_else(|| Failure::new(1, format!("no network {name}")))?;
            let users = vms_on_tag(node, &n.nic_tag)?;
            if !users.is_empty() {
                return Err(Failure::new(1, format!("network {name} is used by VMs: {}", users.join(", "))));
            }
            let with = Net::new(node.prefix(), cfg.clone());
            cfg.networks.remove(&name);
            if n.nic_tag == name {
                cfg.nic_tags.remove(&name);
                cfg.etherstubs.remove(&name);
            }
            let without = Net::new(node.prefix(), cfg.clone());
            with.remove_network(&n, &without)?;
            if n.nic_tag == name {
                without.delete_etherstub(&name)?;
            }
            node.save_config(&cfg)?;
        }
    }
    Ok(())
}
