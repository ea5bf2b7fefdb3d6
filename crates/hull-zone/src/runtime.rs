//! Containers through libcontainer: create and start, signal, enter, delete.

use crate::{Result, ZoneConfig, ZoneError};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::syscall::syscall::SyscallType;
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};

/// Where a node keeps its containers' runtime state.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// libcontainer's state root: `<root>/<id>/state.json`.
    pub state_root: PathBuf,
    /// OCI bundles: `<bundles>/<id>/config.json`.
    pub bundles: PathBuf,
}

/// A container's status as hull reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Creating,
    Created,
    Running,
    Stopped,
    Paused,
}

fn err(id: &str, op: &'static str, e: impl std::fmt::Display) -> ZoneError {
    ZoneError::Runtime { id: id.to_string(), op, reason: e.to_string() }
}

impl Runtime {
    pub fn new(var_dir: &Path) -> Runtime {
        Runtime { state_root: var_dir.join("run"), bundles: var_dir.join("bundles") }
    }

    fn load(&self, id: &str) -> Option<Container> {
        let dir = self.state_root.join(id);
        if !dir.join("state.json").exists() {
            return None;
        }
        let mut c = Container::load(dir).ok()?;
        let _ = c.refresh_status();
        Some(c)
    }

    /// The container's status and init pid, or None when there is no container.
    pub fn status(&self, id: &str) -> Option<(Status, Option<i32>)> {
        let c = self.load(id)?;
        let s = match c.status() {
            ContainerStatus::Creating => Status::Creating,
            ContainerStatus::Created => Status::Created,
            ContainerStatus::Running => Status::Running,
            ContainerStatus::Stopped => Status::Stopped,
            ContainerStatus::Paused => Status::Paused,
        };
        Some((s, c.pid().map(|p| p.as_raw())))
    }

    /// Writes the bundle, creates the container and starts its init; returns init's pid.
    /// A console socket, when given, receives the pty master of init's console.
    pub fn create_and_start(
        &self,
        z: &ZoneConfig,
        console_socket: Option<&Path>,
        seccomp_listener: Option<&Path>,
    ) -> Result<i32> {
        let mut ph = hull_exec::phase::Phases::new("create-container", &z.id);
        let bundle = self.bundles.join(&z.id);
        std::fs::create_dir_all(&bundle).map_err(|e| ZoneError::Io {
            id: z.id.clone(),
            op: "create bundle",
            path: bundle.clone(),
            source: e,
        })?;
        std::fs::create_dir_all(&self.state_root).map_err(|e| ZoneError::Io {
            id: z.id.clone(),
            op: "create state root",
            path: self.state_root.clone(),
            source: e,
        })?;
        let mut config = crate::spec::oci_config(z);
        clamp_rlimits(&mut config);
        if let Some(l) = seccomp_listener {
            crate::spec::notify_sysinfo(&mut config, l);
        }
        if let Some(idmap) = &z.idmap {
            let root = self.own_userns_mounts(z, &bundle, idmap)?;
            crate::spec::own_userns(&mut config, idmap, &root);
        }
        ph.mark("idmapped root, cgroups delegated");
        let view = crate::cgroup::view(&z.cgroup).map_err(|e| ZoneError::Io {
            id: z.id.clone(),
            op: "prepare the cgroup view",
            path: "/sys/fs/cgroup".into(),
            source: e,
        })?;
        if let Some(mounts) = config.get_mut("mounts").and_then(|m| m.as_array_mut()) {
            mounts.retain(|m| m["destination"] != "/sys/fs/cgroup");
            mounts.extend(view);
        }
        let spec: oci_spec::runtime::Spec = serde_json::from_value(config).map_err(|e| err(&z.id, "build spec", e))?;
        spec.save(bundle.join("config.json")).map_err(|e| err(&z.id, "write spec", e))?;
        ph.mark("cgroup view, spec written");
        // A stale container of this id (a crash) must go before a new one can be made.
        if self.state_root.join(&z.id).exists() {
            self.delete(&z.id, &z.cgroup)?;
        }
        // This process leaves the cgroups of whoever started it (a supervisor belongs to no
        // service's contract: stopping the service that started it never kills it) and goes
        // into the zone's own in the hierarchies without controllers (so init starts there,
        // its cgroup namespace rooted there). Done last before libcontainer moves init's
        // parent into the rest: the first move of a burst waits for an RCU grace period, and
        // moves close after it do not wait again.
        crate::cgroup::leave_contracts();
        crate::cgroup::join_unmanaged(&z.cgroup).map_err(|e| ZoneError::Io {
            id: z.id.clone(),
            op: "join cgroup",
            path: "/sys/fs/cgroup".into(),
            source: e,
        })?;
        ph.mark("cgroups joined");
        let mut c = ContainerBuilder::new(z.id.clone(), SyscallType::default())
            .with_root_path(&self.state_root)
            .map_err(|e| err(&z.id, "state root", e))?
            .with_console_socket(console_socket)
            .as_init(&bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(|e| err(&z.id, "create", e))?;
        ph.mark("libcontainer create");
        if let Err(e) = c.start() {
            let _ = self.delete(&z.id, &z.cgroup);
            return Err(err(&z.id, "start", e));
        }
        ph.mark("libcontainer start");
        let pid = c.pid().map(|p| p.as_raw()).ok_or_else(|| err(&z.id, "start", "init has no pid"))?;
        wait_exec(pid);
        ph.mark("init execs");
        Ok(pid)
    }
}

/// Waits (at most two seconds) until `pid`, libcontainer's init process, has exec'd the
/// zone's init. libcontainer's start returns once it has told that process to go, a moment
/// before the exec; until the exec the process is libcontainer's, not dumpable, and a zlogin
/// right then could not read its namespaces (libcontainer's exec failed with "Unable to stat
/// /proc/PID/ns/net"). Until then its executable is this one's (it is a fork of it).
fn wait_exec(pid: i32) {
    let ours = std::fs::read_link("/proc/self/exe").ok();
    let exe = format!("/proc/{pid}/exe");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        match std::fs::read_link(&exe) {
            Ok(p) if Some(&p) != ours.as_ref() => return,
            // Gone (it exited, or failed to exec): the supervisor sees that.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            _ => std::thread::sleep(std::time::Duration::from_micros(200)),
        }
    }
}

