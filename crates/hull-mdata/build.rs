//! Builds the in-zone tools (client/mdata.rs) as one static program: zones have no libc of
//! the host's (a busybox zone has none at all). The same rustc that builds hull builds it,
//! with the standard library only and glibc linked statically (`crt-static`), so it needs
//! nothing beyond libc6-dev, which the build already needs. And libhull-brandz.so
//! (client/brandz.rs): a library with no standard library that loads into any zone's
//! programs (cloud-init's), whatever their libc.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "client/mdata.rs";
    println!("cargo:rerun-if-changed={src}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("mdata");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let status = Command::new(rustc)
        .args(["--edition", "2024", "-C", "opt-level=s", "-C", "panic=abort", "-C", "strip=symbols"])
        .args(["-C", "target-feature=+crt-static", "-o"])
        .arg(&out)
        .arg(src)
        .status()
        .expect("run rustc for the mdata tools");
    assert!(status.success(), "building the static mdata tools failed");

    let src = "client/brandz.rs";
    println!("cargo:rerun-if-changed={src}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("libhull-brandz.so");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let status = Command::new(rustc)
        .args(["--edition", "2024", "--crate-type", "cdylib", "-C", "opt-level=s", "-C", "panic=abort"])
        .args(["-C", "strip=symbols", "-o"])
        .arg(&out)
        .arg(src)
        .status()
        .expect("run rustc for libhull-brandz.so");
    assert!(status.success(), "building libhull-brandz.so failed");
}
