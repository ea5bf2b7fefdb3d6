//! The host seams: what hull-vm asks of the machine beyond its pool and images. The real
//! [`NodeHost`] runs zoneadmd and plugs links into namespaces; unit tests give a fake, so
//! that create, start and their rollbacks are tested without a kernel in the loop (the
//! integration tests in `crates/hull/tests` run the real one).
//!
//! The pool is already a seam ([`hull_storage::Pool`]: btrfs, zfs, or a plain directory).

use crate::{Result, VmError};
use hull_net::Nic;
use hull_storage::Node;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What a VM's network needs made, once hull-vm has checked it.
pub struct NetPlan<'a> {
    pub uuid: &'a str,
    /// Where its network namespace goes.
    pub netns: &'a Path,
    /// With a user namespace of the zone's own, made with it: (its path, the host id the
    /// zone's ids start at).
    pub userns: Option<(&'a Path, u32)>,
    pub nics: &'a [Nic],
    /// A KVM guest's NICs are taps for qemu; its own routes are the guest's to set.
    pub guest: bool,
    pub routes: &'a BTreeMap<String, String>,
}

pub trait Host: Send + Sync {
    /// Starts the VM's supervisor and waits for its word that init runs (`monitor`: watch a
    /// zone that already runs, after its supervisor died).
    fn boot(&self, uuid: &str, monitor: bool) -> Result<()>;
    /// Makes the VM's namespaces and plugs its NICs (what was there before goes first).
    fn net_plug(&self, plan: &NetPlan) -> Result<()>;
    /// Unplugs the VM's NICs and removes its namespaces; what is already gone is fine.
    fn net_down(&self, uuid: &str) -> Result<()>;
}

/// The node's own host: zoneadmd, namespaces, links.
pub struct NodeHost {
    pub node: Node,
    /// The binary that runs `zoneadmd` (this one, unless a test says otherwise).
    pub exe: PathBuf,
}

impl Host for NodeHost {
    /// Runs `hull zoneadmd UUID` in its own session and waits for its word that init runs.
    fn boot(&self, uuid: &str, monitor: bool) -> Result<()> {
        let dir = self.node.var_dir().join("z").join(uuid);
        let log_path = dir.join("zoneadmd.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(|e| VmError::Io {
            vm: uuid.into(),
            op: "open",
            path: log_path.clone(),
            source: e,
        })?;
        // The small supervisor beside this binary when it is there (it starts in a third of
        // the time: a boot waits for it), else this binary's own `zoneadmd`.
        let small = self.exe.with_file_name("hull-zoneadmd");
        let small = small.is_file().then_some(small);
        let mut cmd = Command::new(small.as_ref().unwrap_or(&self.exe));
        cmd.arg("--root").arg(self.node.root()).arg("--node").arg(self.node.prefix());
        if small.is_none() {
            cmd.arg("zoneadmd");
        }
        if monitor {
            cmd.arg("--monitor");
        }
        let mut child = cmd
            .arg(uuid)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| VmError::Io { vm: uuid.into(), op: "run zoneadmd", path: self.exe.clone(), source: e })?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = std::io::BufReader::new(out).read_line(&mut line);
        }
        // zoneadmd lives on in its own session; it is not ours to wait for.
        drop(child);
        match line.trim().split_once(' ') {
            Some(("ok", _)) => Ok(()),
            _ if line.trim() == "ok" => Ok(()),
            Some(("error", why)) => Err(VmError::Boot { vm: uuid.into(), why: why.into() }),
            _ => {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                Err(VmError::Boot {
                    vm: uuid.into(),
                    why: format!(
                        "zoneadmd exited before the zone ran: {}",
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    ),
                })
            }
        }
    }

    fn net_plug(&self, plan: &NetPlan) -> Result<()> {
        use hull_net::ns;
        let net = crate::network::net(&self.node)?;
        // A namespace left by a zone that died without its supervisor goes first, and
        // whatever of its links that zone left (only a VM marked plugged can have any).
        ns::remove(plan.netns)?;
        let marked = crate::network::plugged(&self.node, plan.uuid);
        if marked {
            net.unplug_all(plan.uuid)?;
        }
        if !plan.nics.is_empty() {
            crate::network::mark_plugged(&self.node, plan.uuid)?;
        } else if marked {
            crate::network::unmark_plugged(&self.node, plan.uuid);
        }
        match plan.userns {
            Some((userns, base)) => ns::create_with_userns(plan.netns, userns, &hull_zone::idmap::map(base))?,
            None => ns::create(plan.netns)?,
        }
        for nic in plan.nics {
            if plan.guest {
                net.plug_for_guest(plan.uuid, plan.netns, nic)?;
            } else {
                net.plug(plan.uuid, plan.netns, nic)?;
            }
        }
        if !plan.guest {
            net.route(plan.netns, plan.nics, plan.routes)?;
        }
        Ok(())
    }

    fn net_down(&self, uuid: &str) -> Result<()> {
        crate::network::down(&self.node, uuid)
    }
}
