//! Bandwidth caps with the `tc` command: rtnetlink's typed messages have no tbf.
//!
//! A cap is a token bucket (tbf) on the egress of each end of the veth pair: the host end's
//! egress is what the zone receives, the zone end's what it sends. The zone end's qdisc sits
//! in the zone's namespace, where the zone (without CAP_NET_ADMIN) cannot change it. Shaping
//! queues packets rather than dropping them as ingress policing does, so TCP settles at the
//! rate.

use crate::Result;
use hull_exec::CommandLine;
use std::path::Path;

fn tc(netns: Option<&Path>) -> CommandLine {
    match netns {
        Some(ns) => CommandLine::new(hull_exec::tool("nsenter")).arg(format!("--net={}", ns.display())).arg("tc"),
        None => CommandLine::new(hull_exec::tool("tc")),
    }
}

/// The bucket size for a rate: 20 ms of traffic, and never less than one 64 KiB GSO packet.
pub fn burst_bytes(bits_per_sec: u64) -> u64 {
    (bits_per_sec / 8 / 50).max(65536 + 1514)
}

/// Caps `dev` (in `netns`, or here) at `bits_per_sec`, or lifts its cap with None.
pub fn cap(netns: Option<&Path>, dev: &str, bits_per_sec: Option<u64>) -> Result<()> {
    match bits_per_sec {
        Some(rate) => {
            tc(netns)
                .args(["qdisc", "replace", "dev", dev, "root", "tbf"])
                .args(["rate", &format!("{rate}bit"), "burst", &burst_bytes(rate).to_string(), "latency", "50ms"])
                .run()?;
        }
        None => {
            // No root qdisc of ours is fine.
            let _ = tc(netns).args(["qdisc", "del", "dev", dev, "root"]).run();
        }
    }
    Ok(())
}

/// Parses a cap: a number of Mbit/s, or a string with a unit (`100M`, `1G`, `500K`), as
/// dladm's `maxbw` reads it.
pub fn parse_maxbw(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().filter(|n| *n > 0).map(|n| n * 1_000_000),
        serde_json::Value::String(s) => {
            let s = s.trim();
            let (num, mult) = match s.chars().last()?.to_ascii_uppercase() {
                'K' => (&s[..s.len() - 1], 1_000),
                'M' => (&s[..s.len() - 1], 1_000_000),
                'G' => (&s[..s.len() - 1], 1_000_000_000),
                _ => (s, 1_000_000),
            };
            num.parse::<u64>().ok().filter(|n| *n > 0).and_then(|n| n.checked_mul(mult))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maxbw_reads_like_dladm() {
        assert_eq!(parse_maxbw(&json!(100)), Some(100_000_000));
        assert_eq!(parse_maxbw(&json!("100M")), Some(100_000_000));
        assert_eq!(parse_maxbw(&json!("1g")), Some(1_000_000_000));
        assert_eq!(parse_maxbw(&json!("500K")), Some(500_000));
        assert_eq!(parse_maxbw(&json!("0")), None);
        assert_eq!(parse_maxbw(&json!("fast")), None);
        assert_eq!(parse_maxbw(&json!(-1)), None);
    }

    #[test]
    fn bursts_hold_a_gso_packet() {
        assert!(burst_bytes(1_000_000) > 65536);
        assert_eq!(burst_bytes(1_000_000_000), 2_500_000);
    }
}
