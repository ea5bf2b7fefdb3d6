//! Guest images for KVM VMs: a kernel and a busybox initramfs on a disk that boots as any
//! PC disk does (MBR, a FAT partition, syslinux). The kernel comes from Debian's
//! linux-image-cloud-amd64 (extracted, not installed), with the modules its virtio NIC and
//! ACPI power button need; `.ci/deps` puts both in /var/cache/hull/guest.
//!
//! The guest's init loads the modules, sets `hull.ip=ADDR/LEN` from the kernel command line
//! on eth0 when it is there (or with `hull.dhcp` asks DHCP for it, as a cloud image would,
//! and prints `HULL-GUEST-DHCP ADDR/LEN ROUTER`; with `hull.mdata` reads `sdc:uuid` over its
//! second serial port and prints `HULL-GUEST-MDATA SUCCESS UUID` and its DMI product name),
//! prints `HULL-GUEST-UP` on the serial console, and powers off
//! when the power button is pressed.

use crate::{ImgError, Result};
use hull_exec::{CommandLine, tool};
use std::io::Write;
use std::path::Path;

pub const MARKER: &str = "HULL-GUEST-UP";

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for pass in 1 2 3; do for m in /lib/*.ko; do insmod $m 2>/dev/null; done; done
ip link set lo up
root=$(sed -n 's/.*hull.root=\([^ ]*\).*/\1/p' /proc/cmdline)
if [ -n "$root" ]; then
  mkdir -p /newroot
  for i in 1 2 3 4 5 6 7 8 9 10; do dev=$(findfs $root 2>/dev/null) && mount -t ext4 $dev /newroot && break; sleep 0.5; done
  echo HULL-GUEST-ROOT
  exec switch_root /newroot /sbin/init
fi
ip=$(sed -n 's/.*hull.ip=\([^ ]*\).*/\1/p' /proc/cmdline)
[ -n "$ip" ] && ip addr add $ip dev eth0 && ip link set eth0 up
if grep -q hull.dhcp /proc/cmdline; then
  printf '#!/bin/sh\n[ "$1" = bound ] || exit 0\nip addr add $ip/$mask dev $interface\n[ -n "$router" ] && ip route add default via ${router%%%% *}\necho HULL-GUEST-DHCP $ip/$mask $router\n' > /bin/dhcp.sh
  chmod +x /bin/dhcp.sh
  ip link set eth0 up
  udhcpc -i eth0 -n -q -t 10 -T 1 -s /bin/dhcp.sh
fi
if grep -q hull.mdata /proc/cmdline; then
  echo HULL-GUEST-DMI $(cat /sys/class/dmi/id/product_name 2>/dev/null)
  stty -F /dev/ttyS1 raw -echo 2>/dev/null
  exec 3<>/dev/ttyS1
  printf '\nGET sdc:uuid\n' >&3
  read -r junk <&3; read -r code <&3; read -r value <&3
  echo HULL-GUEST-MDATA $code $value
  exec 3>&-
fi
for e in /dev/input/event*; do (dd if=$e bs=24 count=1 >/dev/null 2>&1; echo HULL-GUEST-POWEROFF; poweroff -f) & done
# Up only once every reader has the device open: a button press before would be lost.
for i in 1 2 3 4 5 6 7 8 9 10; do [ "$(pidof dd | wc -w)" -ge "$(ls /dev/input/event* | wc -w)" ] && break; sleep 0.2; done
sleep 0.2
echo HULL-GUEST-UP
exec sh -c 'while true; do sleep 3600; done'
"#;

/// A cpio archive in the kernel's `newc` format.
struct Newc<W: Write> {
    out: W,
    ino: u32,
}

