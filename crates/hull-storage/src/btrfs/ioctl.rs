//! The btrfs ioctls hull uses, as the kernel's `include/uapi/linux/btrfs.h` defines them.

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

const MAGIC: u8 = 0x94;
const SUBVOL_NAME_MAX: usize = 4039;
/// `BTRFS_SUBVOL_RDONLY`
pub const SUBVOL_RDONLY: u64 = 1 << 1;
/// `BTRFS_QGROUP_LIMIT_MAX_RFER`
const QGROUP_LIMIT_MAX_RFER: u64 = 1;

/// `struct btrfs_ioctl_vol_args`
#[repr(C)]
pub struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

/// `struct btrfs_ioctl_vol_args_v2`
#[repr(C)]
pub struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; 4040],
}

/// `struct btrfs_ioctl_timespec`
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Timespec {
    pub sec: u64,
    pub nsec: u32,
}

/// `struct btrfs_ioctl_get_subvol_info_args`
#[repr(C)]
pub struct SubvolInfo {
    pub treeid: u64,
    pub name: [u8; 256],
    pub parent_id: u64,
    pub dirid: u64,
    pub generation: u64,
    pub flags: u64,
    pub uuid: [u8; 16],
    pub parent_uuid: [u8; 16],
    pub received_uuid: [u8; 16],
    pub ctransid: u64,
    pub otransid: u64,
    pub stransid: u64,
    pub rtransid: u64,
    pub ctime: Timespec,
    pub otime: Timespec,
    pub stime: Timespec,
    pub rtime: Timespec,
    pub reserved: [u64; 8],
}

