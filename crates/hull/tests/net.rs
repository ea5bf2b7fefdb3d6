//! Networking from the command line: each node in a network namespace of its own, real
//! veths, bridges, VXLAN and nftables, busybox zones. No traffic leaves the machine.

mod common;
use common::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A node in its own namespace with the busybox image and a local nic tag `t0`.
fn node() -> (TestNode, String) {
    let n = TestNode::in_netns("512M");
    let img = n.busybox();
    n.hull(&["nictagadm", "add", "-l", "t0"]).ok();
    (n, img)
}

fn payload(img: &str, nics: Value) -> Value {
    json!({"brand": "joyent-minimal", "image_uuid": img, "max_physical_memory": 64, "nics": nics})
}

fn create(n: &TestNode, payload: Value) -> String {
    let f = n.root().join(format!("p-{}.json", nanos()));
    std::fs::write(&f, payload.to_string()).expect("write");
    let out = n.hull(&["vmadm", "create", "-j", "-f", &f.to_string_lossy()]).ok();
    let v: Value = serde_json::from_str(&out).expect("vm json");
    v["uuid"].as_str().expect("uuid").to_string()
}

fn try_create(n: &TestNode, payload: Value) -> Run {
    let f = n.root().join(format!("p-{}.json", nanos()));
    std::fs::write(&f, payload.to_string()).expect("write");
    n.hull(&["vmadm", "create", "-f", &f.to_string_lossy()])
}

fn update(n: &TestNode, uuid: &str, payload: Value) -> Run {
    let f = n.root().join(format!("u-{}.json", nanos()));
    std::fs::write(&f, payload.to_string()).expect("write");
    n.hull(&["vmadm", "update", uuid, "-f", &f.to_string_lossy()])
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

fn ping(n: &TestNode, uuid: &str, args: &[&str]) -> bool {
    let mut all = vec!["zlogin", uuid, "ping", "-c", "1", "-W", "2"];
    all.extend_from_slice(args);
    n.hull(&all).code == 0
}

/// A ping that may take a few tries: after a rule or an address changed, a neighbour entry
/// left failed by the last (refused) try can eat the first packets on a loaded machine.
/// Only for what must get through; what must not uses [`ping`] once.
fn ping_gets_through(n: &TestNode, uuid: &str, args: &[&str]) -> bool {
    (0..3).any(|_| ping(n, uuid, args))
}

fn mac_of(n: &TestNode, uuid: &str, i: usize) -> String {
    let v: Value = serde_json::from_str(&n.hull(&["vmadm", "get", uuid]).ok()).expect("json");
    v["nics"][i]["mac"].as_str().expect("mac").to_string()
}

/// Runs a command in a zone's network namespace with the host's tools (as the host, not as
/// the zone: how a test plays a tenant that forged its own configuration).
fn in_zone_ns(n: &TestNode, uuid: &str, args: &[&str]) {
    let st = std::process::Command::new("nsenter")
        .arg(format!("--net={}", n.zone_netns(uuid).display()))
        .args(args)
        .status()
        .expect("nsenter");
    assert!(st.success(), "{args:?} in {uuid}");
}

/// The node's links whose names carry its prefix, and its nftables chains.
fn leftovers(n: &TestNode) -> (Vec<String>, Vec<String>) {
    let prefix = n.prefix.clone();
    let links = n.in_node(move || {
        let mut nl = hull_net::nl::Netlink::open().expect("netlink");
        nl.links()
            .expect("links")
            .into_iter()
            .map(|l| l.name)
            .filter(|l| l.starts_with(prefix.as_str()))
            .collect::<Vec<_>>()
    });
    let out = n.in_node(|| std::process::Command::new("nft").args(["list", "ruleset"]).output().expect("nft"));
    let chains = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with("chain v_"))
        .map(String::from)
        .collect();
    (links, chains)
}

// ------------------------------------------------------------------ raw frames

fn ifindex(name: &str) -> i32 {
    let c = std::ffi::CString::new(name).expect("name");
    // SAFETY: a valid C string; if_nametoindex reads it and returns an integer.
    unsafe { libc::if_nametoindex(c.as_ptr()) as i32 }
}

fn packet_socket(ifname: &str) -> (std::os::fd::OwnedFd, libc::sockaddr_ll) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2); the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, (libc::ETH_P_ALL as u16).to_be() as i32) };
    assert!(fd >= 0, "packet socket: {}", std::io::Error::last_os_error());
    // SAFETY: the kernel just gave us this fd.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex(ifname);
    (fd, sll)
}

/// Sends one Ethernet frame out of `ifname` in the namespace at `ns`.
fn send_frame(ns: &Path, ifname: &'static str, frame: Vec<u8>) {
    hull_net::ns::run_in(ns, move || {
        use std::os::fd::AsRawFd;
        let (fd, sll) = packet_socket(ifname);
        // SAFETY: frame and sll outlive the call; lengths are theirs.
        let r = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert!(r >= 0, "sendto: {}", std::io::Error::last_os_error());
        Ok(())
    })
    .expect("send");
}

/// Starts capturing on `ifname` in `ns` for `dur`; the handle returns every frame seen.
fn capture(ns: &Path, ifname: &'static str, dur: Duration) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    let ns = ns.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        hull_net::ns::run_in(&ns, move || {
            use std::os::fd::AsRawFd;
            let (fd, sll) = packet_socket(ifname);
            // SAFETY: sll is a valid sockaddr_ll for the fd's family.
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
            let tv = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
            // SAFETY: tv is a valid timeval for SO_RCVTIMEO.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                )
            };
            let _ = tx.send(());
            let mut frames = Vec::new();
            let start = Instant::now();
            let mut buf = vec![0u8; 65536];
            while start.elapsed() < dur {
                // SAFETY: buf is valid for its length.
                let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n > 0 {
                    frames.push(buf[..n as usize].to_vec());
                }
            }
            Ok(frames)
        })
        .expect("capture")
    });
    let _ = rx.recv_timeout(Duration::from_secs(5));
    h
}

fn mac_bytes(s: &str) -> [u8; 6] {
    hull_net::parse_mac(s).expect("mac")
}

/// A broadcast frame of a made-up ethertype (0x88b5, for local experiments).
fn odd_frame(src: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(b"hull-probe");
    f.resize(60, 0);
    f
}

/// A broadcast UDP datagram from port 67 (a DHCP server's answer) with the zone's own MAC
/// and address, so that only dhcp-nospoof stands in its way.
fn dhcp_offer(src: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    let payload = b"hull-probe";
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip_hdr = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0, 0, 64, 17, 0, 0];
    ip_hdr.extend_from_slice(&ip);
    ip_hdr.extend_from_slice(&[255, 255, 255, 255]);
    let sum = ip_hdr.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum::<u32>();
    let sum = !((sum & 0xffff) + (sum >> 16)) as u16;
    ip_hdr[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip_hdr);
    let ulen = (8 + payload.len()) as u16;
    f.extend_from_slice(&[0, 67, 0, 68, (ulen >> 8) as u8, ulen as u8, 0, 0]);
    f.extend_from_slice(payload);
    f.resize(f.len().max(60), 0);
    f
}

