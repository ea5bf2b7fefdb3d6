//! The main job: build an image, install it, clone instance datasets from it, provision and
//! boot zones, run a command in one, and report how long that took and how much space the
//! pool used.

use crate::{CmdResult, Failure};
use hull_img::Imgadm;
use hull_img::build::{BuildSpec, RootSource};
use hull_spec::Compression;
use hull_spec::manifest::{ImageType, Os};
use hull_spec::size::format_size;
use hull_storage::{DatasetName, Node, SnapshotName};
use std::time::Instant;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// debian (debootstrap, about a minute) or busybox (seconds).
    #[arg(long, default_value = "debian")]
    image: String,
    /// How many instance datasets to clone.
    #[arg(long, default_value_t = 20)]
    clones: usize,
    /// How many busybox zones to provision and boot after the clones.
    #[arg(long, default_value_t = 3)]
    zones: usize,
    /// Print the figures as one JSON line too.
    #[arg(short = 'j')]
    json: bool,
}

/// The demo image named `name`, built and installed unless it is there already; with the
/// seconds building and installing took.
fn ensure_image(
    node: &Node,
    img: &Imgadm,
    name: &str,
    source: RootSource,
) -> Result<(hull_img::Image, f64, f64), Failure> {
    if let Some(i) = img.list()?.into_iter().find(|i| i.manifest.name == name) {
        println!("image: {} ({}) already installed", i.manifest.uuid, name);
        return Ok((i, 0.0, 0.0));
    }
    println!("building {name} ...");
    let t = Instant::now();
    let built = hull_img::build::build(&BuildSpec {
        source,
        name: name.to_string(),
        version: "1.0.0".into(),
        description: Some("hull's demo image".into()),
        image_type: ImageType::ZoneDataset,
        os: Os::Linux,
        compression: Compression::Zstd,
        out_dir: node.var_dir().join("demo"),
        uuid: None,
    })?;
    let build_s = t.elapsed().as_secs_f64();
    println!(
        "built {} in {build_s:.1} s: {} ({})",
        built.manifest.uuid,
        built.file_path.display(),
        format_size(built.manifest.file().map(|f| f.size).unwrap_or(0))
    );
    let t = Instant::now();
    let i = img.install(&built.manifest_path, &built.file_path)?;
    let install_s = t.elapsed().as_secs_f64();
    println!("installed in {install_s:.1} s");
    Ok((i, build_s, install_s))
}

const DEMO_TAG: &str = "demo0";

/// Provisions `count` busybox zones (replacing earlier demo zones), lists them, and runs a
/// command in one; returns (create-and-boot p50 ms, total ms).
fn zones(node: &Node, img: &Imgadm, count: usize) -> Result<(f64, f64), Failure> {
    let (image, _, _) = ensure_image(node, img, "hull-demo-busybox", RootSource::Busybox)?;
    let exe = std::env::current_exe().map_err(|e| Failure::new(1, e))?;
    let vm = hull_vm::Vmadm::open(node, exe)?;
    for old in vm.list(false)? {
        if old.get("alias").and_then(|a| a.as_str()).is_some_and(|a| a.starts_with("demo-zone-"))
            && let Some(u) = old.get("uuid").and_then(|u| u.as_str())
        {
            vm.delete(u)?;
        }
    }
    // The zones meet on a local nic tag (an etherstub), 10.88.0.0/24.
    {
        let _lock = hull_storage::lock::lock(&node.lock_path("node-config"))?;
        let mut cfg = node.load_config()?;
        if !cfg.nic_tags.contains_key(DEMO_TAG) {
            cfg.nic_tags.insert(DEMO_TAG.into(), hull_spec::node::NicTag { local: true, ..Default::default() });
            cfg.etherstubs.insert(DEMO_TAG.into());
            node.save_config(&cfg)?;
        }
    }
    let mut times = Vec::new();
    let t = Instant::now();
    let mut first = None;
    for i in 0..count {
        let payload = serde_json::json!({
            "brand": "joyent-minimal", "image_uuid": image.manifest.uuid.to_string(),
            "alias": format!("demo-zone-{i}"), "max_physical_memory": 128, "cpu_cap": 50,
            "nics": [{"nic_tag": DEMO_TAG, "ips": [format!("10.88.0.{}/24", i + 1)]}],
        });
        let c = Instant::now();
        let uuid = vm.create(&payload)?;
        times.push(c.elapsed().as_secs_f64() * 1000.0);
        first.get_or_insert(uuid);
    }
    let total = t.elapsed().as_secs_f64() * 1000.0;
    times.sort_by(f64::total_cmp);
    let p50 = times.get(times.len() / 2).copied().unwrap_or(0.0);
    println!();
    println!("provisioned {count} zones in {total:.0} ms (create and boot p50 {p50:.1} ms each); vmadm list:");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let me = std::env::current_exe().map_err(|e| Failure::new(1, e))?;
    let root = node.root().to_string_lossy().into_owned();
    let run = |args: &[&str]| {
        std::process::Command::new(&me).args(["--root", &root, "--node", node.prefix()]).args(args).status()
    };
    let _ = run(&["vmadm", "list", "alias=~demo-zone-"]);
    if let Some(u) = first {
        println!("zlogin {u} uname -a; ps:");
        let _ = run(&["zlogin", &u, "sh", "-c", "uname -a; ps -o pid,comm"]);
        if count > 1 {
            println!("zlogin {u} ping -c 1 10.88.0.2 (zone 1, over the {DEMO_TAG} etherstub):");
            let _ = run(&["zlogin", &u, "ping", "-c", "1", "-W", "2", "10.88.0.2"]);
        }
    }
    Ok((p50, total))
}

