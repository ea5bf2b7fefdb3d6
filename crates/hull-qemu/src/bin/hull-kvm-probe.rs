//! Decides between KVM and TCG as the node does, and prints the finding as JSON.
//! `hull-kvm-probe [QEMU [FIRMWARE_DIR]]`; standalone, so it also runs where hull's own
//! dependencies (libseccomp) are not installed.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let qemu = args.get(1).cloned().unwrap_or_else(|| "/usr/bin/qemu-system-x86_64".into());
    let firmware = args.get(2).map(std::path::PathBuf::from);
    let dir = std::env::temp_dir();
    let p = hull_qemu::probe::probe(
        std::path::Path::new(&qemu),
        firmware.as_deref(),
        &dir,
        std::time::Duration::from_secs(20),
    );
    println!("{}", serde_json::to_string(&p).unwrap_or_default());
}