/// An unsolicited neighbour advertisement with the override flag, from `src`'s link-local
/// address, claiming `target` is at `src`: how one zone would take another's IPv6 traffic.
/// A "hull-probe" option trails it so a capture can tell it from other traffic.
fn neighbour_advert(src: [u8; 6], target: std::net::Ipv6Addr) -> Vec<u8> {
    let mut f = vec![0x33, 0x33, 0, 0, 0, 1];
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x86, 0xdd]);
    let mut icmp = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&[2, 1]);
    icmp.extend_from_slice(&src);
    icmp.extend_from_slice(&[250, 2, b'h', b'u', b'l', b'l', b'-', b'p', b'r', b'o', b'b', b'e', 0, 0, 0, 0]);
    let mut ll = [0u8; 16];
    ll[0] = 0xfe;
    ll[1] = 0x80;
    ll[8..11].copy_from_slice(&[src[0] ^ 2, src[1], src[2]]);
    ll[11..13].copy_from_slice(&[0xff, 0xfe]);
    ll[13..16].copy_from_slice(&src[3..6]);
    let dst: [u8; 16] = "ff02::1".parse::<std::net::Ipv6Addr>().expect("addr").octets();
    // The ICMPv6 checksum over the pseudo-header.
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ll);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(&icmp);
    let mut sum = pseudo.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum::<u32>();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    icmp[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let len = icmp.len() as u16;
    f.extend_from_slice(&[0x60, 0, 0, 0, (len >> 8) as u8, len as u8, 58, 255]);
    f.extend_from_slice(&ll);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&icmp);
    f
}

fn saw_probe(frames: &[Vec<u8>]) -> bool {
    frames.iter().any(|f| f.windows(10).any(|w| w == b"hull-probe"))
}

// ------------------------------------------------------------------ tests

#[test]
fn zones_on_one_vlan_meet_and_other_vlans_do_not() {
    let (n, img) = node();
    let a =
        create(&n, payload(&img, json!([{"nic_tag": "t0", "vlan_id": 10, "ips": ["10.0.0.1/24", "fd00:10::1/64"]}])));
    let b =
        create(&n, payload(&img, json!([{"nic_tag": "t0", "vlan_id": 10, "ips": ["10.0.0.2/24", "fd00:10::2/64"]}])));
    let c = create(&n, payload(&img, json!([{"nic_tag": "t0", "vlan_id": 11, "ips": ["10.0.0.3/24"]}])));
    // The host configured the zone: net0 with the NIC's MAC and address, before init ran.
    let addr = n.hull(&["zlogin", &a, "ip", "addr", "show", "net0"]).ok();
    assert!(addr.contains("10.0.0.1/24") && addr.contains(&mac_of(&n, &a, 0)), "{addr}");
    assert!(ping(&n, &a, &["10.0.0.2"]), "same VLAN");
    assert!(ping(&n, &b, &["10.0.0.1"]), "same VLAN, the other way");
    assert!(ping(&n, &a, &["fd00:10::2"]), "same VLAN over IPv6");
    assert!(!ping(&n, &a, &["10.0.0.3"]), "VLAN 10 reached VLAN 11");
    assert!(!ping(&n, &c, &["10.0.0.2"]), "VLAN 11 reached VLAN 10");
    // dladm shows the VNICs with their VLANs and zones.
    let vnics = n.hull(&["dladm", "show-vnic", "-p", "-o", "zone,vid"]).ok();
    let mut lines: Vec<&str> = vnics.lines().collect();
    lines.sort();
    let mut want = vec![format!("{a}:10"), format!("{b}:10"), format!("{c}:11")];
    want.sort();
    assert_eq!(lines, want);
    // A stopped zone has no VNIC; it gets it back on boot.
    n.hull(&["vmadm", "stop", &c]).ok();
    assert!(!n.hull(&["dladm", "show-vnic", "-p", "-o", "zone"]).ok().contains(&c));
    assert!(!n.zone_netns(&c).exists());
    n.hull(&["vmadm", "start", &c]).ok();
    assert!(n.hull(&["dladm", "show-vnic", "-p", "-o", "zone"]).ok().contains(&c));
    for v in [&a, &b, &c] {
        n.hull(&["vmadm", "delete", v]).ok();
    }
    let (links, chains) = leftovers(&n);
    // Only the etherstub of the local tag is left: the operator made it.
    assert_eq!(links.len(), 1, "{links:?}");
    assert!(chains.is_empty(), "{chains:?}");
    n.hull(&["nictagadm", "delete", "t0"]).ok();
    n.hull(&["net", "destroy"]).ok();
    assert_eq!(leftovers(&n), (vec![], vec![]));
    assert!(std::fs::read_dir(n.root().join("var/hull/netns")).map(|d| d.count()).unwrap_or(0) == 0);
}