impl Runtime {
    /// Sends a signal to init, or with `all` to every process in the zone's cgroup.
    ///
    /// Signals go straight to the processes: libcontainer's kill also rewrites the
    /// container's state file, which races with the supervisor reading it.
    pub fn kill(&self, id: &str, cgroup: &str, signal: i32, all: bool) -> Result<()> {
        if !(1..=64).contains(&signal) {
            return Err(err(id, "kill", format!("invalid signal {signal}")));
        }
        let pids = if all {
            crate::cgroup::pids(id, cgroup)
        } else {
            match self.status(id) {
                Some((_, Some(pid))) => vec![pid],
                _ => return Err(ZoneError::NotRunning(id.to_string())),
            }
        };
        for pid in pids {
            // Raw kill(2): real-time signals (systemd's SIGRTMIN+4 to power off) have no
            // variant in nix's Signal.
            // SAFETY: kill takes two integers and touches no memory of ours.
            if unsafe { libc::kill(pid, signal) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::ESRCH) {
                    return Err(err(id, "kill", e));
                }
            }
        }
        Ok(())
    }

    /// What a zone with its own user namespace needs before it starts (see
    /// [`crate::idmap`]): its root mounted idmapped at `BUNDLE/rootfs`, and its cgroups without
    /// controllers handed to its root.
    fn own_userns_mounts(&self, z: &ZoneConfig, bundle: &Path, idmap: &crate::Idmap) -> Result<std::path::PathBuf> {
        let io = |op: &'static str, path: &Path| {
            let (id, path) = (z.id.clone(), path.to_path_buf());
            move |source| ZoneError::Io { id, op, path, source }
        };
        let root = bundle.join("rootfs");
        crate::idmap::unmount(&root);
        std::fs::create_dir_all(&root).map_err(io("create directory", &root))?;
        let ns = std::fs::File::open(&idmap.userns).map_err(io("open the user namespace", &idmap.userns))?;
        crate::idmap::mount_idmapped(&z.rootfs, &root, &ns).map_err(io("mount the zone's root idmapped", &z.rootfs))?;
        crate::idmap::delegate_cgroups(&z.cgroup, idmap.base)
            .map_err(io("delegate cgroups", Path::new("/sys/fs/cgroup")))?;
        Ok(root)
    }

    /// Unmounts what [`Runtime::own_userns_mounts`] mounted; refuses when something stays
    /// mounted below the bundle, which must then not be removed (its root would go with it).
    fn unmount_bundle(&self, id: &str) -> Result<()> {
        let bundle = self.bundles.join(id);
        crate::idmap::unmount(&bundle.join("rootfs"));
        if let Some(m) = hull_exec::mountinfo::mounts().into_iter().find(|m| m.mountpoint.starts_with(&bundle)) {
            return Err(ZoneError::Runtime {
                id: id.to_string(),
                op: "unmount",
                reason: format!("{} is still mounted; its bundle is left in place", m.mountpoint.display()),
            });
        }
        Ok(())
    }

    /// Removes the container, every process left in its cgroup, the cgroup itself and the
    /// bundle; a missing container is fine.
    pub fn delete(&self, id: &str, cgroup: &str) -> Result<()> {
        // The cgroup first, by hand: a zone's own init (systemd) makes cgroups below it,
        // which libcontainer's delete retries on for seconds and then leaves.
        crate::cgroup::remove(id, cgroup)?;
        if let Some(mut c) = self.load(id)
            && let Err(e) = c.delete(true)
        {
            tracing::debug!(zone = %id, "libcontainer delete: {e}");
        }
        self.unmount_bundle(id)?;
        for (what, dir) in [("remove state", self.state_root.join(id)), ("remove bundle", self.bundles.join(id))] {
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| ZoneError::Io {
                    id: id.to_string(),
                    op: what,
                    path: dir,
                    source: e,
                })?;
            }
        }
        Ok(())
    }

    /// Runs a command inside a running zone with this process's stdio; returns the pid of
    /// a child of this process whose exit status is the command's.
    ///
    /// libcontainer's exec rebuilds the process's Linux config without the zone's seccomp
    /// filter, so the child installs that filter on itself first: filters are inherited by
    /// every process it then makes, the command included.
    pub fn exec(&self, id: &str, args: Vec<String>) -> Result<i32> {
        match self.status(id) {
            Some((Status::Running, _)) => {}
            _ => return Err(ZoneError::NotRunning(id.to_string())),
        }
        let spec = oci_spec::runtime::Spec::load(self.bundles.join(id).join("config.json"))
            .map_err(|e| err(id, "read spec", e))?;
        // SAFETY: hull's commands are single-threaded (no runtime, no threads before this
        // point), so the child may run arbitrary code after fork.
        match unsafe { nix::unistd::fork() }.map_err(|e| err(id, "fork", e))? {
            nix::unistd::ForkResult::Parent { child } => Ok(child.as_raw()),
            nix::unistd::ForkResult::Child => {
                let code = self.exec_child(id, args, &spec);
                std::process::exit(code)
            }
        }
    }

    fn exec_child(&self, id: &str, args: Vec<String>, spec: &oci_spec::runtime::Spec) -> i32 {
        // A command run in the zone goes before the zone's init under the zone's memory
        // pressure, from its first page on (the supervisor marks the zone's own processes
        // the same, within a second: crate::cgroup::OomShield).
        let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
        // Every cgroup of the zone, not only those libcontainer places its tenant in (the
        // hierarchies with controllers): a process left in the host's `name=systemd` or
        // `unified` cgroup sees, from a cgroup namespace of its own, every zone's cgroup.
        let cgroup = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
        if let Some(cg) = &cgroup
            && let Err(e) = crate::cgroup::join_unmanaged(&cg.to_string_lossy())
        {
            eprintln!("zone {id}: join cgroup: {e}");
            return 126;
        }
        // A zone in its own user namespace: libcontainer's exec joins every namespace of the
        // zone but that one. Joined here, once the command is in all the zone's cgroups
        // (after, this process may no longer move itself there).
        let userns = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .and_then(|n| n.iter().find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User))
            .and_then(|n| n.path().clone());
        if let Some(ns) = &userns {
            let joined = cgroup.as_ref().map_or(Ok(()), |cg| crate::cgroup::join_all(&cg.to_string_lossy()));
            if let Err(e) = joined.and_then(|()| crate::idmap::enter(ns)) {
                eprintln!("zone {id}: enter the zone's user namespace: {e}");
                return 126;
            }
        }
        let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
        if let Some(s) = &seccomp {
            match libcontainer::seccomp::initialize_seccomp(s) {
                Err(e) => {
                    eprintln!("zone {id}: seccomp: {e}");
                    return 126;
                }
                // The filter sends sysinfo calls to a listener: this one's goes to the
                // zone's zoneadmd, as init's did; without it they fail (ENOSYS).
                Ok(Some(fd)) => {
                    // SAFETY: libcontainer returns the new filter's fd, ours to own.
                    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
                    if let Some(path) = s.listener_path()
                        && let Err(e) = send_fd(path, &fd)
                    {
                        eprintln!("zone {id}: sysinfo listener: {e}");
                    }
                }
                Ok(None) => {}
            }
        }
        if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            return match crate::tty::exec_with_pty(self, id, args, spec) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("zone {id}: {e}");
                    126
                }
            };
        }
        let relay = match crate::relay::Relay::install() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("zone {id}: stdio relay: {e}");
                return 126;
            }
        };
        let built = ContainerBuilder::new(id.to_string(), SyscallType::default())
            .with_root_path(&self.state_root)
            .map(|b| b.as_tenant().with_container_args(args).with_detach(false).build());
        let pid = match built {
            Ok(Ok(pid)) => pid,
            Ok(Err(e)) | Err(e) => {
                relay.restore();
                let limit = spec
                    .linux()
                    .as_ref()
                    .and_then(|l| l.resources().as_ref())
                    .and_then(|r| r.pids().as_ref())
                    .map(|p| p.limit());
                let count = cgroup.as_ref().map(|c| crate::cgroup::pids(id, &c.to_string_lossy()).len() as i64);
                eprintln!("zone {id}: {}", exec_error(&e.to_string(), count, limit));
                return 126;
            }
        };
        relay.run(|| crate::supervisor::wait_exit(pid.as_raw()).unwrap_or(126))
    }
}

