//! bench/clone: how fast and how small a new instance's dataset is.
//!
//! Installs a 500 MB image of random bytes into a fresh loop-backed btrfs pool, clones its
//! `@final` until 1000 clones exist, and measures at N = 1, 100 and 1000 existing clones the
//! latency of 51 more clones (hull's clone: one ioctl, in process), each beside the bare
//! snapshot ioctl on fds opened once (the floor, at the same N). In the same run it times
//! the peers: `btrfs subvolume snapshot` run as a command, and a full copy (`cp -a`). Prints
//! one JSON line. Needs root. `HULL_BENCH_IMAGE_MB` changes the image size.

use hull_bench::{ms, pct};
use hull_storage::host::PoolSpec;
use hull_storage::{DatasetName, Node, SnapshotName};
use std::io::Write;
use std::process::Command;
use std::time::Instant;

const SAMPLES: usize = 51;
const LEVELS: [usize; 3] = [1, 100, 1000];

fn random_file(path: &std::path::Path, n: usize) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x2545F4914F6CDD1D;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = n;
    while left > 0 {
        for c in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
        }
        let k = left.min(buf.len());
        f.write_all(&buf[..k])?;
        left -= k;
    }
    f.flush()
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() { Ok(()) } else { Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr))) }
}

fn main() {
    if let Err(e) = bench() {
        eprintln!("bench/clone: {e}");
        std::process::exit(1);
    }
}

