//! DHCPv4 answered at a VM's own port, as SmartOS's qemu answers a KVM guest: a request that
//! a VM's NIC sends is seen on the host end of its VNIC (a packet socket, before the switch)
//! and answered there, to that NIC alone, with the address hull gave it. Nothing is served
//! to the switch, so a DHCP server elsewhere on the uplink never competes, and a NIC can only
//! ever be offered its own address.
//!
//! Why a responder of our own rather than Debian's dnsmasq: the answer is fixed per MAC
//! (hull chose the address, at create for a static KVM NIC, at boot from the network's range
//! for a `dhcp` NIC), it must be given on one VNIC's port and nowhere else, and the lease
//! must be known to link protection before the VM asks. That is a lookup and one reply, about
//! 300 lines with its codec; a dnsmasq per network would still need all of the above around
//! it, plus a process per network to supervise.
//!
//! The codec is pure and fuzzed (`fuzz/fuzz_targets/dhcp.rs`); every byte of a request is the
//! tenant's.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::Path;

/// What hull answers at one VNIC's port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The VNIC's host end, where requests arrive and answers leave.
    pub host_if: String,
    /// The client's MAC: requests from any other are not answered.
    pub mac: [u8; 6],
    /// DHCPv4.
    #[serde(default)]
    pub v4: Option<Lease>,
    /// IPv6 router advertisements (SLAAC).
    #[serde(default)]
    pub ra: Option<Ra>,
}

/// What a DHCPv4 client is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    /// The server's own address in the answer (the gateway, or one the subnet does not use).
    pub server: Ipv4Addr,
    #[serde(default)]
    pub routers: Vec<Ipv4Addr>,
    #[serde(default)]
    pub resolvers: Vec<Ipv4Addr>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub mtu: Option<u16>,
    /// Classless static routes (option 121): destination, prefix, gateway.
    #[serde(default)]
    pub routes: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
    pub lease_secs: u32,
}

/// A router advertisement: the network's /64 for SLAAC, from the switch's link-local
/// address and MAC (the host, which routes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ra {
    pub prefix: ipnet::Ipv6Net,
    pub router: std::net::Ipv6Addr,
    pub router_mac: [u8; 6],
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// A client's message, as far as answering needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub xid: u32,
    pub flags: u16,
    pub chaddr: [u8; 6],
    pub ciaddr: Ipv4Addr,
    /// Option 53.
    pub kind: u8,
    /// Option 50.
    pub requested: Option<Ipv4Addr>,
    /// Option 54.
    pub server: Option<Ipv4Addr>,
}

pub const DISCOVER: u8 = 1;
pub const OFFER: u8 = 2;
pub const REQUEST: u8 = 3;
pub const ACK: u8 = 5;
pub const NAK: u8 = 6;
pub const INFORM: u8 = 8;
const COOKIE: [u8; 4] = [99, 130, 83, 99];
/// The source of every answer: locally administered, the same on every port ("hull").
pub const SERVER_MAC: [u8; 6] = [0x02, 0x68, 0x75, 0x6c, 0x6c, 0x00];

fn ip4(b: &[u8]) -> Option<Ipv4Addr> {
    Some(Ipv4Addr::new(*b.first()?, *b.get(1)?, *b.get(2)?, *b.get(3)?))
}

