//! bench/net: what link protection costs, and how fast a NIC comes up in a running zone.
//!
//! In one run, with the node in a network namespace of its own: iperf3 (Debian's) between
//! two busybox zones on one etherstub, with protection on (the default) and off (every
//! `allow_*` set), beside iperf3 over a bare veth pair between two bare namespaces (the
//! peer: no bridge, no rules). The three are measured in turn, `HULL_BENCH_ROUNDS` (3)
//! times, `HULL_BENCH_SECS` (4) seconds each, and the medians reported. iperf3 runs in the
//! zones' network namespaces with the host's binary (the busybox image has none). Then
//! `vmadm update add_nics` and `remove_nics` on the running zone, `HULL_BENCH_NICS` (20)
//! times each, end to end as an operator sees them. Then the way out (issue 13): iperf3 from
//! a zone on a NAT network to a namespace standing for the outside world, beside the same
//! from a zone on a routed network without NAT (the peer), and the time a zone's DHCP client
//! (busybox udhcpc) takes to be bound by hull's responder. Prints one JSON line. Needs root,
//! iperf3 and `target/release/hull`.

use hull_bench::{Hull, env_n, pct};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn main() {
    match bench() {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("bench/net: {e}");
            std::process::exit(1);
        }
    }
}

/// iperf3 from namespace `from` to a one-off server at `ip` in namespace `to`; Gbit/s.
fn iperf(from: &Path, to: &Path, ip: &str, secs: usize) -> Result<f64, String> {
    let mut server = Command::new("nsenter")
        .arg(format!("--net={}", to.display()))
        .args(["iperf3", "-s", "-1", "-B", ip, "-p", "5201"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("iperf3 -s: {e}"))?;
    // The server needs a moment to listen; the client retries until it does.
    let mut last = String::new();
    for _ in 0..50 {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", from.display()))
            .args(["iperf3", "-c", ip, "-p", "5201", "-J", "-t", &secs.to_string()])
            .output()
            .map_err(|e| format!("iperf3 -c: {e}"))?;
        // iperf3 3.12 with -J exits 0 when it could not connect ("unable to connect to
        // server"), with an `error` in its JSON and no figures: that is a retry too.
        let figures = serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v["end"]["sum_received"]["bits_per_second"].as_f64());
        if out.status.success()
            && let Some(bps) = figures
        {
            // The client has the figures; a one-off server sometimes lingers after them.
            let _ = server.kill();
            let _ = server.wait();
            return Ok(bps / 1e9);
        }
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = server.kill();
    let _ = server.wait();
    Err(format!("iperf3 never connected: {last}"))
}

/// Two bare namespaces joined by a veth pair, 10.77.0.1 and .2.
fn raw_pair(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let (x, y) = (dir.join("raw-x"), dir.join("raw-y"));
    hull_net::ns::create(&x).map_err(|e| e.to_string())?;
    hull_net::ns::create(&y).map_err(|e| e.to_string())?;
    let yf = std::fs::File::open(&y).map_err(|e| e.to_string())?;
    hull_net::ns::run_in(&x, move || {
        use std::os::fd::AsRawFd;
        let mut nl = hull_net::nl::Netlink::open()?;
        nl.add_veth("eth0", [2, 0, 0, 0, 77, 1], "eth0", [2, 0, 0, 0, 77, 2], yf.as_raw_fd(), 1500)?;
        let l = nl.link("eth0")?.ok_or(hull_net::NetError::NoLink("eth0".into()))?;
        nl.add_address(l.index, "10.77.0.1".parse().expect("literal"), 24)?;
        nl.set_up(l.index, true)
    })
    .map_err(|e| e.to_string())?;
    hull_net::ns::run_in(&y, || {
        let mut nl = hull_net::nl::Netlink::open()?;
        let l = nl.link("eth0")?.ok_or(hull_net::NetError::NoLink("eth0".into()))?;
        nl.add_address(l.index, "10.77.0.2".parse().expect("literal"), 24)?;
        nl.set_up(l.index, true)
    })
    .map_err(|e| e.to_string())?;
    Ok((x, y))
}

/// The outside world behind the node's "uplink": namespace `outside` with 192.0.2.1 on its
/// end, the node's end `up0` with 192.0.2.2 and the node's default route through it. The
/// outside knows a route back to `routed` (a network hull routes without NAT) only.
fn outside(dir: &Path, routed: &str) -> Result<PathBuf, String> {
    let (node, out) = (dir.join("node.netns"), dir.join("outside"));
    hull_net::ns::create(&out).map_err(|e| e.to_string())?;
    let of = std::fs::File::open(&out).map_err(|e| e.to_string())?;
    hull_net::ns::run_in(&node, move || {
        use std::os::fd::AsRawFd;
        let mut nl = hull_net::nl::Netlink::open()?;
        nl.add_veth("up0", [2, 0, 0, 0, 78, 1], "eth0", [2, 0, 0, 0, 78, 2], of.as_raw_fd(), 1500)?;
        let l = nl.link("up0")?.ok_or(hull_net::NetError::NoLink("up0".into()))?;
        nl.add_address(l.index, "192.0.2.2".parse().expect("literal"), 24)?;
        nl.set_up(l.index, true)?;
        nl.add_route("0.0.0.0".parse().expect("literal"), 0, Some("192.0.2.1".parse().expect("literal")), None)
    })
    .map_err(|e| e.to_string())?;
    let net: ipnet::Ipv4Net = routed.parse().map_err(|e| format!("{routed}: {e}"))?;
    hull_net::ns::run_in(&out, move || {
        let mut nl = hull_net::nl::Netlink::open()?;
        let l = nl.link("eth0")?.ok_or(hull_net::NetError::NoLink("eth0".into()))?;
        nl.add_address(l.index, "192.0.2.1".parse().expect("literal"), 24)?;
        nl.set_up(l.index, true)?;
        nl.add_route(net.network().into(), net.prefix_len(), Some("192.0.2.2".parse().expect("literal")), None)
    })
    .map_err(|e| e.to_string())?;
    Ok(out)
}

fn median(v: &mut [f64]) -> f64 {
    pct(v, 0.5)
}

fn bench() -> Result<String, String> {
    let rounds = env_n("HULL_BENCH_ROUNDS", 3);
    let secs = env_n("HULL_BENCH_SECS", 4);
    let adds = env_n("HULL_BENCH_NICS", 20);
    let bin = hull_bench::hull_bin()?;
    let dir = tempfile::Builder::new().prefix("hull-bench-net-").tempdir().map_err(|e| e.to_string())?;
    let node_ns = dir.path().join("node.netns");
    hull_net::ns::create(&node_ns).map_err(|e| e.to_string())?;
    let h = Hull {
        bin,
        root: dir.path().to_path_buf(),
        netns: Some(std::fs::File::open(&node_ns).map_err(|e| e.to_string())?),
        node: "hbench".into(),
    };
    h.run(&["pool", "create", "--size", "1G"])?;
    let result = measure(&h, dir.path(), rounds, secs, adds);
    // Leave nothing behind, whatever happened.
    if let Ok(list) = h.run(&["vmadm", "list", "-H", "-o", "uuid"]) {
        for u in list.lines() {
            let _ = h.run(&["vmadm", "delete", u]);
        }
    }
    let _ = h.run(&["net", "destroy"]);
    let _ = h.run(&["pool", "destroy"]);
    for name in ["raw-x", "raw-y", "outside", "node.netns"] {
        let _ = hull_net::ns::remove(&dir.path().join(name));
    }
    result
}

fn measure(h: &Hull, dir: &Path, rounds: usize, secs: usize, adds: usize) -> Result<String, String> {
    let img = h.build_install(&["--busybox"], "bb")?;
    h.run(&["nictagadm", "add", "-l", "t0"])?;
    let zone = |ip: &str| {
        json!({"brand": "joyent-minimal", "image_uuid": img, "max_physical_memory": 128,
               "nics": [{"nic_tag": "t0", "ips": [format!("{ip}/24")]}]})
    };
    let (a, _) = h.create(&zone("10.0.0.1"))?;
    let (b, _) = h.create(&zone("10.0.0.2"))?;
    let ns = |u: &str| dir.join("var/hull/netns").join(u);
    let mac = |u: &str| -> Result<String, String> {
        let v: Value = serde_json::from_str(&h.run(&["vmadm", "get", u])?).map_err(|e| e.to_string())?;
        Ok(v["nics"][0]["mac"].as_str().unwrap_or_default().to_string())
    };
    let (mac_a, mac_b) = (mac(&a)?, mac(&b)?);
    let protection = |on: bool| -> Result<(), String> {
        for (u, m) in [(&a, &mac_a), (&b, &mac_b)] {
            h.update(
                u,
                &json!({"update_nics": [{"mac": m, "allow_ip_spoofing": !on, "allow_mac_spoofing": !on,
                "allow_dhcp_spoofing": !on, "allow_restricted_traffic": !on}]}),
            )?;
        }
        Ok(())
    };
    let (rx, ry) = raw_pair(dir)?;
    let (mut on, mut off, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        protection(true)?;
        on.push(iperf(&ns(&a), &ns(&b), "10.0.0.2", secs)?);
        protection(false)?;
        off.push(iperf(&ns(&a), &ns(&b), "10.0.0.2", secs)?);
        raw.push(iperf(&rx, &ry, "10.77.0.2", secs)?);
    }
    protection(true)?;

    // A way out: a zone on a NAT network and one on a routed network (no NAT), each to the
    // outside namespace; and how long a zone's DHCP client takes to be bound.
    let out = outside(dir, "10.61.0.0/24")?;
    h.run(&["network", "add", "natnet", "--subnet", "10.60.0.0/24"])?;
    h.run(&["network", "add", "routed", "--subnet", "10.61.0.0/24", "--no-nat"])?;
    let on_net =
        |nic: Value| json!({"brand": "joyent-minimal", "image_uuid": img, "max_physical_memory": 128, "nics": [nic]});
    let (c, _) = h.create(&on_net(json!({"nic_tag": "natnet", "ips": ["dhcp"]})))?;
    let (d, _) = h.create(&on_net(json!({"nic_tag": "routed", "ips": ["10.61.0.5/24"], "gateways": ["10.61.0.1"]})))?;
    let zl = |u: &str, args: &[&str]| -> Result<f64, String> {
        let mut all = vec!["zlogin", u];
        all.extend_from_slice(args);
        let t = std::time::Instant::now();
        h.run(&all)?;
        Ok(t.elapsed().as_secs_f64() * 1000.0)
    };
    let (mut nat, mut routed, mut lease_ms) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        nat.push(iperf(&ns(&c), &out, "192.0.2.1", secs)?);
        routed.push(iperf(&ns(&d), &out, "192.0.2.1", secs)?);
    }
    for _ in 0..adds {
        // zlogin's own cost, measured beside it, is taken off.
        let base = zl(&c, &["true"])?;
        let whole = zl(&c, &["udhcpc", "-i", "net0", "-n", "-q", "-f", "-t", "3", "-T", "1", "-s", "/bin/true"])?;
        lease_ms.push((whole - base).max(0.0));
    }
    let _ = hull_net::ns::remove(&out);
    let (nat, routed) = (median(&mut nat), median(&mut routed));

    let (mut add_ms, mut remove_ms) = (Vec::new(), Vec::new());
    for i in 0..adds {
        let m = format!("02:00:00:00:{:02x}:{:02x}", i / 256, i % 256);
        add_ms.push(
            h.update(&a, &json!({"add_nics": [{"nic_tag": "t0", "vlan_id": 9, "mac": m, "ips": ["10.9.0.1/24"]}]}))?,
        );
        remove_ms.push(h.update(&a, &json!({"remove_nics": [m]}))?);
    }
    let (on, off, raw) = (median(&mut on), median(&mut off), median(&mut raw));
    Ok(json!({
        "iperf_protected_gbps": (on * 100.0).round() / 100.0,
        "iperf_unprotected_gbps": (off * 100.0).round() / 100.0,
        "peer_raw_veth_gbps": (raw * 100.0).round() / 100.0,
        "protection_cost_pct": ((1.0 - on / off) * 1000.0).round() / 10.0,
        "protected_over_raw_veth": (on / raw * 100.0).round() / 100.0,
        "nic_add_p50_ms": (pct(&mut add_ms, 0.5) * 10.0).round() / 10.0,
        "nic_add_p99_ms": (pct(&mut add_ms, 0.99) * 10.0).round() / 10.0,
        "nic_remove_p50_ms": (pct(&mut remove_ms, 0.5) * 10.0).round() / 10.0,
        "nat_gbps": (nat * 100.0).round() / 100.0,
        "peer_routed_no_nat_gbps": (routed * 100.0).round() / 100.0,
        "nat_over_routed": (nat / routed * 100.0).round() / 100.0,
        "dhcp_lease_p50_ms": (pct(&mut lease_ms, 0.5) * 10.0).round() / 10.0,
        "rounds": rounds,
        "secs": secs,
    })
    .to_string())
}
