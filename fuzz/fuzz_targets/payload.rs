#![no_main]
use libfuzzer_sys::fuzz_target;

// vmadm payloads come from orchestrators and users: validation must answer, never panic.
fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    for action in [hull_spec::Action::Create, hull_spec::Action::Update, hull_spec::Action::Receive] {
        let _ = hull_spec::vm::validate(action, None, &v);
        let _ = hull_spec::vm::validate(action, Some(hull_spec::Brand::Lx), &v);
    }
    // What validation keeps is what hull stores: it reads as a typed Vm, and a Vm read
    // back writes the same JSON.
    // As vmadm create does: no brand means joyent.
    let mut with_brand = v.clone();
    if let Some(m) = with_brand.as_object_mut() {
        m.entry("brand").or_insert(serde_json::json!("joyent"));
    }
    if let Ok((cfg, _)) = hull_spec::vm::validate_lenient(hull_spec::Action::Create, None, &with_brand) {
        let vm = match hull_spec::Vm::from_map(&cfg) {
            Ok(vm) => vm,
            Err(e) => panic!("a valid payload does not fit the model: {e}: {cfg:?}"),
        };
        let again = hull_spec::Vm::from_map(&vm.to_map()).expect("a written Vm reads back");
        assert_eq!(again, vm, "a Vm changed through its own JSON");
    }
    if let Some(m) = v.as_object() {
        let _ = hull_spec::Vm::from_map(m);
        let _ = hull_spec::vm::Update::from_map(m);
    }
    // What update validation keeps reads as a typed Update (the API and vmadm update both
    // apply it through that type).
    for brand in [hull_spec::Brand::Joyent, hull_spec::Brand::Kvm] {
        if let Ok((changes, _)) = hull_spec::vm::validate_lenient(hull_spec::Action::Update, Some(brand), &v) {
            if let Err(e) = hull_spec::vm::Update::from_map(&changes) {
                panic!("a valid update does not fit the Update type: {e}: {changes:?}");
            }
        }
    }
    // The nics, checked against a node with one tag of each kind and an overlay.
    if let Some(nics) = v.get("nics").and_then(|n| n.as_array()) {
        let mut cfg = hull_spec::NodeConfig::default();
        cfg.nic_tags.insert("admin".into(), Default::default());
        cfg.nic_tags.insert("local".into(), hull_spec::node::NicTag { local: true, ..Default::default() });
        cfg.overlays.insert(
            "ovl".into(),
            hull_spec::node::Overlay {
                underlay: std::net::Ipv4Addr::LOCALHOST,
                port: 4789,
                mtu: 1500,
                peers: Default::default(),
            },
        );
        let mut nics = nics.clone();
        hull_net::nic::assign(&mut nics, &[]);
        if let Ok(typed) = hull_spec::vm::model::Nic::from_values(&nics) {
            let _ = hull_net::nic::parse_all(&typed, &cfg);
        }
    }
});