#[test]
fn zones_made_at_once_share_their_switch() {
    let (n, img) = node();
    let n = std::sync::Arc::new(n);
    let made: Vec<String> = (1..=6)
        .map(|i| {
            let (n, img) = (n.clone(), img.clone());
            std::thread::spawn(move || {
                create(&n, payload(&img, json!([{"nic_tag": "t0", "vlan_id": 20, "ips": [format!("10.20.0.{i}/24")]}])))
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("create"))
        .collect();
    assert!(ping(&n, &made[0], &["10.20.0.6"]), "first to last");
    assert!(ping(&n, &made[5], &["10.20.0.1"]), "last to first");
    let switches = n.hull(&["dladm", "show-link", "-p", "-o", "class"]).ok();
    assert_eq!(switches.lines().filter(|l| *l == "bridge").count(), 1, "{switches}");
    let deleting: Vec<_> = made
        .into_iter()
        .map(|u| {
            let n = n.clone();
            std::thread::spawn(move || n.hull(&["vmadm", "delete", &u]).ok())
        })
        .collect();
    for h in deleting {
        h.join().expect("delete");
    }
    let (links, chains) = leftovers(&n);
    assert_eq!(links.len(), 1, "{links:?}");
    assert!(chains.is_empty(), "{chains:?}");
}

#[test]
fn forged_sources_and_odd_ethertypes_are_dropped_until_allowed() {
    let (n, img) = node();
    let a = create(&n, payload(&img, json!([{"nic_tag": "t0", "ips": ["10.1.0.1/24"]}])));
    let b = create(&n, payload(&img, json!([{"nic_tag": "t0", "ips": ["10.1.0.2/24"]}])));
    let mac = mac_of(&n, &a, 0);
    assert!(ping(&n, &a, &["10.1.0.2"]));

    // IP: a source the NIC was not given.
    in_zone_ns(&n, &a, &["ip", "addr", "add", "10.1.0.99/24", "dev", "net0"]);
    assert!(!ping(&n, &a, &["-I", "10.1.0.99", "10.1.0.2"]), "a forged IP source got through");
    update(&n, &a, json!({"update_nics": [{"mac": mac, "allow_ip_spoofing": true}]})).ok();
    assert!(ping_gets_through(&n, &a, &["-I", "10.1.0.99", "10.1.0.2"]), "allow_ip_spoofing did not let it through");
    // allowed_ips is the narrower way.
    update(&n, &a, json!({"update_nics": [{"mac": mac, "allow_ip_spoofing": false, "allowed_ips": ["10.1.0.99"]}]}))
        .ok();
    assert!(ping_gets_through(&n, &a, &["-I", "10.1.0.99", "10.1.0.2"]), "allowed_ips did not let it through");
    update(&n, &a, json!({"update_nics": [{"mac": mac, "allowed_ips": []}]})).ok();
    assert!(!ping(&n, &a, &["-I", "10.1.0.99", "10.1.0.2"]), "protection did not come back");

    // MAC: the zone end takes another address.
    in_zone_ns(&n, &a, &["ip", "link", "set", "net0", "address", "02:00:00:00:00:99"]);
    in_zone_ns(&n, &b, &["ip", "neigh", "flush", "all"]);
    assert!(!ping(&n, &a, &["10.1.0.2"]), "a forged MAC got through");
    update(&n, &a, json!({"update_nics": [{"mac": mac, "allow_mac_spoofing": true}]})).ok();
    in_zone_ns(&n, &b, &["ip", "neigh", "flush", "all"]);
    assert!(ping_gets_through(&n, &a, &["10.1.0.2"]), "allow_mac_spoofing did not let it through");
    in_zone_ns(&n, &a, &["ip", "link", "set", "net0", "address", &mac]);

    // Ethertype: a frame that is neither IP nor ARP.
    let (na, nb) = (n.zone_netns(&a), n.zone_netns(&b));
    let cap = capture(&nb, "net0", Duration::from_millis(800));
    send_frame(&na, "net0", odd_frame(mac_bytes(&mac)));
    assert!(!saw_probe(&cap.join().expect("capture")), "a non-IP frame got through");
    update(&n, &a, json!({"update_nics": [{"mac": mac, "allow_restricted_traffic": true}]})).ok();
    let cap = capture(&nb, "net0", Duration::from_millis(800));
    send_frame(&na, "net0", odd_frame(mac_bytes(&mac)));
    assert!(saw_probe(&cap.join().expect("capture")), "allow_restricted_traffic did not let it through");

    // DHCP: the zone answering as a DHCP server.
    let cap = capture(&nb, "net0", Duration::from_millis(800));
    send_frame(&na, "net0", dhcp_offer(mac_bytes(&mac), [10, 1, 0, 1]));
    assert!(!saw_probe(&cap.join().expect("capture")), "a DHCP server answer got through");
    // dhcp_server: the zone is its network's DHCP server (SmartOS stores it; hull acts on it).
    update(&n, &a, json!({"update_nics": [{"mac": mac, "dhcp_server": true}]})).ok();
    let cap = capture(&nb, "net0", Duration::from_millis(800));
    send_frame(&na, "net0", dhcp_offer(mac_bytes(&mac), [10, 1, 0, 1]));
    assert!(saw_probe(&cap.join().expect("capture")), "dhcp_server did not let its answers through");
    update(&n, &a, json!({"update_nics": [{"mac": mac, "dhcp_server": false}]})).ok();
    let cap = capture(&nb, "net0", Duration::from_millis(800));
    send_frame(&na, "net0", dhcp_offer(mac_bytes(&mac), [10, 1, 0, 1]));
    assert!(!saw_probe(&cap.join().expect("capture")), "answers pass once dhcp_server is off");
    update(&n, &a, json!({"update_nics": [{"mac": mac, "allow_dhcp_spoofing": true}]})).ok();
    let cap = capture(&nb, "net0", Duration::from_millis(800));
    send_frame(&na, "net0", dhcp_offer(mac_bytes(&mac), [10, 1, 0, 1]));
    assert!(saw_probe(&cap.join().expect("capture")), "allow_dhcp_spoofing did not let it through");
}

#[test]
fn a_nic_cannot_take_another_vm_s_mac_or_address() {
    let (n, img) = node();
    let a = create(&n, payload(&img, json!([{"nic_tag": "t0", "ips": ["10.3.0.1/24"]}])));
    let mac = mac_of(&n, &a, 0);
    let r = try_create(&n, payload(&img, json!([{"nic_tag": "t0", "mac": mac, "ips": ["10.3.0.2/24"]}])));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("nics.0.mac") && r.stderr.contains("already"), "{}", r.stderr);
    let r = try_create(&n, payload(&img, json!([{"nic_tag": "t0", "ips": ["10.3.0.1/24"]}])));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("10.3.0.1 is already"), "{}", r.stderr);
    let r = try_create(
        &n,
        payload(&img, json!([{"nic_tag": "t0", "ips": ["10.3.0.5/24"]}, {"nic_tag": "t0", "ips": ["10.3.0.5/24"]}])),
    );
    assert_eq!(r.code, 1, "two NICs of one VM with one address");
    // add_nics on a running VM is held to the same rule.
    let b = create(&n, payload(&img, json!([{"nic_tag": "t0", "ips": ["10.3.0.2/24"]}])));
    let r = update(&n, &b, json!({"add_nics": [{"nic_tag": "t0", "mac": mac, "ips": ["10.3.0.9/24"]}]}));
    assert_eq!(r.code, 1, "{}", r.stdout);
    // The same address on another VLAN is another network.
    create(&n, payload(&img, json!([{"nic_tag": "t0", "vlan_id": 7, "ips": ["10.3.0.1/24"]}])));
    assert!(ping(&n, &b, &["10.3.0.1"]), "A keeps its traffic");
    assert_eq!(n.hull(&["vmadm", "list", "-H"]).ok().lines().count(), 3);
}

#[test]
fn a_zone_cannot_claim_another_zone_s_ipv6_address() {
    let (n, img) = node();
    let a = create(&n, payload(&img, json!([{"nic_tag": "t0", "ips": ["fd00:20::1/64"]}])));
    let b = create(&n, payload(&img, json!([{"nic_tag": "t0", "ips": ["fd00:20::2/64"]}])));
    let c = create(&n, payload(&img, json!([{"nic_tag": "t0", "ips": ["fd00:20::3/64"]}])));
    assert!(ping(&n, &b, &["fd00:20::3"]));
    let mac = mac_bytes(&mac_of(&n, &a, 0));
    let (na, nb) = (n.zone_netns(&a), n.zone_netns(&b));
    // A claims C's address: dropped at A's VNIC.
    let cap = capture(&nb, "net0", Duration::from_millis(800));
    send_frame(&na, "net0", neighbour_advert(mac, "fd00:20::3".parse().expect("addr")));
    assert!(!saw_probe(&cap.join().expect("capture")), "a spoofed neighbour advertisement got through");
    assert!(ping(&n, &b, &["fd00:20::3"]), "B still reaches C");
    // Its own address passes: the rule is not a blanket drop.
    let cap = capture(&nb, "net0", Duration::from_millis(800));
    send_frame(&na, "net0", neighbour_advert(mac, "fd00:20::1".parse().expect("addr")));
    assert!(saw_probe(&cap.join().expect("capture")), "A's own advertisement was dropped");
    let _ = c;
}

/// Joins two node namespaces with a veth pair: the underlay, 192.168.77.1 and .2.
fn underlay(n1: &TestNode, n2: &TestNode) {
    let peer_ns = std::fs::File::open(n2.netns_path()).expect("open");
    n1.in_node(move || {
        use std::os::fd::AsRawFd;
        let mut nl = hull_net::nl::Netlink::open().expect("netlink");
        nl.add_veth("under0", [2, 0, 0, 0, 7, 1], "under0", [2, 0, 0, 0, 7, 2], peer_ns.as_raw_fd(), 1500)
            .expect("veth");
        let l = nl.link("under0").expect("link").expect("under0");
        nl.add_address(l.index, "192.168.77.1".parse().expect("ip"), 24).expect("addr");
        nl.set_up(l.index, true).expect("up");
    });
    n2.in_node(|| {
        let mut nl = hull_net::nl::Netlink::open().expect("netlink");
        let l = nl.link("under0").expect("link").expect("under0");
        nl.add_address(l.index, "192.168.77.2".parse().expect("ip"), 24).expect("addr");
        nl.set_up(l.index, true).expect("up");
    });
}

#[test]
fn overlays_carry_a_tenant_between_nodes_and_keep_tenants_apart() {
    let (n1, img1) = node();
    let (n2, img2) = node();
    underlay(&n1, &n2);
    for (n, me, peer) in [(&n1, "192.168.77.1", "192.168.77.2"), (&n2, "192.168.77.2", "192.168.77.1")] {
        n.hull(&["overlay", "add", "ovl", "--underlay", me]).ok();
        n.hull(&["overlay", "peers", "ovl", "100", peer]).ok();
        n.hull(&["overlay", "peers", "ovl", "200", peer]).ok();
    }
    // Tenant A on VNI 100, tenant B on VNI 200, with the same addresses.
    let a1 = create(&n1, payload(&img1, json!([{"nic_tag": "ovl/100", "ips": ["10.9.0.1/24"]}])));
    let a2 = create(&n2, payload(&img2, json!([{"nic_tag": "ovl/100", "ips": ["10.9.0.2/24"]}])));
    let b1 = create(&n1, payload(&img1, json!([{"nic_tag": "ovl/200", "ips": ["10.9.0.1/24"]}])));
    let b2 = create(&n2, payload(&img2, json!([{"nic_tag": "ovl/200", "ips": ["10.9.0.2/24"]}])));
    let mac_a1 = mac_bytes(&mac_of(&n1, &a1, 0));
    let watch_b1 = capture(&n1.zone_netns(&b1), "net0", Duration::from_secs(3));
    let watch_b2 = capture(&n2.zone_netns(&b2), "net0", Duration::from_secs(3));
    assert!(ping(&n1, &a1, &["10.9.0.2"]), "tenant A across the overlay");
    assert!(ping(&n2, &a2, &["10.9.0.1"]), "tenant A, the other way");
    let from_a1 = |frames: Vec<Vec<u8>>| frames.iter().filter(|f| f.len() >= 12 && f[6..12] == mac_a1).count();
    assert_eq!(from_a1(watch_b1.join().expect("b1")), 0, "tenant B on node 1 saw tenant A");
    assert_eq!(from_a1(watch_b2.join().expect("b2")), 0, "tenant B on node 2 saw tenant A");
    assert!(ping(&n1, &b1, &["10.9.0.2"]), "tenant B has its own network");
    // The overlay NIC fits inside the underlay's MTU.
    let mtu = n1.hull(&["zlogin", &a1, "cat", "/sys/class/net/net0/mtu"]).ok();
    assert_eq!(mtu.trim(), "1450");
    for (n, v) in [(&n1, &a1), (&n1, &b1), (&n2, &a2), (&n2, &b2)] {
        n.hull(&["vmadm", "delete", v]).ok();
    }
    for n in [&n1, &n2] {
        let (links, chains) = leftovers(n);
        // The etherstub of t0 stays; the overlay's bridges and VXLAN devices go with their last NIC.
        assert_eq!(links.len(), 1, "{links:?}");
        assert!(chains.is_empty());
    }
}

/// Sends as much as it can over TCP from `from` to `to_ip:port` (listening in `to`) for
/// `secs`; returns Mbit/s received.
fn tcp_rate(from: &Path, to: &Path, to_ip: &str, secs: f64) -> f64 {
    let addr: std::net::SocketAddr = format!("{to_ip}:5201").parse().expect("addr");
    let (tx, rx) = std::sync::mpsc::channel();
    let to = to.to_path_buf();
    let server = std::thread::spawn(move || {
        hull_net::ns::run_in(&to, move || {
            let l = std::net::TcpListener::bind(addr).expect("listen");
            let _ = tx.send(());
            let (mut s, _) = l.accept().expect("accept");
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0u64;
            let mut t0 = None;
            loop {
                match std::io::Read::read(&mut s, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => {
                        // Time from the first byte: connection setup is not bandwidth.
                        t0.get_or_insert_with(Instant::now);
                        total += k as u64;
                    }
                }
            }
            let el = t0.map(|t| t.elapsed().as_secs_f64()).unwrap_or(1.0);
            Ok(total as f64 * 8.0 / el / 1e6)
        })
        .expect("server")
    });
    rx.recv_timeout(Duration::from_secs(5)).expect("server up");
    let from = from.to_path_buf();
    hull_net::ns::run_in(&from, move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        let buf = vec![0x5au8; 1 << 16];
        let t = Instant::now();
        while t.elapsed().as_secs_f64() < secs {
            std::io::Write::write_all(&mut s, &buf).expect("write");
        }
        Ok(())
    })
    .expect("client");
    server.join().expect("server")
}

