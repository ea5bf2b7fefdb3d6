//! Plugging VNICs into zones, and the switches they plug into.

use crate::nic::{Network, Nic};
use crate::nl::{Link, Netlink};
use crate::{NetError, Result, alias, link_name, nft, ns, tc};
use hull_spec::NodeConfig;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The node's network: its prefix and configuration.
#[derive(Debug, Clone)]
pub struct Net {
    pub prefix: String,
    pub cfg: NodeConfig,
}

/// What a hull link is, read back from its alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A VNIC's host end: the VM and its interface.
    Vnic {
        vm: String,
        interface: String,
    },
    /// The switch of a (tag, VLAN) or an overlay network.
    Switch {
        key: String,
    },
    Etherstub {
        name: String,
    },
    /// A VXLAN device of an overlay network.
    Vxlan {
        key: String,
    },
    /// An 802.1Q link over an uplink.
    Vlan {
        key: String,
    },
}

/// A link of this node, with what it is.
#[derive(Debug, Clone)]
pub struct Owned {
    pub link: Link,
    pub role: Role,
}

/// The bits per second caps and the MTU a zone end was given: what `dladm show-vnic` reports.
#[derive(Debug, Clone)]
pub struct Plugged {
    pub host_if: String,
    pub mtu: u32,
}

fn link_of(nl: &mut Netlink, name: &str) -> Result<Link> {
    nl.link(name)?.ok_or_else(|| NetError::NoLink(name.to_string()))
}

impl Net {
    pub fn new(prefix: &str, cfg: NodeConfig) -> Net {
        Net { prefix: prefix.to_string(), cfg }
    }

    /// The host end of a VM's NIC.
    pub fn host_if(&self, vm: &str, interface: &str) -> String {
        link_name(&self.prefix, 'v', &format!("{vm}/{interface}"))
    }

    pub fn etherstub_link(&self, name: &str) -> String {
        link_name(&self.prefix, 'e', name)
    }

    fn role(&self, alias: &str) -> Option<Role> {
        let rest = alias.strip_prefix(&format!("hull:{}:", self.prefix))?;
        let (what, key) = rest.split_once(':')?;
        Some(match what {
            "vnic" => {
                let (vm, interface) = key.split_once('/')?;
                Role::Vnic { vm: vm.into(), interface: interface.into() }
            }
            "switch" => Role::Switch { key: key.into() },
            "etherstub" => Role::Etherstub { name: key.into() },
            "vxlan" => Role::Vxlan { key: key.into() },
            "vlan" => Role::Vlan { key: key.into() },
            _ => return None,
        })
    }

    /// Every link this node made, in the current network namespace.
    pub fn owned(&self) -> Result<Vec<Owned>> {
        let mut nl = Netlink::open()?;
        Ok(nl
            .links()?
            .into_iter()
            .filter(|l| l.name.starts_with(&self.prefix))
            .filter_map(|l| {
                let role = self.role(l.alias.as_deref()?)?;
                Some(Owned { link: l, role })
            })
            .collect())
    }

    /// Makes an etherstub (an internal switch) if it is not there.
    pub fn ensure_etherstub(&self, nl: &mut Netlink, name: &str) -> Result<Link> {
        ensure_bridge(nl, &self.etherstub_link(name), &alias(&self.prefix, "etherstub", name))
    }

    pub fn delete_etherstub(&self, name: &str) -> Result<()> {
        let mut nl = Netlink::open()?;
        let link = self.etherstub_link(name);
        if let Some(l) = nl.link(&link)? {
            if nl.links()?.iter().any(|p| p.master == Some(l.index)) {
                return Err(NetError::Invalid(format!("etherstub {name} still has VNICs on it")));
            }
            nl.del_link(l.index)?;
        }
        Ok(())
    }

