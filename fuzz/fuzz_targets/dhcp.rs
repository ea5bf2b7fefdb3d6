//! A frame a VM sends to hull's DHCP responder: every byte is the tenant's.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hull_net::dhcp::is_rs(data);
    let Some(req) = hull_net::dhcp::bootp_of(data).and_then(hull_net::dhcp::parse) else { return };
    let lease = hull_net::dhcp::Lease {
        addr: std::net::Ipv4Addr::new(10, 0, 0, 5),
        prefix: 24,
        server: std::net::Ipv4Addr::new(10, 0, 0, 1),
        routers: vec![std::net::Ipv4Addr::new(10, 0, 0, 1)],
        resolvers: vec![],
        hostname: Some("h".into()),
        mtu: Some(1500),
        routes: vec![(std::net::Ipv4Addr::new(10, 9, 0, 0), 16, std::net::Ipv4Addr::new(10, 0, 0, 1))],
        lease_secs: 60,
    };
    if let Some(kind) = hull_net::dhcp::reply_kind(&req, &lease) {
        let m = hull_net::dhcp::reply(&req, &lease, kind);
        let f = hull_net::dhcp::frame(&req, &lease, [2; 6], kind, &m);
        assert!(hull_net::dhcp::bootp_of(&f).is_none(), "a reply read back as a request");
    }
});
