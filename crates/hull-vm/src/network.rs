//! A VM's NICs: checked at create and update, plugged at boot, unplugged when the zone
//! stops, changed live by `update`.

use crate::{Result, VmError, Vmadm};
use hull_net::{Net, Nic, NicProblem, ns};
use hull_storage::Node;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

pub(crate) fn bad_nics(vm: &str, problems: Vec<NicProblem>) -> VmError {
    VmError::Nics { vm: vm.to_string(), problems: problems.iter().map(ToString::to_string).collect() }
}

/// Where a VM's network namespace is kept while it runs.
pub fn netns_path(node: &Node, uuid: &str) -> PathBuf {
    hull_net::vnic::netns_dir(&node.var_dir()).join(uuid)
}

/// Where a zone's user namespace is kept while it runs (made with its network namespace).
pub fn userns_path(node: &Node, uuid: &str) -> PathBuf {
    node.var_dir().join("userns").join(uuid)
}

/// The node's network, as its config now says.
pub fn net(node: &Node) -> Result<Net> {
    Ok(Net::new(node.prefix(), node.load_config()?))
}

/// Unplugs a VM's NICs and removes its namespace; what is already gone is fine. Used by
/// zoneadmd when a zone stops, and by every path that removes a zone.
pub fn down(node: &Node, uuid: &str) -> Result<()> {
    if !plugged(node, uuid) {
        // Nothing of the VM's is on the node's switches or in its nftables: its namespaces
        // are all it has, and they are its own.
        ns::remove(&netns_path(node, uuid))?;
        ns::remove(&userns_path(node, uuid))?;
        return Ok(());
    }
    let _lock = net_lock(node)?;
    let net = net(node)?;
    ns::remove(&netns_path(node, uuid))?;
    ns::remove(&userns_path(node, uuid))?;
    net.unplug_all(uuid)?;
    unmark_plugged(node, uuid);
    Ok(())
}

/// A VM that has had a NIC plugged since its links were last all taken down has a mark
/// here (`var/hull/plugged/UUID`), made before the first link and removed, under the
/// network's lock, once `unplug_all` has run: a VM without one has nothing on the node's
/// switches or in its nftables, and its start and stop look at neither (listing them costs a
/// no-NIC zone's boot more than its namespaces do). The marks describe the kernel's state,
/// which a reboot clears with them gone or not: they are not synced.
fn plugged_mark(node: &Node, uuid: &str) -> PathBuf {
    node.var_dir().join("plugged").join(uuid)
}

pub(crate) fn plugged(node: &Node, uuid: &str) -> bool {
    plugged_mark(node, uuid).exists()
}

/// Marks the VM as having links; called with the network's lock held, before plugging.
pub(crate) fn mark_plugged(node: &Node, uuid: &str) -> Result<()> {
    let p = plugged_mark(node, uuid);
    let io = |op: &'static str, path: &std::path::Path| {
        let (vm, path) = (uuid.to_string(), path.to_path_buf());
        move |source| VmError::Io { vm, op, path, source }
    };
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    }
    std::fs::write(&p, b"").map_err(io("write", &p))
}

/// Removes the mark once every link of the VM is gone; called with the network's lock held.
pub(crate) fn unmark_plugged(node: &Node, uuid: &str) {
    let _ = std::fs::remove_file(plugged_mark(node, uuid));
}

/// One network change at a time on a node: switches are shared between VMs, and two first
/// NICs on a tag must not both make its switch, nor two first VNICs the nftables table.
fn net_lock(node: &Node) -> Result<hull_storage::lock::LockGuard> {
    Ok(hull_storage::lock::lock(&node.lock_path("net"))?)
}

fn nics_of(cfg: &Map<String, Value>) -> Vec<Value> {
    cfg.get("nics").and_then(Value::as_array).cloned().unwrap_or_default()
}