    /// The switch a network's NICs plug into, made if it is missing; returns it and the
    /// largest MTU its NICs may have.
    pub fn ensure_switch(&self, nl: &mut Netlink, network: &Network) -> Result<(Link, u32)> {
        let key = network.key();
        match network {
            Network::Tag { tag, vlan } => {
                let t = self.cfg.nic_tags.get(tag).ok_or_else(|| NetError::Invalid(format!("no nic tag {tag}")))?;
                let mtu = t.mtu.unwrap_or(1500);
                if t.local && *vlan == 0 {
                    return Ok((self.ensure_etherstub(nl, tag)?, mtu));
                }
                let sw = self.switch(nl, &key)?;
                if let Some(up) = &t.uplink {
                    let uplink = link_of(nl, up)?;
                    let port = if *vlan == 0 {
                        uplink
                    } else {
                        let name = link_name(&self.prefix, 'q', &format!("{up}.{vlan}"));
                        if nl.link(&name)?.is_none() {
                            nl.add_vlan(
                                &name,
                                &alias(&self.prefix, "vlan", &format!("{up}.{vlan}")),
                                uplink.index,
                                *vlan,
                            )
                            .map_err(|e| {
                                NetError::Invalid(format!(
                                    "VLAN {vlan} on uplink {up} needs an 802.1Q link, which this kernel refused: {e}"
                                ))
                            })?;
                        }
                        link_of(nl, &name)?
                    };
                    if port.master != Some(sw.index) {
                        if *vlan == 0 {
                            // The host's own address on its uplink moves to the switch with its
                            // routes, as Proxmox's vmbr0 holds it: a port of a bridge
                            // receives nothing for itself.
                            take_host_config(nl, &port, &sw)?;
                        }
                        nl.set_master(port.index, sw.index)?;
                    }
                    if !port.up {
                        nl.set_up(port.index, true)?;
                    }
                }
                Ok((sw, mtu))
            }
            Network::Overlay { overlay, vni } => {
                let o =
                    self.cfg.overlays.get(overlay).ok_or_else(|| NetError::Invalid(format!("no overlay {overlay}")))?;
                let mtu = o.mtu.saturating_sub(50);
                let sw = self.switch(nl, &key)?;
                let name = link_name(&self.prefix, 'x', &key);
                if nl.link(&name)?.is_none() {
                    nl.add_vxlan(&name, &alias(&self.prefix, "vxlan", &key), *vni, o.underlay, o.port, mtu)?;
                }
                let vx = link_of(nl, &name)?;
                for peer in o.peers.get(&vni.to_string()).into_iter().flatten() {
                    nl.fdb_flood(vx.index, *peer)?;
                }
                if vx.master != Some(sw.index) {
                    nl.set_master(vx.index, sw.index)?;
                }
                if !vx.up {
                    nl.set_up(vx.index, true)?;
                }
                Ok((sw, mtu))
            }
        }
    }

    /// The name of the switch a network's NICs plug into.
    pub fn switch_name(&self, network: &Network) -> String {
        match network {
            Network::Tag { tag, vlan: 0 } if self.cfg.nic_tags.get(tag).is_some_and(|t| t.local) => {
                self.etherstub_link(tag)
            }
            n => link_name(&self.prefix, 'b', &n.key()),
        }
    }

    fn switch(&self, nl: &mut Netlink, key: &str) -> Result<Link> {
        ensure_bridge(nl, &link_name(&self.prefix, 'b', key), &alias(&self.prefix, "switch", key))
    }

    /// Plugs one NIC into the zone whose network namespace is `netns`: the veth pair, its
    /// protection and cap, the switch port, then the zone end's addresses. On failure the
    /// VNIC is removed again.
    pub fn plug(&self, vm: &str, netns: &Path, nic: &Nic) -> Result<Plugged> {
        self.plug_as(vm, netns, nic, false)
    }

