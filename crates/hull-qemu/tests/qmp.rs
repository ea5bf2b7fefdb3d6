//! The QMP client against a real qemu (TCG, no guest disk: the BIOS finds nothing to boot,
//! which is all QMP needs).

use hull_qemu::qmp::Qmp;
use std::time::Duration;

#[test]
fn qmp_speaks_to_a_real_qemu() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("qmp.sock");
    let mut qemu = std::process::Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "32", "-nodefaults", "-no-user-config", "-display", "none"])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64 (run .ci/deps)");
    let result = std::panic::catch_unwind(|| {
        let mut q = Qmp::connect(&sock, Duration::from_secs(10)).expect("connect");
        assert!(q.version.0 >= 7, "{:?}", q.version);
        let status = q.execute("query-status", None).expect("query-status");
        assert_eq!(status["status"], "running");
        let v = q.execute("query-version", None).expect("query-version");
        assert_eq!(v["qemu"]["major"].as_u64(), Some(q.version.0));
        let err = q.execute("no-such-command", None).expect_err("unknown command");
        assert!(err.to_string().contains("CommandNotFound"), "{err}");
        q.execute("system_powerdown", None).expect("powerdown");
        // The event may come before or after the next reply; a query collects it.
        q.execute("query-status", None).expect("query-status");
        assert!(q.events().iter().any(|e| e["event"] == "POWERDOWN"));
        q.execute("quit", None).expect("quit");
    });
    let _ = qemu.kill();
    let _ = qemu.wait();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn the_probe_decides_and_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = hull_qemu::probe::probe(
        std::path::Path::new("/usr/bin/qemu-system-x86_64"),
        None,
        dir.path(),
        Duration::from_secs(20),
    );
    // TCG always boots the probe; whether KVM does depends on the machine.
    assert!(p.tcg_ms.is_some(), "{p:?}");
    assert!(!p.reason.is_empty());
    if p.accel == hull_qemu::probe::Accel::Kvm {
        assert!(p.kvm_ms.is_some());
    }
    let bad =
        hull_qemu::probe::probe(std::path::Path::new("/nonexistent/qemu"), None, dir.path(), Duration::from_secs(2));
    assert_eq!(bad.accel, hull_qemu::probe::Accel::Tcg);
    assert!(bad.reason.contains("/nonexistent/qemu"), "{}", bad.reason);
}