/// Reads a BOOTP request (the UDP payload). `None` for anything that is not an Ethernet
/// client's DHCP request.
pub fn parse(msg: &[u8]) -> Option<Request> {
    if msg.len() < 240 || msg[0] != 1 || msg[1] != 1 || msg[2] != 6 || msg[236..240] != COOKIE {
        return None;
    }
    let mut chaddr = [0u8; 6];
    chaddr.copy_from_slice(&msg[28..34]);
    let mut r = Request {
        xid: u32::from_be_bytes([msg[4], msg[5], msg[6], msg[7]]),
        flags: u16::from_be_bytes([msg[10], msg[11]]),
        chaddr,
        ciaddr: ip4(&msg[12..16])?,
        kind: 0,
        requested: None,
        server: None,
    };
    let mut i = 240;
    while i < msg.len() {
        let code = msg[i];
        match code {
            0 => {
                i += 1;
                continue;
            }
            255 => break,
            _ => {}
        }
        // An option that runs past the end ends the options.
        let Some(&len) = msg.get(i + 1) else { break };
        let len = usize::from(len);
        let Some(val) = msg.get(i + 2..i + 2 + len) else { break };
        match (code, len) {
            (53, 1) => r.kind = val[0],
            (50, 4) => r.requested = ip4(val),
            (54, 4) => r.server = ip4(val),
            _ => {}
        }
        i += 2 + len;
    }
    (r.kind != 0).then_some(r)
}

/// The reply's kind for a request, or none when it is not ours to answer (a REQUEST for
/// another server, a RELEASE, a DECLINE).
pub fn reply_kind(r: &Request, a: &Lease) -> Option<u8> {
    match r.kind {
        DISCOVER => Some(OFFER),
        REQUEST => {
            if r.server.is_some_and(|s| s != a.server) {
                return None;
            }
            let asked = r.requested.or((!r.ciaddr.is_unspecified()).then_some(r.ciaddr));
            Some(if asked.is_none_or(|x| x == a.addr) { ACK } else { NAK })
        }
        INFORM => Some(ACK),
        _ => None,
    }
}

fn mask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) })
}

