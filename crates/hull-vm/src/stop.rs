//! vmadm stop, reboot and kill.

use crate::{Result, VmError, Vmadm};
use std::time::{Duration, Instant};

/// What the supervisor does when a zone's init exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterExit {
    /// Stay stopped: asked for (vmadm stop, kill, delete), a power-off from inside, a KVM
    /// guest, `restart_init` false, or too many restarts in a row.
    Stay,
    /// Boot again: init died without being asked to (the OOM killer, a crash) or the zone
    /// rebooted itself (`reboot` in a pid namespace ends its init with SIGHUP).
    Restart,
}

/// Restarts within [`RESTART_WINDOW`] past which a zone stays down (and is marked failed).
pub const MAX_RESTARTS: usize = 5;
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);

impl Vmadm {
    /// Notes that the next exit of the zone's init was asked for.
    fn mark_stopping(&self, uuid: &str) {
        let dir = self.run_dir(uuid);
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join("stopping"), b"");
    }

    /// Decides, as the zone's init has exited with `status` (128 + signal when killed),
    /// whether its supervisor boots it again. As SmartOS's zoneadmd does for `restart_init`
    /// (default true): an init that dies unasked comes back, a power-off stays off.
    pub fn after_exit(&self, uuid: &str, status: i32) -> AfterExit {
        let dir = self.run_dir(uuid);
        let asked = std::fs::remove_file(dir.join("stopping")).is_ok();
        let Ok(vm) = self.load_vm(uuid) else { return AfterExit::Stay };
        let hvm = vm.brand.is_hvm();
        let zone_reboot = status == 128 + libc::SIGHUP;
        let zone_halt = status == 128 + libc::SIGINT;
        let restart_init = vm.restart_init();
        if asked || hvm || zone_halt || !(zone_reboot || restart_init) {
            return AfterExit::Stay;
        }
        // A zone whose init dies as soon as it starts would restart for ever.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        let log = dir.join("restarts");
        let mut recent: Vec<u64> = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .filter(|t: &u64| now.saturating_sub(*t) < RESTART_WINDOW.as_secs())
            .collect();
        if recent.len() >= MAX_RESTARTS {
            tracing::warn!(
                vm = uuid,
                "init exited {status}; {MAX_RESTARTS} restarts within {RESTART_WINDOW:?}: staying down"
            );
            let _ = std::fs::remove_file(&log);
            // `vmadm list` says why it is down. The lock may be held for a moment yet by
            // the supervisor that restarted this zone (it lets go once it has read this one's
            // word that init ran, and init can be gone by then); not waited for without end:
            // a caller holding it may be waiting for this zoneadmd.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
            loop {
                if let Ok(_lock) = self.lock(uuid) {
                    let _ = self.set_failed(uuid);
                    break;
                }
                if std::time::Instant::now() > deadline {
                    tracing::warn!(vm = uuid, "the VM stays busy: not marked failed");
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            return AfterExit::Stay;
        }
        recent.push(now);
        let text: String = recent.iter().map(|t| format!("{t}\n")).collect();
        let _ = std::fs::write(&log, text);
        AfterExit::Restart
    }

    /// The signal that asks this zone's init to power off: systemd's SIGRTMIN+4, busybox's
    /// SIGUSR2.
    fn shutdown_signal(&self, uuid: &str) -> Result<i32> {
        let cfg = self.load(uuid)?;
        let z = self.zone_config(uuid, &cfg)?;
        // Read as the zone sees it: its links never lead the host outside its root.
        let target = hull_exec::tree::Tree::open_scoped(&z.rootfs)
            .and_then(|t| t.readlink(std::path::Path::new(&z.init[0])))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(if target.contains("systemd") { libc::SIGRTMIN() + 4 } else { libc::SIGUSR2 })
    }

    fn running(&self, uuid: &str) -> Result<bool> {
        let cfg = self.load(uuid)?;
        Ok(self.state(uuid, &cfg).state.is_running())
    }

    fn wait_stopped(&self, uuid: &str, timeout: Duration) -> Result<bool> {
        let t = Instant::now();
        while t.elapsed() < timeout {
            if !self.running(uuid)? {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(!self.running(uuid)?)
    }

    /// Stops a running VM: asks init to power off and waits `timeout`, then kills every
    /// process of the zone. With `force`, kills at once.
    ///
    /// As SmartOS's `vmadm stop`, it also sets `autoboot` false: a VM its operator stopped
    /// stays stopped when the node boots (`vmadm start` sets it true again).
    pub fn stop(&self, uuid: &str, force: bool, timeout: Duration) -> Result<()> {
        hull_exec::probes::vm_verb("stop", uuid, || self.stop_untraced(uuid, force, timeout))
    }

    fn stop_untraced(&self, uuid: &str, force: bool, timeout: Duration) -> Result<()> {
        let _lock = self.lock(uuid)?;
        self.require(uuid, hull_spec::Verb::Stop, "stop")?;
        let mut cfg = self.load(uuid)?;
        if cfg.get("autoboot").and_then(serde_json::Value::as_bool) != Some(false) {
            cfg.insert("autoboot".into(), serde_json::Value::Bool(false));
            self.save(uuid, &cfg)?;
        }
        self.stop_locked(uuid, force, timeout)
    }

    /// Stops a VM as the node's shutdown does (`stop-all`): `autoboot` is left as it is, so
    /// the VM comes back when the node does.
    pub fn shutdown(&self, uuid: &str, timeout: Duration) -> Result<()> {
        let _lock = self.lock(uuid)?;
        self.stop_locked(uuid, false, timeout)
    }

    pub(crate) fn stop_locked(&self, uuid: &str, force: bool, timeout: Duration) -> Result<()> {
        self.require(uuid, hull_spec::Verb::Stop, "stop")?;
        self.mark_stopping(uuid);
        if !force {
            if hull_spec::Brand::of(&self.load(uuid)?).is_hvm() {
                // An ACPI power-button press; a guest that ignores it is killed at the timeout.
                if let Err(e) = self.kvm_powerdown(uuid) {
                    tracing::warn!(vm = %uuid, "ACPI power-down: {e}");
                }
            } else {
                let sig = self.shutdown_signal(uuid)?;
                self.rt.kill(uuid, &self.cgroup(uuid), sig, false)?;
            }
            if self.wait_stopped(uuid, timeout)? {
                return self.settle(uuid);
            }
            tracing::warn!(vm = %uuid, "init did not stop within {timeout:?}: killing the zone");
        }
        // The container may be going away under us; a failed kill is judged by the wait.
        let _ = self.rt.kill(uuid, &self.cgroup(uuid), nix::sys::signal::Signal::SIGKILL as i32, true);
        if !self.wait_stopped(uuid, Duration::from_secs(20))? {
            return Err(VmError::Refused { vm: uuid.into(), reason: "the zone did not die after SIGKILL".into() });
        }
        self.settle(uuid)
    }

    /// Waits for the supervisor to remove the container; does it if the supervisor is gone.
    fn settle(&self, uuid: &str) -> Result<()> {
        let dir = self.run_dir(uuid);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            let rec = hull_zone::supervisor::read_record(&dir);
            if rec.as_ref().is_none_or(|r| r.state == "stopped") && self.rt.status(uuid).is_none() {
                return Ok(());
            }
            if rec.as_ref().is_some_and(|r| !hull_zone::supervisor::alive(r.zoneadmd)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.rt.delete(uuid, &self.cgroup(uuid))?;
        self.host.net_down(uuid)?;
        Ok(())
    }

    /// Stops and starts again.
    pub fn reboot(&self, uuid: &str, force: bool, timeout: Duration) -> Result<()> {
        hull_exec::probes::vm_verb("reboot", uuid, || self.reboot_untraced(uuid, force, timeout))
    }

    fn reboot_untraced(&self, uuid: &str, force: bool, timeout: Duration) -> Result<()> {
        {
            let _lock = self.lock(uuid)?;
            self.stop_locked(uuid, force, timeout)?;
        }
        self.start(uuid)
    }

    /// Sends a signal to the zone's init (SIGKILL goes to every process of the zone).
    pub fn kill(&self, uuid: &str, signal: i32) -> Result<()> {
        self.require(uuid, hull_spec::Verb::Kill, "kill")?;
        let all = signal == nix::sys::signal::Signal::SIGKILL as i32;
        self.mark_stopping(uuid);
        self.rt.kill(uuid, &self.cgroup(uuid), signal, all)?;
        Ok(())
    }
}
