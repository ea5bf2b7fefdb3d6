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
    /// (brands, actions) pairs. None for what is shown and never set (`state`, `type`).
    pub allowed: &'static [(u8, u8)],
    /// Brands whose create must carry it.
    pub required: u8,
    pub apply: Apply,
    /// Like SmartOS's `check_as`: validate members as this property's (`add_nics` as `nics`).
    pub check_as: Option<&'static str>,
    /// What create fills in where the payload is silent: (brands, the value as JSON).
    pub default: Option<(u8, &'static str)>,
    /// Its place among `vmadm list`'s default columns (1 first); 0 when it is not one.
    pub list: u8,
    /// One line for people.
    pub doc: &'static str,
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

/// `Some` of what a row gives, `None` when it gives nothing.
macro_rules! opt {
    () => {
        None
    };
    ($x:expr) => {
        Some($x)
    };
}

/// What a row gives, or 0.
macro_rules! or0 {
    () => {
        0
    };
    ($x:expr) => {
        $x
    };
}

macro_rules! p {
    ($name:literal, $ty:expr, [$(($b:expr, $a:expr)),*], $req:expr, $apply:ident
     $(, check $check:literal)? $(, default ($db:expr, $dv:literal))? $(, list $l:literal)?, $doc:literal) => {
        Prop {
            name: $name,
            ty: $ty,
            allowed: &[$(($b, $a)),*],
            required: $req,
            apply: Apply::$apply,
            check_as: opt!($($check)?),
            default: opt!($(($db, $dv))?),
            list: or0!($($l)?),
            doc: $doc,
        }
    };
}

use PropType::{Boolean as BOOL, FlatObject as FLAT, List as LIST, ObjectArray as OBJS, String as STR, Uuid as UUID};

/// Every payload property, sorted by name. One row a property, laid out by hand.
#[rustfmt::skip]
pub static PROPS: &[Prop] = &[
    p!("add_disks", OBJS, [(HW, U)], 0, Reboot, check "disks",
       "Disks to add (update): each as a member of `disks`."),
    p!("add_filesystems", OBJS, [(OS | K, U)], 0, NotYet, check "filesystems",
       "Filesystems to add (update): each as a member of `filesystems`."),
    // NIC changes are live on a running zone; a KVM guest's wait for its next boot (update.rs).
    p!("add_nics", OBJS, [(ALL, U)], 0, Live, check "nics",
       "NICs to add (update): each as a member of `nics`."),
    p!("add_pci_devices", OBJS, [(B, CRU)], 0, NotYet, check "pci_devices",
       "PCI devices to pass through to add (update)."),
    p!("alias", STR, [(ALL, CRU)], 0, Live, list 5,
       "A name for people; not unique. Also the hostname when `hostname` is unset and it is a valid one."),
    p!("archive_on_delete", BOOL, [(ALL, CRU)], 0, Live,
       "Keep the VM's config and logs when it is deleted (stored)."),
    p!("autoboot", BOOL, [(ALL, CRU)], 0, Live, default (ALL, "true"),
       "Boot the VM with the node, and at create. `stop` sets it false, `start` true."),
    p!("bhyve_extra_opts", STR, [(B, CRU)], 0, NotYet,
       "Extra bhyve options (stored)."),
    p!("billing_id", STR, [(ALL, CRU)], 0, Live, default (OS, "\"00000000-0000-0000-0000-000000000000\""),
       "The package or billing uuid the orchestrator charges against."),
    p!("boot", STR, [(HW, CRU)], 0, NotYet,
       "The guest's boot order, as `order=cd` (stored)."),
    p!("bootrom", STR, [(B, CRU)], 0, NotYet,
       "bhyve's firmware: `bios` or `uefi` (stored)."),
    p!("brand", STR, [(ALL, CR)], J | M | L | K, Live,
       "What kind of VM: `joyent`, `joyent-minimal`, `lx` (zones), `kvm`, `bhyve` (qemu in a zone)."),
    p!("com1", STR, [(B, CRU)], 0, NotYet,
       "bhyve's first serial port (stored)."),
    p!("com2", STR, [(B, CRU)], 0, NotYet,
       "bhyve's second serial port (stored)."),
    p!("cpu_cap", int(0, 100_000), [(ALL, CRU)], 0, Live,
       "CPU cap in percent of one CPU (100 = one CPU); 0 removes the cap."),
    p!("cpu_shares", int(0, MAXI), [(ALL, CRU)], 0, Live, default (OS, "100"),
       "The VM's weight against others when CPUs are busy (cgroup CPU weight)."),
    p!("cpu_type", STR, [(K, CRU)], 0, NotYet,
       "The CPU model qemu shows the guest (`qemu64`, `host`)."),
    p!("create_only", BOOL, [(ALL, R)], 0, Live,
       "Receive-only: the VM came from `vmadm receive` and was not booted."),
    p!("create_timestamp", STR, [(ALL, R)], 0, Live,
       "When the VM was made, ISO 8601 UTC (set by hull)."),
    p!("customer_metadata", FLAT, [(ALL, CR)], 0, Live,
       "Key/value data for the guest (its metadata service's `GET`)."),
    p!("dataset_uuid", UUID, [(OS, CR)], 0, Live,
       "The zone's root dataset uuid (receive)."),
    p!("datasets", LIST, [(ALL, R)], 0, NotYet,
       "Datasets delegated to the zone (shown)."),
    p!("delegate_dataset", BOOL, [(OS, CR)], 0, NotYet,
       "Give the zone a dataset of its own to manage (stored)."),
    p!("disk_driver", STR, [(HW, CRU)], 0, NotYet,
       "The default `model` of the VM's disks."),
    p!("disks", OBJS, [(HW, CR)], 0, NotYet,
       "A KVM or bhyve VM's disks, the first bootable by default."),
    p!("disks.*.block_size", int(0, MAXI), [(HW, ADD)], 0, NotYet,
       "Block size of a blank disk, bytes."),
    p!("disks.*.boot", BOOL, [(HW, ADD | UPD)], 0, NotYet,
       "This disk is the one to boot from."),
    p!("disks.*.compression", STR, [(HW, ADD | UPD)], 0, NotYet,
       "The disk dataset's compression (stored)."),
    p!("disks.*.dangerous_allow_shrink", BOOL, [(B, UPD)], 0, NotYet,
       "Let `update_disks` make a disk smaller (data past the end is lost)."),
    p!("disks.*.guest_block_size", STR, [(B, ADD | UPD)], 0, NotYet,
       "The block size the guest sees (stored)."),
    p!("disks.*.image_name", STR, [(K, ADD | UPD)], 0, NotYet,
       "The name of the image the disk came from (shown)."),
    p!("disks.*.image_size", int(0, MAXI), [(HW, ADD)], 0, NotYet,
       "The image's size in MiB; must match the image's."),
    p!("disks.*.image_uuid", UUID, [(HW, ADD)], 0, NotYet,
       "Clone the disk from this zvol image."),
    p!("disks.*.media", STR, [(HW, ADD | UPD)], 0, NotYet,
       "`disk` (the default) or `cdrom`."),
    p!("disks.*.model", STR, [(HW, ADD | UPD)], 0, NotYet,
       "How the guest sees the disk: `virtio`, `ide`, `scsi`."),
    p!("disks.*.nocreate", BOOL, [(HW, ADD)], 0, NotYet,
       "Use an existing disk rather than make one."),
    p!("disks.*.notrim", BOOL, [(B, ADD | UPD)], 0, NotYet,
       "Do not pass the guest's TRIM to the disk (stored)."),
    p!("disks.*.path", STR, [(HW, ADD | UPD)], 0, NotYet,
       "The disk's file on the host (set by hull); a cdrom's image."),
    p!("disks.*.pci_slot", STR, [(B, ADD | UPD)], 0, NotYet,
       "The guest PCI slot of the disk (stored)."),
    p!("disks.*.refreservation", int(0, MAXI), [(HW, ADD | UPD)], 0, NotYet,
       "Space reserved for the disk, MiB (stored)."),
    p!("disks.*.size", int(0, MAXI), [(K, ADD), (B, ADD | UPD)], 0, NotYet,
       "A blank disk's size, MiB."),
    p!("disks.*.uuid", UUID, [(B, ADD | UPD)], 0, NotYet,
       "The disk's own uuid."),
    p!("disks.*.zfs_filesystem", STR, [(HW, R)], 0, NotYet,
       "The disk's dataset (shown)."),
    p!("disks.*.zpool", STR, [(HW, ADD)], 0, NotYet,
       "The pool the disk goes on."),
    p!("dns_domain", STR, [(OS, CRU)], 0, Reboot, default (OS, "\"local\""),
       "The zone's DNS search domain (`/etc/resolv.conf`)."),
    p!("do_not_inventory", BOOL, [(ALL, CRU)], 0, Live,
       "Hide the VM from the orchestrator's inventory."),
    p!("docker", BOOL, [(L | M, CRU)], 0, NotYet,
       "The zone runs a Docker image (stored)."),
    p!("filesystems", OBJS, [(OS, CR)], 0, NotYet,
       "Host directories or filesystems mounted into an OS zone."),
    p!("filesystems.*.options", LIST, [(OS, ADD | UPD)], 0, NotYet,
       "Mount options, as `ro,nodevice`."),
    p!("filesystems.*.raw", STR, [(OS, ADD | UPD)], 0, NotYet,
       "A raw device to mount (stored)."),
    p!("filesystems.*.source", STR, [(OS, ADD | UPD)], 0, NotYet,
       "What to mount: a host path."),
    p!("filesystems.*.target", STR, [(OS, ADD | UPD)], 0, NotYet,
       "Where in the zone."),
    p!("filesystems.*.type", STR, [(OS, ADD | UPD)], 0, NotYet,
       "The filesystem type (`lofs` binds a host directory)."),
    p!("firewall_enabled", BOOL, [(ALL, CRU)], 0, NotYet,
       "Apply the VM's firewall rules (stored)."),
    p!("flexible_disk_size", int(0, MAXI), [(B, CRU)], 0, NotYet,
       "bhyve: total MiB the VM's disks may share (stored)."),
    p!("fs_allowed", LIST, [(OS, CRU)], 0, NotYet,
       "Filesystem types the zone may mount (stored)."),
    p!("hostname", STR, [(ALL, CRU)], 0, Reboot,
       "The zone's hostname (`/etc/hostname`); the guest's for KVM."),
    p!("image_uuid", UUID, [(ALL, CR)], OS, Live,
       "The image an OS zone is cloned from."),
    p!("indestructible_delegated", BOOL, [(ALL, CRU)], 0, Live,
       "Refuse to delete the VM while set (its delegated dataset)."),
    p!("indestructible_zoneroot", BOOL, [(ALL, CRU)], 0, Live,
       "Refuse to delete the VM while set (its root)."),
    p!("init_name", STR, [(OS, CRU)], 0, Reboot,
       "The zone's init, a path inside the zone (`/sbin/init`)."),
    p!("internal_metadata", FLAT, [(ALL, CR)], 0, Live,
       "Key/value data for the orchestrator; read-only to the guest."),
    p!("internal_metadata_namespaces", LIST, [(ALL, CRU)], 0, Live,
       "Prefixes of `internal_metadata` keys the guest may read."),
    p!("kernel_version", STR, [(L, CRU)], L, Live,
       "The Linux kernel version an lx zone reports (`uname -r`)."),
    p!("limit_priv", LIST, [(ALL, CRU)], 0, NotYet, default (OS, "\"default\""),
       "The zone's privileges (`default`): mapped to capabilities (stored)."),
    p!("maintain_resolvers", BOOL, [(OS, CRU)], 0, Live,
       "Rewrite the zone's resolv.conf when `resolvers` change."),
    p!("max_locked_memory", int(0, MAX_MIB), [(ALL, CRU)], 0, Live,
       "Memory the zone may lock, MiB."),
    p!("max_lwps", int(1, MAX_PIDS), [(ALL, CRU)], 0, Live, default (OS, "2000"),
       "The most processes (threads) the zone may have (`pids.max`)."),
    p!("max_msg_ids", int(0, MAXI), [(ALL, CRU)], 0, NotYet, default (OS, "4096"),
       "System V message queues (stored)."),
    p!("max_physical_memory", int(0, MAX_MIB), [(ALL, CRU)], 0, Live, default (OS, "256"),
       "An OS zone's memory cap, MiB (`ram` for KVM)."),
    p!("max_sem_ids", int(0, MAXI), [(ALL, CRU)], 0, NotYet, default (OS, "4096"),
       "System V semaphore sets (stored)."),
    p!("max_shm_ids", int(0, MAXI), [(ALL, CRU)], 0, NotYet, default (OS, "4096"),
       "System V shared memory segments (stored)."),
    p!("max_shm_memory", int(0, MAXI), [(ALL, CRU)], 0, NotYet,
       "System V shared memory, MiB (stored)."),
    p!("max_swap", int(256, MAX_MIB), [(ALL, CRU)], 0, Live,
       "Memory plus swap, MiB; at least `max_physical_memory`."),
    p!("mdata_exec_timeout", int(0, MAXI), [(OS, C)], 0, NotYet,
       "Seconds the zone's mdata-exec may take at boot (stored)."),
    p!("nic_driver", STR, [(HW, CRU)], 0, NotYet,
       "The default `model` of the VM's NICs."),
    p!("nics", OBJS, [(ALL, CR)], 0, NotYet,
       "The VM's network interfaces."),
    p!("nics.*.allow_dhcp_spoofing", BOOL, [(ALL, ADD | UPD)], 0, NotYet,
       "Let the NIC act as a DHCP server."),
    p!("nics.*.allow_ip_spoofing", BOOL, [(ALL, ADD | UPD)], 0, NotYet,
       "Let the NIC send from addresses other than its own."),
    p!("nics.*.allow_mac_spoofing", BOOL, [(ALL, ADD | UPD)], 0, NotYet,
       "Let the NIC send from MACs other than its own."),
    p!("nics.*.allow_restricted_traffic", BOOL, [(ALL, ADD | UPD)], 0, NotYet,
       "Let the NIC send other ethertypes than IP and ARP."),
    p!("nics.*.allow_unfiltered_promisc", BOOL, [(HW, ADD | UPD)], 0, NotYet,
       "Let the guest see every frame on the link (stored)."),
    p!("nics.*.allowed_dhcp_cids", LIST, [(J | M | L | K, ADD | UPD)], 0, NotYet,
       "DHCP client ids the NIC may use."),
    p!("nics.*.allowed_ips", LIST, [(ALL, ADD | UPD)], 0, NotYet,
       "Other addresses the NIC may send from."),
    p!("nics.*.blocked_outgoing_ports", LIST, [(ALL, ADD | UPD)], 0, NotYet,
       "TCP/UDP ports the NIC may not send to."),
    p!("nics.*.dhcp_server", BOOL, [(ALL, ADD | UPD)], 0, NotYet,
       "The zone serves DHCP on this NIC."),
    p!("nics.*.gateway", STR, [(ALL, ADD | UPD)], 0, NotYet,
       "The default gateway (old form of `gateways`)."),
    p!("nics.*.gateways", LIST, [(ALL, ADD | UPD)], 0, NotYet,
       "Default gateways."),
    p!("nics.*.interface", STR, [(ALL, ADD | UPD)], 0, NotYet,
       "The NIC's name in the VM (`net0`), set by hull."),
    p!("nics.*.ip", STR, [(ALL, ADD | UPD)], 0, NotYet,
       "An IPv4 address, `dhcp`, or `addrconf` (old form of `ips`)."),
    p!("nics.*.ips", LIST, [(ALL, ADD | UPD)], 0, NotYet,
       "Addresses with prefix length (`10.0.0.5/24`), `dhcp`, `addrconf`."),
    p!("nics.*.mac", STR, [(ALL, ADD | UPD)], 0, NotYet,
       "The NIC's MAC; hull picks one when unset."),
    p!("nics.*.maxbw", STR, [(ALL, ADD | UPD)], 0, NotYet,
       "Bandwidth cap, as `100M` (stored)."),
    p!("nics.*.model", STR, [(HW, ADD | UPD)], 0, NotYet,
       "How a KVM guest sees the NIC: `virtio`, `e1000`, `rtl8139`."),
    p!("nics.*.mtu", int(576, 9000), [(ALL, ADD | UPD)], 0, NotYet,
       "The NIC's MTU."),
    p!("nics.*.netmask", STR, [(ALL, ADD | UPD)], 0, NotYet,
       "The netmask of `ip`."),
    p!("nics.*.network_uuid", UUID, [(ALL, ADD | UPD)], 0, NotYet,
       "The orchestrator's network uuid."),
    p!("nics.*.nic_tag", STR, [(ALL, ADD | UPD)], 0, NotYet,
       "The node network the NIC is on (a nic tag or etherstub)."),
    p!("nics.*.primary", BOOL, [(ALL, ADD | UPD)], 0, NotYet,
       "The NIC whose gateway is the default route; one only."),
    p!("nics.*.vlan_id", int(0, 4095), [(ALL, ADD | UPD)], 0, NotYet,
       "The VLAN the NIC is on (0: none)."),
    p!("nics.*.vrrp_primary_ip", STR, [(ALL, ADD | UPD)], 0, NotYet,
       "The address a VRRP NIC sends from."),
    p!("nics.*.vrrp_vrid", int(0, 255), [(ALL, ADD | UPD)], 0, NotYet,
       "VRRP router id: the NIC's MAC is VRRP's for it."),
    p!("nowait", BOOL, [(OS, CR)], 0, Live,
       "Return from create before the zone has booted fully (stored)."),
    p!("owner_uuid", STR, [(ALL, CRU)], 0, Live, default (OS, "\"00000000-0000-0000-0000-000000000000\""),
       "The owner (customer) uuid."),
    p!("package_name", STR, [(J | M | L | K, CRU)], 0, Live,
       "The orchestrator's package name."),
    p!("package_version", STR, [(J | M | L | K, CRU)], 0, Live,
       "The orchestrator's package version."),
    p!("pci_devices", OBJS, [(B, CRU)], 0, NotYet,
       "bhyve PCI devices passed through (stored)."),
    p!("pci_devices.*.path", STR, [(B, ADD | UPD)], 0, NotYet,
       "The device's host path (stored)."),
    p!("pci_devices.*.pci_slot", STR, [(B, ADD | UPD)], 0, NotYet,
       "The guest PCI slot (stored)."),
    // hull's own: an OS zone without a user namespace of its own (zone root is host root,
    // held by capabilities and seccomp only). Off by default; see docs/zones.md.
    p!("privileged", BOOL, [(OS, CRU)], 0, Reboot,
       "hull's own: an OS zone without a user namespace of its own (off by default)."),
    p!("qemu_extra_opts", STR, [(K, CRU)], 0, NotYet,
       "Extra qemu options, appended."),
    p!("qemu_opts", STR, [(K, CRU)], 0, NotYet,
       "qemu options, replacing hull's."),
    p!("quota", int(0, MAX_GIB), [(ALL, CRU)], 0, Live, default (ALL, "10"),
       "The VM's dataset quota, GiB; 0 removes it."),
    p!("ram", int(0, MAXI), [(ALL, CRU)], 0, NotYet, list 3,
       "A KVM guest's memory, MiB; for an OS zone, sets `max_physical_memory`."),
    p!("remove_customer_metadata", LIST, [(ALL, U)], 0, Live,
       "Keys to remove from `customer_metadata` (update)."),
    p!("remove_disks", LIST, [(HW, U)], 0, Reboot,
       "Disk paths to remove (update; the VM stopped): later disks move down a place."),
    p!("remove_filesystems", LIST, [(ALL, U)], 0, NotYet,
       "Filesystem targets to remove (update)."),
    p!("remove_internal_metadata", LIST, [(ALL, U)], 0, Live,
       "Keys to remove from `internal_metadata` (update)."),
    p!("remove_nics", LIST, [(ALL, U)], 0, Live,
       "MACs of NICs to remove (update)."),
    p!("remove_pci_devices", LIST, [(B, U)], 0, NotYet,
       "PCI devices to remove (update)."),
    p!("remove_routes", LIST, [(ALL, U)], 0, Reboot,
       "Route destinations to remove (update)."),
    p!("remove_tags", LIST, [(ALL, U)], 0, Live,
       "Tags to remove (update)."),
    p!("resolvers", LIST, [(ALL, CRU)], 0, Reboot, default (OS, "[]"),
       "DNS resolvers the zone uses (`/etc/resolv.conf`)."),
    p!("restart_init", BOOL, [(OS, CRU)], 0, Live,
       "Boot the zone again when its init dies (true by default)."),
    p!("routes", FLAT, [(ALL, CR)], 0, NotYet,
       "Static routes: destination → gateway, `nics[N]` or `macs[MAC]`."),
    p!("set_customer_metadata", FLAT, [(ALL, U)], 0, Live,
       "Keys to set in `customer_metadata` (update)."),
    p!("set_internal_metadata", FLAT, [(ALL, U)], 0, Live,
       "Keys to set in `internal_metadata` (update)."),
    p!("set_routes", FLAT, [(ALL, U)], 0, Reboot,
       "Routes to set (update)."),
    p!("set_tags", FLAT, [(ALL, U)], 0, Live,
       "Tags to set (update)."),
    p!("spice_opts", STR, [(K, CRU)], 0, NotYet,
       "SPICE options (stored)."),
    p!("spice_password", STR, [(K, CRU)], 0, NotYet,
       "SPICE password (stored)."),
    p!("spice_port", int(-1, MAXI), [(K, CRU)], 0, NotYet,
       "SPICE port; -1 for none (stored)."),
    p!("state", STR, [], 0, Live, list 4,
       "What the VM is doing: `running`, `stopped`, `failed` (shown, not set)."),
    p!("tags", FLAT, [(ALL, CR)], 0, Live,
       "Key/value tags for the orchestrator."),
    p!("tmpfs", int(0, MAX_MIB), [(OS, CRU)], 0, Reboot,
       "The size of the zone's `/tmp` (tmpfs), MiB; 0 for none."),
    p!("transition", FLAT, [(ALL, R)], 0, Live,
       "A state change under way (receive)."),
    p!("type", STR, [], 0, Live, list 2,
       "OS, LX, KVM or BHYVE, from the brand (shown by list, not set)."),
    p!("update_disks", OBJS, [(HW, U)], 0, Reboot, check "disks",
       "Changes to disks, by `path` (update)."),
    p!("update_filesystems", OBJS, [(OS | K, U)], 0, NotYet, check "filesystems",
       "Changes to filesystems, by `target` (update)."),
    p!("update_nics", OBJS, [(ALL, U)], 0, Live, check "nics",
       "Changes to NICs, by `mac` (update)."),
    p!("update_pci_devices", OBJS, [(B, U)], 0, NotYet, check "pci_devices",
       "Changes to PCI devices (update)."),
    p!("uuid", UUID, [(ALL, CR)], 0, Live, list 1,
       "The VM's uuid; hull makes one when unset."),
    p!("v", int(0, MAXI), [(ALL, R)], 0, Live,
       "The version of the config's format."),
    p!("vcpus", int(1, MAXI), [(HW, CRU)], 0, NotYet,
       "A KVM guest's virtual CPUs."),
    p!("vga", STR, [(K, CRU)], 0, NotYet,
       "The guest's display adapter (`std`, `cirrus`)."),
    p!("virtio_txburst", int(0, MAXI), [(K, CRU)], 0, NotYet,
       "virtio-net TX burst (stored)."),
    p!("virtio_txtimer", int(0, MAXI), [(K, CRU)], 0, NotYet,
       "virtio-net TX timer (stored)."),
    p!("vnc_password", STR, [(HW, CRU)], 0, NotYet,
       "The guest console's VNC password."),
    p!("vnc_port", int(-1, MAXI), [(HW, CRU)], 0, NotYet,
       "The guest console's VNC port; 0 for any, -1 for none."),
    p!("zfs_data_compression", STR, [(OS, CRU)], 0, NotYet,
       "The delegated dataset's compression (stored)."),
    p!("zfs_data_recsize", int(0, MAXI), [(OS, CRU)], 0, NotYet,
       "The delegated dataset's record size (stored)."),
    p!("zfs_filesystem", STR, [(ALL, R)], 0, Live,
       "The VM's dataset (shown)."),
    p!("zfs_filesystem_limit", int(0, MAXI), [(ALL, CRU)], 0, NotYet,
       "The most datasets the zone may make (stored)."),
    // Live where the host's IO scheduler honours cgroup weights; update says when it does not.
    p!("zfs_io_priority", int(0, MAXI), [(ALL, CRU)], 0, Live, default (OS, "100"),
       "The VM's disk IO weight against others."),
    p!("zfs_root_compression", STR, [(ALL, CRU)], 0, NotYet,
       "The root dataset's compression (stored)."),
    p!("zfs_root_recsize", int(0, MAXI), [(ALL, CRU)], 0, NotYet, default (OS, "131072"),
       "The root dataset's record size (stored)."),
    p!("zfs_snapshot_limit", int(0, MAXI), [(ALL, CRU)], 0, NotYet,
       "The most snapshots the zone may make (stored)."),
    p!("zfs_storage_pool_name", PropType::Zpool, [(J | M | L | K, CR)], 0, Live,
       "The pool the VM is made on (`zones`)."),
    p!("zlog_max_size", int(0, MAXI), [(OS, CRU)], 0, NotYet,
       "Console log size before it rotates (stored)."),
    p!("zone_dataset_uuid", UUID, [(HW, CR)], 0, NotYet,
       "A KVM VM's zone dataset uuid (receive)."),
    p!("zonename", STR, [(ALL, CR)], 0, Live,
       "The zone's name; its uuid."),
    p!("zpool", PropType::Zpool, [(ALL, CR)], 0, Live,
       "The pool the VM is on (`zones`)."),
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

/// `vmadm list`'s default columns, in order.
pub fn list_columns() -> Vec<&'static str> {
    let mut cols: Vec<&Prop> = PROPS.iter().filter(|p| p.list > 0).collect();
    cols.sort_by_key(|p| p.list);
    cols.iter().map(|p| p.name).collect()
}

/// What create fills in for `brand` where the payload is silent, as (name, value).
pub fn defaults(brand: u8) -> impl Iterator<Item = (&'static str, serde_json::Value)> {
    PROPS.iter().filter_map(move |p| {
        let (b, v) = p.default?;
        // The table's own text: a bad one is caught by its test, never by a user.
        (b & brand != 0).then(|| (p.name, serde_json::from_str(v).unwrap_or(serde_json::Value::Null)))
    })
}

/// docs/properties.md: every row of the table, for people. A test keeps the file equal to
/// this (`HULL_BLESS=1 cargo test -p hull-spec` rewrites it).
pub fn markdown() -> String {
    let mut s = String::from(
        "# VM properties\n\nGenerated from the property table (`crates/hull-spec/src/vm/props.rs`, after \
         smartos-live's proptable.js); do not edit by hand. Actions: c create, r receive, u update; \
         for members of `nics`, `disks`, `filesystems`: add, upd. When: when an update takes effect.\n\n\
         | property | type | brands | actions | when | default | meaning |\n|---|---|---|---|---|---|---|\n",
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
        let brands = if p.allowed.is_empty() { "(shown)".to_string() } else { p.brands_text() };
        let default = p.default.map(|(_, v)| format!("`{v}`")).unwrap_or_default();
        s.push_str(&format!(
            "| `{}` | {ty} | {brands} | {} | {when} | {default} | {} |\n",
            p.name,
            actions.join(" "),
            p.doc.replace('|', "\\|")
        ));
    }
    s
}

/// The JSON Schema (OpenAPI 3.0's dialect) of a payload for `action` (C for create, U for
/// update), from the table: every property some brand takes for it, each in its canonical
/// form (validation also takes `"512"` for 512, `"a,b"` for a list), with its doc; members of
/// `nics`, `disks` and `filesystems` (and their add_/update_ verbs) from their `X.*.Y` rows.
/// The API's OpenAPI document is built from it, so it cannot drift from what validates.
pub fn json_schema(action: u8) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let any_brand = ALL;
    let of = |ty: PropType| -> Value {
        match ty {
            PropType::Boolean => json!({"type": "boolean"}),
            PropType::Integer { min, max } => {
                let mut s = json!({"type": "integer", "minimum": min});
                if max != i64::MAX {
                    s["maximum"] = json!(max);
                }
                s
            }
            PropType::String | PropType::Zpool => json!({"type": "string"}),
            PropType::Uuid => json!({"type": "string", "format": "uuid"}),
            PropType::List => json!({"type": "array", "items": {"type": "string"}}),
            PropType::FlatObject => json!({"type": "object", "additionalProperties": true}),
            PropType::ObjectArray => json!({"type": "array", "items": {"type": "object"}}),
        }
    };
    // Members of a list, by the list's name: `nics.*.mac` gives nics' item property `mac`.
    let mut members: std::collections::BTreeMap<&str, Map<String, Value>> = Default::default();
    for p in PROPS.iter().filter(|p| p.allows(any_brand, action | ADD | UPD)) {
        if let Some((list, rest)) = p.name.split_once(".*.") {
            let mut s = of(p.ty);
            s["description"] = json!(p.doc);
            members.entry(list).or_default().insert(rest.to_string(), s);
        }
    }
    let mut props = Map::new();
    for p in PROPS.iter().filter(|p| !p.name.contains('*') && p.allows(any_brand, action)) {
        let mut s = of(p.ty);
        // add_nics and update_nics hold NICs; add_disks, update_disks disks, ...
        let list = p.check_as.unwrap_or(p.name);
        if p.ty == PropType::ObjectArray
            && let Some(m) = members.get(list)
        {
            s["items"] = json!({"type": "object", "properties": m, "additionalProperties": true});
        }
        s["description"] = json!(p.doc);
        props.insert(p.name.to_string(), s);
    }
    // Unknown properties are dropped with a warning, as vmadm does: allowed here.
    json!({"type": "object", "properties": props, "additionalProperties": true})
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
    fn defaults_and_columns_are_smartos_s() {
        for p in PROPS {
            if let Some((_, v)) = p.default {
                assert!(serde_json::from_str::<serde_json::Value>(v).is_ok(), "{}: default {v} is not JSON", p.name);
            }
            assert!(!p.doc.is_empty() && !p.doc.contains('\n'), "{}: one line of doc", p.name);
        }
        assert_eq!(list_columns(), ["uuid", "type", "ram", "state", "alias"]);
        let os: std::collections::BTreeMap<_, _> = defaults(J).collect();
        assert_eq!(os["max_lwps"], serde_json::json!(2000));
        assert_eq!(os["dns_domain"], serde_json::json!("local"));
        let kvm: std::collections::BTreeMap<_, _> = defaults(K).collect();
        assert_eq!(kvm.keys().copied().collect::<Vec<_>>(), ["autoboot", "quota"]);
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
