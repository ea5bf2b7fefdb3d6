//! SmartOS's metadata protocol, the host's side: framing (version 1 lines and version 2
//! frames, as the "Triton SmartOS Metadata Protocol Specification (Version 2)" and
//! smartos-live's metadata agent define them) in [`proto`], and which keys a VM has and who
//! may change them in [`keys`]. No I/O here: zoneadmd owns the sockets and the VM's config.

pub mod keys;
pub mod proto;

pub use proto::{Session, Store};

/// The in-zone tools (mdata-get, mdata-put, mdata-delete, mdata-list: one static program
/// that acts by its name), built from client/mdata.rs by build.rs.
pub const TOOLS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mdata"));

/// libhull-brandz.so (client/brandz.rs): `uname -v` as an LX zone's, for cloud-init.
pub const BRANDZ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libhull-brandz.so"));

/// What identifies [`TOOLS`] and [`BRANDZ`] as built (a hash and the length of each), so a
/// node knows its copies are current without reading them.
pub const BUILD_SUMS: &str = concat!(
    include_str!(concat!(env!("OUT_DIR"), "/mdata.sum")),
    " ",
    include_str!(concat!(env!("OUT_DIR"), "/libhull-brandz.so.sum"))
);

/// The names the tools answer to.
pub const TOOL_NAMES: &[&str] = &["mdata-get", "mdata-put", "mdata-delete", "mdata-list", "mdata-execute"];

// The tools' own CRC32 and base64 (std only, for a static build) checked against the crates
// the host side uses.
#[cfg(test)]
#[path = "../client/mdata.rs"]
#[allow(dead_code)]
mod client;

#[cfg(test)]
mod client_tests {
    use base64::Engine;

    proptest::proptest! {
        #[test]
        fn the_tools_crc32_and_base64_are_the_standard_ones(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            proptest::prop_assert_eq!(super::client::crc32(&data), crc32fast::hash(&data));
            let ours = super::client::b64(&data);
            proptest::prop_assert_eq!(&ours, &base64::engine::general_purpose::STANDARD.encode(&data));
            proptest::prop_assert_eq!(super::client::unb64(&ours), Some(data));
        }
    }
}

#[cfg(test)]
mod brandz_tests {
    /// The library, preloaded into the host's own `uname`: the version is an LX zone's,
    /// every other field the kernel's.
    #[test]
    fn brandz_changes_the_version_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("hull-brandz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let lib = dir.join("libhull-brandz.so");
        std::fs::write(&lib, super::BRANDZ).expect("write");
        let run = |args: &[&str], preload: bool| {
            let mut c = std::process::Command::new("uname");
            c.args(args);
            if preload {
                c.env("LD_PRELOAD", &lib);
            }
            let out = c.output().expect("uname");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(run(&["-v"], true), "BrandZ virtual linux");
        assert_ne!(run(&["-v"], false), "BrandZ virtual linux");
        for f in ["-s", "-n", "-r", "-m"] {
            assert_eq!(run(&[f], true), run(&[f], false), "{f}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
