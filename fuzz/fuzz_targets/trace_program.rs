//! `hull trace` rewrites a bpftrace program's top level (probes, blocks, strings,
//! comments) to scope it to zones. No text may make it panic or loop.
#![no_main]
use hull_spec::trace::{Zone, providers, scope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let zones = [Zone { pidns: 4026532176, name: "web".into() }];
    let _ = scope(text, 1, &zones, None);
    let _ = scope(text, 1, &zones, Some(4026532176));
    let _ = providers(text);
});