/// Hands `fd` to the unix socket at `path` (SCM_RIGHTS).
fn send_fd(path: &Path, fd: &std::os::fd::OwnedFd) -> std::io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    use std::os::fd::AsRawFd;
    let conn = std::os::unix::net::UnixStream::connect(path)?;
    let fds = [fd.as_raw_fd()];
    let iov = [std::io::IoSlice::new(b"{}")];
    sendmsg::<()>(conn.as_raw_fd(), &iov, &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None)?;
    Ok(())
}

/// What libcontainer's failure to start a command in a zone means to the person who ran
/// zlogin: at the zone's process cap (`max_lwps`) fork fails deep in the runtime, which says
/// only that its init process could not be launched.
fn exec_error(raw: &str, count: Option<i64>, limit: Option<i64>) -> String {
    match (count, limit) {
        (Some(n), Some(max)) if max > 0 && n + 1 >= max => {
            format!("cannot start the command: the zone has {n} of its {max} processes (max_lwps)")
        }
        _ => format!("exec: {raw}"),
    }
}

/// Lowers the zone's rlimits to what this process may grant: a zone cannot be given more
/// than its supervisor has (raising a hard limit needs a capability the zone lacks).
fn clamp_rlimits(config: &mut serde_json::Value) {
    use nix::sys::resource::{Resource, getrlimit};
    let Some(list) = config.pointer_mut("/process/rlimits").and_then(|v| v.as_array_mut()) else { return };
    for r in list {
        let res = match r["type"].as_str() {
            Some("RLIMIT_MEMLOCK") => Resource::RLIMIT_MEMLOCK,
            Some("RLIMIT_NOFILE") => Resource::RLIMIT_NOFILE,
            _ => continue,
        };
        if let Ok((_, hard)) = getrlimit(res) {
            for k in ["hard", "soft"] {
                if let Some(v) = r[k].as_u64()
                    && v > hard
                {
                    r[k] = serde_json::Value::from(hard);
                }
            }
        }
    }
}
