use crate::{CmdResult, Failure, print_json};
use clap::Subcommand;
use hull_spec::size::{format_size, parse_size};
use hull_storage::host::PoolSpec;
use hull_storage::{Node, PoolBackend};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum PoolCmd {
    /// Make the pool. Without options: a sparse btrfs file under $ROOT/var/hull.
    Create {
        #[arg(long, value_parser = parse_backend)]
        backend: Option<PoolBackend>,
        /// The btrfs pool's file (default $ROOT/var/hull/zones.img).
        #[arg(long)]
        file: Option<PathBuf>,
        /// The file's size, e.g. 20G (default: 64G or 90% of the free space, if less).
        #[arg(long, value_parser = parse_size)]
        size: Option<u64>,
        /// A block device to format btrfs (refused if it holds a filesystem).
        #[arg(long)]
        device: Option<PathBuf>,
        /// The dir backend's directory, bind-mounted at $ROOT/zones.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The zfs backend's existing pool or dataset.
        #[arg(long)]
        zpool: Option<String>,
        #[arg(short = 'j')]
        json: bool,
    },
    /// Mount the pool again (after a reboot).
    Import,
    /// Backend, size, use and dataset count.
    Status {
        #[arg(short = 'j')]
        json: bool,
    },
    /// Unmount the pool and remove its file or datasets.
    Destroy,
}

fn parse_backend(s: &str) -> Result<PoolBackend, String> {
    match s {
        "btrfs" => Ok(PoolBackend::Btrfs),
        "zfs" => Ok(PoolBackend::Zfs),
        "dir" => Ok(PoolBackend::Dir),
        _ => Err(format!("unknown backend {s:?} (btrfs, zfs or dir)")),
    }
}

#[derive(serde::Serialize)]
struct Status {
    name: String,
    backend: PoolBackend,
    mountpoint: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    zpool: Option<String>,
    size: u64,
    used: u64,
    free: u64,
    datasets: usize,
    snapshots: usize,
    caps: hull_storage::Caps,
}

fn status(node: &Node) -> Result<Status, Failure> {
    let cfg = node.load_config()?.pool.ok_or_else(|| Failure::new(1, "this node has no pool (hull pool create)"))?;
    let pool = node.existing_pool()?.ok_or_else(|| Failure::new(1, "the pool is not imported (hull pool import)"))?;
    let usage = pool.usage()?;
    let list = pool.list()?;
    let snapshots = list.iter().filter(|d| d.name.contains('@')).count();
    Ok(Status {
        name: cfg.name,
        backend: cfg.backend,
        mountpoint: pool.mountpoint().to_path_buf(),
        file: cfg.file,
        device: cfg.device,
        dir: cfg.dir,
        zpool: cfg.zpool,
        size: usage.size,
        used: usage.used,
        free: usage.free,
        datasets: list.len() - snapshots,
        snapshots,
        caps: pool.caps(),
    })
}

pub fn run(node: &Node, cmd: PoolCmd) -> CmdResult {
    match cmd {
        PoolCmd::Create { backend, file, size, device, dir, zpool, json } => {
            let cfg = node.create_pool(&PoolSpec { backend, file, size, device, dir, zpool })?;
            if json {
                print_json(&status(node)?);
            } else {
                println!("created pool {} ({} backend) at {}", cfg.name, cfg.backend, node.zones_dir().display());
            }
        }
        PoolCmd::Import => {
            let cfg = node.import_pool()?;
            println!("imported pool {} at {}", cfg.name, node.zones_dir().display());
        }
        PoolCmd::Status { json } => {
            let s = status(node)?;
            if json {
                print_json(&s);
            } else {
                println!("pool:      {}", s.name);
                println!("backend:   {}", s.backend);
                println!("mounted:   {}", s.mountpoint.display());
                for (k, v) in [("file", &s.file), ("device", &s.device), ("dir", &s.dir)] {
                    if let Some(v) = v {
                        println!("{:<10} {}", format!("{k}:"), v.display());
                    }
                }
                if let Some(z) = &s.zpool {
                    println!("zpool:     {z}");
                }
                println!("size:      {}", format_size(s.size));
                println!("used:      {}", format_size(s.used));
                println!("free:      {}", format_size(s.free));
                println!("datasets:  {} ({} snapshots)", s.datasets, s.snapshots);
            }
        }
        PoolCmd::Destroy => {
            node.destroy_pool()?;
            println!("destroyed pool");
        }
    }
    Ok(())
}
