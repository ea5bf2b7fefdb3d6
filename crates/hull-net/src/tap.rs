//! A KVM guest's side of a VNIC, inside the zone's network namespace: a persistent tap
//! (`tapN` for `netN`) owned by root, so that qemu, root in the zone but without
//! CAP_NET_ADMIN, may attach to it, and a bridge (`vbrN`) joining it to the zone end.

use crate::nl::Netlink;
use crate::{NetError, Result};
use std::os::fd::AsRawFd;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const TUNSETOWNER: libc::c_ulong = 0x4004_54cc;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `net0` → `tap0`; the name qemu's `-netdev tap,ifname=` gets.
pub fn tap_name(interface: &str) -> String {
    format!("tap{}", interface.trim_start_matches("net"))
}

fn bridge_name(interface: &str) -> String {
    format!("vbr{}", interface.trim_start_matches("net"))
}

fn err(op: &str, e: std::io::Error) -> NetError {
    NetError::Netlink { op: op.to_string(), reason: e.to_string() }
}

/// Makes a persistent tap owned by uid 0 in the calling thread's namespace.
pub fn make_tap(name: &str) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| err("open /dev/net/tun", e))?;
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        pad: [u8; 22],
    }
    let mut req = IfReq { name: [0; 16], flags: IFF_TAP | IFF_NO_PI, pad: [0; 22] };
    let n = name.len().min(15);
    req.name[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: req is a valid ifreq-sized buffer for TUNSETIFF; the fd is open.
    if unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        return Err(err(&format!("create tap {name}"), std::io::Error::last_os_error()));
    }
    for (op, req, arg) in [("set tap owner", TUNSETOWNER, 0u64), ("make tap persistent", TUNSETPERSIST, 1u64)] {
        // SAFETY: both ioctls take an integer argument by value.
        if unsafe { libc::ioctl(f.as_raw_fd(), req, arg) } < 0 {
            return Err(err(op, std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// In the zone's namespace: the tap, the bridge, the zone end on it, all up.
pub fn guest_port(interface: &str, mtu: u32) -> Result<()> {
    let tap = tap_name(interface);
    let br = bridge_name(interface);
    make_tap(&tap)?;
    let mut nl = Netlink::open()?;
    if nl.link(&br)?.is_none() {
        nl.add_bridge(&br, &format!("hull:guest:{interface}"))?;
    }
    let b = nl.link(&br)?.ok_or_else(|| NetError::NoLink(br.clone()))?;
    for port in [interface, tap.as_str()] {
        let l = nl.link(port)?.ok_or_else(|| NetError::NoLink(port.to_string()))?;
        nl.set_mtu(l.index, mtu)?;
        nl.set_master(l.index, b.index)?;
        nl.set_up(l.index, true)?;
    }
    nl.set_up(b.index, true)
}
