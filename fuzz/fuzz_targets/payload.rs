#![no_main]
use libfuzzer_sys::fuzz_target;

// vmadm payloads come from orchestrators and users: validation must answer, never panic.
fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    for action in [hull_spec::Action::Create, hull_spec::Action::Update, hull_spec::Action::Receive] {
        let _ = hull_spec::vm::validate(action, None, &v);
        let _ = hull_spec::vm::validate(action, Some(hull_spec::Brand::Lx), &v);
    }
});
