//! vmadm stop, reboot and kill.

use crate::{Result, VmError, Vmadm};
use std::time::{Duration, Instant};

impl Vmadm {
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
        Ok(self.state(uuid, &cfg).state == "running")
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
    pub fn stop(&self, uuid: &str, force: bool, timeout: Duration) -> Result<()> {
        let _lock = self.lock(uuid)?;
        self.stop_locked(uuid, force, timeout)
    }

    pub(crate) fn stop_locked(&self, uuid: &str, force: bool, timeout: Duration) -> Result<()> {
        if !self.running(uuid)? {
            return Err(VmError::WrongState { vm: uuid.into(), state: "stopped".into(), verb: "stop" });
        }
        if !force {
            let brand = self.load(uuid)?.get("brand").and_then(|b| b.as_str()).unwrap_or("").to_string();
            if matches!(brand.as_str(), "kvm" | "bhyve") {
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
            return Err(VmError::Other { vm: uuid.into(), reason: "the zone did not die after SIGKILL".into() });
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
        crate::network::down(&self.node, uuid)?;
        Ok(())
    }

    /// Stops and starts again.
    pub fn reboot(&self, uuid: &str, force: bool, timeout: Duration) -> Result<()> {
        {
            let _lock = self.lock(uuid)?;
            self.stop_locked(uuid, force, timeout)?;
        }
        self.start(uuid)
    }

    /// Sends a signal to the zone's init (SIGKILL goes to every process of the zone).
    pub fn kill(&self, uuid: &str, signal: i32) -> Result<()> {
        if !self.running(uuid)? {
            return Err(VmError::WrongState { vm: uuid.into(), state: "stopped".into(), verb: "kill" });
        }
        let all = signal == nix::sys::signal::Signal::SIGKILL as i32;
        self.rt.kill(uuid, &self.cgroup(uuid), signal, all)?;
        Ok(())
    }
}
