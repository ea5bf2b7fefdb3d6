//! A zone's cgroup after it started: caps changed live, processes counted.

use crate::{Limits, Result, ZoneError};
use libcgroups::common::{CgroupConfig, CgroupManager, ControllerOpt, create_cgroup_manager};
use std::path::PathBuf;

fn manager(id: &str, cgroup: &str) -> Result<libcgroups::common::AnyCgroupManager> {
    create_cgroup_manager(CgroupConfig {
        cgroup_path: PathBuf::from(cgroup),
        systemd_cgroup: false,
        container_name: id.to_string(),
    })
    .map_err(|e| ZoneError::Runtime { id: id.to_string(), op: "open cgroup", reason: e.to_string() })
}

/// Applies `limits` to a running zone's cgroup.
pub fn apply(id: &str, cgroup: &str, limits: &Limits) -> Result<()> {
    let resources: oci_spec::runtime::LinuxResources = serde_json::from_value(crate::spec::resources(limits))
        .map_err(|e| ZoneError::Runtime { id: id.to_string(), op: "resources", reason: e.to_string() })?;
    let m = manager(id, cgroup)?;
    m.apply(&ControllerOpt {
        resources: &resources,
        disable_oom_killer: false,
        oom_score_adj: None,
        freezer_state: None,
    })
    .map_err(|e| ZoneError::Runtime { id: id.to_string(), op: "apply caps", reason: e.to_string() })
}

/// Pids in the zone's cgroup (empty when it does not exist).
pub fn pids(id: &str, cgroup: &str) -> Vec<i32> {
    manager(id, cgroup)
        .ok()
        .and_then(|m| m.get_all_pids().ok())
        .unwrap_or_default()
        .iter()
        .map(|p| p.as_raw())
        .collect()
}

/// Kills what is left in the zone's cgroup and removes it, in every hierarchy; a cgroup that
/// does not exist is fine.
pub fn remove(id: &str, cgroup: &str) -> Result<()> {
    for attempt in 0..50 {
        let left = pids(id, cgroup);
        for pid in &left {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGKILL);
        }
        let m = manager(id, cgroup)?;
        match m.remove() {
            Ok(()) => return Ok(()),
            Err(e) if attempt == 49 => {
                return Err(ZoneError::Runtime { id: id.to_string(), op: "remove cgroup", reason: e.to_string() });
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
    Ok(())
}
