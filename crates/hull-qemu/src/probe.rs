//! KVM or TCG? `/dev/kvm` can open, and even run a few instructions, on machines where a
//! real guest crawls or makes no progress at all (this development machine: a 16-byte
//! real-mode guest through the KVM API runs at once, a boot sector behind SeaBIOS takes
//! 2.8 s under KVM against 0.16 s under TCG, and a Linux kernel never boots). So the probe
//! boots the same boot sector under both accelerators, with qemu, and picks KVM only when
//! it finishes and is not slower than twice TCG's time.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The probe's finding, as the node records it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Probe {
    pub accel: Accel,
    pub reason: String,
    pub kvm_ms: Option<f64>,
    pub tcg_ms: Option<f64>,
}

pub const MARKER: &str = "HULL-BOOT-OK";

/// A boot sector: `xor ax, ax; mov ds, ax; cld; mov si, msg; mov dx, 0x3f8; next: lodsb;
/// test al, al; jz done; out dx, al; jmp next; done: cli; hlt; jmp done; msg: db
/// "HULL-BOOT-OK", 10, 0`, padded to 510 bytes and signed 55 AA.
pub fn boot_sector() -> Vec<u8> {
    let mut b = vec![
        0x31, 0xc0, 0x8e, 0xd8, 0xfc, 0xbe, 0x17, 0x7c, 0xba, 0xf8, 0x03, 0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb,
        0xf8, 0xfa, 0xf4, 0xeb, 0xfc,
    ];
    b.extend_from_slice(MARKER.as_bytes());
    b.extend_from_slice(b"\n\0");
    b.resize(510, 0);
    b.extend_from_slice(&[0x55, 0xaa]);
    b
}

/// Boots the boot sector at `img` under `accel`; the time until its marker, or why not.
pub fn time_boot(
    qemu: &Path,
    firmware: Option<&Path>,
    accel: Accel,
    img: &Path,
    timeout: Duration,
) -> Result<Duration, String> {
    let mut cmd = Command::new(qemu);
    if let Some(f) = firmware {
        cmd.arg("-L").arg(f);
    }
    cmd.args([
        "-accel",
        accel.as_str(),
        "-m",
        "16",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
    ])
    .arg("-drive")
    .arg(format!("file={},format=raw,if=ide,snapshot=on", img.display()));
    until_marker(cmd, MARKER, timeout)
}

/// Runs qemu (`cmd`, with its serial port on stdout) until `marker` appears on that port,
/// then stops it; the time the marker took, or why it never came (qemu's stderr).
pub fn until_marker(mut cmd: Command, marker: &str, timeout: Duration) -> Result<Duration, String> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", cmd.get_program().to_string_lossy()))?;
    let mut out = child.stdout.take().ok_or("no stdout")?;
    let marker = marker.to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains(&marker) {
                let _ = tx.send(());
                return;
            }
        }
    });
    let result = match rx.recv_timeout(timeout) {
        Ok(()) => Ok(t.elapsed()),
        Err(_) => {
            let mut err = String::new();
            let _ = child.kill();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            Err(if err.trim().is_empty() { format!("no marker within {timeout:?}") } else { err.trim().to_string() })
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Boots the probe under KVM and TCG and decides. `dir` holds the boot sector file.
pub fn probe(qemu: &Path, firmware: Option<&Path>, dir: &Path, timeout: Duration) -> Probe {
    let img = dir.join("hull-probe-boot.img");
    if let Err(e) = std::fs::write(&img, boot_sector()) {
        return Probe {
            accel: Accel::Tcg,
            reason: format!("cannot write {}: {e}", img.display()),
            kvm_ms: None,
            tcg_ms: None,
        };
    }
    let ms = |d: Duration| (d.as_secs_f64() * 10_000.0).round() / 10.0;
    let tcg = time_boot(qemu, firmware, Accel::Tcg, &img, timeout);
    let kvm = if Path::new("/dev/kvm").exists() {
        time_boot(qemu, firmware, Accel::Kvm, &img, timeout)
    } else {
        Err("/dev/kvm is missing".into())
    };
    let _ = std::fs::remove_file(&img);
    let (kvm_ms, tcg_ms) = (kvm.as_ref().ok().map(|d| ms(*d)), tcg.as_ref().ok().map(|d| ms(*d)));
    let (accel, reason) = match (&kvm, &tcg) {
        (Ok(k), Ok(t)) if *k <= *t * 2 => {
            (Accel::Kvm, format!("a guest boots under KVM in {:.1} ms (TCG {:.1} ms)", ms(*k), ms(*t)))
        }
        (Ok(k), Ok(t)) => {
            (Accel::Tcg, format!("KVM runs, but slowly: {:.1} ms against TCG's {:.1} ms", ms(*k), ms(*t)))
        }
        (Ok(k), Err(_)) => (Accel::Kvm, format!("a guest boots under KVM in {:.1} ms (TCG failed)", ms(*k))),
        (Err(e), _) => (Accel::Tcg, format!("KVM: {e}")),
    };
    Probe { accel, reason, kvm_ms, tcg_ms }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_sector_is_signed_and_points_at_its_message() {
        let b = boot_sector();
        assert_eq!(b.len(), 512);
        assert_eq!(&b[510..], &[0x55, 0xaa]);
        let si = u16::from_le_bytes([b[6], b[7]]) as usize - 0x7c00;
        assert_eq!(&b[si..si + MARKER.len()], MARKER.as_bytes());
    }
}
