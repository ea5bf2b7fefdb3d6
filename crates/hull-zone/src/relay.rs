//! zlogin's standard streams, relayed: the command in the zone gets pipes, never the
//! caller's own descriptors. Handed over as they are, a zone could reopen them through
//! `/proc/self/fd/0` and write the host file that was redirected into zlogin, or keep a
//! host terminal or socket after zlogin ends.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// This process's own stdio, saved while 0, 1 and 2 point at the pipes a command inherits.
pub struct Relay {
    saved: [OwnedFd; 3],
    /// Our ends: where the command's stdin is written, and its stdout and stderr read.
    to_stdin: OwnedFd,
    from_stdout: OwnedFd,
    from_stderr: OwnedFd,
}

fn dup_cloexec(fd: RawFd) -> std::io::Result<OwnedFd> {
    let new = nix::fcntl::fcntl(
        // SAFETY: 0, 1 and 2 are open for the life of the process; borrowed for this call.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3),
    )?;
    // SAFETY: F_DUPFD_CLOEXEC just made this descriptor; we are its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

fn onto(fd: &OwnedFd, target: RawFd) -> std::io::Result<()> {
    // SAFETY: dup2 onto one of 0, 1, 2, which this process owns.
    if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl Relay {
    /// Points 0, 1 and 2 at fresh pipes for a command about to be started; call
    /// [`Relay::run`] once it has been.
    pub fn install() -> std::io::Result<Relay> {
        let saved = [dup_cloexec(0)?, dup_cloexec(1)?, dup_cloexec(2)?];
        let (in_r, in_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        onto(&in_r, 0)?;
        onto(&out_w, 1)?;
        onto(&err_w, 2)?;
        Ok(Relay { saved, to_stdin: in_w, from_stdout: out_r, from_stderr: err_r })
    }

    /// Puts this process's own stdio back (after a failed start, to say why).
    pub fn restore(&self) {
        for (i, fd) in self.saved.iter().enumerate() {
            let _ = onto(fd, i as RawFd);
        }
    }

    /// Relays until the command's streams close, or shortly after `wait` returns (what it
    /// left running in the background may hold them open); returns `wait`'s result.
    pub fn run<T>(self, wait: impl FnOnce() -> T) -> T {
        self.restore();
        let Relay { saved, to_stdin, from_stdout, from_stderr } = self;
        let [in_fd, out_fd, err_fd] = saved;
        // stdin: copied until our caller's input ends, then the pipe is closed (EOF). This
        // thread may stay blocked on a terminal; the process's exit ends it.
        std::thread::spawn(move || {
            let mut src = std::fs::File::from(in_fd);
            let mut dst = std::fs::File::from(to_stdin);
            let _ = std::io::copy(&mut src, &mut dst);
        });
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        for (from, to) in [(from_stdout, out_fd), (from_stderr, err_fd)] {
            let tx = done_tx.clone();
            std::thread::spawn(move || {
                let mut src = std::fs::File::from(from);
                let mut dst = std::fs::File::from(to);
                let mut buf = [0u8; 16384];
                loop {
                    match src.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            // Our reader went away: stop reading, so the command sees EPIPE.
                            if dst.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                let _ = tx.send(());
            });
        }
        drop(done_tx);
        let result = wait();
        let deadline = std::time::Instant::now() + Duration::from_millis(500);
        for _ in 0..2 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if done_rx.recv_timeout(left).is_err() {
                break;
            }
        }
        result
    }
}
