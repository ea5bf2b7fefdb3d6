//! Builds the in-zone tools (client/mdata.rs) as one static program: zones have no libc of
//! the host's (a busybox zone has none at all). The same rustc that builds hull builds it,
//! with the standard library only and glibc linked statically (`crt-static`), so it needs
//! nothing beyond libc6-dev, which the build already needs. And libhull-brandz.so
//! (client/brandz.rs): a library with no standard library that loads into any zone's
//! programs (cloud-init's), whatever their libc.
use std::path::PathBuf;
use std::process::Command;

/// Runs the rustc that builds hull on one file, with `flags`, into OUT_DIR/`out`.
fn rustc(src: &str, out: &str, flags: &[&str]) {
    println!("cargo:rerun-if-changed={src}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join(out);
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let status = Command::new(rustc)
        .args(["--edition", "2024", "-C", "opt-level=s", "-C", "panic=abort", "-C", "strip=symbols"])
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(src)
        .status()
        .unwrap_or_else(|e| panic!("run rustc for {src}: {e}"));
    assert!(status.success(), "building {src} failed");
}

/// FNV-1a, 64 bits, of a built file, written beside it as `NAME.sum`: what the node compares
/// to know its copy is current without reading the megabyte again at each boot.
fn sum(out: &str) {
    let dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bytes = std::fs::read(dir.join(out)).unwrap_or_else(|e| panic!("read {out}: {e}"));
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    std::fs::write(dir.join(format!("{out}.sum")), format!("{h:016x}-{}", bytes.len()))
        .unwrap_or_else(|e| panic!("write {out}.sum: {e}"));
}

fn main() {
    rustc("client/mdata.rs", "mdata", &["-C", "target-feature=+crt-static"]);
    rustc("client/brandz.rs", "libhull-brandz.so", &["--crate-type", "cdylib"]);
    sum("mdata");
    sum("libhull-brandz.so");
}
