//! `vmadm receive` and a migration's target read streams that may be crafted: the VM
//! stream's frames (header, parts, data, digest), and inside them btrfs send streams, which
//! the receive's check reads command by command. Neither may panic, hang or allocate past
//! its limits on any input.
#![no_main]
use hull_storage::btrfs::send::Check;
use libfuzzer_sys::fuzz_target;
use std::io::Read;

fuzz_target!(|data: &[u8]| {
    let mut inp = data;
    if let Ok(mut r) = hull_spec::stream::FrameReader::new(&mut inp)
        && r.header().is_ok()
    {
        let mut buf = [0u8; 4096];
        while let Ok(Some(_)) = r.next_part() {
            while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
        }
    }
    // The same bytes as a btrfs send stream, fed whole and byte by byte.
    let steps: &[usize] = if data.len() < 4096 { &[1, 4096] } else { &[4096] };
    for &step in steps {
        let mut c = Check::new(vec![[2; 16]]);
        if data.chunks(step).all(|ch| c.feed(ch).is_ok()) {
            let _ = c.finish();
        }
    }
});