/// The BOOTP reply (the UDP payload).
pub fn reply(r: &Request, a: &Lease, kind: u8) -> Vec<u8> {
    let mut m = vec![0u8; 240];
    m[0] = 2;
    m[1] = 1;
    m[2] = 6;
    m[4..8].copy_from_slice(&r.xid.to_be_bytes());
    m[10..12].copy_from_slice(&r.flags.to_be_bytes());
    if kind != NAK {
        if r.kind == INFORM {
            m[12..16].copy_from_slice(&r.ciaddr.octets());
        } else {
            m[16..20].copy_from_slice(&a.addr.octets());
        }
        m[20..24].copy_from_slice(&a.server.octets());
    }
    m[28..34].copy_from_slice(&r.chaddr);
    m[236..240].copy_from_slice(&COOKIE);
    let mut opt = |code: u8, val: &[u8]| {
        // Options are at most 255 bytes; longer values are cut (a hostname is 63 at most).
        let val = &val[..val.len().min(255)];
        m.push(code);
        m.push(val.len() as u8);
        m.extend_from_slice(val);
    };
    opt(53, &[kind]);
    opt(54, &a.server.octets());
    if kind != NAK {
        if r.kind != INFORM {
            opt(51, &a.lease_secs.to_be_bytes());
            opt(58, &(a.lease_secs / 2).to_be_bytes());
            opt(59, &(a.lease_secs / 8 * 7).to_be_bytes());
        }
        opt(1, &mask(a.prefix).octets());
        let routers: Vec<u8> = a.routers.iter().flat_map(|g| g.octets()).collect();
        if !routers.is_empty() {
            opt(3, &routers);
        }
        let dns: Vec<u8> = a.resolvers.iter().flat_map(|g| g.octets()).collect();
        if !dns.is_empty() {
            opt(6, &dns);
        }
        if let Some(h) = &a.hostname {
            opt(12, h.as_bytes());
        }
        if let Some(mtu) = a.mtu {
            opt(26, &mtu.to_be_bytes());
        }
        if !a.routes.is_empty() {
            // RFC 3442: a client that takes option 121 ignores option 3, so the default
            // route goes in too.
            let mut v = Vec::new();
            let mut add = |dst: Ipv4Addr, len: u8, gw: Ipv4Addr| {
                let len = len.min(32);
                v.push(len);
                v.extend_from_slice(&dst.octets()[..usize::from(len).div_ceil(8)]);
                v.extend_from_slice(&gw.octets());
            };
            if let Some(g) = a.routers.first() {
                add(Ipv4Addr::UNSPECIFIED, 0, *g);
            }
            for (d, l, g) in &a.routes {
                add(*d, *l, *g);
            }
            opt(121, &v);
        }
    }
    m.push(255);
    m
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet frame carrying `payload` from the server (port 67) to the client (port 68):
/// to the client's MAC, and to its new address or, when it asked for broadcast or is told
/// no, to everyone.
pub fn frame(r: &Request, a: &Lease, src_mac: [u8; 6], kind: u8, payload: &[u8]) -> Vec<u8> {
    let broadcast = r.flags & 0x8000 != 0 || kind == NAK;
    let dst_ip = if broadcast {
        Ipv4Addr::BROADCAST
    } else if r.kind == INFORM {
        r.ciaddr
    } else {
        a.addr
    };
    let dst_mac = if broadcast { [0xff; 6] } else { r.chaddr };
    let udp_len = 8 + payload.len();
    let mut f = Vec::with_capacity(14 + 20 + udp_len);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&a.server.octets());
    ip[16..20].copy_from_slice(&dst_ip.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&67u16.to_be_bytes());
    f.extend_from_slice(&68u16.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    // No UDP checksum: IPv4 allows it, and the frame never leaves the host's own veth.
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// The UDP payload of an Ethernet frame when it is IPv4 UDP to port 67.
pub fn bootp_of(frame: &[u8]) -> Option<&[u8]> {
    if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 || ip[9] != 17 || u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return None;
    }
    let udp = ip.get(ihl..)?;
    if udp.len() < 8 || u16::from_be_bytes([udp[2], udp[3]]) != 67 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    udp.get(8..len.max(8).min(udp.len()))
}

/// The answers a VM's NICs get, as zoneadmd reads them (`dhcp.json` in the zone's run
/// directory, rewritten by vmadm when NICs change).
pub fn load(path: &Path) -> Vec<Answer> {
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// A classic BPF program: IPv4 UDP to port 67, not a fragment (tcpdump's `udp dst port
/// 67`), or an ICMPv6 router solicitation. Everything else a VM sends never reaches the
/// responder.
const FILTER: [libc::sock_filter; 16] = [
    libc::sock_filter { code: 0x28, jt: 0, jf: 0, k: 12 },
    libc::sock_filter { code: 0x15, jt: 0, jf: 7, k: 0x0800 },
    libc::sock_filter { code: 0x30, jt: 0, jf: 0, k: 23 },
    libc::sock_filter { code: 0x15, jt: 0, jf: 11, k: 17 },
    libc::sock_filter { code: 0x28, jt: 0, jf: 0, k: 20 },
    libc::sock_filter { code: 0x45, jt: 9, jf: 0, k: 0x1fff },
    libc::sock_filter { code: 0xb1, jt: 0, jf: 0, k: 14 },
    libc::sock_filter { code: 0x48, jt: 0, jf: 0, k: 16 },
    libc::sock_filter { code: 0x15, jt: 5, jf: 6, k: 67 },
    libc::sock_filter { code: 0x15, jt: 0, jf: 5, k: 0x86dd },
    libc::sock_filter { code: 0x30, jt: 0, jf: 0, k: 20 },
    libc::sock_filter { code: 0x15, jt: 0, jf: 3, k: 58 },
    libc::sock_filter { code: 0x30, jt: 0, jf: 0, k: 54 },
    libc::sock_filter { code: 0x15, jt: 0, jf: 1, k: 133 },
    libc::sock_filter { code: 0x06, jt: 0, jf: 0, k: 0x0004_0000 },
    libc::sock_filter { code: 0x06, jt: 0, jf: 0, k: 0 },
];

/// Whether an Ethernet frame is an ICMPv6 router solicitation.
pub fn is_rs(frame: &[u8]) -> bool {
    frame.len() >= 14 + 40 + 8 && frame[12..14] == [0x86, 0xdd] && frame[20] == 58 && frame[54] == 133
}

fn checksum6(src: &std::net::Ipv6Addr, dst: &std::net::Ipv6Addr, body: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40 + body.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(body.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(body);
    checksum(&pseudo)
}

/// A router advertisement of `ra` to all nodes on the port (`to`: the soliciting MAC, or
/// the all-nodes group's).
pub fn ra_frame(ra: &Ra, to: [u8; 6]) -> Vec<u8> {
    let mut icmp = vec![134u8, 0, 0, 0, 64, 0];
    icmp.extend_from_slice(&1800u16.to_be_bytes());
    icmp.extend_from_slice(&[0; 8]);
    icmp.extend_from_slice(&[1, 1]);
    icmp.extend_from_slice(&ra.router_mac);
    if let Some(mtu) = ra.mtu {
        icmp.extend_from_slice(&[5, 1, 0, 0]);
        icmp.extend_from_slice(&mtu.to_be_bytes());
    }
    icmp.extend_from_slice(&[3, 4, ra.prefix.prefix_len(), 0xc0]);
    icmp.extend_from_slice(&86400u32.to_be_bytes());
    icmp.extend_from_slice(&14400u32.to_be_bytes());
    icmp.extend_from_slice(&[0; 4]);
    icmp.extend_from_slice(&ra.prefix.network().octets());
    let all_nodes: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let c = checksum6(&ra.router, &all_nodes, &icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&to);
    f.extend_from_slice(&ra.router_mac);
    f.extend_from_slice(&[0x86, 0xdd]);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&ra.router.octets());
    f.extend_from_slice(&all_nodes.octets());
    f.extend_from_slice(&icmp);
    f
}

const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

fn ifindex(name: &str) -> Option<i32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid C string; if_nametoindex reads it and returns an integer.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i as i32)
}

