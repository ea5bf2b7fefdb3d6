//! A VM's NICs: checked at create and update, plugged at boot, unplugged when the zone
//! stops, changed live by `update`.

use crate::{Result, VmError, Vmadm};
use hull_net::{Net, Nic, NicProblem, ns};
use hull_storage::Node;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

pub(crate) fn bad_nics(vm: &str, problems: Vec<NicProblem>) -> VmError {
    VmError::Nics { vm: vm.to_string(), problems: problems.iter().map(ToString::to_string).collect() }
}

/// Where a VM's network namespace is kept while it runs.
pub fn netns_path(node: &Node, uuid: &str) -> PathBuf {
    hull_net::vnic::netns_dir(&node.var_dir()).join(uuid)
}

/// Where a zone's user namespace is kept while it runs (made with its network namespace).
pub fn userns_path(node: &Node, uuid: &str) -> PathBuf {
    node.var_dir().join("userns").join(uuid)
}

/// The node's network, as its config now says.
pub fn net(node: &Node) -> Result<Net> {
    Ok(Net::new(node.prefix(), node.load_config()?))
}

/// Unplugs a VM's NICs and removes its namespace; what is already gone is fine. Used by
/// zoneadmd when a zone stops, and by every path that removes a zone.
pub fn down(node: &Node, uuid: &str) -> Result<()> {
    let _lock = net_lock(node)?;
    let net = net(node)?;
    ns::remove(&netns_path(node, uuid))?;
    ns::remove(&userns_path(node, uuid))?;
    net.unplug_all(uuid)?;
    Ok(())
}

/// One network change at a time on a node: switches are shared between VMs, and two first
/// NICs on a tag must not both make its switch, nor two first VNICs the nftables table.
fn net_lock(node: &Node) -> Result<hull_storage::lock::LockGuard> {
    Ok(hull_storage::lock::lock(&node.lock_path("net"))?)
}

fn nics_of(cfg: &Map<String, Value>) -> Vec<Value> {
    cfg.get("nics").and_then(Value::as_array).cloned().unwrap_or_default()
}

/// A config's NICs in the typed model; one that does not fit names its field.
fn typed_nics(uuid: &str, nics: &[Value]) -> Result<Vec<hull_spec::vm::model::Nic>> {
    hull_spec::vm::model::Nic::from_values(nics)
        .map_err(|e| bad_nics(uuid, vec![NicProblem { field: e.path, reason: e.reason }]))
}

/// The NICs of a stored config, read against the node.
fn parsed_nics(uuid: &str, cfg: &Map<String, Value>, node_cfg: &hull_spec::NodeConfig) -> Result<Vec<Nic>> {
    hull_net::nic::parse_all(&typed_nics(uuid, &nics_of(cfg))?, node_cfg).map_err(|p| bad_nics(uuid, p))
}

