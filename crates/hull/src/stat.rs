//! zonememstat (SmartOS's) and `hull zonestat` (prstat -Z's per-zone lines, with net and
//! disk rates): per-zone figures from the zones' cgroups and links.

use crate::{CmdResult, Failure};
use hull_storage::Node;
use hull_vm::stats::VmStats;
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct MemstatArgs {
    /// No header line.
    #[arg(short = 'H')]
    no_header: bool,
    /// Stopped zones too (their figures are dashes).
    #[arg(short = 'a')]
    all: bool,
    /// Only this zone (uuid or alias).
    #[arg(short = 'z', value_name = "ZONE")]
    zone: Option<String>,
    /// JSON, one object per zone, in bytes.
    #[arg(short = 'j')]
    json: bool,
}

#[derive(clap::Args)]
pub struct ZonestatArgs {
    /// Only this zone (uuid or alias).
    #[arg(short = 'z', value_name = "ZONE")]
    zone: Option<String>,
    /// One JSON object per line and interval, instead of a table.
    #[arg(short = 'j')]
    json: bool,
    /// Seconds between samples.
    #[arg(default_value_t = 1.0)]
    interval: f64,
    /// Samples to print (default: until interrupted).
    count: Option<u64>,
}

fn stats(node: &Node, zone: Option<&str>, all: bool) -> Result<Vec<VmStats>, Failure> {
    let exe = std::env::current_exe().map_err(|e| Failure::new(1, e))?;
    let vm = hull_vm::Vmadm::open(node, exe)?;
    let rows: Vec<VmStats> = vm
        .stats()?
        .into_iter()
        .filter(|s| zone.is_none_or(|z| s.uuid == z || s.alias.as_deref() == Some(z)))
        .filter(|s| all || zone.is_some() || s.usage.is_some())
        .collect();
    if let Some(z) = zone
        && rows.is_empty()
    {
        return Err(Failure::new(1, format!("no zone {z} on this node")));
    }
    Ok(rows)
}

const MB: f64 = 1048576.0;

fn mb(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| format!("{:.0}", v as f64 / MB))
}

pub fn zonememstat(node: &Node, a: MemstatArgs) -> CmdResult {
    let rows = stats(node, a.zone.as_deref(), a.all)?;
    if a.json {
        let out: Vec<serde_json::Value> = rows
            .iter()
            .map(|s| {
                let u = s.usage.as_ref();
                serde_json::json!({
                    "zonename": s.uuid,
                    "alias": s.alias,
                    "rss": u.map(|u| u.memory_working_set_bytes),
                    "cap": u.and_then(|u| u.memory_limit_bytes).or(s.max_physical_memory_bytes),
                    "nover": u.and_then(|u| u.memory_over),
                    "pout": u.and_then(|u| u.swap_bytes),
                    "swap_pct": u.and_then(swap_pct),
                })
            })
            .collect();
        crate::print_json(&out);
        return Ok(());
    }
    let mut o = std::io::stdout().lock();
    if !a.no_header {
        let _ = writeln!(
            o,
            "{:>36} {:>8} {:>8} {:>8} {:>8} {:>5}",
            "ZONE", "RSS(MB)", "CAP(MB)", "NOVER", "POUT(MB)", "SWAP%"
        );
    }
    for s in &rows {
        let u = s.usage.as_ref();
        let _ = writeln!(
            o,
            "{:>36} {:>8} {:>8} {:>8} {:>8} {:>5}",
            s.uuid,
            mb(u.map(|u| u.memory_working_set_bytes)),
            mb(u.and_then(|u| u.memory_limit_bytes).or(s.max_physical_memory_bytes)),
            u.and_then(|u| u.memory_over).map_or("-".into(), |v| v.to_string()),
            mb(u.and_then(|u| u.swap_bytes)),
            u.and_then(swap_pct).map_or("-".into(), |v| format!("{v:.0}")),
        );
    }
    Ok(())
}

/// Swap in use as a share of what the zone may swap (its memory-plus-swap cap less its
/// memory cap).
fn swap_pct(u: &hull_zone::stats::Usage) -> Option<f64> {
    let room = u.swap_limit_bytes?.checked_sub(u.memory_limit_bytes?)?;
    (room > 0).then(|| 100.0 * u.swap_bytes.unwrap_or(0) as f64 / room as f64)
}