#[test]
fn a_bandwidth_cap_holds_both_ways() {
    let (n, img) = node();
    let a = create(&n, payload(&img, json!([{"nic_tag": "t0", "ips": ["10.2.0.1/24"], "maxbw": "100M"}])));
    let b = create(&n, payload(&img, json!([{"nic_tag": "t0", "ips": ["10.2.0.2/24"]}])));
    let (na, nb) = (n.zone_netns(&a), n.zone_netns(&b));
    let out = tcp_rate(&na, &nb, "10.2.0.2", 3.0);
    let inward = tcp_rate(&nb, &na, "10.2.0.1", 3.0);
    eprintln!("under a 100 Mbit/s cap: {out:.1} Mbit/s from the zone, {inward:.1} Mbit/s to it");
    for (what, rate) in [("from the zone", out), ("to the zone", inward)] {
        assert!((90.0..=110.0).contains(&rate), "{what}: {rate:.1} Mbit/s under a 100 Mbit/s cap");
    }
    // Lifting the cap lifts it (well beyond 100 Mbit/s on veth).
    let mac = mac_of(&n, &a, 0);
    update(&n, &a, json!({"update_nics": [{"mac": mac, "maxbw": "1G"}]})).ok();
    let raised = tcp_rate(&na, &nb, "10.2.0.2", 2.0);
    eprintln!("under a 1 Gbit/s cap: {raised:.1} Mbit/s");
    assert!(raised > 300.0, "a 1 Gbit/s cap gave {raised:.1} Mbit/s");
}

