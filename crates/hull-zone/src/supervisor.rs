//! `zoneadmd`: one small supervisor per running zone.
//!
//! It makes the container (as a child subreaper, so the zone's init becomes its child), keeps
//! the console (the pty master of init's console) and serves it on a unix socket, copies
//! console output to `console.log`, reaps init and records each state change in
//! `zoneadmd.json`. When init exits it removes the container (and with it the cgroup) and
//! records the exit status. Killing zoneadmd leaves the zone running: [`monitor`] watches a
//! zone whose supervisor died, without a console.
//!
//! Files in the zone's run directory (`$ROOT/var/hull/z/<uuid>/`):
//!
//! ```text
//! zone.json       the ZoneConfig to run
//! zoneadmd.json   the record: supervisor pid, init pid, state, exit status
//! console.sock    attach here for the console
//! recv.sock       where libcontainer hands over the pty master (during start only)
//! console.log     what the console printed (the last MiB)
//! ```

use crate::runtime::Runtime;
use crate::{Result, ZoneConfig, ZoneError};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

const LOG_MAX: u64 = 1 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// The supervisor's pid.
    pub zoneadmd: i32,
    pub init_pid: Option<i32>,
    /// `running` or `stopped`.
    pub state: String,
    /// init's exit status, or 128 + signal.
    pub exit_status: Option<i32>,
    pub started: i64,
    pub stopped: Option<i64>,
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

pub fn record_path(dir: &Path) -> PathBuf {
    dir.join("zoneadmd.json")
}

pub fn read_record(dir: &Path) -> Option<Record> {
    serde_json::from_str(&std::fs::read_to_string(record_path(dir)).ok()?).ok()
}

fn write_record(id: &str, dir: &Path, r: &Record) -> Result<()> {
    let p = record_path(dir);
    let text = serde_json::to_vec_pretty(r).unwrap_or_default();
    hull_exec::write_replace(&p, &text).map_err(|e| ZoneError::Io {
        id: id.to_string(),
        op: "write record",
        path: p,
        source: e,
    })
}

/// Whether a process exists and has not exited (a zombie waiting to be reaped is dead).
pub fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is shared.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Receives the pty master libcontainer sends over the console socket.
pub(crate) fn receive_pty(listener: &UnixListener) -> std::io::Result<OwnedFd> {
    listener.set_nonblocking(false)?;
    let (stream, _) = listener.accept()?;
    fd_from(&stream, "no pty master in the console message")
}

pub(crate) fn fd_from(stream: &std::os::unix::net::UnixStream, missing: &str) -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c
            && let Some(fd) = fds.first()
        {
            // SAFETY: SCM_RIGHTS just installed this fd in our table; we are its only owner.
            return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    Err(std::io::Error::other(missing.to_string()))
}