/// One zone's rates between two samples.
fn rates(prev: &VmStats, cur: &VmStats, secs: f64) -> serde_json::Value {
    let (p, c) = (prev.usage.as_ref(), cur.usage.as_ref());
    let d = |f: fn(&hull_zone::stats::Usage) -> Option<u64>| -> Option<f64> {
        let (a, b) = (f(p?)?, f(c?)?);
        Some(b.saturating_sub(a) as f64 / secs)
    };
    let net = |rx: bool| -> f64 {
        cur.nics
            .iter()
            .map(|(i, n)| {
                let before = prev.nics.get(i).map_or(0, |o| if rx { o.rx_bytes } else { o.tx_bytes });
                (if rx { n.rx_bytes } else { n.tx_bytes }).saturating_sub(before) as f64
            })
            .fold(0.0, |a, b| a + b)
            / secs
    };
    serde_json::json!({
        "zonename": cur.uuid,
        "alias": cur.alias,
        "cpu_pct": d(|u| Some(u.cpu_ns)).map(|ns| ns / 1e7),
        "cpu_throttled_periods": c.and_then(|u| u.cpu_throttled_periods),
        "memory_bytes": c.map(|u| u.memory_working_set_bytes),
        "memory_cap_bytes": c.and_then(|u| u.memory_limit_bytes),
        "swap_bytes": c.and_then(|u| u.swap_bytes),
        "processes": c.and_then(|u| u.tasks),
        "net_rx_bytes_per_s": net(true),
        "net_tx_bytes_per_s": net(false),
        "disk_read_bytes_per_s": d(|u| u.disk_read_bytes),
        "disk_write_bytes_per_s": d(|u| u.disk_write_bytes),
    })
}

pub fn zonestat(node: &Node, a: ZonestatArgs) -> CmdResult {
    if !(a.interval.is_finite() && a.interval >= 0.1) {
        return Err(Failure::new(2, "the interval is in seconds, 0.1 or more"));
    }
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout()) && !a.json;
    let mut prev = stats(node, a.zone.as_deref(), false)?;
    let mut t0 = Instant::now();
    let mut n = 0u64;
    while a.count.is_none_or(|c| n < c) {
        std::thread::sleep(Duration::from_secs_f64(a.interval));
        let cur = stats(node, a.zone.as_deref(), false)?;
        let secs = t0.elapsed().as_secs_f64();
        t0 = Instant::now();
        let rows: Vec<serde_json::Value> =
            cur.iter().filter_map(|c| prev.iter().find(|p| p.uuid == c.uuid).map(|p| rates(p, c, secs))).collect();
        let mut o = std::io::stdout().lock();
        if a.json {
            let line = serde_json::json!({"time": hull_zone::events::now_rfc3339(), "interval_s": secs, "zones": rows});
            let _ = writeln!(o, "{line}");
        } else {
            if tty {
                let _ = write!(o, "\x1b[H\x1b[2J");
            }
            let _ = writeln!(
                o,
                "{:<36} {:>6} {:>8} {:>8} {:>8} {:>6} {:>9} {:>9} {:>9} {:>9}",
                "ZONE", "CPU%", "MEM(MB)", "CAP(MB)", "SWAP(MB)", "PROCS", "NETRX/s", "NETTX/s", "DISKR/s", "DISKW/s"
            );
            for r in &rows {
                let f = |k: &str| r[k].as_f64();
                let name = r["alias"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| r["zonename"].as_str().unwrap_or("").into());
                let _ = writeln!(
                    o,
                    "{:<36} {:>6} {:>8} {:>8} {:>8} {:>6} {:>9} {:>9} {:>9} {:>9}",
                    name,
                    f("cpu_pct").map_or("-".into(), |v| format!("{v:.1}")),
                    mb(r["memory_bytes"].as_u64()),
                    mb(r["memory_cap_bytes"].as_u64()),
                    mb(r["swap_bytes"].as_u64()),
                    r["processes"].as_u64().map_or("-".into(), |v| v.to_string()),
                    human(f("net_rx_bytes_per_s")),
                    human(f("net_tx_bytes_per_s")),
                    human(f("disk_read_bytes_per_s")),
                    human(f("disk_write_bytes_per_s")),
                );
            }
        }
        let _ = o.flush();
        prev = cur;
        n += 1;
    }
    Ok(())
}

/// A rate in bytes per second, short (`12K`, `3.4M`).
fn human(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v < 1024.0 => format!("{v:.0}"),
        Some(v) if v < MB => format!("{:.1}K", v / 1024.0),
        Some(v) => format!("{:.1}M", v / MB),
    }
}