#[test]
fn nics_change_on_a_running_zone() {
    let (n, img) = node();
    let a = create(&n, payload(&img, json!([{"nic_tag": "t0", "ips": ["10.3.0.1/24"]}])));
    let b = create(&n, payload(&img, json!([{"nic_tag": "t0", "vlan_id": 7, "ips": ["10.4.0.2/24"]}])));
    assert!(!ping(&n, &a, &["10.4.0.2"]));
    let r = update(&n, &a, json!({"add_nics": [{"nic_tag": "t0", "vlan_id": 7, "ips": ["10.4.0.1/24"]}]})).said();
    assert!(r.contains("applied live: add_nics"), "a running zone's new NIC is live: {r}");
    let v: Value = serde_json::from_str(&n.hull(&["vmadm", "get", &a]).ok()).expect("json");
    assert_eq!(v["nics"][1]["interface"], "net1");
    assert!(ping(&n, &a, &["10.4.0.2"]), "the added NIC is up");
    // A new address on it, live.
    let mac1 = v["nics"][1]["mac"].as_str().expect("mac").to_string();
    update(&n, &a, json!({"update_nics": [{"mac": mac1, "ips": ["10.4.0.9/24"]}]})).ok();
    let addrs = n.hull(&["zlogin", &a, "ip", "addr", "show", "net1"]).ok();
    assert!(addrs.contains("10.4.0.9/24") && !addrs.contains("10.4.0.1/24"), "{addrs}");
    // And off again.
    update(&n, &a, json!({"remove_nics": [mac1]})).ok();
    assert!(n.hull(&["zlogin", &a, "ip", "link", "show", "net1"]).code != 0, "net1 is still there");
    assert!(!ping(&n, &a, &["10.4.0.2"]));
    // Changes to a stopped VM wait for its boot.
    n.hull(&["vmadm", "stop", &b]).ok();
    update(&n, &b, json!({"add_nics": [{"nic_tag": "t0", "ips": ["10.3.0.2/24"]}]})).ok();
    n.hull(&["vmadm", "start", &b]).ok();
    assert!(ping(&n, &b, &["10.3.0.1"]), "the NIC added while stopped came up at boot");
    // A bad change is refused and leaves the zone as it was.
    let r = update(&n, &a, json!({"add_nics": [{"nic_tag": "nope"}]}));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("nic_tag"), "{}", r.stderr);
    let r = update(&n, &a, json!({"remove_nics": ["02:00:00:00:00:42"]}));
    assert_eq!(r.code, 1);
    let v: Value = serde_json::from_str(&n.hull(&["vmadm", "get", &a]).ok()).expect("json");
    assert_eq!(v["nics"].as_array().map(Vec::len), Some(1));
}

#[test]
fn bad_nics_are_refused_and_leave_nothing() {
    let (n, img) = node();
    n.hull(&["overlay", "add", "ovl", "--underlay", "192.168.9.1"]).ok();
    let many: Vec<String> = (0..14).map(|i| format!("10.5.0.{i}")).collect();
    let cases = [
        (json!([{"nic_tag": "nope", "ips": ["10.0.0.1/24"]}]), "nic_tag"),
        (json!([{"nic_tag": "t0", "ips": ["10.0.0.300/24"]}]), "10.0.0.300"),
        (json!([{"nic_tag": "t0", "ips": ["10.0.0.1"]}]), "prefix length"),
        (json!([{"nic_tag": "t0", "vlan_id": 4096}]), "vlan_id"),
        (json!([{"nic_tag": "t0", "allowed_ips": many}]), "at most 13"),
        (json!([{"nic_tag": "ovl/16777216"}]), "VNI"),
        (json!([{"nic_tag": "ovl/0"}]), "VNI"),
        (
            json!([{"nic_tag": "t0", "ips": ["10.0.0.1/24"], "mac": "02:00:00:00:00:01"},
                   {"nic_tag": "t0", "ips": ["10.0.0.1/24"], "mac": "02:00:00:00:00:01"}]),
            "used twice",
        ),
        // SmartOS's rules across NICs: VRRP needs a primary address of the VM's own.
        (json!([{"nic_tag": "t0", "vrrp_vrid": 1, "vrrp_primary_ip": "10.0.0.5"}]), "only VRRP nics"),
        (
            json!([{"nic_tag": "t0", "ips": ["10.0.0.5/24"]}, {"nic_tag": "t0", "vrrp_vrid": 1}]),
            "vrrp_vrid set but not vrrp_primary_ip",
        ),
        (json!([{"nic_tag": "t0", "primary": true}, {"nic_tag": "t0", "primary": true}]), "more than 1 primary NIC"),
    ];
    for (nics, needle) in cases {
        let r = try_create(&n, payload(&img, nics.clone()));
        assert_eq!(r.code, 1, "{nics}: {}", r.stderr);
        assert!(r.stderr.contains(needle), "{nics}: {}", r.stderr);
    }
    assert!(n.hull(&["vmadm", "list", "-H"]).ok().trim().is_empty());
    assert_eq!(n.datasets().into_iter().filter(|d| !d.contains('@') && d.len() == 36).count(), 1, "only the image");
    // A multicast MAC is taken as SmartOS takes it (its own tests use 01:02:03:04:05:06), and
    // refused by name when the VM boots: no interface can have one.
    let mut p = payload(&img, json!([{"nic_tag": "t0", "mac": "01:02:03:04:05:06"}]));
    p["autoboot"] = false.into();
    let made = try_create(&n, p);
    assert_eq!(made.code, 0, "{}", made.stderr);
    let uuid = made.stdout.trim().rsplit(' ').next().expect("uuid").to_string();
    let r = n.hull(&["vmadm", "start", &uuid]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("multicast"), "{}", r.stderr);
    n.hull(&["vmadm", "delete", &uuid]).ok();
    let (links, chains) = leftovers(&n);
    assert_eq!(links.len(), 1, "{links:?}");
    assert!(chains.is_empty());
    assert!(std::fs::read_dir(n.root().join("var/hull/netns")).map(|d| d.count()).unwrap_or(0) == 0);
}

