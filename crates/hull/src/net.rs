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
            cfg.nic_tags.insert(name, tag);
            node.save_config(&cfg)?;
        }
        NictagCmd::Update { props: p, name, uplink } => {
            let mut tag =
                cfg.nic_tags.get(&name).cloned().ok_or_else(|| Failure::new(1, format!("no nic tag {name}")))?;
            if let Some(u) = uplink {
                if tag.local {
                    return Err(Failure::new(1, format!("{name} is a local tag: it has no uplink")));
                }
                tag.uplink = Some(resolve_uplink(&u)?);
            }
            apply_tag_props(&mut tag, &p)?;
            cfg.nic_tags.insert(name, tag);
            node.save_config(&cfg)?;
        }
        NictagCmd::Delete { force, name } => {
            let Some(tag) = cfg.nic_tags.get(&name).cloned() else {
                return Err(Failure::new(1, format!("no nic tag {name}")));
            };
            let users = vms_on_tag(node, &name)?;
            if !users.is_empty() && !force {
                return Err(Failure::new(1, format!("nic tag {name} is used by VMs: {} (use -f)", users.join(", "))));
            }
            if tag.local {
                net(node)?.delete_etherstub(&name)?;
                cfg.etherstubs.remove(&name);
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
