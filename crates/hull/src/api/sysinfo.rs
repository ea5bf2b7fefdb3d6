//! `GET /sysinfo`: the node as SmartOS's sysinfo(8) describes one (the keys Triton's CNAPI
//! reads), from this host.

use super::error::ApiResult;
use hull_storage::Node;
use serde_json::{Map, Value, json};

fn meminfo_mib(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

fn read_trim(path: impl AsRef<std::path::Path>) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// The host's physical NICs (those with a device behind them), with the nic tags over each.
fn interfaces(node: &Node) -> Map<String, Value> {
    let tags = node.load_config().map(|c| c.nic_tags).unwrap_or_default();
    let mut out = Map::new();
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else { return out };
    let mut names: Vec<String> = dir.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    for name in names {
        let base = std::path::Path::new("/sys/class/net").join(&name);
        if !base.join("device").exists() {
            continue;
        }
        let nic_names: Vec<&String> =
            tags.iter().filter(|(_, t)| t.uplink.as_deref() == Some(name.as_str())).map(|(n, _)| n).collect();
        let up = read_trim(base.join("operstate")).is_some_and(|s| s == "up");
        out.insert(
            name.clone(),
            json!({
                "MAC Address": read_trim(base.join("address")).unwrap_or_default(),
                "Link Status": if up { "up" } else { "down" },
                "NIC Names": nic_names,
            }),
        );
    }
    out
}

pub fn sysinfo(node: &Node) -> ApiResult<Value> {
    let hostname = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let boot = read_trim("/proc/stat").and_then(|s| {
        s.lines().find(|l| l.starts_with("btime")).and_then(|l| l.split_whitespace().nth(1).map(String::from))
    });
    let mut info = json!({
        // The same uuid every VM on the node gives as its server_uuid.
        "UUID": hull_vm::node_uuid(),
        "Hostname": hostname,
        "System Type": "Linux",
        "Live Image": env!("CARGO_PKG_VERSION"),
        "Kernel": read_trim("/proc/sys/kernel/osrelease").unwrap_or_default(),
        "CPU Type": cpu_model().unwrap_or_default(),
        "CPU Total Cores": cores,
        "CPU Virtualization": if std::path::Path::new("/dev/kvm").exists() { "kvm" } else { "none" },
        "MiB of Memory": meminfo_mib("MemTotal:").unwrap_or(0),
        "Boot Time": boot.unwrap_or_default(),
        "Network Interfaces": interfaces(node),
    });
    if let Ok(cfg) = node.load_config()
        && let Some(pool) = cfg.pool
    {
        info["Zpool"] = json!(pool.name);
        let root = node.zones_dir();
        if let Ok(st) = nix::sys::statvfs::statvfs(&root) {
            let bytes = st.blocks().saturating_mul(st.fragment_size());
            info["Zpool Size in GiB"] = json!(bytes >> 30);
        }
    }
    Ok(info)
}