    /// Plugs a NIC for a KVM guest: the zone end (with a MAC of its own: the guest's MAC
    /// must not be a bridge port's) and a tap qemu opens meet on a bridge in the zone's
    /// namespace; the guest configures its own addresses. The host end's protection and cap
    /// are the same as a zone's.
    pub fn plug_for_guest(&self, vm: &str, netns: &Path, nic: &Nic) -> Result<Plugged> {
        self.plug_as(vm, netns, nic, true)
    }

    fn plug_as(&self, vm: &str, netns: &Path, nic: &Nic, guest: bool) -> Result<Plugged> {
        // SmartOS's payloads (and its own tests) may name a multicast MAC, which is stored as
        // given; no Linux interface takes one, so it is refused here, by name, at boot.
        if nic.mac[0] & 1 == 1 {
            return Err(NetError::Invalid(format!(
                "{}: MAC {} is a multicast address, which no interface can have",
                nic.interface,
                crate::format_mac(&nic.mac)
            )));
        }
        let host_if = self.host_if(vm, &nic.interface);
        let r = self.plug_inner(vm, netns, nic, &host_if, guest);
        if r.is_err() {
            let _ = self.unplug(vm, &nic.interface);
        }
        r
    }

    fn plug_inner(&self, vm: &str, netns: &Path, nic: &Nic, host_if: &str, guest: bool) -> Result<Plugged> {
        let mut nl = Netlink::open()?;
        let (sw, max_mtu) = self.ensure_switch(&mut nl, &nic.network)?;
        self.ensure_network_of(&mut nl, &sw, &nic.network)?;
        let mtu = nic.mtu.unwrap_or(max_mtu).min(max_mtu.max(576));
        if let Some(stale) = nl.link(host_if)? {
            nl.del_link(stale.index)?;
        }
        let ns_file = std::fs::File::open(netns).map_err(|e| NetError::Netns {
            op: "open".into(),
            path: netns.to_path_buf(),
            reason: e.to_string(),
        })?;
        let host_mac = {
            let mut m = crate::nic::random_mac();
            // The host end never sends as itself: keep it high so the bridge does not take it.
            m[0] = 0xfe;
            m
        };
        let zone_mac = if guest { crate::nic::random_mac() } else { nic.mac };
        nl.add_veth(host_if, host_mac, &nic.interface, zone_mac, std::os::fd::AsRawFd::as_raw_fd(&ns_file), mtu)?;
        let host = link_of(&mut nl, host_if)?;
        nl.set_alias(host.index, &alias(&self.prefix, "vnic", &format!("{vm}/{}", nic.interface)))?;
        // Protection before the port joins the switch: no frame passes unchecked.
        nft::protect(&self.prefix, host_if, &nic.protection())?;
        if nic.maxbw.is_some() {
            tc::cap(None, host_if, nic.maxbw)?;
        }
        nl.set_master(host.index, sw.index)?;
        nl.set_up(host.index, true)?;
        let cfg = nic.clone();
        if guest {
            ns::run_in(netns, move || crate::tap::guest_port(&cfg.interface, mtu))?;
        } else {
            ns::run_in(netns, move || configure_zone_end(&cfg))?;
        }
        if nic.maxbw.is_some() {
            tc::cap(Some(netns), &nic.interface, nic.maxbw)?;
        }
        Ok(Plugged { host_if: host_if.to_string(), mtu })
    }

