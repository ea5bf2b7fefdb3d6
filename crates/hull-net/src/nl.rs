//! A small synchronous rtnetlink client: requests built with netlink-packet-route, sent over
//! a netlink-sys socket in the calling thread's network namespace.
//!
//! Why not the `rtnetlink` crate: it is async and needs a tokio runtime, and hull's tools are
//! short, single-threaded commands that enter other network namespaces on a thread of their
//! own. The message types, which are the hard part, come from netlink-packet-route.

use crate::{NetError, Result};
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::net::IpAddr;
use std::os::fd::RawFd;

/// One link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `bridge`, `veth`, `vxlan`... or empty for a physical device.
    pub kind: String,
    pub alias: Option<String>,
    /// The bridge this link is a port of.
    pub master: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    pub up: bool,
}

/// One route of the main table.
#[derive(Debug, Clone)]
pub struct Route {
    pub dst: IpAddr,
    pub prefix: u8,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    /// Made by the kernel for an address (its subnet's route): goes and comes with it.
    pub kernel: bool,
    msg: RouteMessage,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.dst, self.prefix)?;
        if let Some(g) = self.gateway {
            write!(f, " via {g}")?;
        }
        Ok(())
    }
}

/// A netlink route socket bound in the current thread's network namespace.
pub struct Netlink {
    sock: Socket,
    seq: u32,
}

fn nl_err(op: &str, e: impl std::fmt::Display) -> NetError {
    NetError::Netlink { op: op.to_string(), reason: e.to_string() }
}

