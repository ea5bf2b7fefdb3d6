//! The node's configuration, `$ROOT/etc/hull/node.json`.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// `$ROOT/etc/hull/node.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolConfig>,
    /// Nic tags by name (`nictagadm`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nic_tags: BTreeMap<String, NicTag>,
    /// Etherstubs (internal switches) by name (`dladm create-etherstub`).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub etherstubs: BTreeSet<String>,
    /// VXLAN overlays by name; a nic tag `NAME/VNI` puts a NIC on one of their networks.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overlays: BTreeMap<String, Overlay>,
    /// Routed networks by name (`hull network`): a subnet whose gateway is the host.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, Network>,
}

/// A network hull routes for: the host holds `gateway` on the switch of `nic_tag` (a local
/// nic tag of the network's name, or an overlay's `NAME/VNI`), masquerades the subnet out of
/// the host when `nat` is set, and answers DHCP on its NICs when `dhcp` gives a range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// What a NIC names to be on this network.
    pub nic_tag: String,
    pub subnet: ipnet::Ipv4Net,
    pub gateway: std::net::Ipv4Addr,
    /// Masquerade the subnet's traffic out of the host.
    #[serde(default)]
    pub nat: bool,
    /// Masquerade only out of this link (default: out of any link but the subnet's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
    /// Addresses handed out to `dhcp` NICs, first and last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<(std::net::Ipv4Addr, std::net::Ipv4Addr)>,
    /// DNS resolvers given with each lease (default: the gateway's own resolvers are not
    /// assumed; none are given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolvers: Vec<std::net::IpAddr>,
    /// An IPv6 /64 for SLAAC: the host advertises it (router advertisements) from
    /// `gateway6` and masquerades it with the IPv4 subnet when `nat` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<ipnet::Ipv6Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<std::net::Ipv6Addr>,
}

/// A nic tag: the name a VM's NIC asks for, and the host link it stands for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicTag {
    /// The host uplink (a link name). None for a local tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
    /// A local tag: its NICs meet on an etherstub of the same name, nowhere else.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local: bool,
    /// The largest MTU its NICs may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// A VXLAN overlay: where this node's end is, and who else carries each network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    /// This node's underlay address (the VXLAN socket's source).
    pub underlay: std::net::Ipv4Addr,
    /// The VXLAN UDP port.
    #[serde(default = "default_vxlan_port")]
    pub port: u16,
    /// The underlay's MTU; tenant NICs get 50 bytes less.
    #[serde(default = "default_underlay_mtu")]
    pub mtu: u32,
    /// Per VNI (as a decimal string), the underlay addresses of the other nodes on it.
    #[serde(default)]
    pub peers: BTreeMap<String, Vec<std::net::IpAddr>>,
}

fn default_vxlan_port() -> u16 {
    4789
}

fn default_underlay_mtu() -> u32 {
    1500
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolBackend {
    Btrfs,
    Zfs,
    Dir,
}

impl std::fmt::Display for PoolBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PoolBackend::Btrfs => "btrfs",
            PoolBackend::Zfs => "zfs",
            PoolBackend::Dir => "dir",
        })
    }
}

/// Where the pool lives and how to bring it back after a reboot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub backend: PoolBackend,
    /// The pool's name as datasets carry it (`zones`).
    pub name: String,
    /// A loop-backed pool's file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// A pool made on a block device the operator named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<PathBuf>,
    /// A dir-backend pool's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// The zfs backend's zpool (or parent dataset) that stands for `zones`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zpool: Option<String>,
    /// Size given at creation, in bytes (loop files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}
