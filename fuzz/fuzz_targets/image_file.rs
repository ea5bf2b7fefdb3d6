#![no_main]
use libfuzzer_sys::fuzz_target;

// Image files come from image servers: unpacking any bytes must fail cleanly and never
// write outside the destination.
fuzz_target!(|data: &[u8]| {
    let dst = std::env::temp_dir().join(format!("hull-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dst);
    for c in [hull_spec::Compression::Gzip, hull_spec::Compression::Zstd, hull_spec::Compression::None] {
        let _ = hull_img::unpack_image_file(c, data, &dst);
    }
    let _ = std::fs::remove_dir_all(&dst);
});
