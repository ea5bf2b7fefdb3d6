//! The VM property table: one row per payload property, after SmartOS's proptable.js.
//!
//! Each row says which brands take the property with which actions, its type and range,
//! whether a create must have it, and what hull does when an update changes it. Validation,
//! `vmadm` list columns and the reference docs are all derived from this table.

/// Brands, as bits.
pub const J: u8 = 1; // joyent
pub const M: u8 = 2; // joyent-minimal
pub const L: u8 = 4; // lx
pub const K: u8 = 8; // kvm
pub const B: u8 = 16; // bhyve
pub const OS: u8 = J | M | L;
pub const ALL: u8 = OS | K | B;
pub const HW: u8 = K | B;

/// Actions, as bits. `ADD` and `UPD` are for the members of `nics`, `disks`, `filesystems`.
pub const C: u8 = 1;
pub const R: u8 = 2;
pub const U: u8 = 4;
pub const ADD: u8 = 8;
pub const UPD: u8 = 16;
pub const CR: u8 = C | R;
pub const CRU: u8 = C | R | U;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropType {
    Boolean,
    /// With inclusive bounds.
    Integer {
        min: i64,
        max: i64,
    },
    String,
    Uuid,
    /// An array of strings or numbers, or one comma-separated string.
    List,
    /// An object whose values are strings, numbers or booleans.
    FlatObject,
    ObjectArray,
    /// The name of the node's pool.
    Zpool,
}

impl PropType {
    /// The type, for people (docs/properties.md, vmadm.8).
    pub fn describe(self) -> String {
        match self {
            PropType::Boolean => "boolean".into(),
            PropType::Integer { min, max } if max == i64::MAX => format!("integer ≥ {min}"),
            PropType::Integer { min, max } => format!("integer {min} to {max}"),
            PropType::String => "string".into(),
            PropType::Uuid => "uuid".into(),
            PropType::List => "list".into(),
            PropType::FlatObject => "object".into(),
            PropType::ObjectArray => "array of objects".into(),
            PropType::Zpool => "zpool".into(),
        }
    }
}

/// What hull does when `vmadm update` changes a property of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    /// Applied to the running VM at once (a cgroup limit, a quota, a record).
    Live,
    /// Stored; takes effect when the VM next boots.
    Reboot,
    /// Stored and reported, but not yet acted on by hull (a later subsystem's).
    NotYet,
}