    /// Routes in the zone: the default route through the primary NIC's first gateway of each
    /// family, then `routes` (destination to gateway).
    pub fn route(&self, netns: &Path, nics: &[Nic], routes: &BTreeMap<String, String>) -> Result<()> {
        let nics = nics.to_vec();
        let routes = routes.clone();
        ns::run_in(netns, move || {
            let mut nl = Netlink::open()?;
            let primary = nics.iter().find(|n| n.primary).or(nics.first());
            if let Some(p) = primary {
                for v6 in [false, true] {
                    if let Some(gw) = p.gateways.iter().find(|g| g.is_ipv6() == v6) {
                        let any: IpAddr =
                            if v6 { "::".parse().expect("literal") } else { "0.0.0.0".parse().expect("literal") };
                        nl.add_route(any, 0, Some(*gw), None)?;
                    }
                }
            }
            for (dst, gw) in &routes {
                let net =
                    dst.parse::<ipnet::IpNet>().or_else(|_| dst.parse::<IpAddr>().map(ipnet::IpNet::from)).map_err(
                        |_| NetError::Invalid(format!("route destination {dst:?} is not an address or network")),
                    )?;
                // `nics[N]` or `macs[MAC]`: out of that NIC, with no gateway (SmartOS's link
                // route).
                let by_mac = hull_spec::vm::route_mac(gw)
                    .map(|m| nics.iter().position(|n| crate::format_mac(&n.mac) == m).unwrap_or(usize::MAX));
                if let Some(i) = hull_spec::vm::route_nic(gw).or(by_mac) {
                    let nic =
                        nics.get(i).ok_or_else(|| NetError::Invalid(format!("route {dst} via {gw}: no such NIC")))?;
                    let link = nl.link(&nic.interface)?.ok_or_else(|| {
                        NetError::Invalid(format!("route {dst} via {gw}: {} is missing", nic.interface))
                    })?;
                    nl.add_route(net.network(), net.prefix_len(), None, Some(link.index))?;
                    continue;
                }
                let gw: IpAddr =
                    gw.parse().map_err(|_| NetError::Invalid(format!("route gateway {gw:?} is not an address")))?;
                nl.add_route(net.network(), net.prefix_len(), Some(gw), None)?;
            }
            Ok(())
        })
    }

    /// Applies a NIC's protection again (after `update_nics`).
    pub fn reprotect(&self, vm: &str, nic: &Nic) -> Result<()> {
        nft::protect(&self.prefix, &self.host_if(vm, &nic.interface), &nic.protection())
    }

    /// Changes a plugged NIC to what `nic` now says: addresses, MTU, protection, cap and the
    /// switch it is on.
    pub fn replug(&self, vm: &str, netns: &Path, old: &Nic, nic: &Nic) -> Result<()> {
        let host_if = self.host_if(vm, &nic.interface);
        let mut nl = Netlink::open()?;
        let host = link_of(&mut nl, &host_if)?;
        if old.network != nic.network || old.mac != nic.mac {
            // A new switch or MAC: a new pair is simplest and leaves nothing of the old one.
            self.unplug(vm, &nic.interface)?;
            self.plug(vm, netns, nic)?;
            return Ok(());
        }
        self.reprotect(vm, nic)?;
        if old.maxbw != nic.maxbw {
            tc::cap(None, &host_if, nic.maxbw)?;
            tc::cap(Some(netns), &nic.interface, nic.maxbw)?;
        }
        if let Some(m) = nic.mtu
            && old.mtu != nic.mtu
        {
            nl.set_mtu(host.index, m)?;
        }
        let (old, new) = (old.clone(), nic.clone());
        ns::run_in(netns, move || {
            let mut nl = Netlink::open()?;
            let l = link_of(&mut nl, &new.interface)?;
            for a in old.addrs.iter().filter(|a| !new.addrs.contains(a)) {
                nl.del_address(l.index, a.addr(), a.prefix_len())?;
            }
            if let Some(m) = new.mtu
                && old.mtu != new.mtu
            {
                nl.set_mtu(l.index, m)?;
            }
            configure_zone_end(&new)
        })
    }

    /// Removes one VNIC (both ends go together) and its rules.
    pub fn unplug(&self, vm: &str, interface: &str) -> Result<()> {
        let host_if = self.host_if(vm, interface);
        let mut nl = Netlink::open()?;
        if let Some(l) = nl.link(&host_if)? {
            nl.del_link(l.index)?;
        }
        nft::unprotect(&self.prefix, &host_if)
    }