impl Netlink {
    pub fn open() -> Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| nl_err("open netlink socket", e))?;
        sock.bind_auto().map_err(|e| nl_err("bind netlink socket", e))?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(|e| nl_err("connect netlink socket", e))?;
        Ok(Netlink { sock, seq: 0 })
    }

    /// Sends one request and collects the replies until the ack or the end of a dump.
    fn request(&mut self, op: &str, msg: RouteNetlinkMessage, flags: u16) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.sock.send(&buf, 0).map_err(|e| nl_err(op, e))?;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.sock.recv_from_full().map_err(|e| nl_err(op, e))?;
            let mut offset = 0;
            while offset < data.len() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                    .map_err(|e| nl_err(op, format!("bad reply: {e}")))?;
                let len = msg.header.length as usize;
                if msg.header.sequence_number != self.seq {
                    offset += len.max(1);
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(code) => Err(NetError::Kernel {
                                op: op.to_string(),
                                errno: -code.get(),
                                reason: std::io::Error::from_raw_os_error(-code.get()).to_string(),
                            }),
                        };
                    }
                    NetlinkPayload::InnerMessage(m) => {
                        out.push(m);
                        if flags & NLM_F_DUMP != NLM_F_DUMP && flags & NLM_F_ACK == 0 {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }

    fn ack(&mut self, op: &str, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        self.request(op, msg, NLM_F_ACK | flags).map(|_| ())
    }

    pub fn links(&mut self) -> Result<Vec<Link>> {
        let replies = self.request("list links", RouteNetlinkMessage::GetLink(LinkMessage::default()), NLM_F_DUMP)?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(to_link(&l)),
                _ => None,
            })
            .collect())
    }

    pub fn link(&mut self, name: &str) -> Result<Option<Link>> {
        Ok(self.links()?.into_iter().find(|l| l.name == name))
    }

    fn create(
        &mut self,
        op: &str,
        name: &str,
        alias: Option<&str>,
        info: Vec<LinkInfo>,
        extra: Vec<LinkAttribute>,
    ) -> Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes.push(LinkAttribute::LinkInfo(info));
        m.attributes.extend(extra);
        self.ack(op, RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)?;
        if let Some(a) = alias {
            let index = self.index(name)?;
            self.set_alias(index, a)?;
        }
        Ok(())
    }

    fn index(&mut self, name: &str) -> Result<u32> {
        self.link(name)?.map(|l| l.index).ok_or_else(|| NetError::NoLink(name.to_string()))
    }

    pub fn add_bridge(&mut self, name: &str, alias: &str) -> Result<()> {
        self.create(&format!("create bridge {name}"), name, Some(alias), vec![LinkInfo::Kind(InfoKind::Bridge)], vec![])
    }

    /// A veth pair: `host` here, `peer` created straight into the namespace `peer_ns` with
    /// its own name and MAC.
    pub fn add_veth(
        &mut self,
        host: &str,
        host_mac: [u8; 6],
        peer: &str,
        peer_mac: [u8; 6],
        peer_ns: RawFd,
        mtu: u32,
    ) -> Result<()> {
        let mut p = LinkMessage::default();
        p.attributes.push(LinkAttribute::IfName(peer.to_string()));
        p.attributes.push(LinkAttribute::Address(peer_mac.to_vec()));
        p.attributes.push(LinkAttribute::Mtu(mtu));
        p.attributes.push(LinkAttribute::NetNsFd(peer_ns));
        self.create(
            &format!("create veth {host}"),
            host,
            None,
            vec![LinkInfo::Kind(InfoKind::Veth), LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p)))],
            vec![LinkAttribute::Address(host_mac.to_vec()), LinkAttribute::Mtu(mtu)],
        )
    }

    /// A VXLAN device for `vni` with its UDP socket on `local`; floods go to the peers
    /// listed with [`Netlink::fdb_flood`].
    pub fn add_vxlan(
        &mut self,
        name: &str,
        alias: &str,
        vni: u32,
        local: std::net::Ipv4Addr,
        port: u16,
        mtu: u32,
    ) -> Result<()> {
        self.create(
            &format!("create vxlan {name}"),
            name,
            Some(alias),
            vec![
                LinkInfo::Kind(InfoKind::Vxlan),
                LinkInfo::Data(InfoData::Vxlan(vec![
                    InfoVxlan::Id(vni),
                    InfoVxlan::Local(local),
                    InfoVxlan::Port(port),
                    InfoVxlan::Learning(true),
                    InfoVxlan::Ttl(64),
                ])),
            ],
            vec![LinkAttribute::Mtu(mtu)],
        )
    }

    /// An 802.1Q link `name` over `parent`.
    pub fn add_vlan(&mut self, name: &str, alias: &str, parent: u32, vid: u16) -> Result<()> {
        use netlink_packet_route::link::InfoVlan;
        self.create(
            &format!("create vlan {name}"),
            name,
            Some(alias),
            vec![LinkInfo::Kind(InfoKind::Vlan), LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(vid)]))],
            vec![LinkAttribute::Link(parent)],
        )
    }

    fn set(&mut self, op: &str, index: u32, f: impl FnOnce(&mut LinkMessage)) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        f(&mut m);
        self.ack(op, RouteNetlinkMessage::SetLink(m), 0)
    }

    pub fn set_up(&mut self, index: u32, up: bool) -> Result<()> {
        self.set("set link up", index, |m| {
            m.header.flags = if up { LinkFlags::Up } else { LinkFlags::empty() };
            m.header.change_mask = LinkFlags::Up;
        })
    }

    pub fn set_master(&mut self, index: u32, master: u32) -> Result<()> {
        self.set("attach link to bridge", index, |m| m.attributes.push(LinkAttribute::Controller(master)))
    }

    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        self.set("set link mtu", index, |m| m.attributes.push(LinkAttribute::Mtu(mtu)))
    }

    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<()> {
        self.set("set link mac", index, |m| m.attributes.push(LinkAttribute::Address(mac.to_vec())))
    }

    pub fn set_alias(&mut self, index: u32, alias: &str) -> Result<()> {
        self.set("set link alias", index, |m| m.attributes.push(LinkAttribute::IfAlias(alias.to_string())))
    }

    pub fn del_link(&mut self, index: u32) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        match self.ack("delete link", RouteNetlinkMessage::DelLink(m), 0) {
            Err(NetError::Kernel { errno: libc::ENODEV, .. }) => Ok(()),
            r => r,
        }
    }

    pub fn add_address(&mut self, index: u32, addr: IpAddr, prefix: u8) -> Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = family(addr);
        m.header.prefix_len = prefix;
        m.header.index = index;
        if addr.is_ipv6() {
            // The host assigned it; duplicate detection would only delay the zone's first packets.
            m.header.flags = AddressHeaderFlags::Nodad;
        }
        m.attributes.push(AddressAttribute::Local(addr));
        m.attributes.push(AddressAttribute::Address(addr));
        match self.ack(
            &format!("add address {addr}/{prefix}"),
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Err(NetError::Kernel { errno: libc::EEXIST, .. }) => Ok(()),
            r => r,
        }
    }

    /// Every address on a link, with its prefix length.
    pub fn addresses(&mut self, index: u32) -> Result<Vec<(IpAddr, u8)>> {
        let replies =
            self.request("list addresses", RouteNetlinkMessage::GetAddress(AddressMessage::default()), NLM_F_DUMP)?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                    a.attributes.iter().find_map(|x| match x {
                        AddressAttribute::Address(ip) => Some((*ip, a.header.prefix_len)),
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect())
    }

    pub fn del_address(&mut self, index: u32, addr: IpAddr, prefix: u8) -> Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = family(addr);
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Address(addr));
        m.attributes.push(AddressAttribute::Local(addr));
        match self.ack(&format!("delete address {addr}/{prefix}"), RouteNetlinkMessage::DelAddress(m), 0) {
            Err(NetError::Kernel { errno: libc::EADDRNOTAVAIL, .. }) => Ok(()),
            r => r,
        }
    }

    /// A route to `dst/prefix` (0.0.0.0/0 for the default) through `gateway`, or straight
    /// out of `index` when there is none.
    pub fn add_route(&mut self, dst: IpAddr, prefix: u8, gateway: Option<IpAddr>, index: Option<u32>) -> Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = family(dst);
        m.header.destination_prefix_length = prefix;
        m.header.table = libc::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Static;
        m.header.scope = if gateway.is_some() { RouteScope::Universe } else { RouteScope::Link };
        m.header.kind = RouteType::Unicast;
        if prefix > 0 {
            m.attributes.push(RouteAttribute::Destination(RouteAddress::from(dst)));
        }
        if let Some(gw) = gateway {
            m.attributes.push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        if let Some(i) = index {
            m.attributes.push(RouteAttribute::Oif(i));
        }
        let op = format!("add route {dst}/{prefix}{}", gateway.map(|g| format!(" via {g}")).unwrap_or_default());
        match self.ack(&op, RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL) {
            Err(NetError::Kernel { errno: libc::EEXIST, .. }) => Ok(()),
            r => r,
        }
    }

    /// The main table's routes of both families, as the kernel reports them.
    pub fn routes(&mut self) -> Result<Vec<Route>> {
        let mut out = Vec::new();
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut m = RouteMessage::default();
            m.header.address_family = fam;
            for r in self.request("list routes", RouteNetlinkMessage::GetRoute(m), NLM_F_DUMP)? {
                let RouteNetlinkMessage::NewRoute(msg) = r else { continue };
                let table = msg
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        RouteAttribute::Table(t) => Some(*t),
                        _ => None,
                    })
                    .unwrap_or(u32::from(msg.header.table));
                if table != u32::from(libc::RT_TABLE_MAIN) {
                    continue;
                }
                let addr = |a: &RouteAddress| match a {
                    RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
                    RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
                    _ => None,
                };
                let mut route = Route {
                    dst: if fam == AddressFamily::Inet { IpAddr::from([0u8; 4]) } else { IpAddr::from([0u16; 8]) },
                    prefix: msg.header.destination_prefix_length,
                    gateway: None,
                    oif: None,
                    kernel: msg.header.protocol == RouteProtocol::Kernel,
                    msg: msg.clone(),
                };
                for a in &msg.attributes {
                    match a {
                        RouteAttribute::Destination(d) => route.dst = addr(d).unwrap_or(route.dst),
                        RouteAttribute::Gateway(g) => route.gateway = addr(g),
                        RouteAttribute::Oif(i) => route.oif = Some(*i),
                        _ => {}
                    }
                }
                out.push(route);
            }
        }
        Ok(out)
    }

    pub fn del_route(&mut self, r: &Route) -> Result<()> {
        match self.ack(&format!("delete route {r}"), RouteNetlinkMessage::DelRoute(r.msg.clone()), 0) {
            Err(NetError::Kernel { errno: libc::ESRCH, .. }) => Ok(()),
            x => x,
        }
    }

    /// Adds `r` again, out of link `oif` (a route moved from one link to another).
    pub fn add_route_via(&mut self, r: &Route, oif: u32) -> Result<()> {
        let mut m = r.msg.clone();
        m.attributes.retain(|a| !matches!(a, RouteAttribute::Oif(_)));
        m.attributes.push(RouteAttribute::Oif(oif));
        match self.ack(&format!("add route {r}"), RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL) {
            Err(NetError::Kernel { errno: libc::EEXIST, .. }) => Ok(()),
            x => x,
        }
    }

    /// `bridge fdb append 00:00:00:00:00:00 dev VXLAN dst PEER`: broadcast, unknown unicast
    /// and multicast frames on the VXLAN device are copied to `peer`.
    pub fn fdb_flood(&mut self, vxlan: u32, peer: IpAddr) -> Result<()> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = vxlan;
        m.header.state = NeighbourState::Permanent;
        m.header.flags = NeighbourFlags::Own;
        m.attributes.push(NeighbourAttribute::LinkLayerAddress(vec![0; 6]));
        m.attributes.push(NeighbourAttribute::Destination(match peer {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        }));
        match self.ack(
            &format!("add flood entry to {peer}"),
            RouteNetlinkMessage::NewNeighbour(m),
            NLM_F_CREATE | NLM_F_APPEND,
        ) {
            Err(NetError::Kernel { errno: libc::EEXIST, .. }) => Ok(()),
            r => r,
        }
    }
}

fn family(a: IpAddr) -> AddressFamily {
    if a.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 }
}

fn to_link(l: &LinkMessage) -> Link {
    let mut out = Link {
        index: l.header.index,
        name: String::new(),
        kind: String::new(),
        alias: None,
        master: None,
        mac: None,
        mtu: 0,
        up: l.header.flags.contains(LinkFlags::Up),
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => out.name = n.clone(),
            LinkAttribute::IfAlias(s) => out.alias = Some(s.clone()),
            LinkAttribute::Controller(m) => out.master = Some(*m),
            LinkAttribute::Mtu(m) => out.mtu = *m,
            LinkAttribute::Address(a) if a.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(a);
                out.mac = Some(mac);
            }
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        out.kind = k.to_string();
                    }
                }
            }
            _ => {}
        }
    }
    out
}