fn routes_of(cfg: &Map<String, Value>) -> BTreeMap<String, String> {
    cfg.get("routes")
        .and_then(Value::as_object)
        .map(|o| o.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

impl Vmadm {
    /// Fills in each NIC's interface and MAC and checks them all against the node.
    /// Checks the NICs `cfg` gives the VM, of which `added` are new (all of them at create)
    /// and `updated` the payload's changes to others, and fills in what SmartOS fills in (interface, MAC, primary).
    pub(crate) fn check_nics(
        &self,
        uuid: &str,
        cfg: &mut Map<String, Value>,
        added: Option<&[Value]>,
        updated: &[Value],
    ) -> Result<Vec<Nic>> {
        let mut nics = nics_of(cfg);
        if nics.is_empty() {
            return Ok(Vec::new());
        }
        hull_spec::vm::nics::fill_vrrp_macs(&mut nics);
        let model_required = hull_spec::Brand::of(cfg) == hull_spec::Brand::Kvm;
        let driver = cfg.get("nic_driver").and_then(Value::as_str);
        let mut new = added.map(<[Value]>::to_vec).unwrap_or_else(|| nics.clone());
        hull_spec::vm::nics::fill_vrrp_macs(&mut new);
        let problems = hull_spec::vm::nics::check(&nics, &new, updated, model_required, driver);
        if !problems.is_empty() {
            return Err(VmError::Nics { vm: uuid.into(), problems });
        }
        hull_net::nic::assign(&mut nics, &[]);
        let node_cfg = self.node.load_config()?;
        let parsed = hull_net::nic::parse_all(&typed_nics(uuid, &nics)?, &node_cfg).map_err(|p| bad_nics(uuid, p))?;
        let clashes = hull_net::nic::conflicts(&parsed, &self.others_nics(uuid, &node_cfg, false));
        if !clashes.is_empty() {
            return Err(bad_nics(uuid, clashes));
        }
        cfg.insert("nics".into(), Value::Array(nics));
        check_routes(uuid, cfg)?;
        Ok(parsed)
    }

    /// The NICs of every other VM (only the running ones with `running`), each with its
    /// VM's uuid. A VM whose config cannot be read has none to clash with.
    fn others_nics(&self, uuid: &str, node_cfg: &hull_spec::NodeConfig, running: bool) -> Vec<(String, Nic)> {
        let mut out = Vec::new();
        for other in self.uuids().unwrap_or_default().into_iter().filter(|u| u != uuid) {
            let Ok(cfg) = self.load(&other) else { continue };
            if running && !self.state(&other, &cfg).state.is_running() {
                continue;
            }
            if let Ok(nics) = parsed_nics(&other, &cfg, node_cfg) {
                out.extend(nics.into_iter().map(|n| (other.clone(), n)));
            }
        }
        out
    }

    /// Makes the zone's namespace and plugs every NIC into it; returns the namespace.
    /// Makes the VM's network namespace with its NICs; with `idmap`, owned by a user
    /// namespace of the zone's made with it (the zone's ids 0..SIZE are the host's from
    /// `base`).
    pub(crate) fn net_up(&self, uuid: &str, cfg: &Map<String, Value>, idmap: Option<u32>) -> Result<PathBuf> {
        let path = netns_path(&self.node, uuid);
        let r = (|| {
            let _lock = net_lock(&self.node)?;
            let net = net(&self.node)?;
            let nics = parsed_nics(uuid, cfg, &net.cfg)?;
            // Checked again under the lock, against the VMs that run: two creates at once
            // cannot both plug the same MAC or address.
            let clashes = hull_net::nic::conflicts(&nics, &self.others_nics(uuid, &net.cfg, true));
            if !clashes.is_empty() {
                return Err(bad_nics(uuid, clashes));
            }
            let userns = userns_path(&self.node, uuid);
            self.host.net_plug(&crate::host::NetPlan {
                uuid,
                netns: &path,
                userns: idmap.map(|base| (userns.as_path(), base)),
                nics: &nics,
                // A KVM guest sets its own addresses and routes.
                guest: hull_spec::Brand::of(cfg).is_hvm(),
                routes: &routes_of(cfg),
            })?;
            Ok(path.clone())
        })();
        // After the closure: its lock is released, and down takes it again.
        if r.is_err() {
            let _ = self.host.net_down(uuid);
        }
        r
    }

    /// Applies `nics` changes to a running VM: NICs in `before` and not `after` are
    /// unplugged, new ones plugged, changed ones changed.
    pub(crate) fn net_update(&self, uuid: &str, before: &[Value], after: &[Value]) -> Result<()> {
        let _lock = net_lock(&self.node)?;
        let net = net(&self.node)?;
        let old = hull_net::nic::parse_all(&typed_nics(uuid, before)?, &net.cfg).map_err(|p| bad_nics(uuid, p))?;
        let new = hull_net::nic::parse_all(&typed_nics(uuid, after)?, &net.cfg).map_err(|p| bad_nics(uuid, p))?;
        let path = netns_path(&self.node, uuid);
        for o in old.iter().filter(|o| !new.iter().any(|n| n.interface == o.interface)) {
            net.unplug(uuid, &o.interface)?;
        }
        for n in &new {
            match old.iter().find(|o| o.interface == n.interface) {
                None => {
                    net.plug(uuid, &path, n)?;
                }
                Some(o) if o != n => net.replug(uuid, &path, o, n)?,
                Some(_) => {}
            }
        }
        net.collect_switches()?;
        Ok(())
    }
}

fn check_routes(uuid: &str, cfg: &Map<String, Value>) -> Result<()> {
    for (dst, gw) in routes_of(cfg) {
        let dst_ok = dst.parse::<ipnet::IpNet>().is_ok() || dst.parse::<std::net::IpAddr>().is_ok();
        let gw_ok = gw.parse::<std::net::IpAddr>().is_ok()
            || hull_spec::vm::route_nic(&gw).is_some_and(|i| i < nics_of(cfg).len())
            || hull_spec::vm::route_mac(&gw).is_some_and(|m| {
                nics_of(cfg).iter().any(|n| {
                    n.get("mac").and_then(Value::as_str).and_then(hull_spec::vm::normal_mac).as_deref()
                        == Some(m.as_str())
                })
            });
        if !dst_ok || !gw_ok {
            return Err(bad_nics(
                uuid,
                vec![NicProblem { field: format!("routes.{dst}"), reason: format!("{dst} via {gw:?} is not a route") }],
            ));
        }
    }
    Ok(())
}
