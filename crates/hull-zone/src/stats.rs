//! What a zone uses, from its cgroup (v1 or v2) and its links' counters: the numbers
//! behind zonememstat, zonestat and the API's /metrics. Everything is in base units
//! (bytes, nanoseconds); a counter the kernel does not keep is `None`.

use crate::cgroup::Hierarchy;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A zone's use of the node, read at one moment.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Usage {
    /// CPU time, all of it, user and system (ns).
    pub cpu_ns: u64,
    pub cpu_user_ns: Option<u64>,
    pub cpu_system_ns: Option<u64>,
    /// CFS periods, and those in which the cap throttled the zone, and for how long (ns).
    pub cpu_periods: Option<u64>,
    pub cpu_throttled_periods: Option<u64>,
    pub cpu_throttled_ns: Option<u64>,
    /// Memory charged to the zone (bytes), its working set (less inactive file pages, as
    /// cAdvisor counts it), anonymous memory (RSS) and page cache.
    pub memory_bytes: u64,
    pub memory_working_set_bytes: u64,
    pub memory_rss_bytes: Option<u64>,
    pub memory_cache_bytes: Option<u64>,
    /// The memory cap in force (bytes); None when there is none.
    pub memory_limit_bytes: Option<u64>,
    /// Times the zone hit its cap (SmartOS's nover).
    pub memory_over: Option<u64>,
    /// Processes the kernel's OOM killer ended in the zone.
    pub oom_kills: Option<u64>,
    /// The zone's memory in swap (bytes), and the cap on memory plus swap.
    pub swap_bytes: Option<u64>,
    pub swap_limit_bytes: Option<u64>,
    /// Tasks (processes and threads) in the zone.
    pub tasks: Option<u64>,
    pub tasks_limit: Option<u64>,
    /// Bytes read from and written to block devices.
    pub disk_read_bytes: Option<u64>,
    pub disk_write_bytes: Option<u64>,
}

/// A link's counters, as the zone sees them (what the zone received and sent).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LinkCounters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

/// The zone's cgroup directories in the hierarchies that have controllers.
fn dirs(hier: &[Hierarchy], cgroup: &str) -> Vec<PathBuf> {
    let rel = cgroup.trim_start_matches('/');
    if rel.is_empty() || rel.split('/').any(|c| c == ".." || c == ".") {
        return Vec::new();
    }
    hier.iter().filter(|h| h.controllers).map(|h| h.mountpoint.join(rel)).filter(|d| d.is_dir()).collect()
}

fn read(dirs: &[PathBuf], name: &str) -> Option<String> {
    dirs.iter().find_map(|d| std::fs::read_to_string(d.join(name)).ok())
}

fn num(dirs: &[PathBuf], name: &str) -> Option<u64> {
    read(dirs, name).and_then(|s| s.trim().parse().ok())
}

/// A limit file: "max" (v2) or a v1 figure at or above 2^62 means none.
fn limit(dirs: &[PathBuf], name: &str) -> Option<u64> {
    read(dirs, name).and_then(|s| s.trim().parse::<u64>().ok()).filter(|v| *v < (1 << 62))
}

/// `key value` lines (memory.stat, cpu.stat, memory.events).
pub fn keyed(text: &str) -> BTreeMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let k = it.next()?;
            let v = it.next()?.parse().ok()?;
            Some((k, v))
        })
        .collect()
}

/// v2's io.stat: `MAJ:MIN rbytes=N wbytes=N ...` per device, summed.
pub fn io_stat(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0u64, 0u64);
    for l in text.lines() {
        for f in l.split_whitespace().skip(1) {
            match f.split_once('=') {
                Some(("rbytes", v)) => r = r.saturating_add(v.parse().unwrap_or(0)),
                Some(("wbytes", v)) => w = w.saturating_add(v.parse().unwrap_or(0)),
                _ => {}
            }
        }
    }
    (r, w)
}