impl Apply {
    /// When an update takes effect, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Apply::Live => "live",
            Apply::Reboot => "next boot",
            Apply::NotYet => "stored only",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Prop {
    pub name: &'static str,
    pub ty: PropType,
    /// (brands, actions) pairs.
    pub allowed: &'static [(u8, u8)],
    /// Brands whose create must carry it.
    pub required: u8,
    pub apply: Apply,
    /// Like SmartOS's `check_as`: validate members as this property's (`add_nics` as `nics`).
    pub check_as: Option<&'static str>,
}

const fn int(min: i64, max: i64) -> PropType {
    PropType::Integer { min, max }
}

const MAXI: i64 = i64::MAX;
/// The most MiB a memory cap can say: the cgroup takes bytes as a signed 64-bit number.
const MAX_MIB: i64 = i64::MAX >> 20;
/// The most GiB a quota can say: bytes must fit in 64 bits (larger values used to wrap:
/// 17179869185 became 1 GiB).
const MAX_GIB: i64 = (u64::MAX >> 30) as i64;
/// The kernel's pid limit (`PID_MAX_LIMIT`): `pids.max` takes nothing above it.
const MAX_PIDS: i64 = 4_194_304;

macro_rules! p {
    ($name:literal, $ty:expr, [$(($b:expr, $a:expr)),*], $req:expr, $apply:ident) => {
        Prop { name: $name, ty: $ty, allowed: &[$(($b, $a)),*], required: $req, apply: Apply::$apply, check_as: None }
    };
    ($name:literal, $ty:expr, [$(($b:expr, $a:expr)),*], $req:expr, $apply:ident, $check:literal) => {
        Prop { name: $name, ty: $ty, allowed: &[$(($b, $a)),*], required: $req, apply: Apply::$apply, check_as: Some($check) }
    };
}

use PropType::{Boolean as BOOL, FlatObject as FLAT, List as LIST, ObjectArray as OBJS, String as STR, Uuid as UUID};

/// Every payload property, sorted by name.
pub static PROPS: &[Prop] = &[
    p!("add_disks", OBJS, [(HW, U)], 0, Reboot, "disks"),
    p!("add_filesystems", OBJS, [(OS | K, U)], 0, NotYet, "filesystems"),
    // NIC changes are live on a running zone; a KVM guest's wait for its next boot (update.rs).
    p!("add_nics", OBJS, [(ALL, U)], 0, Live, "nics"),
    p!("add_pci_devices", OBJS, [(B, CRU)], 0, NotYet, "pci_devices"),
    p!("alias", STR, [(ALL, CRU)], 0, Live),
    p!("archive_on_delete", BOOL, [(ALL, CRU)], 0, Live),
    p!("autoboot", BOOL, [(ALL, CRU)], 0, Live),
    p!("bhyve_extra_opts", STR, [(B, CRU)], 0, NotYet),
    p!("billing_id", STR, [(ALL, CRU)], 0, Live),
    p!("boot", STR, [(HW, CRU)], 0, NotYet),
    p!("bootrom", STR, [(B, CRU)], 0, NotYet),
    p!("brand", STR, [(ALL, CR)], J | M | L | K, Live),
    p!("com1", STR, [(B, CRU)], 0, NotYet),
    p!("com2", STR, [(B, CRU)], 0, NotYet),
    p!("cpu_cap", int(0, 100_000), [(ALL, CRU)], 0, Live),
    p!("cpu_shares", int(0, MAXI), [(ALL, CRU)], 0, Live),
    p!("cpu_type", STR, [(K, CRU)], 0, NotYet),
    p!("create_only", BOOL, [(ALL, R)], 0, Live),
    p!("create_timestamp", STR, [(ALL, R)], 0, Live),
    p!("customer_metadata", FLAT, [(ALL, CR)], 0, Live),
    p!("dataset_uuid", UUID, [(OS, CR)], 0, Live),
    p!("datasets", LIST, [(ALL, R)], 0, NotYet),
    p!("delegate_dataset", BOOL, [(OS, CR)], 0, NotYet),
    p!("disk_driver", STR, [(HW, CRU)], 0, NotYet),
    p!("disks", OBJS, [(HW, CR)], 0, NotYet),
    p!("disks.*.block_size", int(0, MAXI), [(HW, ADD)], 0, NotYet),
    p!("disks.*.boot", BOOL, [(HW, ADD | UPD)], 0, NotYet),
    p!("disks.*.compression", STR, [(HW, ADD | UPD)], 0, NotYet),
    p!("disks.*.dangerous_allow_shrink", BOOL, [(B, UPD)], 0, NotYet),
    p!("disks.*.guest_block_size", STR, [(B, ADD | UPD)], 0, NotYet),
    p!("disks.*.image_name", STR, [(K, ADD | UPD)], 0, NotYet),
    p!("disks.*.image_size", int(0, MAXI), [(HW, ADD)], 0, NotYet),
    p!("disks.*.image_uuid", UUID, [(HW, ADD)], 0, NotYet),
    p!("disks.*.media", STR, [(HW, ADD | UPD)], 0, NotYet),
    p!("disks.*.model", STR, [(HW, ADD | UPD)], 0, NotYet),
    p!("disks.*.nocreate", BOOL, [(HW, ADD)], 0, NotYet),
    p!("disks.*.notrim", BOOL, [(B, ADD | UPD)], 0, NotYet),
    p!("disks.*.path", STR, [(HW, ADD | UPD)], 0, NotYet),
    p!("disks.*.pci_slot", STR, [(B, ADD | UPD)], 0, NotYet),
    p!("disks.*.refreservation", int(0, MAXI), [(HW, ADD | UPD)], 0, NotYet),
    p!("disks.*.size", int(0, MAXI), [(K, ADD), (B, ADD | UPD)], 0, NotYet),
    p!("disks.*.uuid", UUID, [(B, ADD | UPD)], 0, NotYet),
    p!("disks.*.zfs_filesystem", STR, [(HW, R)], 0, NotYet),
    p!("disks.*.zpool", STR, [(HW, ADD)], 0, NotYet),
    p!("dns_domain", STR, [(OS, CRU)], 0, Reboot),
    p!("do_not_inventory", BOOL, [(ALL, CRU)], 0, Live),
    p!("docker", BOOL, [(L | M, CRU)], 0, NotYet),
    p!("filesystems", OBJS, [(OS, CR)], 0, NotYet),
    p!("filesystems.*.options", LIST, [(OS, ADD | UPD)], 0, NotYet),
    p!("filesystems.*.raw", STR, [(OS, ADD | UPD)], 0, NotYet),
    p!("filesystems.*.source", STR, [(OS, ADD | UPD)], 0, NotYet),
    p!("filesystems.*.target", STR, [(OS, ADD | UPD)], 0, NotYet),
    p!("filesystems.*.type", STR, [(OS, ADD | UPD)], 0, NotYet),
    p!("firewall_enabled", BOOL, [(ALL, CRU)], 0, NotYet),
    p!("flexible_disk_size", int(0, MAXI), [(B, CRU)], 0, NotYet),
    p!("fs_allowed", LIST, [(OS, CRU)], 0, NotYet),
    p!("hostname", STR, [(ALL, CRU)], 0, Reboot),
    p!("image_uuid", UUID, [(ALL, CR)], OS, Live),
    p!("indestructible_delegated", BOOL, [(ALL, CRU)], 0, Live),
    p!("indestructible_zoneroot", BOOL, [(ALL, CRU)], 0, Live),
    p!("init_name", STR, [(OS, CRU)], 0, Reboot),
    p!("internal_metadata", FLAT, [(ALL, CR)], 0, Live),
    p!("internal_metadata_namespaces", LIST, [(ALL, CRU)], 0, Live),
    p!("kernel_version", STR, [(L, CRU)], L, Live),
    p!("limit_priv", LIST, [(ALL, CRU)], 0, NotYet),
    p!("maintain_resolvers", BOOL, [(OS, CRU)], 0, Live),
    p!("max_locked_memory", int(0, MAX_MIB), [(ALL, CRU)], 0, Live),
    p!("max_lwps", int(1, MAX_PIDS), [(ALL, CRU)], 0, Live),
    p!("max_msg_ids", int(0, MAXI), [(ALL, CRU)], 0, NotYet),
    p!("max_physical_memory", int(0, MAX_MIB), [(ALL, CRU)], 0, Live),
    p!("max_sem_ids", int(0, MAXI), [(ALL, CRU)], 0, NotYet),
    p!("max_shm_ids", int(0, MAXI), [(ALL, CRU)], 0, NotYet),
    p!("max_shm_memory", int(0, MAXI), [(ALL, CRU)], 0, NotYet),
    p!("max_swap", int(256, MAX_MIB), [(ALL, CRU)], 0, Live),
    p!("mdata_exec_timeout", int(0, MAXI), [(OS, C)], 0, NotYet),
    p!("nic_driver", STR, [(HW, CRU)], 0, NotYet),
    p!("nics", OBJS, [(ALL, CR)], 0, NotYet),
    p!("nics.*.allow_dhcp_spoofing", BOOL, [(ALL, ADD | UPD)], 0, NotYet),
    p!("nics.*.allow_ip_spoofing", BOOL, [(ALL, ADD | UPD)], 0, NotYet),
    p!("nics.*.allow_mac_spoofing", BOOL, [(ALL, ADD | UPD)], 0, NotYet),
    p!("nics.*.allow_restricted_traffic", BOOL, [(ALL, ADD | UPD)], 0, NotYet),
    p!("nics.*.allow_unfiltered_promisc", BOOL, [(HW, ADD | UPD)], 0, NotYet),
    p!("nics.*.allowed_dhcp_cids", LIST, [(J | M | L | K, ADD | UPD)], 0, NotYet),
    p!("nics.*.allowed_ips", LIST, [(ALL, ADD | UPD)], 0, NotYet),
    p!("nics.*.blocked_outgoing_ports", LIST, [(ALL, ADD | UPD)], 0, NotYet),
    p!("nics.*.dhcp_server", BOOL, [(ALL, ADD | UPD)], 0, NotYet),
    p!("nics.*.gateway", STR, [(ALL, ADD | UPD)], 0, NotYet),
    p!("nics.*.gateways", LIST, [(ALL, ADD | UPD)], 0, NotYet),
    p!("nics.*.interface", STR, [(ALL, ADD | UPD)], 0, NotYet),
    p!("nics.*.ip", STR, [(ALL, ADD | UPD)], 0, NotYet),
    p!("nics.*.ips", LIST, [(ALL, ADD | UPD)], 0, NotYet),
    p!("nics.*.mac", STR, [(ALL, ADD | UPD)], 0, NotYet),
    p!("nics.*.maxbw", STR, [(ALL, ADD | UPD)], 0, NotYet),
    p!("nics.*.model", STR, [(HW, ADD | UPD)], 0, NotYet),
    p!("nics.*.mtu", int(576, 9000), [(ALL, ADD | UPD)], 0, NotYet),
    p!("nics.*.netmask", STR, [(ALL, ADD | UPD)], 0, NotYet),
    p!("nics.*.network_uuid", UUID, [(ALL, ADD | UPD)], 0, NotYet),
    p!("nics.*.nic_tag", STR, [(ALL, ADD | UPD)], 0, NotYet),
    p!("nics.*.primary", BOOL, [(ALL, ADD | UPD)], 0, NotYet),
    p!("nics.*.vlan_id", int(0, 4095), [(ALL, ADD | UPD)], 0, NotYet),
    p!("nics.*.vrrp_primary_ip", STR, [(ALL, ADD | UPD)], 0, NotYet),
    p!("nics.*.vrrp_vrid", int(0, 255), [(ALL, ADD | UPD)], 0, NotYet),
    p!("nowait", BOOL, [(OS, CR)], 0, Live),
    p!("owner_uuid", STR, [(ALL, CRU)], 0, Live),
    p!("package_name", STR, [(J | M | L | K, CRU)], 0, Live),
    p!("package_version", STR, [(J | M | L | K, CRU)], 0, Live),
    p!("pci_devices", OBJS, [(B, CRU)], 0, NotYet),
    p!("pci_devices.*.path", STR, [(B, ADD | UPD)], 0, NotYet),
    p!("pci_devices.*.pci_slot", STR, [(B, ADD | UPD)], 0, NotYet),
    // hull's own: an OS zone without a user namespace of its own (zone root is host root,
    // held by capabilities and seccomp only). Off by default; see docs/zones.md.
    p!("privileged", BOOL, [(OS, CRU)], 0, Reboot),
    p!("qemu_extra_opts", STR, [(K, CRU)], 0, NotYet),
    p!("qemu_opts", STR, [(K, CRU)], 0, NotYet),
    p!("quota", int(0, MAX_GIB), [(ALL, CRU)], 0, Live),
    p!("ram", int(0, MAXI), [(ALL, CRU)], 0, NotYet),
    p!("remove_customer_metadata", LIST, [(ALL, U)], 0, Live),
    p!("remove_disks", LIST, [(HW, U)], 0, NotYet),
    p!("remove_filesystems", LIST, [(ALL, U)], 0, NotYet),
    p!("remove_internal_metadata", LIST, [(ALL, U)], 0, Live),
    p!("remove_nics", LIST, [(ALL, U)], 0, Live),
    p!("remove_pci_devices", LIST, [(B, U)], 0, NotYet),
    p!("remove_routes", LIST, [(ALL, U)], 0, Reboot),
    p!("remove_tags", LIST, [(ALL, U)], 0, Live),
    p!("resolvers", LIST, [(ALL, CRU)], 0, Reboot),
    p!("restart_init", BOOL, [(OS, CRU)], 0, Live),
    p!("routes", FLAT, [(ALL, CR)], 0, NotYet),
    p!("set_customer_metadata", FLAT, [(ALL, U)], 0, Live),
    p!("set_internal_metadata", FLAT, [(ALL, U)], 0, Live),
    p!("set_routes", FLAT, [(ALL, U)], 0, Reboot),
    p!("set_tags", FLAT, [(ALL, U)], 0, Live),
    p!("spice_opts", STR, [(K, CRU)], 0, NotYet),
    p!("spice_password", STR, [(K, CRU)], 0, NotYet),
    p!("spice_port", int(-1, MAXI), [(K, CRU)], 0, NotYet),
    p!("tags", FLAT, [(ALL, CR)], 0, Live),
    p!("tmpfs", int(0, MAX_MIB), [(OS, CRU)], 0, Reboot),
    p!("transition", FLAT, [(ALL, R)], 0, Live),
    p!("update_disks", OBJS, [(HW, U)], 0, Reboot, "disks"),
    p!("update_filesystems", OBJS, [(OS | K, U)], 0, NotYet, "filesystems"),
    p!("update_nics", OBJS, [(ALL, U)], 0, Live, "nics"),
    p!("update_pci_devices", OBJS, [(B, U)], 0, NotYet, "pci_devices"),
    p!("uuid", UUID, [(ALL, CR)], 0, Live),
    p!("v", int(0, MAXI), [(ALL, R)], 0, Live),
    p!("vcpus", int(1, MAXI), [(HW, CRU)], 0, NotYet),
    p!("vga", STR, [(K, CRU)], 0, NotYet),
    p!("virtio_txburst", int(0, MAXI), [(K, CRU)], 0, NotYet),
    p!("virtio_txtimer", int(0, MAXI), [(K, CRU)], 0, NotYet),
    p!("vnc_password", STR, [(HW, CRU)], 0, NotYet),
    p!("vnc_port", int(-1, MAXI), [(HW, CRU)], 0, NotYet),
    p!("zfs_data_compression", STR, [(OS, CRU)], 0, NotYet),
    p!("zfs_data_recsize", int(0, MAXI), [(OS, CRU)], 0, NotYet),
    p!("zfs_filesystem", STR, [(ALL, R)], 0, Live),
    p!("zfs_filesystem_limit", int(0, MAXI), [(ALL, CRU)], 0, NotYet),
    // Live where the host's IO scheduler honours cgroup weights; update says when it does not.
    p!("zfs_io_priority", int(0, MAXI), [(ALL, CRU)], 0, Live),
    p!("zfs_root_compression", STR, [(ALL, CRU)], 0, NotYet),
    p!("zfs_root_recsize", int(0, MAXI), [(ALL, CRU)], 0, NotYet),
    p!("zfs_snapshot_limit", int(0, MAXI), [(ALL, CRU)], 0, NotYet),
    p!("zfs_storage_pool_name", PropType::Zpool, [(J | M | L | K, CR)], 0, Live),
    p!("zlog_max_size", int(0, MAXI), [(OS, CRU)], 0, NotYet),
    p!("zone_dataset_uuid", UUID, [(HW, CR)], 0, NotYet),
    p!("zonename", STR, [(ALL, CR)], 0, Live),
    p!("zpool", PropType::Zpool, [(ALL, CR)], 0, Live),
];

/// The row for a property name.
pub fn lookup(name: &str) -> Option<&'static Prop> {
    PROPS.binary_search_by(|p| p.name.cmp(name)).ok().map(|i| &PROPS[i])
}

