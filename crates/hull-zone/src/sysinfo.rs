//! sysinfo(2) answered with the zone's own caps: busybox's `free` and `uptime` (and
//! anything else that asks the kernel rather than reading /proc, which lxcfs covers) see
//! the zone's memory, swap, tasks and uptime. The zone's seccomp filter sends each
//! sysinfo call to its zoneadmd (seccomp user notification, as Incus's opt-in sysinfo
//! interception does); zoneadmd fills the caller's struct and answers for the kernel.
//!
//! The caller's buffer is written through /proc/PID/mem only after the kernel confirms
//! that the notification is still pending (so PID is still the caller), and only with
//! a struct of the x86-64 layout: any other ABI's call goes on to the kernel unanswered.

use libseccomp::{ScmpArch, ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags, notify_id_valid};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

/// x86-64's sysinfo syscall number.
const SYSINFO_X86_64: i32 = 99;

/// Takes the notification fds libcontainer sends to `listener` (one per filter: init's, and
/// each zlogin's), each answered by a thread of its own, for as long as zoneadmd runs.
pub fn listen(listener: UnixListener, zone: String, cgroup: String, init: Arc<AtomicI32>) {
    let spawned = std::thread::Builder::new().name("sysinfo-listen".into()).spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(10)));
            match crate::supervisor::fd_from(&conn, "no notification fd in the message") {
                Ok(fd) => serve(zone.clone(), fd, cgroup.clone(), init.clone()),
                Err(e) => tracing::warn!(zone = %zone, "sysinfo: {e}"),
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("sysinfo: no thread to take the zone's filters: {e}");
    }
}

/// Answers one filter's sysinfo calls on `fd` until every task under it is gone.
fn serve(zone: String, fd: OwnedFd, cgroup: String, init: Arc<AtomicI32>) {
    let spawned = std::thread::Builder::new().name("sysinfo".into()).spawn(move || {
        let hier = crate::cgroup::hierarchies();
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        loop {
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::NONE) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
                Ok(_) => {}
            }
            let ev = fds[0].revents().unwrap_or(PollFlags::empty());
            if ev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL)
                && !ev.contains(PollFlags::POLLIN)
            {
                return;
            }
            // A caller that went away between poll and receive is ENOENT: go on.
            let Ok(req) = ScmpNotifReq::receive(fd.as_raw_fd()) else { continue };
            let resp = answer(&req, fd.as_raw_fd(), &hier, &cgroup, init.load(Ordering::Relaxed));
            if let Err(e) = resp.respond(fd.as_raw_fd()) {
                tracing::debug!(zone = %zone, "sysinfo answer: {e}");
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("sysinfo: no thread to answer the zone's calls: {e}");
    }
}

/// The zone's figures in the kernel's struct, host figures where the zone has no cap.
pub fn figures(hier: &[crate::cgroup::Hierarchy], cgroup: &str, init: i32) -> libc::sysinfo {
    // SAFETY: sysinfo fills the struct it is given; a zeroed one is a valid start.
    let mut s: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: a valid, writable struct sysinfo.
    unsafe { libc::sysinfo(&mut s) };
    let unit = u64::from(s.mem_unit.max(1));
    let host_ram = s.totalram.saturating_mul(unit);
    let host_swap = s.totalswap.saturating_mul(unit);
    let mut ram =
        (host_ram, s.freeram.saturating_mul(unit), s.sharedram.saturating_mul(unit), s.bufferram.saturating_mul(unit));
    let mut swap = (host_swap, s.freeswap.saturating_mul(unit));
    let mut procs = u64::from(s.procs);
    if let Some(u) = crate::stats::usage_in(hier, cgroup) {
        if let Some(limit) = u.memory_limit_bytes.filter(|l| *l < host_ram) {
            ram = (limit, limit.saturating_sub(u.memory_bytes), 0, 0);
            // Swap as the zone may use it: its memory-plus-swap cap less its memory cap.
            let room = u.swap_limit_bytes.map_or(0, |s| s.saturating_sub(limit)).min(host_swap);
            swap = (room, room.saturating_sub(u.swap_bytes.unwrap_or(0)));
        }
        if let Some(t) = u.tasks {
            procs = t;
        }
    }
    s.totalram = ram.0;
    s.freeram = ram.1;
    s.sharedram = ram.2;
    s.bufferram = ram.3;
    s.totalswap = swap.0;
    s.freeswap = swap.1;
    s.procs = procs.min(u64::from(u16::MAX)) as u16;
    s.mem_unit = 1;
    if let Some(up) = zone_uptime(init, s.uptime) {
        s.uptime = up;
    }
    s
}

/// Seconds since the zone's init started (its start time is in clock ticks since boot).
fn zone_uptime(init: i32, host_uptime: i64) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{init}/stat")).ok()?;
    // The command may hold spaces and parentheses: fields count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let start: i64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    Some((host_uptime - start / hz).max(0))
}

fn answer(req: &ScmpNotifReq, fd: i32, hier: &[crate::cgroup::Hierarchy], cgroup: &str, init: i32) -> ScmpNotifResp {
    let none = ScmpNotifRespFlags::empty();
    if req.data.arch != ScmpArch::X8664 || i32::from(req.data.syscall) != SYSINFO_X86_64 {
        return ScmpNotifResp::new_continue(req.id, none);
    }
    let s = figures(hier, cgroup, init);
    // SAFETY: libc::sysinfo is plain old data; its bytes are what the kernel would copy out.
    let bytes = unsafe {
        std::slice::from_raw_parts(&s as *const libc::sysinfo as *const u8, std::mem::size_of::<libc::sysinfo>())
    };
    match write_to(req, fd, bytes) {
        Ok(()) => ScmpNotifResp::new_val(req.id, 0, none),
        Err(errno) => ScmpNotifResp::new_error(req.id, -errno, none),
    }
}

/// Writes `bytes` at the caller's buffer (the call's first argument).
fn write_to(req: &ScmpNotifReq, fd: i32, bytes: &[u8]) -> Result<(), i32> {
    use std::os::unix::fs::FileExt;
    let mem = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{}/mem", req.pid))
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EFAULT))?;
    // The notification still pending means PID is still the caller, blocked in its call.
    notify_id_valid(fd, req.id).map_err(|_| libc::ESRCH)?;
    match mem.write_at(bytes, req.data.args[0]) {
        Ok(n) if n == bytes.len() => Ok(()),
        _ => Err(libc::EFAULT),
    }
}