/// v1's blkio.throttle.io_service_bytes: `MAJ:MIN Read N` lines, summed (the `Total` lines
/// are skipped).
pub fn blkio_bytes(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0u64, 0u64);
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if let [_, op, v] = f[..] {
            let v: u64 = v.parse().unwrap_or(0);
            match op {
                "Read" => r = r.saturating_add(v),
                "Write" => w = w.saturating_add(v),
                _ => {}
            }
        }
    }
    (r, w)
}

/// The zone's use of the node; None when its cgroup is not there (the zone is stopped).
pub fn usage(cgroup: &str) -> Option<Usage> {
    usage_in(&crate::cgroup::hierarchies(), cgroup)
}

/// [`usage`] with the host's hierarchies read once by the caller (mountinfo is long on a
/// busy node: reading it per zone was most of a scrape).
pub fn usage_in(hier: &[Hierarchy], cgroup: &str) -> Option<Usage> {
    let d = dirs(hier, cgroup);
    if d.is_empty() {
        return None;
    }
    let mut u = Usage::default();
    if let Some(cur) = num(&d, "memory.current") {
        // v2
        let stat = read(&d, "memory.stat").unwrap_or_default();
        let stat = keyed(&stat);
        u.memory_bytes = cur;
        u.memory_working_set_bytes = cur.saturating_sub(stat.get("inactive_file").copied().unwrap_or(0));
        u.memory_rss_bytes = stat.get("anon").copied();
        u.memory_cache_bytes = stat.get("file").copied();
        u.memory_limit_bytes = limit(&d, "memory.max");
        let events = read(&d, "memory.events").unwrap_or_default();
        let events = keyed(&events);
        u.memory_over = events.get("max").copied();
        u.oom_kills = events.get("oom_kill").copied();
        u.swap_bytes = num(&d, "memory.swap.current");
        u.swap_limit_bytes = limit(&d, "memory.swap.max").map(|s| s.saturating_add(u.memory_limit_bytes.unwrap_or(0)));
        let cpu = read(&d, "cpu.stat").unwrap_or_default();
        let cpu = keyed(&cpu);
        u.cpu_ns = cpu.get("usage_usec").copied().unwrap_or(0).saturating_mul(1000);
        u.cpu_user_ns = cpu.get("user_usec").map(|v| v.saturating_mul(1000));
        u.cpu_system_ns = cpu.get("system_usec").map(|v| v.saturating_mul(1000));
        u.cpu_periods = cpu.get("nr_periods").copied();
        u.cpu_throttled_periods = cpu.get("nr_throttled").copied();
        u.cpu_throttled_ns = cpu.get("throttled_usec").map(|v| v.saturating_mul(1000));
        let (r, w) = io_stat(&read(&d, "io.stat").unwrap_or_default());
        u.disk_read_bytes = Some(r);
        u.disk_write_bytes = Some(w);
    } else {
        // v1
        u.memory_bytes = num(&d, "memory.usage_in_bytes").unwrap_or(0);
        let stat = read(&d, "memory.stat").unwrap_or_default();
        let stat = keyed(&stat);
        u.memory_working_set_bytes =
            u.memory_bytes.saturating_sub(stat.get("total_inactive_file").copied().unwrap_or(0));
        u.memory_rss_bytes = stat.get("total_rss").copied();
        u.memory_cache_bytes = stat.get("total_cache").copied();
        u.memory_limit_bytes = limit(&d, "memory.limit_in_bytes");
        u.memory_over = num(&d, "memory.failcnt");
        u.oom_kills = read(&d, "memory.oom_control").and_then(|t| keyed(&t).get("oom_kill").copied());
        u.swap_limit_bytes = limit(&d, "memory.memsw.limit_in_bytes");
        u.swap_bytes = num(&d, "memory.memsw.usage_in_bytes").map(|all| all.saturating_sub(u.memory_bytes));
        u.cpu_ns = num(&d, "cpuacct.usage").unwrap_or(0);
        // cpuacct.stat counts USER_HZ ticks (100 a second on Linux).
        if let Some(t) = read(&d, "cpuacct.stat") {
            let t = keyed(&t);
            u.cpu_user_ns = t.get("user").map(|v| v.saturating_mul(10_000_000));
            u.cpu_system_ns = t.get("system").map(|v| v.saturating_mul(10_000_000));
        }
        if let Some(t) = read(&d, "cpu.stat") {
            let t = keyed(&t);
            u.cpu_periods = t.get("nr_periods").copied();
            u.cpu_throttled_periods = t.get("nr_throttled").copied();
            u.cpu_throttled_ns = t.get("throttled_time").copied();
        }
        if let Some(t) = read(&d, "blkio.throttle.io_service_bytes") {
            let (r, w) = blkio_bytes(&t);
            u.disk_read_bytes = Some(r);
            u.disk_write_bytes = Some(w);
        }
    }
    u.tasks = num(&d, "pids.current");
    u.tasks_limit = limit(&d, "pids.max");
    Some(u)
}

