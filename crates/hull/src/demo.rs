//! The main job until zones land: build an image, install it, clone instance datasets from
//! it, and report how long that took and how much space the pool used.

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
    /// Print the figures as one JSON line too.
    #[arg(short = 'j')]
    json: bool,
}

pub fn run(node: &Node, a: DemoArgs) -> CmdResult {
    let source = match a.image.as_str() {
        "debian" => RootSource::Debootstrap {
            suite: hull_img::build::DEFAULT_SUITE.into(),
            mirror: hull_img::build::DEFAULT_MIRROR.into(),
        },
        "busybox" => RootSource::Busybox,
        other => {
            return Err(Failure::new(2, format!("unknown demo image {other:?} (debian or busybox)")));
        }
    };
    let img = Imgadm::new(node);
    let pool = img.pool()?;
    println!("pool: {} ({} backend) at {}", pool.name(), pool.backend(), pool.mountpoint().display());
    let name = format!("hull-demo-{}", a.image);
    let installed = img.list()?.into_iter().find(|i| i.manifest.name == name);
    let (image, build_s, install_s) = match installed {
        Some(i) => {
            println!("image: {} ({}) already installed", i.manifest.uuid, name);
            (i, 0.0, 0.0)
        }
        None => {
            println!("building {name} ...");
            let t = Instant::now();
            let built = hull_img::build::build(&BuildSpec {
                source,
                name: name.clone(),
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
            (i, build_s, install_s)
        }
    };
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
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "image": name, "image_bytes": image_size, "build_s": build_s, "install_s": install_s,
                "clones": a.clones, "clone_total_ms": total_ms, "clone_p50_ms": p50,
                "pool_used_before": before, "pool_used_after": after,
                "added_over_image": added as f64 / image_size.max(1) as f64,
            })
        );
    }
    Ok(())
}
