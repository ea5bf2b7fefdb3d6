#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(m) = hull_spec::Manifest::parse(text) {
            // What parses must survive a round trip unchanged.
            let again = hull_spec::Manifest::parse(&m.to_json_pretty()).expect("round trip");
            assert_eq!(again, m);
        }
    }
});
