//! GET /metrics: Prometheus's text format, from the `prometheus-client` crate. Per VM,
//! cAdvisor's names labelled `{vm_uuid, alias, brand}`; per node, the pool, VMs by state
//! and services by state. Every scrape reads the kernel afresh (a registry per scrape):
//! counters are the kernel's own, so they only rise while a zone runs, in base units.

use hull_storage::Node;
use hull_vm::Vmadm;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Vm {
    vm_uuid: String,
    alias: String,
    brand: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Nic {
    vm_uuid: String,
    alias: String,
    brand: String,
    interface: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

type C = Family<Vm, Counter<f64, AtomicU64>>;
type G = Family<Vm, Gauge<f64, AtomicU64>>;
type NC = Family<Nic, Counter<f64, AtomicU64>>;

fn counter(r: &mut Registry, name: &str, help: &str) -> C {
    let f = C::default();
    r.register(name, help, f.clone());
    f
}

fn gauge(r: &mut Registry, name: &str, help: &str) -> G {
    let f = G::default();
    r.register(name, help, f.clone());
    f
}

fn nic_counter(r: &mut Registry, name: &str, help: &str) -> NC {
    let f = NC::default();
    r.register(name, help, f.clone());
    f
}

/// The text of one scrape.
pub fn scrape(node: &Node, vm: &Vmadm) -> Result<String, String> {
    let mut r = Registry::default();
    let cpu = counter(&mut r, "container_cpu_usage_seconds", "Cumulative CPU time consumed, in seconds");
    let cpu_user = counter(&mut r, "container_cpu_user_seconds", "Cumulative user CPU time, in seconds");
    let cpu_sys = counter(&mut r, "container_cpu_system_seconds", "Cumulative system CPU time, in seconds");
    let periods = counter(&mut r, "container_cpu_cfs_periods", "Enforcement periods elapsed under a CPU cap");
    let throttled =
        counter(&mut r, "container_cpu_cfs_throttled_periods", "Enforcement periods in which the CPU cap throttled");
    let throttled_s =
        counter(&mut r, "container_cpu_cfs_throttled_seconds", "Time the CPU cap held the VM back, in seconds");
    let mem = gauge(&mut r, "container_memory_usage_bytes", "Memory charged to the VM, page cache included, in bytes");
    let ws = gauge(&mut r, "container_memory_working_set_bytes", "Memory in use less inactive page cache, in bytes");
    let rss = gauge(&mut r, "container_memory_rss", "Anonymous memory, in bytes");
    let cache = gauge(&mut r, "container_memory_cache", "Page cache, in bytes");
    let swap = gauge(&mut r, "container_memory_swap", "The VM's memory in swap, in bytes");
    let failcnt = counter(&mut r, "container_memory_failcnt", "Times the VM reached its memory cap (SmartOS nover)");
    let ooms = counter(&mut r, "container_oom_events", "Processes the OOM killer ended in the VM");
    let limit = gauge(&mut r, "container_spec_memory_limit_bytes", "The memory cap (max_physical_memory), in bytes");
    let swap_limit =
        gauge(&mut r, "container_spec_memory_swap_limit_bytes", "The memory-plus-swap cap (max_swap), in bytes");
    let quota = gauge(&mut r, "container_spec_cpu_cap_ratio", "cpu_cap as a share of one CPU (1 = one CPU)");
    let threads = gauge(&mut r, "container_threads", "Tasks (processes and threads) in the VM");
    let threads_max = gauge(&mut r, "container_threads_max", "The cap on tasks (max_lwps)");
    let reads = counter(&mut r, "container_fs_reads_bytes", "Bytes read from block devices");
    let writes = counter(&mut r, "container_fs_writes_bytes", "Bytes written to block devices");
    let rx = nic_counter(&mut r, "container_network_receive_bytes", "Bytes the VM received on a NIC");
    let tx = nic_counter(&mut r, "container_network_transmit_bytes", "Bytes the VM sent on a NIC");
    let rxp = nic_counter(&mut r, "container_network_receive_packets", "Packets the VM received on a NIC");
    let txp = nic_counter(&mut r, "container_network_transmit_packets", "Packets the VM sent on a NIC");
    let rxd = nic_counter(&mut r, "container_network_receive_packets_dropped", "Packets to the VM dropped on a NIC");
    let txd = nic_counter(&mut r, "container_network_transmit_packets_dropped", "Packets from the VM dropped on a NIC");
    let by_state = Family::<StateLabel, Gauge>::default();
    r.register("hull_vms", "VMs on the node by state", by_state.clone());

    let stats = vm.stats().map_err(|e| crate::chain(&e))?;
    for s in &stats {
        by_state.get_or_create(&StateLabel { state: s.state.clone() }).inc();
        let l = Vm { vm_uuid: s.uuid.clone(), alias: s.alias.clone().unwrap_or_default(), brand: s.brand.clone() };
        if let Some(m) = s.max_physical_memory_bytes {
            limit.get_or_create(&l).set(m as f64);
        }
        if let Some(c) = s.cpu_cap {
            quota.get_or_create(&l).set(c as f64 / 100.0);
        }
        let Some(u) = &s.usage else { continue };
        let ns = |v: u64| v as f64 / 1e9;
        cpu.get_or_create(&l).inc_by(ns(u.cpu_ns));
        let opt = |f: &C, v: Option<u64>, scale: fn(u64) -> f64| {
            if let Some(v) = v {
                f.get_or_create(&l).inc_by(scale(v));
            }
        };
        let id = |v: u64| v as f64;
        opt(&cpu_user, u.cpu_user_ns, ns);
        opt(&cpu_sys, u.cpu_system_ns, ns);
        opt(&periods, u.cpu_periods, id);
        opt(&throttled, u.cpu_throttled_periods, id);
        opt(&throttled_s, u.cpu_throttled_ns, ns);
        opt(&failcnt, u.memory_over, id);
        opt(&ooms, u.oom_kills, id);
        opt(&reads, u.disk_read_bytes, id);
        opt(&writes, u.disk_write_bytes, id);
        let set = |f: &G, v: Option<u64>| {
            if let Some(v) = v {
                f.get_or_create(&l).set(v as f64);
            }
        };
        set(&mem, Some(u.memory_bytes));
        set(&ws, Some(u.memory_working_set_bytes));
        set(&rss, u.memory_rss_bytes);
        set(&cache, u.memory_cache_bytes);
        set(&swap, u.swap_bytes);
        set(&swap_limit, u.swap_limit_bytes);
        set(&threads, u.tasks);
        set(&threads_max, u.tasks_limit);
        if let Some(m) = u.memory_limit_bytes {
            limit.get_or_create(&l).set(m as f64);
        }
        for (ifname, c) in &s.nics {
            let n = Nic {
                vm_uuid: l.vm_uuid.clone(),
                alias: l.alias.clone(),
                brand: l.brand.clone(),
                interface: ifname.clone(),
            };
            rx.get_or_create(&n).inc_by(c.rx_bytes as f64);
            tx.get_or_create(&n).inc_by(c.tx_bytes as f64);
            rxp.get_or_create(&n).inc_by(c.rx_packets as f64);
            txp.get_or_create(&n).inc_by(c.tx_packets as f64);
            rxd.get_or_create(&n).inc_by(c.rx_dropped as f64);
            txd.get_or_create(&n).inc_by(c.tx_dropped as f64);
        }
    }

    let pool_size = Gauge::<f64, AtomicU64>::default();
    let pool_used = Gauge::<f64, AtomicU64>::default();
    let pool_free = Gauge::<f64, AtomicU64>::default();
    r.register("hull_pool_size_bytes", "The pool's size, in bytes", pool_size.clone());
    r.register("hull_pool_used_bytes", "Bytes used in the pool", pool_used.clone());
    r.register("hull_pool_available_bytes", "Bytes free in the pool", pool_free.clone());
    if let Ok(pool) = vm.pool()
        && let Ok(u) = pool.usage()
    {
        pool_size.set(u.size as f64);
        pool_used.set(u.used as f64);
        pool_free.set(u.free as f64);
    }
    let services = Family::<StateLabel, Gauge>::default();
    r.register("hull_services", "The node's SMF service instances by state", services.clone());
    if let Ok((rows, _)) = crate::svc::statuses(&crate::svc::paths(node)) {
        for row in rows {
            services.get_or_create(&StateLabel { state: row.state }).inc();
        }
    }
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &r).map_err(|e| e.to_string())?;
    Ok(out)
}

/// OpenMetrics text as Prometheus's older text format (0.0.4), for scrapers and tools
/// (promtool) that ask for it: a counter's family is named with its `_total`, and
/// OpenMetrics' `# UNIT` and `# EOF` lines go.
pub fn prometheus_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        om.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(om.len());
    for l in om.lines() {
        if l == "# EOF" || l.starts_with("# UNIT ") {
            continue;
        }
        let fixed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = l.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(fixed.as_deref().unwrap_or(l));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_are_named_with_total_in_the_older_format() {
        let om = "# HELP a_seconds Time.\n# TYPE a_seconds counter\na_seconds_total{x=\"1\"} 2.0\n# HELP g Gauge.\n# TYPE g gauge\ng 1\n# EOF\n";
        let t = super::prometheus_text(om);
        assert_eq!(
            t,
            "# HELP a_seconds_total Time.\n# TYPE a_seconds_total counter\na_seconds_total{x=\"1\"} 2.0\n# HELP g Gauge.\n# TYPE g gauge\ng 1\n"
        );
    }
}
