#![no_main]
use libfuzzer_sys::fuzz_target;

// Service manifests come from operators and packages: the XML and TOML readers, and the
// conversion into property groups, must answer, never panic.
fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for parsed in [hull_svc::manifest::parse_xml("f.xml", text), hull_svc::manifest::parse_toml("f.toml", text)] {
        if let Ok(b) = parsed {
            let _ = hull_svc::manifest::entities(&b);
        }
    }
});