/// Starts the zone and supervises it until init exits; returns init's exit status.
/// `ready` (a pipe) gets `ok <pid>\n` once init runs, or `error <why>\n`.
///
/// `on_exit` runs once the container is gone and before the record says `stopped` (so a
/// `vmadm start` that waits for that word cannot race it): the zone's network goes there.
pub fn run(rt: &Runtime, z: &ZoneConfig, dir: &Path, ready: Option<std::fs::File>, on_exit: &dyn Fn()) -> Result<i32> {
    let id = z.id.clone();
    let mut ph = hull_exec::phase::Phases::new("boot", &z.id);
    let io = |op: &'static str, path: &Path| {
        let (id, path) = (id.clone(), path.to_path_buf());
        move |e: std::io::Error| ZoneError::Io { id, op, path, source: e }
    };
    let mut ready = ready;
    let mut report = |line: String| {
        if let Some(mut f) = ready.take() {
            let _ = f.write_all(line.as_bytes());
        }
    };
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        report(format!("error subreaper: {e}\n"));
        return Err(ZoneError::Runtime { id, op: "subreaper", reason: e.to_string() });
    }
    let recv_path = dir.join("recv.sock");
    let attach_path = dir.join("console.sock");
    let seccomp_path = dir.join("seccomp.sock");
    for p in [&recv_path, &attach_path, &seccomp_path] {
        let _ = std::fs::remove_file(p);
    }
    let init = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
    let started = (|| {
        let recv =
            if z.terminal { Some(UnixListener::bind(&recv_path).map_err(io("bind", &recv_path))?) } else { None };
        // libcontainer hands each filter's notification fd (init's, then each zlogin's) to
        // this socket; a thread answers each filter's sysinfo calls.
        let seccomp =
            if z.sysinfo { Some(UnixListener::bind(&seccomp_path).map_err(io("bind", &seccomp_path))?) } else { None };
        if let Some(l) = &seccomp {
            let l = l.try_clone().map_err(io("bind", &seccomp_path))?;
            crate::sysinfo::listen(l, z.id.clone(), z.cgroup.clone(), init.clone());
        }
        let pid = rt.create_and_start(
            z,
            z.terminal.then_some(recv_path.as_path()),
            seccomp.is_some().then_some(seccomp_path.as_path()),
        )?;
        ph.mark("container made and started");
        let pty = match &recv {
            Some(l) => Some(receive_pty(l).map_err(io("receive console", &recv_path))?),
            None => None,
        };
        let _ = std::fs::remove_file(&recv_path);
        init.store(pid, std::sync::atomic::Ordering::Relaxed);
        let attach = UnixListener::bind(&attach_path).map_err(io("bind", &attach_path))?;
        Ok::<_, ZoneError>((pid, pty, attach))
    })();
    let (pid, pty, attach) = match started {
        Ok(x) => x,
        Err(e) => {
            report(format!("error {e}\n"));
            crate::cgroup::leave_unmanaged();
            let _ = rt.delete(&z.id, &z.cgroup);
            on_exit();
            return Err(e);
        }
    };
    let mut rec = Record {
        zoneadmd: std::process::id() as i32,
        init_pid: Some(pid),
        state: "running".into(),
        exit_status: None,
        started: now(),
        stopped: None,
    };
    write_record(&z.id, dir, &rec)?;
    if let Some(p) = z.limits.io_priority {
        match crate::cgroup::set_io_weight(&z.id, &z.cgroup, p) {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(zone = %z.id, "this host's IO scheduler does not weigh cgroups: zfs_io_priority not applied")
            }
            Err(e) => tracing::warn!(zone = %z.id, "zfs_io_priority: {e}"),
        }
    }
    if let Some(var) = dir.parent().and_then(Path::parent) {
        crate::events::emit(
            var,
            "modify",
            &z.id,
            vec![crate::events::change("state", "stopped".into(), "running".into())],
        );
    }
    ph.mark("record, event");
    tracing::info!(zone = %z.id, init = pid, "zone running");
    for r in &z.relays {
        relay(&z.id, r.clone());
    }
    report(format!("ok {pid}\n"));
    let mut oom = crate::cgroup::OomShield::new(&z.cgroup, pid);
    let status = supervise(&z.id, pid, pty, attach, dir, &mut oom)?;
    finish(rt, z, dir, &mut rec, status, on_exit)?;
    Ok(status.unwrap_or(-1))
}

fn finish(
    rt: &Runtime,
    z: &ZoneConfig,
    dir: &Path,
    rec: &mut Record,
    status: Option<i32>,
    on_exit: &dyn Fn(),
) -> Result<()> {
    let id = z.id.as_str();
    tracing::info!(zone = %id, ?status, "init exited: removing the container");
    crate::cgroup::leave_unmanaged();
    rt.delete(id, &z.cgroup)?;
    on_exit();
    let _ = std::fs::remove_file(dir.join("console.sock"));
    let _ = std::fs::remove_file(dir.join("seccomp.sock"));
    rec.state = "stopped".into();
    rec.exit_status = status;
    rec.stopped = Some(now());
    rec.zoneadmd = std::process::id() as i32;
    write_record(id, dir, rec)?;
    // dir is $ROOT/var/hull/z/<uuid>: the log is two levels up.
    if let Some(var) = dir.parent().and_then(Path::parent) {
        crate::events::emit(
            var,
            "modify",
            id,
            vec![crate::events::change("state", "running".into(), "stopped".into())],
        );
    }
    Ok(())
}

/// Watches a running zone whose supervisor died (no console); cleans up when init exits.
pub fn monitor(rt: &Runtime, z: &ZoneConfig, dir: &Path, on_exit: &dyn Fn()) -> Result<()> {
    let id = z.id.as_str();
    let mut rec = read_record(dir).ok_or_else(|| ZoneError::NotRunning(id.to_string()))?;
    let pid = rec.init_pid.ok_or_else(|| ZoneError::NotRunning(id.to_string()))?;
    crate::cgroup::leave_contracts();
    rec.zoneadmd = std::process::id() as i32;
    write_record(id, dir, &rec)?;
    if let Ok(fd) = pidfd_open(pid) {
        let mut oom = crate::cgroup::OomShield::new(&z.cgroup, pid);
        loop {
            oom.tick();
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::from(1000u16)).is_ok_and(|n| n > 0) {
                break;
            }
        }
    }
    finish(rt, z, dir, &mut rec, None, on_exit)
}