pub fn run(node: &Node, a: DemoArgs) -> CmdResult {
    let source = match a.image.as_str() {
        "debian" => RootSource::Debootstrap(hull_img::build::Debian::new(
            hull_img::build::DEFAULT_SUITE,
            hull_img::build::DEFAULT_MIRROR,
        )),
        "busybox" => RootSource::Busybox,
        other => {
            return Err(Failure::new(2, format!("unknown demo image {other:?} (debian or busybox)")));
        }
    };
    let img = Imgadm::new(node);
    let pool = img.pool()?;
    println!("pool: {} ({} backend) at {}", pool.name(), pool.backend(), pool.mountpoint().display());
    let name = format!("hull-demo-{}", a.image);
    let (image, build_s, install_s) = ensure_image(node, &img, &name, source)?;
    let uuid = image.manifest.uuid.to_string();
    let image_size = hull_storage::get(pool, &uuid)?.referenced;

    // Start from no demo clones, so the figures are this run's.
    for i in 0..10_000 {
        let ds = DatasetName::parse(&format!("demo-{i:04}"))?;
        if !pool.exists(&ds) {
            if i >= a.clones {
                break;
            }
            continue;
        }
        hull_storage::destroy(pool, &ds, true)?;
    }
    nix::unistd::sync();
    let before = pool.usage()?.used;
    let snap = SnapshotName { dataset: DatasetName::parse(&uuid)?, snap: hull_img::FINAL.into() };
    let mut times = Vec::with_capacity(a.clones);
    let t = Instant::now();
    for i in 0..a.clones {
        let target = DatasetName::parse(&format!("demo-{i:04}"))?;
        let c = Instant::now();
        pool.clone_snapshot(&snap, &target)?;
        times.push(c.elapsed().as_secs_f64() * 1000.0);
    }
    let total_ms = t.elapsed().as_secs_f64() * 1000.0;
    nix::unistd::sync();
    let after = pool.usage()?.used;
    times.sort_by(f64::total_cmp);
    let p50 = times.get(times.len() / 2).copied().unwrap_or(0.0);
    let added = after.saturating_sub(before);
    println!();
    println!("image {name}: {} referenced", format_size(image_size));
    println!("cloned {} instances in {total_ms:.1} ms (p50 {p50:.2} ms per clone)", a.clones);
    println!(
        "pool used: {} before the clones, {} after: the clones added {} ({:.3} of one image; full copies would add {})",
        format_size(before),
        format_size(after),
        format_size(added),
        added as f64 / image_size.max(1) as f64,
        format_size(image_size * a.clones as u64)
    );
    println!("see them: hull --root {} dataset list", node.root().display());
    let (zone_p50, zone_total) = if a.zones > 0 { zones(node, &img, a.zones)? } else { (0.0, 0.0) };
    if a.zones > 0 {
        println!("pool used with the zones running: {}", format_size(pool.usage()?.used));
        println!("remove them: hull --root {} vmadm delete UUID", node.root().display());
    }
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "image": name, "image_bytes": image_size, "build_s": build_s, "install_s": install_s,
                "clones": a.clones, "clone_total_ms": total_ms, "clone_p50_ms": p50,
                "pool_used_before": before, "pool_used_after": after,
                "added_over_image": added as f64 / image_size.max(1) as f64,
                "zones": a.zones, "zone_create_boot_p50_ms": zone_p50, "zones_total_ms": zone_total,
            })
        );
    }
    Ok(())
}