#[test]
fn nictagadm_and_dladm_manage_tags_and_etherstubs() {
    let n = TestNode::in_netns("256M");
    // An uplink: a veth whose far end is in a namespace of the test's, with 10.6.0.254.
    let far = n.root().join("far.netns");
    hull_net::ns::create(&far).expect("far netns");
    // Removed even when the test fails: a namespace mount outlives its temporary directory.
    struct Far(PathBuf);
    impl Drop for Far {
        fn drop(&mut self) {
            let _ = hull_net::ns::remove(&self.0);
        }
    }
    let _far_guard = Far(far.clone());
    let far_file = std::fs::File::open(&far).expect("open");
    n.in_node(move || {
        use std::os::fd::AsRawFd;
        let mut nl = hull_net::nl::Netlink::open().expect("netlink");
        nl.add_veth("up0", [2, 0, 0, 0, 6, 1], "eth0", [2, 0, 0, 0, 6, 2], far_file.as_raw_fd(), 1500).expect("veth");
    });
    hull_net::ns::run_in(&far, || {
        let mut nl = hull_net::nl::Netlink::open()?;
        let l = nl.link("eth0")?.expect("eth0");
        nl.add_address(l.index, "10.6.0.254".parse().expect("ip"), 24)?;
        nl.set_up(l.index, true)
    })
    .expect("far end");

    n.hull(&["nictagadm", "add", "ext", "02:00:00:00:06:01"]).ok();
    n.hull(&["nictagadm", "add", "-l", "-p", "mtu=9000", "int"]).ok();
    assert_eq!(n.hull(&["nictagadm", "add", "-l", "int"]).code, 1, "a tag twice");
    assert_eq!(n.hull(&["nictagadm", "add", "bad-name!", "up0"]).code, 1);
    assert_eq!(n.hull(&["nictagadm", "add", "ghost", "nosuchlink"]).code, 1);
    let list = n.hull(&["nictagadm", "list", "-p"]).ok();
    assert!(list.lines().any(|l| l == "ext:02\\:00\\:00\\:00\\:06\\:01:up0:normal"), "{list}");
    assert!(list.lines().any(|l| l.starts_with("int:") && l.ends_with(":etherstub")), "{list}");
    assert_eq!(n.hull(&["nictagadm", "list", "-l", "-p", "-d", ","]).ok().lines().count(), 1);
    n.hull(&["nictagadm", "exists", "ext", "int"]).ok();
    assert_eq!(n.hull(&["nictagadm", "exists", "ext", "nope"]).code, 1);
    assert_eq!(n.hull(&["dladm", "show-etherstub", "-p", "-o", "link"]).ok(), "int\n");

    // A zone on the uplink's tag reaches the far side.
    let img = n.busybox();
    let mut p = payload(&img, json!([{"nic_tag": "ext", "ips": ["10.6.0.10/24"], "gateways": ["10.6.0.254"]}]));
    // SmartOS's routes: through an address, or out of a NIC (`nics[N]`, no gateway).
    p["routes"] =
        json!({"10.9.0.0/16": "10.6.0.254", "192.168.77.0/24": "nics[0]", "192.168.78.0/24": "macs[2:0:0:0:6:10]"});
    p["nics"][0]["mac"] = json!("02:00:00:00:06:10");
    let mut bad = p.clone();
    bad["routes"] = json!({"192.168.77.0/24": "nics[3]"});
    let f = n.root().join("bad-route.json");
    std::fs::write(&f, bad.to_string()).expect("payload");
    let r = n.hull(&["vmadm", "create", "-f", &f.to_string_lossy()]);
    assert!(r.code != 0 && r.stderr.contains("nics[3]"), "a route out of a NIC the VM lacks: {}", r.stderr);
    let z = create(&n, p);
    assert!(ping(&n, &z, &["10.6.0.254"]), "through the uplink");
    let routes = n.hull(&["zlogin", &z, "ip", "route"]).ok();
    assert!(routes.contains("default via 10.6.0.254"), "{routes}");
    assert!(routes.contains("10.9.0.0/16 via 10.6.0.254"), "{routes}");
    assert!(routes.lines().any(|l| l.starts_with("192.168.77.0/24 dev net0")), "{routes}");
    assert!(routes.lines().any(|l| l.starts_with("192.168.78.0/24 dev net0")), "by MAC: {routes}");
    assert_eq!(n.hull(&["nictagadm", "vms", "ext"]).ok().trim(), z);
    let r = n.hull(&["nictagadm", "delete", "ext"]);
    assert_eq!(r.code, 1, "a tag in use");
    assert!(r.stderr.contains(&z));
    let links = n.hull(&["dladm", "show-link", "-p", "-o", "link,class"]).ok();
    assert!(links.lines().any(|l| l == "up0:phys"), "{links}");
    assert!(links.lines().any(|l| l.ends_with(":vnic")), "{links}");
    n.hull(&["vmadm", "delete", &z]).ok();
    // The uplink is released, not deleted, when its switch goes.
    let links = n.hull(&["dladm", "show-link", "-p", "-o", "link,class,bridge"]).ok();
    assert!(links.lines().any(|l| l == "up0:phys:"), "{links}");

    n.hull(&["dladm", "create-etherstub", "stub0"]).ok();
    assert_eq!(n.hull(&["dladm", "create-etherstub", "stub0"]).code, 1);
    assert_eq!(n.hull(&["dladm", "show-etherstub", "-p", "-o", "link"]).ok(), "int\nstub0\n");
    assert_eq!(n.hull(&["dladm", "delete-etherstub", "int"]).code, 1, "a tag's etherstub");
    n.hull(&["dladm", "delete-etherstub", "stub0"]).ok();
    n.hull(&["nictagadm", "delete", "ext"]).ok();
    n.hull(&["nictagadm", "delete", "int"]).ok();
    assert!(n.hull(&["nictagadm", "list", "-p"]).ok().is_empty());
    assert_eq!(leftovers(&n), (vec![], vec![]));
}

#[test]
fn the_primary_flag_moves_as_smartos_moves_it() {
    let (n, img) = node();
    let mut p =
        payload(&img, json!([{"nic_tag": "t0", "ips": ["10.7.0.1/24"]}, {"nic_tag": "t0", "ips": ["10.7.1.1/24"]}]));
    p["autoboot"] = false.into();
    let a = create(&n, p);
    let nics = |n: &TestNode| -> Vec<Value> {
        let v: Value = serde_json::from_str(&n.hull(&["vmadm", "get", &a]).ok()).expect("json");
        v["nics"].as_array().cloned().expect("nics")
    };
    // One primary, and the other NIC has no flag at all.
    let first = nics(&n);
    assert_eq!(first[0]["primary"], true);
    assert!(first[1].get("primary").is_none(), "{first:?}");
    let second = first[1]["mac"].as_str().expect("mac").to_string();
    update(&n, &a, json!({"update_nics": [{"mac": second, "primary": true}]})).ok();
    let now = nics(&n);
    assert!(now[0].get("primary").is_none() && now[1]["primary"] == true, "{now:?}");
    // Only true is a value for it.
    let r = update(&n, &a, json!({"update_nics": [{"mac": second, "primary": false}]}));
    assert!(r.code != 0 && r.stderr.contains("primary flag"), "{}", r.stderr);
    assert_ne!(update(&n, &a, json!({"update_nics": [{"mac": second, "primary": "blah"}]})).code, 0);
    // A new primary NIC takes the flag.
    update(&n, &a, json!({"add_nics": [{"nic_tag": "t0", "ips": ["10.7.2.1/24"], "primary": true}]})).ok();
    let now = nics(&n);
    assert_eq!(now.iter().filter(|x| x.get("primary").is_some()).count(), 1, "{now:?}");
    assert_eq!(now[2]["primary"], true);
}

// ------------------------------------------------------------------ a way out

/// The outside world for a node: a namespace behind a veth, with `far_ip`/24 on its end;
/// the node's end is `up0` with `node_ip`/24 and a default route through the far end, as a
/// host's only NIC would be. Removed when dropped.
struct Outside {
    path: PathBuf,
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = hull_net::ns::remove(&self.path);
    }
}

fn outside(n: &TestNode, node_ip: &'static str, far_ip: &'static str) -> Outside {
    let far = n.root().join("outside.netns");
    hull_net::ns::create(&far).expect("outside netns");
    let guard = Outside { path: far.clone() };
    let far_file = std::fs::File::open(&far).expect("open");
    n.in_node(move || {
        use std::os::fd::AsRawFd;
        let mut nl = hull_net::nl::Netlink::open().expect("netlink");
        nl.add_veth("up0", [2, 0, 0, 0, 9, 1], "eth0", [2, 0, 0, 0, 9, 2], far_file.as_raw_fd(), 1500).expect("veth");
        let l = nl.link("up0").expect("links").expect("up0");
        nl.add_address(l.index, node_ip.parse().expect("ip"), 24).expect("address");
        nl.set_up(l.index, true).expect("up");
        nl.add_route("0.0.0.0".parse().expect("ip"), 0, Some(far_ip.parse().expect("ip")), None).expect("default");
    });
    hull_net::ns::run_in(&far, move || {
        let mut nl = hull_net::nl::Netlink::open()?;
        let l = nl.link("eth0")?.expect("eth0");
        nl.add_address(l.index, far_ip.parse().expect("ip"), 24)?;
        let lo = nl.link("lo")?.expect("lo");
        nl.set_up(lo.index, true)?;
        nl.set_up(l.index, true)
    })
    .expect("far end");
    guard
}