fn bench() -> Result<(), String> {
    let mb: usize = std::env::var("HULL_BENCH_IMAGE_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
    let dir = tempfile::Builder::new().prefix("hull-bench-clone-").tempdir_in("/var/tmp").map_err(|e| e.to_string())?;
    let node = Node::new(dir.path(), "hbench").map_err(|e| e.to_string())?;
    node.create_pool(&PoolSpec { size: Some(((mb as u64) << 20) * 3 + (1 << 30)), ..Default::default() })
        .map_err(|e| e.to_string())?;
    let result = measure(&node, dir.path(), mb);
    if let Err(e) = node.destroy_pool() {
        eprintln!("bench/clone: cleaning up: {e}");
        let _ = Command::new("umount").arg("-l").arg(node.zones_dir()).status();
    }
    let line = result?;
    println!("{line}");
    Ok(())
}

fn measure(node: &Node, tmp: &std::path::Path, mb: usize) -> Result<String, String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    // The image: a 500 MB random file in root/.
    let src = tmp.join("src");
    std::fs::create_dir_all(&src).map_err(|x| e(&x))?;
    random_file(&src.join("blob"), mb << 20).map_err(|x| e(&x))?;
    eprintln!("building and installing a {mb} MB image ...");
    let built = hull_img::build::build(&hull_img::build::BuildSpec {
        source: hull_img::build::RootSource::Dir(src.clone()),
        name: "bench".into(),
        version: "1.0.0".into(),
        description: None,
        image_type: hull_spec::ImageType::ZoneDataset,
        os: hull_spec::Os::Linux,
        compression: hull_spec::Compression::None,
        out_dir: tmp.join("out"),
        uuid: None,
    })
    .map_err(|x| e(&x))?;
    std::fs::remove_dir_all(&src).map_err(|x| e(&x))?;
    let img = hull_img::Imgadm::new(node);
    let t = Instant::now();
    let image = img.install(&built.manifest_path, &built.file_path).map_err(|x| e(&x))?;
    let install_ms = ms(t);
    std::fs::remove_file(&built.file_path).map_err(|x| e(&x))?;
    let pool = img.pool().map_err(|x| e(&x))?;
    let uuid = image.manifest.uuid.to_string();
    let image_bytes = hull_storage::get(pool, &uuid).map_err(|x| e(&x))?.referenced;
    let snap = SnapshotName { dataset: DatasetName::parse(&uuid).map_err(|x| e(&x))?, snap: "final".into() };
    nix::unistd::sync();
    let used_before = pool.usage().map_err(|x| e(&x))?.used;

    let mut made = 0usize;
    let clone = |made: &mut usize| -> Result<f64, String> {
        let target = DatasetName::parse(&format!("c{made:05}")).map_err(|x| e(&x))?;
        let t = Instant::now();
        pool.clone_snapshot(&snap, &target).map_err(|x| e(&x))?;
        *made += 1;
        Ok(ms(t))
    };
    // The floor: the bare snapshot ioctl on fds opened once, with nothing around it.
    let src_fd = hull_storage::btrfs::ioctl::open_dir(&pool.mountpoint().join(&uuid).join(".snapshots/final"))
        .map_err(|x| e(&x))?;
    let parent_fd = hull_storage::btrfs::ioctl::open_dir(pool.mountpoint()).map_err(|x| e(&x))?;
    let mut bare_made = 0usize;
    let mut bare = || -> Result<f64, String> {
        let name = format!("bare{bare_made:05}");
        let t = Instant::now();
        hull_storage::btrfs::ioctl::snapshot(&src_fd, &parent_fd, &name, false).map_err(|x| e(&x))?;
        bare_made += 1;
        Ok(ms(t))
    };
    let mut levels = serde_json::Map::new();
    let mut p50_at = Vec::new();
    let mut used_after_100 = None;
    for level in LEVELS {
        while made < level {
            clone(&mut made)?;
            if made == 100 {
                nix::unistd::sync();
                used_after_100 = Some(pool.usage().map_err(|x| e(&x))?.used);
            }
        }
        // Interleaved with the bare ioctl at the same N (its subvolumes count in N too).
        let (mut lat, mut floor) = (Vec::with_capacity(SAMPLES), Vec::with_capacity(SAMPLES));
        for _ in 0..SAMPLES {
            lat.push(clone(&mut made)?);
            floor.push(bare()?);
        }
        let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
        let floor_p50 = pct(&mut floor, 0.5);
        eprintln!("{level} clones: p50 {p50:.3} ms, p99 {p99:.3} ms; the bare ioctl p50 {floor_p50:.3} ms");
        p50_at.push(p50);
        levels.insert(format!("clone_p50_ms_n{level}"), p50.into());
        levels.insert(format!("clone_p99_ms_n{level}"), p99.into());
        levels.insert(format!("peer_bare_ioctl_p50_ms_n{level}"), floor_p50.into());
        levels.insert(format!("clone_over_bare_ioctl_n{level}"), (p50 / floor_p50).into());
    }
    let used_after_100 = used_after_100.ok_or("never reached 100 clones")?;

    // Peers, in the same run, on the same pool.
    let mnt = pool.mountpoint().to_path_buf();
    let final_path = mnt.join(&uuid).join(".snapshots/final");
    let btrfs = hull_exec::tool("btrfs");
    let mut cmd_lat = Vec::new();
    for i in 0..SAMPLES {
        let t = Instant::now();
        run(Command::new(&btrfs).args(["subvolume", "snapshot"]).arg(&final_path).arg(mnt.join(format!("cmd{i:03}"))))?;
        cmd_lat.push(ms(t));
    }
    let cmd_p50 = pct(&mut cmd_lat, 0.5);
    eprintln!("btrfs subvolume snapshot: p50 {cmd_p50:.3} ms");
    let t = Instant::now();
    run(Command::new("cp")
        .arg("-a")
        .arg("--reflink=never")
        .arg(mnt.join(&uuid).join("root"))
        .arg(mnt.join("fullcopy")))?;
    nix::unistd::sync();
    let cp_ms = ms(t);
    eprintln!("cp -a: {cp_ms:.0} ms");
    for i in 0..SAMPLES {
        run(Command::new(&btrfs).args(["subvolume", "delete", "-c"]).arg(mnt.join(format!("cmd{i:03}"))))?;
    }

    let mut j = serde_json::Map::new();
    j.insert("bench".into(), "clone".into());
    j.insert("image_bytes".into(), image_bytes.into());
    j.insert("install_ms".into(), install_ms.into());
    j.extend(levels);
    j.insert("p50_ratio_n1000_over_n1".into(), (p50_at[2] / p50_at[0]).into());
    j.insert("pool_used_after_100_over_image".into(), (used_after_100 as f64 / image_bytes as f64).into());
    j.insert("clones_100_added_bytes".into(), used_after_100.saturating_sub(used_before).into());
    j.insert("peer_btrfs_snapshot_cmd_p50_ms".into(), cmd_p50.into());
    j.insert("peer_cp_a_ms".into(), cp_ms.into());
    j.insert("clone_p50_over_cmd_p50".into(), (p50_at[0] / cmd_p50).into());
    j.insert("clone_p50_over_cp_a".into(), (p50_at[0] / cp_ms).into());
    Ok(serde_json::Value::Object(j).to_string())
}