/// A packet socket on one VNIC's host end that sees only DHCP requests. Bound to the
/// device: a socket of all devices would run its filter on every packet of the node, and a
/// bridge port's frames reach only sockets that take every protocol (ETH_P_ALL).
fn port_socket(index: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let all = i32::from((libc::ETH_P_ALL as u16).to_be());
    // SAFETY: plain socket(2); the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let prog = libc::sock_fprog { len: FILTER.len() as u16, filter: FILTER.as_ptr() as *mut libc::sock_filter };
    // SAFETY: prog points at FILTER, which lives for the program's life; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The filter first, then the bind: nothing unfiltered is queued in between.
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = all as u16;
    sll.sll_ifindex = index;
    // SAFETY: sll is a valid sockaddr_ll of the length given.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(sock)
}

/// Answers one request waiting on `sock` (the port of `a`), if it is one to answer.
fn answer_one(sock: &std::os::fd::OwnedFd, buf: &mut [u8], a: &Answer) {
    use std::os::fd::AsRawFd;
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
    // SAFETY: buf and from are valid for the lengths given.
    let n = unsafe {
        libc::recvfrom(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
            (&mut from as *mut libc::sockaddr_ll).cast(),
            &mut len,
        )
    };
    // Only what the VM sent into its VNIC: not what the host sends out of it.
    if n <= 0 || from.sll_pkttype == libc::PACKET_OUTGOING {
        return;
    }
    let got = &buf[..n as usize];
    // The NIC's own MAC as the frame's source.
    if got.len() < 14 || got[6..12] != a.mac {
        return;
    }
    if is_rs(got) {
        if let Some(ra) = &a.ra {
            send(sock, &from, &ra_frame(ra, ALL_NODES_MAC));
        }
        return;
    }
    let (Some(lease), Some(req)) = (&a.v4, bootp_of(got).and_then(parse)) else { return };
    // And as the client's hardware address.
    if req.chaddr != a.mac {
        return;
    }
    let Some(kind) = reply_kind(&req, lease) else { return };
    let payload = reply(&req, lease, kind);
    send(sock, &from, &frame(&req, lease, SERVER_MAC, kind, &payload));
}

