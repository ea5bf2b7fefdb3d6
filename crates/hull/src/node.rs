//! `hull node status`: what this node is and runs on.

use crate::{CmdResult, Failure, print_json};
use clap::Subcommand;
use hull_storage::Node;
use serde_json::json;

#[derive(Subcommand)]
pub enum NodeCmd {
    /// The node's root, prefix, pool, accelerator (KVM or TCG, and why) and service manager.
    Status {
        #[arg(short = 'j')]
        json: bool,
    },
    /// Runs lxcfs for the node's zones in the foreground (the svc:/system/hull/lxcfs
    /// service's method): zones started while it runs see their own caps in /proc.
    Lxcfs,
}

pub fn run(node: &Node, c: NodeCmd) -> CmdResult {
    let json = match c {
        NodeCmd::Status { json } => json,
        NodeCmd::Lxcfs => return lxcfs(node),
    };
    let cfg = node.load_config()?;
    let exe = std::env::current_exe().map_err(|e| Failure::new(1, format!("current exe: {e}")))?;
    // The accelerator: probed once, then read from the node's record.
    let accel = if cfg.pool.is_some() {
        hull_vm::Vmadm::open(node, exe).map(|v| serde_json::to_value(v.accel()).unwrap_or_default()).unwrap_or_default()
    } else {
        json!(null)
    };
    let paths = crate::svc::paths(node);
    let startd = hull_svc::proto::call(&paths.socket, &hull_svc::proto::Request::Status).is_ok();
    let status = json!({
        "root": node.root(),
        "prefix": node.prefix(),
        "pool": cfg.pool.as_ref().map(|p| json!({"name": p.name, "backend": p.backend.to_string()})),
        "accel": accel,
        "nic_tags": cfg.nic_tags.keys().collect::<Vec<_>>(),
        "svc.startd": if startd { "running" } else { "not running" },
    });
    if json {
        print_json(&status);
    } else {
        println!("root:        {}", node.root().display());
        println!("prefix:      {}", node.prefix());
        match &cfg.pool {
            Some(p) => println!("pool:        {} ({})", p.name, p.backend),
            None => println!("pool:        none"),
        }
        match status["accel"]["accel"].as_str() {
            Some(a) => println!("accel:       {a} ({})", status["accel"]["reason"].as_str().unwrap_or("")),
            None => println!("accel:       not known (no pool)"),
        }
        println!("svc.startd:  {}", status["svc.startd"].as_str().unwrap_or(""));
    }
    Ok(())
}

/// `hull node lxcfs`: mounts lxcfs at var/hull/lxcfs (its pid file beside it, so that nodes
/// sharing a host keep apart) and becomes it. A mount left by an lxcfs that died is
/// detached first: zones started after that bind the new one.
fn lxcfs(node: &Node) -> CmdResult {
    use std::os::unix::process::CommandExt;
    let at = hull_zone::lxcfs::mountpoint(&node.var_dir());
    if hull_exec::mountinfo::mounts().iter().any(|m| m.mountpoint == at) {
        nix::mount::umount2(&at, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| Failure::new(1, format!("detach the old lxcfs at {}: {e}", at.display())))?;
    }
    std::fs::create_dir_all(&at).map_err(|e| Failure::new(1, format!("create {}: {e}", at.display())))?;
    let pid = node.var_dir().join("lxcfs.pid");
    let err = std::process::Command::new(hull_exec::tool("lxcfs")).arg("-f").arg("-p").arg(&pid).arg(&at).exec();
    Err(Failure::new(1, format!("run lxcfs (Debian: apt-get install lxcfs): {err}")))
}
