//! hull's networking: Crossbow's model on Linux.
//!
//! - A **nic tag** names a host uplink or, when local, an etherstub.
//! - Every (tag, VLAN) pair is a bridge of its own: this kernel has no bridge VLAN filtering,
//!   and a VLAN per bridge isolates just as well. An uplink joins the VLAN-0 bridge itself,
//!   or as an 802.1Q link for another VLAN.
//! - An overlay network (`NAME/VNI`) is a bridge with a VXLAN device whose floods go to the
//!   peers the node's config lists.
//! - A **VNIC** is a veth pair: the zone's end (`net0`...) lives in the zone's network
//!   namespace with the NIC's MAC and addresses, the host's end is a port of the bridge.
//! - Link protection is an nftables chain per VNIC in a bridge-family table, reached through
//!   a verdict map keyed by the host end's name; bandwidth caps are tbf qdiscs on both ends.
//!
//! Everything hull makes carries the node's prefix: link names start with it and their alias
//! says what they are (`hull:<prefix>:<what>:...`), and the nftables table is
//! `hull_<prefix>`. Nothing else on the host is touched.

pub mod dhcp;
pub mod lease;
pub mod nft;
pub mod nic;
pub mod nl;
pub mod ns;
pub mod routed;
pub mod tap;
pub mod tc;
pub mod vnic;

pub use nic::{Nic, NicProblem};
pub use vnic::Net;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("netlink: {op}: {reason}")]
    Netlink { op: String, reason: String },
    #[error("{op}: {reason} (errno {errno})")]
    Kernel { op: String, errno: i32, reason: String },
    #[error("no link named {0}")]
    NoLink(String),
    #[error("network namespace: {op} {}: {reason}", path.display())]
    Netns { op: String, path: PathBuf, reason: String },
    #[error(transparent)]
    Exec(#[from] hull_exec::ExecError),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, NetError>;

/// A short, stable name under the node's prefix: `<prefix><kind><hash of key>`, 15 bytes at
/// most (the kernel's limit).
pub fn link_name(prefix: &str, kind: char, key: &str) -> String {
    let room = 15usize.saturating_sub(prefix.len() + 1).max(4);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // A final mix (splitmix64's) spreads short keys over every digit.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    const DIGITS: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut s = format!("{prefix}{kind}");
    for _ in 0..room {
        s.push(DIGITS[(h & 31) as usize] as char);
        h >>= 5;
    }
    s
}

/// The alias that marks a link as this node's.
pub fn alias(prefix: &str, what: &str, rest: &str) -> String {
    format!("hull:{prefix}:{what}:{rest}")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        // One or two hex digits an octet, as SmartOS takes them (`1:2:3:4:5:6`).
        if !(1..=2).contains(&p.len()) {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

pub fn format_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_fit_and_are_stable() {
        let a = link_name("htest", 'v', "uuid/net0");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("htestv"));
        assert_eq!(a, link_name("htest", 'v', "uuid/net0"));
        assert_ne!(a, link_name("htest", 'v', "uuid/net1"));
        assert_eq!(link_name("abcdefgh", 'b', "x").len(), 15);
    }

    #[test]
    fn macs_round_trip() {
        let m = parse_mac("90:b8:d0:0a:1B:ff").expect("parses");
        assert_eq!(format_mac(&m), "90:b8:d0:0a:1b:ff");
        assert!(parse_mac("90:b8:d0:0a:1b").is_none());
        assert!(parse_mac("90:b8:d0:0a:1b:ff:00").is_none());
        assert!(parse_mac("zz:b8:d0:0a:1b:ff").is_none());
    }
}
