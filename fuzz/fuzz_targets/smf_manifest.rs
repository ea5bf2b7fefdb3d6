#![no_main]
use libfuzzer_sys::fuzz_target;

// Service manifests come from operators and packages: the XML and TOML readers, the
// conversion into property groups, method token expansion and svccfg's typed values must
// answer, never panic.
fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for parsed in [hull_svc::manifest::parse_xml("f.xml", text), hull_svc::manifest::parse_toml("f.toml", text)] {
        if let Ok(b) = parsed {
            let _ = hull_svc::manifest::entities(&b);
        }
    }
    let f = hull_svc::Fmri::instance("site/web", "default");
    let t = hull_svc::method::Tokens { restarter: "svc.startd", method: "start", fmri: &f };
    let _ = hull_svc::method::expand(text, &t, &|pg, prop| (pg.len() < prop.len()).then(|| vec![text.to_string()]));
    let _ = hull_svc::repo::Prop::parse_typed(text);
});