/// `struct btrfs_qgroup_limit`
#[repr(C)]
pub struct QgroupLimit {
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

/// `struct btrfs_ioctl_qgroup_limit_args`
#[repr(C)]
pub struct QgroupLimitArgs {
    qgroupid: u64,
    lim: QgroupLimit,
}

/// `struct btrfs_ioctl_quota_ctl_args`
#[repr(C)]
pub struct QuotaCtlArgs {
    cmd: u64,
    status: u64,
}

/// `struct btrfs_ioctl_fs_info_args`
#[repr(C)]
pub struct FsInfoArgs {
    max_id: u64,
    num_devices: u64,
    pub fsid: [u8; 16],
    nodesize: u32,
    sectorsize: u32,
    clone_alignment: u32,
    csum_type: u16,
    csum_size: u16,
    flags: u64,
    generation: u64,
    metadata_uuid: [u8; 16],
    reserved: [u8; 944],
}

/// `BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA` (Linux 6.7)
pub const QUOTA_CTL_ENABLE_SIMPLE: u64 = 4;

nix::ioctl_write_ptr!(subvol_create, MAGIC, 14, VolArgs);
nix::ioctl_read!(fs_info_raw, MAGIC, 31, FsInfoArgs);
nix::ioctl_readwrite!(quota_ctl_raw, MAGIC, 40, QuotaCtlArgs);
nix::ioctl_write_ptr!(snap_destroy, MAGIC, 15, VolArgs);
nix::ioctl_write_ptr!(snap_create_v2, MAGIC, 23, VolArgsV2);
nix::ioctl_read!(qgroup_limit, MAGIC, 43, QgroupLimitArgs);
nix::ioctl_read!(get_subvol_info, MAGIC, 60, SubvolInfo);

const _: () = assert!(std::mem::size_of::<VolArgs>() == 4096);
const _: () = assert!(std::mem::size_of::<VolArgsV2>() == 4096);
const _: () = assert!(std::mem::size_of::<SubvolInfo>() == 504);
const _: () = assert!(std::mem::size_of::<FsInfoArgs>() == 1024);

pub fn open_dir(path: &Path) -> nix::Result<OwnedFd> {
    open(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
}

fn copy_name(dst: &mut [u8], name: &str) -> nix::Result<()> {
    let bytes = name.as_bytes();
    if bytes.len() > SUBVOL_NAME_MAX.min(dst.len() - 1) || bytes.contains(&0) || bytes.contains(&b'/') {
        return Err(nix::Error::EINVAL);
    }
    dst[..bytes.len()].copy_from_slice(bytes);
    Ok(())
}

/// Creates subvolume `name` in directory `parent`.
pub fn create_subvolume(parent: &OwnedFd, name: &str) -> nix::Result<()> {
    let mut args = VolArgs { fd: 0, name: [0; 4088] };
    copy_name(&mut args.name, name)?;
    // SAFETY: `args` is a properly sized, initialised btrfs_ioctl_vol_args that outlives the call.
    unsafe { subvol_create(parent.as_raw_fd(), &args) }.map(drop)
}

/// Snapshots subvolume `source` as `name` in directory `parent`.
pub fn snapshot(source: &OwnedFd, parent: &OwnedFd, name: &str, readonly: bool) -> nix::Result<()> {
    let mut args = VolArgsV2 {
        fd: i64::from(source.as_raw_fd()),
        transid: 0,
        flags: if readonly { SUBVOL_RDONLY } else { 0 },
        unused: [0; 4],
        name: [0; 4040],
    };
    copy_name(&mut args.name, name)?;
    // SAFETY: `args` is a properly sized, initialised btrfs_ioctl_vol_args_v2; `source` is open.
    unsafe { snap_create_v2(parent.as_raw_fd(), &args) }.map(drop)
}

/// Deletes subvolume `name` in directory `parent`.
pub fn destroy_subvolume(parent: &OwnedFd, name: &str) -> nix::Result<()> {
    let mut args = VolArgs { fd: 0, name: [0; 4088] };
    copy_name(&mut args.name, name)?;
    // SAFETY: `args` is a properly sized, initialised btrfs_ioctl_vol_args that outlives the call.
    unsafe { snap_destroy(parent.as_raw_fd(), &args) }.map(drop)
}

/// Reads the subvolume that `fd` is the root of.
pub fn subvol_info(fd: &OwnedFd) -> nix::Result<SubvolInfo> {
    let mut info = std::mem::MaybeUninit::<SubvolInfo>::zeroed();
    // SAFETY: the kernel fills the whole struct; it is all-integer, so zeroed is valid too.
    unsafe {
        get_subvol_info(fd.as_raw_fd(), info.as_mut_ptr())?;
        Ok(info.assume_init())
    }
}

/// Limits what qgroup 0/`treeid` references to `max` bytes, or lifts the limit.
pub fn set_referenced_limit(fs: &OwnedFd, treeid: u64, max: Option<u64>) -> nix::Result<()> {
    let mut args = QgroupLimitArgs {
        qgroupid: treeid,
        lim: QgroupLimit {
            flags: QGROUP_LIMIT_MAX_RFER,
            max_rfer: max.unwrap_or(u64::MAX),
            max_excl: 0,
            rsv_rfer: 0,
            rsv_excl: 0,
        },
    };
    // SAFETY: `args` is a properly sized btrfs_ioctl_qgroup_limit_args that outlives the call.
    unsafe { qgroup_limit(fs.as_raw_fd(), &mut args) }.map(drop)
}

/// Runs a quota control command (`BTRFS_QUOTA_CTL_*`) on the filesystem of `fs`.
pub fn quota_ctl(fs: &OwnedFd, cmd: u64) -> nix::Result<()> {
    let mut args = QuotaCtlArgs { cmd, status: 0 };
    // SAFETY: `args` is a properly sized btrfs_ioctl_quota_ctl_args that outlives the call.
    unsafe { quota_ctl_raw(fs.as_raw_fd(), &mut args) }.map(drop)
}

/// The filesystem's uuid, as `/sys/fs/btrfs/<fsid>` names it.
pub fn fsid(fs: &OwnedFd) -> nix::Result<[u8; 16]> {
    let mut info = std::mem::MaybeUninit::<FsInfoArgs>::zeroed();
    // SAFETY: the kernel fills the struct; it is all-integer, so zeroed is valid too.
    unsafe {
        fs_info_raw(fs.as_raw_fd(), info.as_mut_ptr())?;
        Ok(info.assume_init().fsid)
    }
}
