//! zlogin on a terminal: the command gets a pty of its own in the zone, and this process
//! relays between it and the caller's terminal (in raw mode) until the command exits.

use crate::runtime::Runtime;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::termios;
use std::io::{Read, Write};
use std::os::fd::AsFd;

/// Puts the terminal back as it was when dropped.
struct Raw(Option<termios::Termios>);

impl Drop for Raw {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = termios::tcsetattr(std::io::stdin(), termios::SetArg::TCSANOW, t);
        }
    }
}

fn copy_window_size(to: &impl AsFd) {
    // SAFETY: winsize is plain data; TIOCGWINSZ fills it, TIOCSWINSZ reads it.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&to.as_fd()), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Runs `args` in zone `id` on a new pty; returns its exit status. Must run in a process of
/// its own (it becomes a subreaper so the command is its child).
pub(crate) fn exec_with_pty(
    rt: &Runtime,
    id: &str,
    args: Vec<String>,
    spec: &oci_spec::runtime::Spec,
) -> Result<i32, String> {
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("subreaper: {e}"))?;
    let dir = rt.state_root.join(id);
    let sock = dir.join(format!("x{}.sock", std::process::id()));
    let proc_json = dir.join(format!("x{}.json", std::process::id()));
    let _ = std::fs::remove_file(&sock);
    let listener =
        std::os::unix::net::UnixListener::bind(&sock).map_err(|e| format!("bind {}: {e}", sock.display()))?;
    let mut process = spec.process().clone().ok_or("the zone's spec has no process")?;
    process.set_args(Some(args));
    process.set_terminal(Some(true));
    let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".into());
    let mut env: Vec<String> =
        process.env().clone().unwrap_or_default().into_iter().filter(|e| !e.starts_with("TERM=")).collect();
    env.push(format!("TERM={term}"));
    process.set_env(Some(env));
    let text = serde_json::to_vec(&process).map_err(|e| e.to_string())?;
    std::fs::write(&proc_json, text).map_err(|e| format!("write {}: {e}", proc_json.display()))?;
    let built = ContainerBuilder::new(id.to_string(), SyscallType::default()).with_root_path(&rt.state_root).map(|b| {
        b.with_console_socket(Some(&sock)).as_tenant().with_process(Some(&proc_json)).with_detach(true).build()
    });
    let _ = std::fs::remove_file(&proc_json);
    let pid = match built {
        Ok(Ok(pid)) => nix::unistd::Pid::from_raw(pid.as_raw()),
        Ok(Err(e)) | Err(e) => {
            let _ = std::fs::remove_file(&sock);
            return Err(format!("exec: {e}"));
        }
    };
    let master = crate::supervisor::receive_pty(&listener).map_err(|e| format!("console: {e}"));
    let _ = std::fs::remove_file(&sock);
    let mut master = std::fs::File::from(master?);
    copy_window_size(&master);

    let saved = termios::tcgetattr(std::io::stdin()).ok();
    let _raw = Raw(saved.clone());
    if let Some(mut t) = saved {
        termios::cfmakeraw(&mut t);
        let _ = termios::tcsetattr(std::io::stdin(), termios::SetArg::TCSANOW, &t);
    }
    let mut buf = [0u8; 8192];
    let mut stdin_open = true;
    loop {
        let stdin = std::io::stdin();
        let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        if poll(&mut fds, PollTimeout::from(200u16)).is_err() {
            continue;
        }
        let ready: Vec<Option<PollFlags>> = fds.iter().map(|f| f.revents()).collect();
        drop(fds);
        if ready[0].is_some_and(|r| !r.is_empty()) {
            match master.read(&mut buf) {
                Ok(n) if n > 0 => {
                    let mut out = std::io::stdout();
                    let _ = out.write_all(&buf[..n]).and_then(|()| out.flush());
                }
                // EIO: the command and everything on its pty are gone.
                _ => break,
            }
        }
        if stdin_open && ready.get(1).copied().flatten().is_some_and(|r| !r.is_empty()) {
            match std::io::stdin().read(&mut buf) {
                Ok(n) if n > 0 => {
                    let _ = master.write_all(&buf[..n]);
                }
                _ => stdin_open = false,
            }
        }
    }
    crate::supervisor::wait_exit(pid.as_raw()).map_err(|e| format!("wait: {e}"))
}