/// A command in the node's own namespace (the host, as far as the node knows).
fn on_host(n: &TestNode, args: &[&str]) -> std::process::Output {
    std::process::Command::new("nsenter")
        .arg(format!("--net={}", n.netns_path().display()))
        .args(args)
        .output()
        .expect("nsenter")
}

/// The host's addresses and routes on its links, as `ip` prints them, less what the kernel
/// names per link (link-local addresses).
fn host_config(n: &TestNode) -> (Vec<String>, Vec<String>) {
    let addrs = String::from_utf8_lossy(&on_host(n, &["ip", "-o", "addr", "show"]).stdout)
        .lines()
        .filter(|l| !l.contains(" lo ") && !l.contains("fe80::"))
        .map(|l| l.split_whitespace().skip(1).take(3).collect::<Vec<_>>().join(" "))
        .collect();
    let routes =
        String::from_utf8_lossy(&on_host(n, &["ip", "route", "show"]).stdout).lines().map(String::from).collect();
    (addrs, routes)
}

#[test]
fn an_uplink_with_the_host_s_address_keeps_the_host_reachable() {
    let n = TestNode::in_netns("512M");
    let _far = outside(&n, "192.0.2.2", "192.0.2.1");
    assert!(on_host(&n, &["ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.1"]).status.success());
    let before = host_config(&n);
    assert!(before.0.iter().any(|a| a.starts_with("up0 inet 192.0.2.2/24")), "{before:?}");

    n.hull(&["nictagadm", "add", "ext", "up0"]).ok();
    let (addrs, routes) = host_config(&n);
    assert!(!addrs.iter().any(|a| a.starts_with("up0 ")), "the address left the bridge's port: {addrs:?}");
    assert!(routes.iter().any(|r| r.starts_with("default via 192.0.2.1") && !r.contains("up0")), "{routes:?}");
    assert!(routes.iter().any(|r| r.starts_with("198.51.100.0/24 via 192.0.2.1") && !r.contains("up0")), "{routes:?}");
    let host_ping = |n: &TestNode| on_host(n, &["busybox", "ping", "-c", "1", "-W", "2", "192.0.2.1"]).status.success();
    assert!(host_ping(&n), "the host still reaches the outside");

    // A zone on the tag is on the host's LAN and meets the host there.
    let img = n.busybox();
    let z = create(&n, payload(&img, json!([{"nic_tag": "ext", "ips": ["192.0.2.10/24"], "gateways": ["192.0.2.1"]}])));
    assert!(ping_gets_through(&n, &z, &["192.0.2.1"]), "the zone reaches the outside");
    assert!(ping_gets_through(&n, &z, &["192.0.2.2"]), "and the host");
    n.hull(&["vmadm", "delete", &z]).ok();
    assert!(host_ping(&n), "the switch stays with the host's address after the last VM");

    n.hull(&["nictagadm", "delete", "ext"]).ok();
    assert_eq!(host_config(&n), before, "the host's addresses and routes are back as they were");
    assert!(host_ping(&n));
    assert_eq!(leftovers(&n), (vec![], vec![]));
}

/// Whether a TCP connection from the zone to `addr` is answered.
fn zone_connects(n: &TestNode, uuid: &str, addr: &str, port: &str) -> bool {
    n.hull(&["zlogin", uuid, "sh", "-c", &format!("echo x | nc -w 2 {addr} {port}")]).code == 0
}

#[test]
fn zones_on_nat_networks_reach_the_outside_as_the_host_and_not_each_other() {
    let n = TestNode::in_netns("512M");
    let _far = outside(&n, "192.0.2.2", "192.0.2.1");
    // A subnet the host already routes is refused, by the route's name.
    let r = n.hull(&["network", "add", "clash", "--subnet", "192.0.2.128/25"]);
    assert!(r.code == 1 && r.stderr.contains("192.0.2.0/24"), "{}", r.stderr);
    assert!(n.hull(&["nictagadm", "list", "-p"]).ok().is_empty(), "a refused network leaves no tag");
    n.hull(&["network", "add", "web", "--subnet", "10.77.0.0/24", "--no-dhcp"]).ok();
    // The second tenant's network is an overlay's VNI, with its own NAT gateway on this node
    // (Triton's fabric network with its NAT zone).
    n.hull(&["overlay", "add", "ovl", "--underlay", "192.0.2.2"]).ok();
    assert_eq!(n.hull(&["network", "add", "db", "--overlay", "nope/100"]).code, 1);
    n.hull(&["network", "add", "db", "--overlay", "ovl/100"]).ok();
    let db: Value = serde_json::from_str(&n.hull(&["network", "get", "db"]).ok()).expect("json");
    let db_net: ipnet::Ipv4Net = db["subnet"].as_str().expect("subnet").parse().expect("net");
    assert!(!db_net.contains(&"10.77.0.1".parse::<std::net::Ipv4Addr>().expect("ip")), "{db}");
    let gw_db = db["gateway"].as_str().expect("gw").to_string();
    let ip_db = format!("{}/24", db_net.hosts().nth(4).expect("host"));

    let img = n.busybox();
    let a = create(&n, payload(&img, json!([{"nic_tag": "web", "ips": ["10.77.0.5/24"], "gateways": ["10.77.0.1"]}])));
    let b =
        create(&n, payload(&img, json!([{"nic_tag": "ovl/100", "ips": [ip_db.clone()], "gateways": [gw_db.clone()]}])));
    // The outside has no route to either subnet: an answer means the host masqueraded.
    assert!(ping_gets_through(&n, &a, &["192.0.2.1"]), "web reaches the outside");
    assert!(ping_gets_through(&n, &b, &["192.0.2.1"]), "db reaches the outside");
    let b_ip = ip_db.split('/').next().expect("ip");
    assert!(!ping(&n, &a, &[b_ip]), "one network reaches into another");
    assert!(!ping(&n, &b, &["10.77.0.5"]), "one network reaches into another");
    // The host's own services are not a tenant's: its gateway answers ping, nothing else.
    let listener = n.in_node(|| std::net::TcpListener::bind("0.0.0.0:7777").expect("listen"));
    listener.set_nonblocking(true).expect("nonblocking");
    assert!(ping_gets_through(&n, &a, &["10.77.0.1"]));
    assert!(!zone_connects(&n, &a, "10.77.0.1", "7777"), "a tenant reached a host service through its gateway");
    assert!(!zone_connects(&n, &a, "192.0.2.2", "7777"), "a tenant reached a host service through another address");
    assert!(listener.accept().is_err(), "the host accepted a tenant's connection");
    // While VMs use it, a network stays.
    assert_eq!(n.hull(&["network", "delete", "web"]).code, 1);
    for z in [&a, &b] {
        n.hull(&["vmadm", "delete", z]).ok();
    }
    n.hull(&["network", "delete", "web"]).ok();
    n.hull(&["network", "delete", "db"]).ok();
    assert_eq!(leftovers(&n), (vec![], vec![]));
    let rules = String::from_utf8_lossy(&on_host(&n, &["nft", "list", "ruleset"]).stdout).to_string();
    assert!(!rules.contains(&format!("table inet hull_{}", n.prefix)), "{rules}");
    assert_eq!(host_config(&n).0, vec!["up0 inet 192.0.2.2/24".to_string()]);
}