/// /proc/net/dev of this process's network namespace, by interface. The counters are the
/// host end's: what the host end received, the zone sent. [`LinkCounters`] is turned round
/// to the zone's side by [`zone_side`].
pub fn net_dev(text: &str) -> BTreeMap<String, LinkCounters> {
    let mut out = BTreeMap::new();
    for l in text.lines().skip(2) {
        let Some((name, rest)) = l.split_once(':') else { continue };
        let f: Vec<u64> = rest.split_whitespace().filter_map(|v| v.parse().ok()).collect();
        if f.len() < 16 {
            continue;
        }
        out.insert(
            name.trim().to_string(),
            LinkCounters {
                rx_bytes: f[0],
                rx_packets: f[1],
                rx_dropped: f[3],
                tx_bytes: f[8],
                tx_packets: f[9],
                tx_dropped: f[11],
            },
        );
    }
    out
}

/// A host end's counters seen from the zone: what the host sent, the zone received.
pub fn zone_side(host: &LinkCounters) -> LinkCounters {
    LinkCounters {
        rx_bytes: host.tx_bytes,
        rx_packets: host.tx_packets,
        rx_dropped: host.tx_dropped,
        tx_bytes: host.rx_bytes,
        tx_packets: host.rx_packets,
        tx_dropped: host.rx_dropped,
    }
}

