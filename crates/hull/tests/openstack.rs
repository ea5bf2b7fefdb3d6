//! The Nova driver (openstack/nova-hull): Nova's own driver conformance tests and hull's
//! spawn tests, run by its run-tests script against a node it makes (Nova 34 from PyPI in
//! the environment `.ci/deps` makes).

use std::process::Command;

#[test]
fn nova_s_driver_tests_pass_against_a_real_node() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openstack/nova-hull/run-tests");
    let out = Command::new("timeout")
        .args(["600", script])
        .env("HULL", env!("CARGO_BIN_EXE_hull"))
        .output()
        .expect("run openstack/nova-hull/run-tests");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let tail: String = text.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    let errs = String::from_utf8_lossy(&out.stderr);
    let last = text.lines().last().unwrap_or("");
    let counts: Vec<u32> = last.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert!(last.starts_with("passed ") && counts.len() == 3, "no summary line:\n{tail}\n{errs}");
    println!("{last}");
    let (passed, failed) = (counts[0], counts[2]);
    assert_eq!(failed, 0, "{tail}\n{errs}");
    assert!(passed >= 60, "only {passed} passed:\n{tail}");
    assert!(out.status.success(), "{tail}\n{errs}");
}