impl Prop {
    /// Whether `brand` takes this property with `action`.
    pub fn allows(&self, brand: u8, action: u8) -> bool {
        self.allowed.iter().any(|(b, a)| b & brand != 0 && a & action != 0)
    }

    /// The brands that take it, for people: `joyent, joyent-minimal, lx`.
    pub fn brands_text(&self) -> String {
        let all = self.allowed.iter().fold(0, |acc, (b, _)| acc | b);
        [(J, "joyent"), (M, "joyent-minimal"), (L, "lx"), (K, "kvm"), (B, "bhyve")]
            .iter()
            .filter(|(bit, _)| all & bit != 0)
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// docs/properties.md: every row of the table, for people. A test keeps the file equal to
/// this (`HULL_BLESS=1 cargo test -p hull-spec` rewrites it).
pub fn markdown() -> String {
    let mut s = String::from(
        "# VM properties\n\nGenerated from the property table (`crates/hull-spec/src/vm/props.rs`, after \
         smartos-live's proptable.js); do not edit by hand. Actions: c create, r receive, u update; \
         for members of `nics`, `disks`, `filesystems`: add, upd. When: when an update takes effect.\n\n\
         | property | type | brands | actions | when |\n|---|---|---|---|---|\n",
    );
    for p in PROPS {
        let ty = p.ty.describe();
        let acts = p.allowed.iter().fold(0, |acc, (_, a)| acc | a);
        let actions: Vec<&str> = [(C, "c"), (R, "r"), (U, "u"), (ADD, "add"), (UPD, "upd")]
            .iter()
            .filter(|(bit, _)| acts & bit != 0)
            .map(|(_, n)| *n)
            .collect();
        let when = p.apply.describe();
        s.push_str(&format!("| `{}` | {ty} | {} | {} | {when} |\n", p.name, p.brands_text(), actions.join(" ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_properties_md_is_the_table() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/properties.md");
        let want = markdown();
        if std::env::var_os("HULL_BLESS").is_some() {
            std::fs::write(&path, &want).expect("write docs/properties.md");
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(have == want, "docs/properties.md drifted from the table: HULL_BLESS=1 cargo test -p hull-spec");
    }

    #[test]
    fn table_is_sorted_and_unique() {
        for w in PROPS.windows(2) {
            assert!(w[0].name < w[1].name, "{} before {}", w[0].name, w[1].name);
        }
        assert!(lookup("max_physical_memory").is_some());
        assert!(lookup("nics.*.vlan_id").is_some());
        assert!(lookup("colour").is_none());
    }
}