    /// Removes every VNIC of a VM, then the switches nothing uses any more.
    pub fn unplug_all(&self, vm: &str) -> Result<()> {
        for o in self.owned()? {
            if let Role::Vnic { vm: v, interface } = &o.role
                && v == vm
            {
                self.unplug(vm, interface)?;
            }
        }
        // Rules whose link vanished with the zone's namespace.
        for host_if in nft::protected(&self.prefix)? {
            let mut nl = Netlink::open()?;
            if nl.link(&host_if)?.is_none() {
                nft::unprotect(&self.prefix, &host_if)?;
            }
        }
        self.collect_switches()
    }

    /// Deletes switches (and their VXLAN and 802.1Q links) that no VNIC is plugged into.
    /// Etherstubs stay: the operator made them.
    pub fn collect_switches(&self) -> Result<()> {
        let owned = self.owned()?;
        let mut nl = Netlink::open()?;
        let all = nl.links()?;
        for sw in owned.iter().filter(|o| matches!(o.role, Role::Switch { .. })) {
            let vnics = owned
                .iter()
                .filter(|o| matches!(o.role, Role::Vnic { .. }) && o.link.master == Some(sw.link.index))
                .count();
            // A switch that holds the host's address stays until its tag is deleted.
            if vnics > 0 || !host_addresses(&mut nl, sw.link.index)?.is_empty() {
                continue;
            }
            for port in all.iter().filter(|l| l.master == Some(sw.link.index)) {
                if owned.iter().any(|o| o.link.index == port.index) {
                    nl.del_link(port.index)?;
                }
            }
            nl.del_link(sw.link.index)?;
        }
        Ok(())
    }

    /// Removes everything of this node's network: its links (uplinks are released, not
    /// deleted), its rules, and the zone namespaces under `netns_dir`.
    pub fn destroy(&self, netns_dir: &Path) -> Result<()> {
        if let Ok(entries) = std::fs::read_dir(netns_dir) {
            for e in entries.flatten() {
                ns::remove(&e.path())?;
            }
        }
        let mut nl = Netlink::open()?;
        let owned = self.owned()?;
        for o in owned.iter().filter(|o| matches!(o.role, Role::Switch { .. })) {
            give_back_host_config(&mut nl, &o.link)?;
        }
        // Ports before switches, so nothing is deleted twice.
        for o in owned.iter().filter(|o| !matches!(o.role, Role::Switch { .. } | Role::Etherstub { .. })) {
            nl.del_link(o.link.index)?;
        }
        for o in owned.iter().filter(|o| matches!(o.role, Role::Switch { .. } | Role::Etherstub { .. })) {
            nl.del_link(o.link.index)?;
        }
        crate::routed::destroy(&self.prefix)?;
        nft::destroy(&self.prefix)
    }

    /// Makes a tag's switch now when its uplink carries the host's addresses (they move to
    /// the switch once, at `nictagadm add`, not at the first VM's boot).
    pub fn adopt_uplink(&self, tag: &str) -> Result<()> {
        let Some(up) = self.cfg.nic_tags.get(tag).and_then(|t| t.uplink.clone()) else { return Ok(()) };
        let mut nl = Netlink::open()?;
        let uplink = link_of(&mut nl, &up)?;
        if !host_addresses(&mut nl, uplink.index)?.is_empty() {
            self.ensure_switch(&mut nl, &Network::Tag { tag: tag.to_string(), vlan: 0 })?;
        }
        Ok(())
    }