/// A config's NICs in the typed model; one that does not fit names its field.
fn typed_nics(uuid: &str, nics: &[Value]) -> Result<Vec<hull_spec::vm::model::Nic>> {
    hull_spec::vm::model::Nic::from_values(nics)
        .map_err(|e| bad_nics(uuid, vec![NicProblem { field: e.path, reason: e.reason }]))
}

/// The NICs of a stored config, read against the node.
fn parsed_nics(uuid: &str, cfg: &Map<String, Value>, node_cfg: &hull_spec::NodeConfig) -> Result<Vec<Nic>> {
    hull_net::nic::parse_all(&typed_nics(uuid, &nics_of(cfg))?, node_cfg).map_err(|p| bad_nics(uuid, p))
}

fn routes_of(cfg: &Map<String, Value>) -> BTreeMap<String, String> {
    cfg.get("routes")
        .and_then(Value::as_object)
        .map(|o| o.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

impl Vmadm {
    /// Fills in each NIC's interface and MAC and checks them all against the node.
    /// Checks the NICs `cfg` gives the VM, of which `added` are new (all of them at create)
    /// and `updated` the payload's changes to others, and fills in what SmartOS fills in (interface, MAC, primary).
    pub(crate) fn check_nics(
        &self,
        uuid: &str,
        cfg: &mut Map<String, Value>,
        added: Option<&[Value]>,
        updated: &[Value],
    ) -> Result<Vec<Nic>> {
        let mut nics = nics_of(cfg);
        if nics.is_empty() {
            return Ok(Vec::new());
        }
        hull_spec::vm::nics::fill_vrrp_macs(&mut nics);
        let model_required = hull_spec::Brand::of(cfg) == hull_spec::Brand::Kvm;
        let driver = cfg.get("nic_driver").and_then(Value::as_str);
        let mut new = added.map(<[Value]>::to_vec).unwrap_or_else(|| nics.clone());
        hull_spec::vm::nics::fill_vrrp_macs(&mut new);
        let problems = hull_spec::vm::nics::check(&nics, &new, updated, model_required, driver);
        if !problems.is_empty() {
            return Err(VmError::Nics { vm: uuid.into(), problems });
        }
        hull_net::nic::assign(&mut nics, &[]);
        let node_cfg = self.node.load_config()?;
        let parsed = hull_net::nic::parse_all(&typed_nics(uuid, &nics)?, &node_cfg).map_err(|p| bad_nics(uuid, p))?;
        let clashes = hull_net::nic::conflicts(&parsed, &self.others_nics(uuid, &node_cfg, false));
        if !clashes.is_empty() {
            return Err(bad_nics(uuid, clashes));
        }
        cfg.insert("nics".into(), Value::Array(nics));
        check_routes(uuid, cfg)?;
        Ok(parsed)
    }

    /// The NICs of every other VM (only the running ones with `running`), each with its
    /// VM's uuid. A VM whose config cannot be read has none to clash with.
    fn others_nics(&self, uuid: &str, node_cfg: &hull_spec::NodeConfig, running: bool) -> Vec<(String, Nic)> {
        let mut out = Vec::new();
        for other in self.uuids().unwrap_or_default().into_iter().filter(|u| u != uuid) {
            let Ok(cfg) = self.load(&other) else { continue };
            if running && !self.state(&other, &cfg).state.is_running() {
                continue;
            }
            if let Ok(nics) = parsed_nics(&other, &cfg, node_cfg) {
                out.extend(nics.into_iter().map(|n| (other.clone(), n)));
            }
        }
        out
    }

    /// Makes the zone's namespace and plugs every NIC into it; returns the namespace.
    /// Makes the VM's network namespace with its NICs; with `idmap`, owned by a user
    /// namespace of the zone's made with it (the zone's ids 0..SIZE are the host's from
    /// `base`).
    pub(crate) fn net_up(&self, uuid: &str, cfg: &Map<String, Value>, idmap: Option<u32>) -> Result<PathBuf> {
        let path = netns_path(&self.node, uuid);
        let r = (|| {
            let net = net(&self.node)?;
            let mut nics = parsed_nics(uuid, cfg, &net.cfg)?;
            // A VM with no NICs and nothing left plugged touches nothing shared: it needs
            // neither the network's lock nor a look at the other VMs (a boot that read every
            // VM's config would grow slower with each VM on the node).
            let shared = !nics.is_empty() || plugged(&self.node, uuid);
            let _lock = if shared { Some(net_lock(&self.node)?) } else { None };
            if !nics.is_empty() {
                // Checked again under the lock, against the VMs that run: two creates at
                // once cannot both plug the same MAC or address.
                let clashes = hull_net::nic::conflicts(&nics, &self.others_nics(uuid, &net.cfg, true));
                if !clashes.is_empty() {
                    return Err(bad_nics(uuid, clashes));
                }
            }
            self.dhcp_plan(uuid, cfg, &mut nics, &net)?;
            let userns = userns_path(&self.node, uuid);
            self.host.net_plug(&crate::host::NetPlan {
                uuid,
                netns: &path,
                userns: idmap.map(|base| (userns.as_path(), base)),
                nics: &nics,
                // A KVM guest sets its own addresses and routes.
                guest: hull_spec::Brand::of(cfg).is_hvm(),
                routes: &routes_of(cfg),
            })?;
            Ok(path.clone())
        })();
        // After the closure: its lock is released, and down takes it again.
        if r.is_err() {
            let _ = self.host.net_down(uuid);
        }
        r
    }

    /// What hull answers when the VM's NICs ask for DHCP, written where its zoneadmd reads
    /// it (`dhcp.json` in the zone's run directory): a `dhcp` NIC on a network with a DHCP
    /// range gets a lease from it, a KVM guest's NIC with a static IPv4 address gets that
    /// address (SmartOS's qemu does the same). Such NICs are marked, so link protection
    /// allows the leased address and keeps their requests off the switch.
    fn dhcp_plan(&self, uuid: &str, cfg: &Map<String, Value>, nics: &mut [Nic], net: &hull_net::Net) -> Result<()> {
        use hull_net::dhcp::{Answer, Lease};
        use std::net::{IpAddr, Ipv4Addr};
        let vm = hull_spec::vm::model::Vm::from_map(cfg).ok();
        let hostname = vm.as_ref().and_then(|v| v.hostname()).map(String::from);
        let v4 = |list: &[String]| list.iter().filter_map(|r| r.parse::<Ipv4Addr>().ok()).collect::<Vec<_>>();
        let vm_resolvers = vm.as_ref().and_then(|v| v.resolvers.as_deref()).map(v4).unwrap_or_default();
        let routes: Vec<(Ipv4Addr, u8, Ipv4Addr)> = routes_of(cfg)
            .iter()
            .filter_map(|(dst, gw)| {
                let gw: Ipv4Addr = gw.parse().ok()?;
                let dst = dst
                    .parse::<ipnet::Ipv4Net>()
                    .ok()
                    .or_else(|| dst.parse::<Ipv4Addr>().ok().map(ipnet::Ipv4Net::from))?;
                Some((dst.network(), dst.prefix_len(), gw))
            })
            .collect();
        let dir = self.node.var_dir().join("z").join(uuid);
        let path = dir.join("dhcp.json");
        if nics.is_empty() {
            // Nothing to answer: no responder.
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(VmError::Io { vm: uuid.into(), op: "remove", path, source: e })
                }
                _ => Ok(()),
            };
        }
        let guest = hull_spec::Brand::of(cfg).is_hvm();
        let others = self.others_nics(uuid, &net.cfg, false);
        let mut answers = Vec::new();
        for i in 0..nics.len() {
            let nic = &nics[i];
            let host_if = net.host_if(uuid, &nic.interface);
            let gateways: Vec<Ipv4Addr> =
                nic.gateways.iter().filter_map(|g| if let IpAddr::V4(a) = g { Some(*a) } else { None }).collect();
            let static4 = nic.addrs.iter().find_map(|a| match a {
                ipnet::IpNet::V4(n) => Some(*n),
                ipnet::IpNet::V6(_) => None,
            });
            let network =
                net.cfg.networks.iter().find(|(_, n)| hull_net::routed::attach(n).is_ok_and(|a| a == nic.network));
            let on_network = network.filter(|(_, n)| n.dhcp.is_some());
            // IPv6 on the network: router advertisements down this NIC's port, from the
            // switch's link-local address; an `addrconf` NIC may send from its SLAAC address.
            let ra = match network.and_then(|(_, n)| n.subnet6) {
                Some(prefix) => {
                    let mut nl = hull_net::nl::Netlink::open()?;
                    let (sw, _) = net.ensure_switch(&mut nl, &nic.network)?;
                    sw.mac.map(|router_mac| hull_net::dhcp::Ra {
                        prefix,
                        router: hull_net::routed::link_local(&router_mac),
                        router_mac,
                        mtu: nic.mtu,
                    })
                }
                None => None,
            };
            if let Some(r) = &ra
                && nic.addrconf
            {
                nics[i].slaac = Some(hull_net::routed::eui64(&r.prefix, &nics[i].mac));
            }
            let nic = &nics[i];
            let v4 = match (nic.dhcp, on_network, static4) {
                (true, Some((name, n)), _) => {
                    let Some(range) = n.dhcp else { continue };
                    // Static addresses on the network and its gateway are never leased.
                    let mut taken: Vec<Ipv4Addr> = vec![n.gateway];
                    for (_, o) in others.iter().filter(|(_, o)| o.network == nic.network) {
                        taken.extend(
                            o.addrs.iter().filter_map(|a| if let IpAddr::V4(x) = a.addr() { Some(x) } else { None }),
                        );
                    }
                    let mut live: Vec<[u8; 6]> = others.iter().map(|(_, o)| o.mac).collect();
                    live.extend(nics.iter().map(|n| n.mac));
                    let path = self.node.var_dir().join("dhcp").join(format!("{name}.json"));
                    let addr = hull_net::lease::lease(&path, &nic.mac, range, &taken, &live).map_err(|e| {
                        bad_nics(uuid, vec![NicProblem { field: format!("nics.{i}.ips"), reason: e.to_string() }])
                    })?;
                    let prefix = n.subnet.prefix_len();
                    nics[i].leased = ipnet::Ipv4Net::new(addr, prefix).ok();
                    if !guest && let Some(l) = nics[i].leased {
                        // A zone has no CAP_NET_ADMIN to apply what its client is told: hull
                        // puts the lease on the NIC before the zone boots, as for a static
                        // address, and answers the zone's client with the same.
                        nics[i].addrs.push(ipnet::IpNet::V4(l));
                        if nics[i].gateways.is_empty() {
                            nics[i].gateways.push(IpAddr::V4(n.gateway));
                        }
                    }
                    Some(Lease {
                        addr,
                        prefix,
                        server: n.gateway,
                        routers: vec![n.gateway],
                        resolvers: if vm_resolvers.is_empty() {
                            n.resolvers
                                .iter()
                                .filter_map(|r| if let IpAddr::V4(a) = r { Some(*a) } else { None })
                                .collect()
                        } else {
                            vm_resolvers.clone()
                        },
                        hostname: hostname.clone(),
                        mtu: nics[i].mtu.and_then(|m| u16::try_from(m).ok()),
                        routes: routes.clone(),
                        lease_secs: 3600,
                    })
                }
                (false, _, Some(addr)) if guest => Some(Lease {
                    addr: addr.addr(),
                    prefix: addr.prefix_len(),
                    // The guest's gateway speaks for the server; without one, an address of
                    // the subnet the guest does not have.
                    server: gateways
                        .first()
                        .copied()
                        .unwrap_or_else(|| addr.hosts().find(|h| *h != addr.addr()).unwrap_or(addr.network())),
                    routers: gateways.clone(),
                    resolvers: vm_resolvers.clone(),
                    hostname: hostname.clone(),
                    mtu: nic.mtu.and_then(|m| u16::try_from(m).ok()),
                    routes: routes.clone(),
                    lease_secs: 86400,
                }),
                _ => None,
            };
            if v4.is_none() && ra.is_none() {
                continue;
            }
            nics[i].answered = v4.is_some();
            answers.push(Answer { host_if, mac: nics[i].mac, v4, ra });
        }
        let io =
            |op: &'static str, e: std::io::Error| VmError::Io { vm: uuid.into(), op, path: path.clone(), source: e };
        std::fs::create_dir_all(&dir).map_err(|e| io("create", e))?;
        let text = serde_json::to_vec(&answers).map_err(|e| io("encode", std::io::Error::other(e)))?;
        let tmp = dir.join("dhcp.json.tmp");
        std::fs::write(&tmp, text).map_err(|e| io("write", e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io("rename", e))?;
        Ok(())
    }

    /// Applies `nics` changes to a running VM: NICs in `before` and not `after` are
    /// unplugged, new ones plugged, changed ones changed.
    pub(crate) fn net_update(
        &self,
        uuid: &str,
        cfg: &Map<String, Value>,
        before: &[Value],
        after: &[Value],
    ) -> Result<()> {
        let _lock = net_lock(&self.node)?;
        let net = net(&self.node)?;
        let mut old = hull_net::nic::parse_all(&typed_nics(uuid, before)?, &net.cfg).map_err(|p| bad_nics(uuid, p))?;
        let mut new = hull_net::nic::parse_all(&typed_nics(uuid, after)?, &net.cfg).map_err(|p| bad_nics(uuid, p))?;
        // The old NICs as they were plugged: with what the last plan answered for them.
        let answered = hull_net::dhcp::load(&self.node.var_dir().join("z").join(uuid).join("dhcp.json"));
        for o in &mut old {
            if let Some(a) = answered.iter().find(|a| a.mac == o.mac && a.host_if == net.host_if(uuid, &o.interface)) {
                o.answered = a.v4.is_some();
                o.leased = a.v4.as_ref().filter(|_| o.dhcp).and_then(|l| ipnet::Ipv4Net::new(l.addr, l.prefix).ok());
                o.slaac = a.ra.as_ref().filter(|_| o.addrconf).map(|r| hull_net::routed::eui64(&r.prefix, &o.mac));
            }
        }
        self.dhcp_plan(uuid, cfg, &mut new, &net)?;
        let path = netns_path(&self.node, uuid);
        if !new.is_empty() {
            mark_plugged(&self.node, uuid)?;
        }
        for o in old.iter().filter(|o| !new.iter().any(|n| n.interface == o.interface)) {
            net.unplug(uuid, &o.interface)?;
        }
        for n in &new {
            match old.iter().find(|o| o.interface == n.interface) {
                None => {
                    net.plug(uuid, &path, n)?;
                }
                Some(o) if o != n => net.replug(uuid, &path, o, n)?,
                Some(_) => {}
            }
        }
        net.collect_switches()?;
        Ok(())
    }
}

fn check_routes(uuid: &str, cfg: &Map<String, Value>) -> Result<()> {
    for (dst, gw) in routes_of(cfg) {
        let dst_ok = dst.parse::<ipnet::IpNet>().is_ok() || dst.parse::<std::net::IpAddr>().is_ok();
        let gw_ok = gw.parse::<std::net::IpAddr>().is_ok()
            || hull_spec::vm::route_nic(&gw).is_some_and(|i| i < nics_of(cfg).len())
            || hull_spec::vm::route_mac(&gw).is_some_and(|m| {
                nics_of(cfg).iter().any(|n| {
                    n.get("mac").and_then(Value::as_str).and_then(hull_spec::vm::normal_mac).as_deref()
                        == Some(m.as_str())
                })
            });
        if !dst_ok || !gw_ok {
            return Err(bad_nics(
                uuid,
                vec![NicProblem { field: format!("routes.{dst}"), reason: format!("{dst} via {gw:?} is not a route") }],
            ));
        }
    }
    Ok(())
}
