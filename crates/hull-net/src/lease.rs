//! Leases of a network's DHCP range: which MAC holds which address, kept in
//! `$ROOT/var/hull/dhcp/<network>.json` and changed under the node's network lock. A MAC
//! keeps its address for as long as a VM on the node has that MAC; an address is handed out
//! only when no lease, no static NIC and no gateway has it.

use crate::{NetError, Result};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

pub type Leases = BTreeMap<String, Ipv4Addr>;

/// The lease for `mac`: its own if it has one, else the first free address of the range.
/// Leases of MACs no VM has any more (`live`) are dropped first.
pub fn pick(
    leases: &Leases,
    mac: &[u8; 6],
    range: (Ipv4Addr, Ipv4Addr),
    taken: &[Ipv4Addr],
    live: &[[u8; 6]],
) -> (Leases, Option<Ipv4Addr>) {
    let key = crate::format_mac(mac);
    let live: Vec<String> = live.iter().map(crate::format_mac).collect();
    let mut out: Leases =
        leases.iter().filter(|(m, _)| **m == key || live.contains(m)).map(|(m, a)| (m.clone(), *a)).collect();
    let (first, last) = (u32::from(range.0), u32::from(range.1));
    if let Some(a) = out.get(&key).copied().filter(|a| (first..=last).contains(&u32::from(*a)) && !taken.contains(a)) {
        return (out, Some(a));
    }
    let free = (first..=last)
        .map(Ipv4Addr::from)
        .find(|a| !taken.contains(a) && !out.iter().any(|(m, b)| b == a && *m != key));
    if let Some(a) = free {
        out.insert(key, a);
    }
    (out, free)
}

/// Reads, picks and writes back (atomically) a network's leases.
pub fn lease(
    path: &Path,
    mac: &[u8; 6],
    range: (Ipv4Addr, Ipv4Addr),
    taken: &[Ipv4Addr],
    live: &[[u8; 6]],
) -> Result<Ipv4Addr> {
    let io = |op: &str, e: std::io::Error| NetError::Invalid(format!("DHCP leases {}: {op}: {e}", path.display()));
    let leases: Leases = match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Leases::new(),
        Err(e) => return Err(io("read", e)),
    };
    let (after, got) = pick(&leases, mac, range, taken, live);
    let addr = got.ok_or_else(|| {
        NetError::Invalid(format!(
            "DHCP range {}-{} has no free address for {}",
            range.0,
            range.1,
            crate::format_mac(mac)
        ))
    })?;
    if after != leases {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io("create", e))?;
        }
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_vec_pretty(&after).map_err(|e| NetError::Invalid(e.to_string()))?;
        std::fs::write(&tmp, text).map_err(|e| io("write", e))?;
        std::fs::rename(&tmp, path).map_err(|e| io("rename", e))?;
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_mac_keeps_its_address_and_others_get_free_ones() {
        let range = (ip("10.0.0.10"), ip("10.0.0.12"));
        let (a, b, c, d) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 3], [2, 0, 0, 0, 0, 4]);
        let live = [a, b, c, d];
        let (l, got) = pick(&Leases::new(), &a, range, &[ip("10.0.0.10")], &live);
        assert_eq!(got, Some(ip("10.0.0.11")), "a static address is not leased");
        let (l, again) = pick(&l, &a, range, &[], &live);
        assert_eq!(again, Some(ip("10.0.0.11")), "the same MAC, the same address");
        let (l, gb) = pick(&l, &b, range, &[], &live);
        assert_eq!(gb, Some(ip("10.0.0.10")));
        let (l, gc) = pick(&l, &c, range, &[], &live);
        assert_eq!(gc, Some(ip("10.0.0.12")));
        let (_, none) = pick(&l, &d, range, &[], &live);
        assert_eq!(none, None, "the range is full");
        // A VM that is gone gives its address back.
        let (l, gd) = pick(&l, &d, range, &[], &[b, c, d]);
        assert_eq!(gd, Some(ip("10.0.0.11")));
        assert_eq!(l.len(), 3);
    }
}