/// Asks for a DHCP lease from inside a zone with busybox's udhcpc; the script it runs
/// configures what it was given and writes it down. Returns what the zone was told.
fn dhcp_in_zone(n: &TestNode, uuid: &str) -> String {
    let script = "#!/bin/sh\n[ \"$1\" = bound ] || exit 0\nip addr add $ip/$mask dev $interface\n[ -n \"$router\" ] && ip route add default via ${router%% *}\necho $ip/$mask $router $dns > /tmp/lease\n";
    n.hull(&["zlogin", uuid, "sh", "-c", &format!("printf '%s' '{script}' > /tmp/dhcp.sh && chmod +x /tmp/dhcp.sh")])
        .ok();
    let r = n.hull(&["zlogin", uuid, "udhcpc", "-i", "net0", "-n", "-q", "-t", "5", "-T", "1", "-s", "/tmp/dhcp.sh"]);
    let dir = n.root().join("var/hull/z").join(uuid);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    assert_eq!(r.code, 0, "{}\nanswers: {}\nzoneadmd: {}", r.stderr, read("dhcp.json"), read("zoneadmd.log"));
    n.hull(&["zlogin", uuid, "cat", "/tmp/lease"]).ok().trim().to_string()
}

#[test]
fn a_dhcp_nic_on_a_network_gets_its_lease_and_only_that_address_passes() {
    let n = TestNode::in_netns("512M");
    let _far = outside(&n, "192.0.2.2", "192.0.2.1");
    n.hull(&[
        "network",
        "add",
        "lan",
        "--subnet",
        "10.79.0.0/24",
        "--dhcp-range",
        "10.79.0.50-10.79.0.60",
        "--resolvers",
        "192.0.2.53",
    ])
    .ok();
    let img = n.busybox();
    // A static address inside the range is never leased to another.
    let fixed =
        create(&n, payload(&img, json!([{"nic_tag": "lan", "ips": ["10.79.0.50/24"], "gateways": ["10.79.0.1"]}])));
    let z = create(&n, payload(&img, json!([{"nic_tag": "lan", "ips": ["dhcp"]}])));
    let lease = dhcp_in_zone(&n, &z);
    assert_eq!(lease, "10.79.0.51/24 10.79.0.1 192.0.2.53", "what the zone was told");
    let mac = mac_of(&n, &z, 0);
    let leases: Value =
        serde_json::from_str(&std::fs::read_to_string(n.root().join("var/hull/dhcp/lan.json")).expect("leases"))
            .expect("json");
    assert_eq!(leases[&mac], "10.79.0.51", "{leases}");
    assert!(
        ping_gets_through(&n, &z, &["192.0.2.1"]),
        "the leased zone reaches the outside through NAT: {}",
        n.hull(&["zlogin", &z, "sh", "-c", "ip addr; ip route"]).stdout
    );
    assert!(ping_gets_through(&n, &z, &["10.79.0.50"]), "and its neighbour");
    // An address it was not leased does not pass, even inside the range.
    in_zone_ns(&n, &z, &["ip", "addr", "add", "10.79.0.55/24", "dev", "net0"]);
    assert!(!ping(&n, &z, &["-I", "10.79.0.55", "10.79.0.50"]), "a source outside the lease got through");
    // A zone answering DHCP itself is dropped unless its NIC says dhcp_server.
    assert!(ping_gets_through(&n, &fixed, &["10.79.0.51"]));
    // The same MAC keeps its address across a reboot.
    n.hull(&["vmadm", "stop", &z]).ok();
    n.hull(&["vmadm", "start", &z]).ok();
    assert_eq!(dhcp_in_zone(&n, &z), lease);
    for v in [&z, &fixed] {
        n.hull(&["vmadm", "delete", v]).ok();
    }
    n.hull(&["network", "delete", "lan"]).ok();
    assert_eq!(leftovers(&n), (vec![], vec![]));
}

#[test]
fn ipv6_on_a_nat_network_is_slaac_with_link_protection_on() {
    let n = TestNode::in_netns("512M");
    let _far = outside(&n, "192.0.2.2", "192.0.2.1");
    // The outside world has IPv6 too; the host's default IPv6 route goes there.
    assert!(on_host(&n, &["ip", "-6", "addr", "add", "2001:db8:1::2/64", "dev", "up0", "nodad"]).status.success());
    assert!(on_host(&n, &["ip", "-6", "route", "add", "default", "via", "2001:db8:1::1"]).status.success());
    let far = n.root().join("outside.netns");
    let st = std::process::Command::new("nsenter")
        .arg(format!("--net={}", far.display()))
        .args(["ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "eth0", "nodad"])
        .status()
        .expect("nsenter");
    assert!(st.success());
    n.hull(&["network", "add", "six", "--subnet", "10.81.0.0/24", "--ipv6"]).ok();
    let net: Value = serde_json::from_str(&n.hull(&["network", "get", "six"]).ok()).expect("json");
    let prefix: ipnet::Ipv6Net = net["subnet6"].as_str().expect("subnet6").parse().expect("net");
    assert!(prefix.addr().segments()[0] & 0xff00 == 0xfd00 && prefix.prefix_len() == 64, "{net}");
    let gw6 = net["gateway6"].as_str().expect("gateway6").to_string();

    let img = n.busybox();
    let z = create(&n, payload(&img, json!([{"nic_tag": "six", "ips": ["dhcp", "addrconf"]}])));
    let mac = hull_net::parse_mac(&mac_of(&n, &z, 0)).expect("mac");
    let slaac = hull_net::routed::eui64(&prefix, &mac).to_string();
    // The zone's kernel forms its address from hull's advertisement, with no help.
    let t = Instant::now();
    let addrs = || n.hull(&["zlogin", &z, "ip", "-6", "addr", "show", "dev", "net0"]).stdout;
    while !addrs().contains(&slaac) && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(addrs().contains(&slaac), "no SLAAC address {slaac}:\n{}", addrs());
    assert!(ping_gets_through(&n, &z, &[&gw6]), "the zone reaches its IPv6 gateway");
    assert!(ping_gets_through(&n, &z, &["2001:db8:1::1"]), "and the outside, masqueraded");
    // Another address of the prefix, taken by hand, does not pass.
    let forged = format!("{}", hull_net::routed::eui64(&prefix, &[2, 0, 0, 0, 0, 0x99]));
    in_zone_ns(&n, &z, &["ip", "-6", "addr", "add", &format!("{forged}/64"), "dev", "net0", "nodad"]);
    assert!(!ping(&n, &z, &["-I", &forged, &gw6]), "a source outside the NIC's SLAAC address got through");
    n.hull(&["vmadm", "delete", &z]).ok();
    n.hull(&["network", "delete", "six"]).ok();
    assert_eq!(leftovers(&n), (vec![], vec![]));
}