impl<W: Write> Newc<W> {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> std::io::Result<()> {
        self.ino += 1;
        let fields = [self.ino, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, 0, 0, name.len() as u32 + 1, 0];
        let mut head = String::from("070701");
        for f in fields {
            head.push_str(&format!("{f:08x}"));
        }
        self.out.write_all(head.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        let pad = |n: usize| (4 - n % 4) % 4;
        self.out.write_all(&[0; 3][..pad(110 + name.len() + 1)])?;
        self.out.write_all(data)?;
        self.out.write_all(&[0; 3][..pad(data.len())])
    }
}

/// The initramfs: busybox, the modules in `modules` (every `.ko`), and the init.
pub fn initramfs(modules: &Path, out: &Path) -> Result<()> {
    let busybox = tool("busybox");
    let bb = std::fs::read(&busybox).map_err(|e| ImgError::io("read", &busybox, e))?;
    let f = std::fs::File::create(out).map_err(|e| ImgError::io("create", out, e))?;
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    let mut c = Newc { out: gz, ino: 0 };
    let w = |e: std::io::Error| ImgError::io("write", out, e);
    for d in ["bin", "lib", "dev", "proc", "sys", "etc"] {
        c.entry(d, 0o040755, &[]).map_err(w)?;
    }
    c.entry("bin/busybox", 0o100755, &bb).map_err(w)?;
    c.entry("init", 0o100755, INIT.as_bytes()).map_err(w)?;
    let mut mods: Vec<_> = std::fs::read_dir(modules)
        .map_err(|e| ImgError::io("read", modules, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "ko"))
        .collect();
    mods.sort();
    for m in mods {
        let data = std::fs::read(&m).map_err(|e| ImgError::io("read", &m, e))?;
        let name = format!("lib/{}", m.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        c.entry(&name, 0o100644, &data).map_err(w)?;
    }
    c.entry("TRAILER!!!", 0, &[]).map_err(w)?;
    c.out.finish().map_err(w)?;
    Ok(())
}

const BOOT_MIB: u64 = 64;
const PART_START: u64 = 2048;
const MBR: &str = "/usr/lib/syslinux/mbr/mbr.bin";

/// A bootable raw disk at `out`: syslinux's MBR, a bootable FAT16 partition at 1 MiB with the
/// kernel, the initramfs and syslinux, and, given `root`, an ext4 partition labelled
/// `hullroot` holding it, which the initramfs mounts and switches to (its /sbin/init runs
/// the guest). No mount and no loop device: mkfs.fat, mke2fs -d, mtools and syslinux all
/// work on the image at an offset.
pub fn disk(kernel: &Path, modules: &Path, root: Option<&Path>, stage: &Path, out: &Path) -> Result<()> {
    for t in ["mkfs.fat", "mcopy", "syslinux"] {
        if !tool(t).is_absolute() {
            return Err(ImgError::Build(format!("{t} is missing (Debian: dosfstools, mtools, syslinux)")));
        }
    }
    let mbr = std::fs::read(MBR).map_err(|e| ImgError::io("read (Debian: syslinux-common)", Path::new(MBR), e))?;
    let initrd = stage.join("initrd.gz");
    initramfs(modules, &initrd)?;
    let cfg = stage.join("syslinux.cfg");
    let append = if root.is_some() { "console=ttyS0 hull.root=LABEL=hullroot" } else { "console=ttyS0 quiet" };
    std::fs::write(
        &cfg,
        format!("SERIAL 0 115200\nDEFAULT linux\nPROMPT 0\nTIMEOUT 0\nLABEL linux\n  KERNEL vmlinuz\n  INITRD initrd.gz\n  APPEND {append}\n"),
    )
    .map_err(|e| ImgError::io("write", &cfg, e))?;
    let boot_end = PART_START + (BOOT_MIB << 20) / 512;
    // The root partition: what the tree holds, half again, and 256 MiB to spare.
    let root_mib = match root {
        Some(r) => {
            let du = CommandLine::new(tool("du")).args(["-sm"]).arg(r).run()?;
            let used: u64 = du.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
            used * 3 / 2 + 256
        }
        None => 0,
    };
    let size = (boot_end * 512) + (root_mib << 20);
    let sectors = (boot_end - PART_START) as u32;
    let mut head = vec![0u8; 512];
    head[..440].copy_from_slice(&mbr[..440.min(mbr.len())]);
    // One partition: bootable, FAT16 (LBA), from sector 2048 to the end.
    head[446..454].copy_from_slice(&[0x80, 0xfe, 0xff, 0xff, 0x0e, 0xfe, 0xff, 0xff]);
    head[454..458].copy_from_slice(&(PART_START as u32).to_le_bytes());
    head[458..462].copy_from_slice(&sectors.to_le_bytes());
    if root.is_some() {
        // The root: Linux, from the boot partition's end to the disk's.
        head[462..470].copy_from_slice(&[0x00, 0xfe, 0xff, 0xff, 0x83, 0xfe, 0xff, 0xff]);
        head[470..474].copy_from_slice(&(boot_end as u32).to_le_bytes());
        head[474..478].copy_from_slice(&((root_mib << 20) / 512).to_le_bytes()[..4].try_into().unwrap_or([0; 4]));
    }
    head[510] = 0x55;
    head[511] = 0xaa;
    let mut f = std::fs::File::create(out).map_err(|e| ImgError::io("create", out, e))?;
    f.write_all(&head).map_err(|e| ImgError::io("write", out, e))?;
    f.set_len(size).map_err(|e| ImgError::io("size", out, e))?;
    drop(f);
    let kib = (BOOT_MIB << 20) / 1024;
    CommandLine::new(tool("mkfs.fat"))
        .args(["-F", "16", &format!("--offset={PART_START}")])
        .arg(out)
        .arg(kib.to_string())
        .run()?;
    let at = format!("{}@@{}", out.display(), PART_START * 512);
    for (src, name) in [(kernel, "vmlinuz"), (initrd.as_path(), "initrd.gz"), (cfg.as_path(), "syslinux.cfg")] {
        CommandLine::new(tool("mcopy")).args(["-o", "-i", &at]).arg(src).arg(format!("::{name}")).run()?;
    }
    CommandLine::new(tool("syslinux"))
        .args(["--offset", &(PART_START * 512).to_string(), "--install"])
        .arg(out)
        .run()?;
    if let Some(r) = root {
        CommandLine::new(tool("mkfs.ext4"))
            .args(["-q", "-F", "-L", "hullroot", "-d"])
            .arg(r)
            .args(["-E", &format!("offset={}", boot_end * 512)])
            .arg(out)
            .arg(format!("{root_mib}M"))
            .run()?;
    }
    Ok(())
}
