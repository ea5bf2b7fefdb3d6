//! What each VM uses now: its zone's cgroup and its NICs' counters, beside its caps. Read by
//! zonememstat, zonestat and the API's /metrics; never stored in the VM's config.

use crate::{Result, Vmadm};
use hull_zone::stats::{LinkCounters, Usage};
use serde_json::Value;
use std::collections::BTreeMap;

/// One VM's figures at one moment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VmStats {
    pub uuid: String,
    pub alias: Option<String>,
    pub brand: String,
    pub state: String,
    /// `max_physical_memory` in bytes, as configured.
    pub max_physical_memory_bytes: Option<u64>,
    /// `cpu_cap`: percent of one CPU.
    pub cpu_cap: Option<u64>,
    /// None while the VM is stopped.
    pub usage: Option<Usage>,
    /// By interface (`net0`), as the VM sees them: rx is what it received.
    pub nics: BTreeMap<String, LinkCounters>,
}

impl Vmadm {
    /// Every VM's figures, in uuid order. One read of the links serves all.
    pub fn stats(&self) -> Result<Vec<VmStats>> {
        let links = hull_zone::stats::links();
        let hier = hull_zone::cgroup::hierarchies();
        let mut out = Vec::new();
        for uuid in self.uuids()? {
            let Ok(cfg) = self.load(&uuid) else { continue };
            out.push(self.stats_of(&uuid, &cfg, &links, &hier));
        }
        Ok(out)
    }

    fn stats_of(
        &self,
        uuid: &str,
        cfg: &serde_json::Map<String, Value>,
        links: &BTreeMap<String, LinkCounters>,
        hier: &[hull_zone::cgroup::Hierarchy],
    ) -> VmStats {
        let st = self.state(uuid, cfg);
        let running = st.state == hull_spec::State::Running;
        let usage = if running { hull_zone::stats::usage_in(hier, &self.cgroup(uuid)) } else { None };
        let mut nics = BTreeMap::new();
        if running {
            for n in cfg.get("nics").and_then(Value::as_array).into_iter().flatten() {
                let Some(ifname) = n.get("interface").and_then(Value::as_str) else { continue };
                let host = hull_net::link_name(self.node.prefix(), 'v', &format!("{uuid}/{ifname}"));
                if let Some(c) = links.get(&host) {
                    nics.insert(ifname.to_string(), hull_zone::stats::zone_side(c));
                }
            }
        }
        VmStats {
            uuid: uuid.to_string(),
            alias: cfg.get("alias").and_then(Value::as_str).map(str::to_string),
            brand: cfg.get("brand").and_then(Value::as_str).unwrap_or("joyent").to_string(),
            state: st.state.to_string(),
            max_physical_memory_bytes: cfg.get("max_physical_memory").and_then(Value::as_u64).map(|m| m << 20),
            cpu_cap: cfg.get("cpu_cap").and_then(Value::as_u64),
            usage,
            nics,
        }
    }
}
