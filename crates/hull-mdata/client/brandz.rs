//! libhull-brandz.so: `uname()` as an LX zone on SmartOS answers it, version
//! `BrandZ virtual linux`, for the programs that are given it with `LD_PRELOAD` (hull's
//! Debian images give it to cloud-init's units only, through `/.zonecontrol/cloud-init.env`).
//!
//! Why: cloud-init's SmartOS datasource takes a container for an LX zone only by that
//! version string, and refuses to read DMI in any container; Linux keeps the kernel's
//! version out of the UTS namespace, so a zone cannot be given it any other way.
//!
//! No standard library and no libc symbol but `__errno_location`: the library loads in any
//! image, whatever its libc's version. Every other field is the kernel's answer for the
//! zone's own UTS namespace (its hostname included).
#![no_std]

const VERSION: &[u8] = b"BrandZ virtual linux";
const FIELD: usize = 65;

unsafe extern "C" {
    fn __errno_location() -> *mut i32;
}

#[cfg(target_arch = "x86_64")]
unsafe fn sys_uname(buf: *mut u8) -> isize {
    let ret: isize;
    unsafe {
        core::arch::asm!("syscall", inlateout("rax") 63isize => ret, in("rdi") buf,
            lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

#[cfg(target_arch = "aarch64")]
unsafe fn sys_uname(buf: *mut u8) -> isize {
    let ret: isize;
    unsafe {
        core::arch::asm!("svc 0", in("x8") 160isize, inlateout("x0") buf as isize => ret, options(nostack));
    }
    ret
}

/// glibc's `uname(2)` wrapper, with the version field replaced.
///
/// # Safety
/// `buf` points to a `struct utsname` (six fields of 65 bytes), as for libc's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn uname(buf: *mut u8) -> i32 {
    let ret = unsafe { sys_uname(buf) };
    if ret < 0 {
        unsafe { *__errno_location() = -ret as i32 };
        return -1;
    }
    // sysname, nodename, release, version, machine, domainname.
    let version = unsafe { core::slice::from_raw_parts_mut(buf.add(3 * FIELD), FIELD) };
    version.fill(0);
    version[..VERSION.len()].copy_from_slice(VERSION);
    0
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