/// Serves 127.0.0.1:`port` by relaying each connection to the zone's unix socket; the
/// threads end with zoneadmd.
fn relay(id: &str, r: crate::Relay) {
    let listener = match std::net::TcpListener::bind(("127.0.0.1", r.port)) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(zone = %id, port = r.port, "cannot relay: {e}");
            return;
        }
    };
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let sock = r.socket.clone();
            std::thread::spawn(move || {
                // The socket's directory is the zone's to write: no link in its place is
                // followed (a relay to the host's other sockets would be anyone's on
                // 127.0.0.1).
                let Ok(unix) = hull_exec::tree::connect_socket(&sock) else { return };
                let (Ok(mut tcp_r), Ok(mut unix_w)) = (conn.try_clone(), unix.try_clone()) else { return };
                let up = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut tcp_r, &mut unix_w);
                    let _ = unix_w.shutdown(std::net::Shutdown::Write);
                });
                let (mut unix_r, mut tcp_w) = (unix, conn);
                let _ = std::io::copy(&mut unix_r, &mut tcp_w);
                let _ = tcp_w.shutdown(std::net::Shutdown::Write);
                let _ = up.join();
            });
        }
    });
}

/// Waits for a child to end; its exit status, or 128 + the signal that killed it.
pub fn wait_exit(pid: i32) -> nix::Result<i32> {
    loop {
        match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(s) => {
                if let Some(code) = wait_status(s) {
                    return Ok(code);
                }
            }
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

fn wait_status(s: nix::sys::wait::WaitStatus) -> Option<i32> {
    use nix::sys::wait::WaitStatus;
    match s {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Serves the console until init exits; returns its status.
fn supervise(
    id: &str,
    init: i32,
    pty: Option<OwnedFd>,
    attach: UnixListener,
    dir: &Path,
    oom: &mut crate::cgroup::OomShield,
) -> Result<Option<i32>> {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    attach.set_nonblocking(true).ok();
    let pidfd =
        pidfd_open(init).map_err(|e| ZoneError::Runtime { id: id.into(), op: "pidfd", reason: e.to_string() })?;
    let log_path = dir.join("console.log");
    let mut log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).ok();
    let mut pty = pty.map(std::fs::File::from);
    let mut clients: Vec<UnixStream> = Vec::new();
    let mut buf = vec![0u8; 16384];
    loop {
        // Reap whatever died: init, or orphans of commands run in the zone.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(_) => break,
                Ok(s) if s.pid().map(|p| p.as_raw()) == Some(init) => return Ok(wait_status(s)),
                Ok(_) => continue,
            }
        }
        oom.tick();
        let mut fds =
            vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN), PollFd::new(attach.as_fd(), PollFlags::POLLIN)];
        if let Some(p) = &pty {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        }
        for c in &clients {
            fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
        }
        if poll(&mut fds, PollTimeout::from(1000u16)).is_err() {
            continue;
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
        drop(fds);
        if ready[0] {
            // init is gone: reap it (it is our child through the subreaper).
            match waitpid(nix::unistd::Pid::from_raw(init), None) {
                Ok(s) => return Ok(wait_status(s)),
                Err(_) => return Ok(None),
            }
        }
        if ready[1]
            && let Ok((c, _)) = attach.accept()
        {
            hull_exec::probes::zone_console(id, "attach");
            c.set_nonblocking(true).ok();
            clients.push(c);
        }
        let base = 2;
        let mut next = base;
        let mut gone = Vec::new();
        if let Some(p) = pty.as_mut() {
            if ready[base] {
                match p.read(&mut buf) {
                    Ok(n) if n > 0 => {
                        if let Some(l) = log.as_mut() {
                            if l.metadata().map(|m| m.len() > LOG_MAX).unwrap_or(false) {
                                let _ = l.set_len(0);
                            }
                            let _ = l.write_all(&buf[..n]);
                        }
                        for (i, c) in clients.iter_mut().enumerate() {
                            if c.write_all(&buf[..n]).is_err() {
                                gone.push(i);
                            }
                        }
                    }
                    _ => {}
                }
            }
            next += 1;
        }
        for (i, c) in clients.iter_mut().enumerate() {
            if ready.get(next + i).copied().unwrap_or(false) {
                match c.read(&mut buf) {
                    Ok(0) => gone.push(i),
                    Ok(n) => {
                        if let Some(p) = pty.as_mut() {
                            let _ = p.write_all(&buf[..n]);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => gone.push(i),
                }
            }
        }
        gone.sort_unstable();
        gone.dedup();
        for i in gone.into_iter().rev() {
            hull_exec::probes::zone_console(id, "detach");
            clients.remove(i);
        }
    }
}