/// The links of this process's network namespace.
pub fn links() -> BTreeMap<String, LinkCounters> {
    std::fs::read_to_string(Path::new("/proc/self/net/dev")).map(|t| net_dev(&t)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_reads_both_directions() {
        let t = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n  hv0a: 1000 10 0 1 0 0 0 0 2000 20 0 2 0 0 0 0\n";
        let m = net_dev(t);
        let c = &m["hv0a"];
        assert_eq!(
            (c.rx_bytes, c.rx_packets, c.rx_dropped, c.tx_bytes, c.tx_packets, c.tx_dropped),
            (1000, 10, 1, 2000, 20, 2)
        );
        let z = zone_side(c);
        assert_eq!((z.rx_bytes, z.tx_bytes), (2000, 1000));
    }

    #[test]
    fn io_counters_sum_devices() {
        assert_eq!(io_stat("8:0 rbytes=10 wbytes=20 rios=1 wios=2\n8:16 rbytes=5 wbytes=5\n"), (15, 25));
        assert_eq!(blkio_bytes("8:0 Read 10\n8:0 Write 20\n8:0 Total 30\nTotal 30\n"), (10, 20));
    }

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        for (f, text) in files {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        d
    }

    #[test]
    fn a_v2_cgroup_reads_in_base_units() {
        let d = tree(&[
            ("z/memory.current", "1000\n"),
            ("z/memory.stat", "anon 600\nfile 400\ninactive_file 100\n"),
            ("z/memory.max", "2000\n"),
            ("z/memory.events", "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n"),
            ("z/memory.swap.current", "50\n"),
            ("z/memory.swap.max", "max\n"),
            (
                "z/cpu.stat",
                "usage_usec 3\nuser_usec 2\nsystem_usec 1\nnr_periods 10\nnr_throttled 4\nthrottled_usec 5\n",
            ),
            ("z/io.stat", "8:0 rbytes=10 wbytes=20\n"),
            ("z/pids.current", "3\n"),
            ("z/pids.max", "max\n"),
        ]);
        let h = [Hierarchy { mountpoint: d.path().to_path_buf(), controllers: true, key: String::new() }];
        let u = usage_in(&h, "/z").expect("usage");
        assert_eq!(
            (u.memory_bytes, u.memory_working_set_bytes, u.memory_rss_bytes, u.memory_cache_bytes),
            (1000, 900, Some(600), Some(400))
        );
        assert_eq!(
            (u.memory_limit_bytes, u.memory_over, u.oom_kills, u.swap_bytes, u.swap_limit_bytes),
            (Some(2000), Some(7), Some(1), Some(50), None)
        );
        assert_eq!((u.cpu_ns, u.cpu_user_ns, u.cpu_system_ns), (3000, Some(2000), Some(1000)));
        assert_eq!((u.cpu_periods, u.cpu_throttled_periods, u.cpu_throttled_ns), (Some(10), Some(4), Some(5000)));
        assert_eq!(
            (u.disk_read_bytes, u.disk_write_bytes, u.tasks, u.tasks_limit),
            (Some(10), Some(20), Some(3), None)
        );
        // A path that climbs out is not read.
        assert!(usage_in(&h, "/../etc").is_none());
        assert!(usage_in(&h, "/missing").is_none());
    }

    #[test]
    fn a_v1_cgroup_reads_across_hierarchies() {
        let d = tree(&[
            ("memory/z/memory.usage_in_bytes", "1000\n"),
            ("memory/z/memory.stat", "total_rss 600\ntotal_cache 400\ntotal_inactive_file 100\n"),
            ("memory/z/memory.limit_in_bytes", "9223372036854771712\n"),
            ("memory/z/memory.failcnt", "2\n"),
            ("memory/z/memory.memsw.usage_in_bytes", "1100\n"),
            ("memory/z/memory.memsw.limit_in_bytes", "4000\n"),
            ("cpu,cpuacct/z/cpuacct.usage", "123\n"),
            ("cpu,cpuacct/z/cpuacct.stat", "user 3\nsystem 1\n"),
            ("cpu,cpuacct/z/cpu.stat", "nr_periods 10\nnr_throttled 4\nthrottled_time 5\n"),
            ("blkio/z/blkio.throttle.io_service_bytes", "8:0 Read 10\n8:0 Write 20\nTotal 30\n"),
            ("pids/z/pids.current", "3\n"),
            ("pids/z/pids.max", "100\n"),
        ]);
        let h: Vec<Hierarchy> = ["memory", "cpu,cpuacct", "blkio", "pids"]
            .iter()
            .map(|c| Hierarchy { mountpoint: d.path().join(c), controllers: true, key: c.to_string() })
            .collect();
        let u = usage_in(&h, "/z").expect("usage");
        assert_eq!((u.memory_bytes, u.memory_working_set_bytes, u.memory_limit_bytes), (1000, 900, None));
        assert_eq!((u.memory_over, u.swap_bytes, u.swap_limit_bytes), (Some(2), Some(100), Some(4000)));
        assert_eq!((u.cpu_ns, u.cpu_user_ns, u.cpu_system_ns), (123, Some(30_000_000), Some(10_000_000)));
        assert_eq!((u.cpu_throttled_periods, u.cpu_throttled_ns), (Some(4), Some(5)));
        assert_eq!(
            (u.disk_read_bytes, u.disk_write_bytes, u.tasks, u.tasks_limit),
            (Some(10), Some(20), Some(3), Some(100))
        );
    }

    #[test]
    fn keyed_lines_skip_what_is_not_a_number() {
        let k = keyed("anon 5\nfile x\nmax 3\n");
        assert_eq!(k.get("anon"), Some(&5));
        assert_eq!(k.get("file"), None);
        assert_eq!(k.get("max"), Some(&3));
    }
}