/// Sends a frame down the port a request came in on.
fn send(sock: &std::os::fd::OwnedFd, from: &libc::sockaddr_ll, out: &[u8]) {
    use std::os::fd::AsRawFd;
    let mut to = *from;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&out[..6]);
    // SAFETY: out and to are valid for the lengths given.
    unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            out.as_ptr().cast(),
            out.len(),
            0,
            (&to as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
    }
}

/// An unsolicited advertisement down a port (at its start and every minute after).
fn advertise(sock: &std::os::fd::OwnedFd, index: i32, ra: &Ra) {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = (libc::ETH_P_IPV6 as u16).to_be();
    to.sll_ifindex = index;
    send(sock, &to, &ra_frame(ra, ALL_NODES_MAC));
}

/// Answers DHCP and router solicitations for the NICs `answers` lists, until the process ends: one socket per NIC's
/// port, matched again to the list every two seconds (NICs added or replugged live). Run on
/// a thread of the VM's zoneadmd, in the host's network namespace.
pub fn serve(answers: &Path) -> std::io::Result<()> {
    use std::os::fd::{AsFd, OwnedFd};
    let mut ports: Vec<(Answer, i32, OwnedFd)> = Vec::new();
    let mut buf = vec![0u8; 2048];
    let mut checked = std::time::Instant::now() - std::time::Duration::from_secs(10);
    let mut advertised = std::time::Instant::now();
    loop {
        if checked.elapsed() >= std::time::Duration::from_secs(2) {
            checked = std::time::Instant::now();
            let want = load(answers);
            ports.retain(|(a, i, _)| want.contains(a) && ifindex(&a.host_if) == Some(*i));
            for a in want {
                if ports.iter().any(|(b, _, _)| *b == a) {
                    continue;
                }
                if let Some(i) = ifindex(&a.host_if)
                    && let Ok(s) = port_socket(i)
                {
                    if let Some(ra) = &a.ra {
                        advertise(&s, i, ra);
                    }
                    ports.push((a, i, s));
                }
            }
            if advertised.elapsed() >= std::time::Duration::from_secs(60) {
                advertised = std::time::Instant::now();
                for (a, i, s) in &ports {
                    if let Some(ra) = &a.ra {
                        advertise(s, *i, ra);
                    }
                }
            }
        }
        let mut fds: Vec<nix::poll::PollFd> =
            ports.iter().map(|(_, _, s)| nix::poll::PollFd::new(s.as_fd(), nix::poll::PollFlags::POLLIN)).collect();
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(2000u16)) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
        drop(fds);
        for (k, (a, _, s)) in ports.iter().enumerate() {
            if ready.get(k).copied().unwrap_or(false) {
                answer_one(s, &mut buf, a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> Lease {
        Lease {
            addr: "10.3.0.5".parse().expect("ip"),
            prefix: 24,
            server: "10.3.0.1".parse().expect("ip"),
            routers: vec!["10.3.0.1".parse().expect("ip")],
            resolvers: vec!["9.9.9.9".parse().expect("ip")],
            hostname: Some("web".into()),
            mtu: Some(1450),
            routes: vec![("10.9.0.0".parse().expect("ip"), 16, "10.3.0.254".parse().expect("ip"))],
            lease_secs: 3600,
        }
    }

    fn request(kind: u8, extra: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; 240];
        m[0] = 1;
        m[1] = 1;
        m[2] = 6;
        m[4..8].copy_from_slice(&[1, 2, 3, 4]);
        m[28..34].copy_from_slice(&[2, 0, 0, 0, 0, 5]);
        m[236..240].copy_from_slice(&COOKIE);
        m.extend_from_slice(&[53, 1, kind]);
        m.extend_from_slice(extra);
        m.push(255);
        m
    }

    #[test]
    fn a_discover_is_offered_the_nic_s_address_with_its_options() {
        let r = parse(&request(DISCOVER, &[])).expect("request");
        assert_eq!(r.xid, 0x0102_0304);
        let a = answer();
        assert_eq!(reply_kind(&r, &a), Some(OFFER));
        let m = reply(&r, &a, OFFER);
        assert_eq!(m[0], 2);
        assert_eq!(&m[16..20], &[10, 3, 0, 5]);
        let opts = &m[240..];
        for needle in [
            &[53u8, 1, OFFER][..],
            &[1, 4, 255, 255, 255, 0],
            &[3, 4, 10, 3, 0, 1],
            &[6, 4, 9, 9, 9, 9],
            &[26, 2, 0x05, 0xaa],
        ] {
            assert!(opts.windows(needle.len()).any(|w| w == needle), "{needle:?} in {opts:?}");
        }
        // Option 121: the default route, then 10.9/16 via 10.3.0.254.
        let r121 = [121u8, 12, 0, 10, 3, 0, 1, 16, 10, 9, 10, 3, 0, 254];
        assert!(opts.windows(r121.len()).any(|w| w == r121), "{opts:?}");
        let f = frame(&r, &a, [2; 6], OFFER, &m);
        assert_eq!(bootp_of(&f), None, "a reply is to port 68, not a request");
        assert_eq!(checksum(&f[14..34]), 0, "the IP header's checksum holds");
    }

    #[test]
    fn a_request_for_another_address_is_refused_and_another_server_s_is_left_alone() {
        let a = answer();
        let mine = parse(&request(REQUEST, &[50, 4, 10, 3, 0, 5])).expect("request");
        assert_eq!(reply_kind(&mine, &a), Some(ACK));
        let other = parse(&request(REQUEST, &[50, 4, 10, 3, 0, 99])).expect("request");
        assert_eq!(reply_kind(&other, &a), Some(NAK));
        let elsewhere = parse(&request(REQUEST, &[54, 4, 10, 3, 0, 200, 50, 4, 10, 3, 0, 5])).expect("request");
        assert_eq!(reply_kind(&elsewhere, &a), None);
        let release = parse(&request(7, &[])).expect("request");
        assert_eq!(reply_kind(&release, &a), None);
    }

    #[test]
    fn what_is_not_a_client_s_request_is_not_read() {
        assert!(parse(&[]).is_none());
        let mut bad = request(DISCOVER, &[]);
        bad[0] = 2;
        assert!(parse(&bad).is_none(), "a reply");
        let mut short = request(DISCOVER, &[]);
        short.truncate(243);
        short.extend_from_slice(&[50, 200]);
        assert!(parse(&short).is_some(), "an option that runs past the end ends the options");
        assert!(parse(&request(0, &[])).is_none(), "no message type");
    }

    #[test]
    fn a_router_advertisement_carries_the_prefix_from_the_switch_and_checks_out() {
        let mac = [2, 0x68, 0x75, 0, 0, 9];
        let ra = Ra {
            prefix: "fd12:3456:789a::/64".parse().expect("net"),
            router: crate::routed::link_local(&mac),
            router_mac: mac,
            mtu: Some(1500),
        };
        let f = ra_frame(&ra, ALL_NODES_MAC);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(f[20], 58);
        assert_eq!(f[21], 255, "hop limit 255, or clients ignore it");
        assert_eq!(f[54], 134);
        let icmp = &f[54..];
        assert_eq!(checksum6(&ra.router, &"ff02::1".parse().expect("ip"), icmp), 0, "the checksum holds");
        let prefix = [0xfdu8, 0x12, 0x34, 0x56, 0x78, 0x9a, 0, 0];
        assert!(icmp.windows(8).any(|w| w == prefix), "{icmp:?}");
        assert!(!is_rs(&f));
        let mut rs = f.clone();
        rs[54] = 133;
        assert!(is_rs(&rs));
    }

    proptest::proptest! {
        #[test]
        fn no_bytes_make_the_codec_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            if let Some(r) = parse(&bytes) {
                let a = answer();
                if let Some(k) = reply_kind(&r, &a) {
                    let m = reply(&r, &a, k);
                    let _ = frame(&r, &a, [2; 6], k, &m);
                }
            }
            let _ = bootp_of(&bytes);
            let _ = is_rs(&bytes);
        }
    }
}