    /// Undoes a tag's switches: the host's addresses and routes go back to the uplink, then
    /// the switches (and their 802.1Q links) go; the uplink is released, never deleted.
    pub fn release_tag(&self, tag: &str) -> Result<()> {
        let mut nl = Netlink::open()?;
        let owned = self.owned()?;
        let all = nl.links()?;
        for sw in owned
            .iter()
            .filter(|o| matches!(&o.role, Role::Switch { key } if key.split_once('/').is_some_and(|(t, _)| t == tag)))
        {
            give_back_host_config(&mut nl, &sw.link)?;
            for port in all.iter().filter(|l| l.master == Some(sw.link.index)) {
                if owned.iter().any(|o| o.link.index == port.index && matches!(o.role, Role::Vlan { .. })) {
                    nl.del_link(port.index)?;
                }
            }
            nl.del_link(sw.link.index)?;
        }
        Ok(())
    }
}

/// The host's addresses on a link: all but IPv6 link-local ones, which each link has.
fn host_addresses(nl: &mut Netlink, index: u32) -> Result<Vec<(IpAddr, u8)>> {
    Ok(nl
        .addresses(index)?
        .into_iter()
        .filter(|(a, _)| match a {
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
            IpAddr::V4(_) => true,
        })
        .collect())
}

/// Moves the addresses of `from` to `to`, and the routes out of `from` that the kernel did
/// not make for an address. Addresses first: a route's gateway must be reachable on `to`.
fn move_host_config(nl: &mut Netlink, from: u32, to: u32) -> Result<()> {
    let addrs = host_addresses(nl, from)?;
    if addrs.is_empty() {
        return Ok(());
    }
    let routes: Vec<_> = nl.routes()?.into_iter().filter(|r| r.oif == Some(from) && !r.kernel).collect();
    for (a, len) in &addrs {
        nl.add_address(to, *a, *len)?;
    }
    for (a, len) in &addrs {
        nl.del_address(from, *a, *len)?;
    }
    for r in &routes {
        nl.add_route_via(r, to)?;
        nl.del_route(r)?;
    }
    Ok(())
}

/// Before the uplink joins the switch: the switch takes the uplink's MAC (neighbours' ARP
/// caches and a DHCP server's lease stay right), its addresses and routes.
fn take_host_config(nl: &mut Netlink, uplink: &Link, sw: &Link) -> Result<()> {
    if host_addresses(nl, uplink.index)?.is_empty() {
        return Ok(());
    }
    if let Some(mac) = uplink.mac {
        nl.set_mac(sw.index, mac)?;
    }
    move_host_config(nl, uplink.index, sw.index)
}

/// The other way: the host's addresses and routes on a switch go back to its uplink port.
fn give_back_host_config(nl: &mut Netlink, sw: &Link) -> Result<()> {
    let hull_made = |l: &Link| l.alias.as_deref().is_some_and(|a| a.starts_with("hull:"));
    let Some(uplink) = nl.links()?.into_iter().find(|l| l.master == Some(sw.index) && !hull_made(l)) else {
        return Ok(());
    };
    move_host_config(nl, sw.index, uplink.index)
}

/// A bridge named `name`, made (with its alias) if missing, and up.
fn ensure_bridge(nl: &mut Netlink, name: &str, alias: &str) -> Result<Link> {
    if nl.link(name)?.is_none() {
        match nl.add_bridge(name, alias) {
            // Made by another command in the meantime (nictagadm beside a booting zone).
            Err(NetError::Kernel { errno: libc::EEXIST, .. }) => {}
            r => r?,
        }
    }
    let l = link_of(nl, name)?;
    if !l.up {
        nl.set_up(l.index, true)?;
    }
    Ok(l)
}

/// Inside the zone's namespace: the zone end up with its addresses.
fn configure_zone_end(nic: &Nic) -> Result<()> {
    let mut nl = Netlink::open()?;
    let l = link_of(&mut nl, &nic.interface)?;
    for a in &nic.addrs {
        nl.add_address(l.index, a.addr(), a.prefix_len())?;
    }
    nl.set_up(l.index, true)
}

/// Where a node keeps its zones' network namespaces.
pub fn netns_dir(var_dir: &Path) -> PathBuf {
    var_dir.join("netns")
}
