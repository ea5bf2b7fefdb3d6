//! Starting a method's process: in its contract, in a session of its own, as its user.
//!
//! Why not `std::process::Command`: with a `pre_exec` hook (needed to join the contract's
//! cgroup between fork and exec) std forks the whole daemon and waits for the child's exec,
//! copying the daemon's page tables for every method; bringing 500 services up spent 73% of
//! its time there (HULL_LOG=debug's `spawn_ms`). This does what posix_spawn does instead:
//! `clone(CLONE_VM | CLONE_VFORK)`, the child on a small stack of its own, running only
//! async-signal-safe calls on memory prepared before the clone, the daemon suspended until
//! the child has exec'd or failed. On cgroup v2, `clone3(CLONE_INTO_CGROUP)` would spare
//! even the write; this host is v1, so the child writes its own pid to `cgroup.procs`.
//!
//! A method whose exec is one plain command (words of `[A-Za-z0-9_./:=,+@%-]`, no
//! assignment first) is exec'd directly, as `sh -c "exec CMD"` would do, without the shell;
//! anything else runs under `/bin/sh -c "exec ..."`.

use std::ffi::{CString, c_void};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// What a method's process gets.
pub struct Spawn<'a> {
    /// The expanded exec string.
    pub exec: &'a str,
    /// The environment, in order; a later key wins.
    pub env: Vec<(String, String)>,
    pub cwd: &'a str,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Supplementary groups (with a gid: none means none).
    pub groups: Vec<u32>,
    /// Where stdout and stderr go.
    pub log: &'a std::fs::File,
    /// The contract's `cgroup.procs`, open for writing.
    pub procs: &'a std::fs::File,
}

/// Everything the child reads, made before the clone: the child may not allocate.
struct Prepared {
    path: CString,
    argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    cwd: CString,
    uid: Option<u32>,
    gid: Option<u32>,
    groups: Vec<libc::gid_t>,
    stdin: RawFd,
    log: RawFd,
    procs: RawFd,
    /// errno of the step that failed, and which step (for the message); 0 when exec ran.
    err: AtomicI32,
    step: AtomicI32,
}

const STEPS: &[&str] =
    &["", "redirect its output", "join its contract", "start a session", "set its ids", "change directory", "exec"];

fn plain(exec: &str) -> Option<Vec<&str>> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "_./:=,+@%-".contains(c);
    if exec.is_empty() || !exec.chars().all(|c| c == ' ' || ok(c)) {
        return None;
    }
    let words: Vec<&str> = exec.split(' ').filter(|w| !w.is_empty()).collect();
    // `A=b cmd` is an assignment to the shell.
    if words.first().is_none_or(|w| w.contains('=')) {
        return None;
    }
    Some(words)
}

/// The program's path: as given when it holds a `/`, else found in `path` as a shell would.
fn find(cmd: &str, path: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    if cmd.contains('/') {
        return Some(cmd.to_string());
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| format!("{d}/{cmd}"))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

fn cstr(s: &str) -> std::io::Result<CString> {
    CString::new(s).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{s:?} holds a NUL")))
}

fn prepare(s: &Spawn, stdin: RawFd) -> std::io::Result<Prepared> {
    let mut env: std::collections::BTreeMap<&str, &str> = std::collections::BTreeMap::new();
    for (k, v) in &s.env {
        env.insert(k, v);
    }
    let path_var = env.get("PATH").copied().unwrap_or("/usr/sbin:/usr/bin:/sbin:/bin");
    let direct = plain(s.exec).and_then(|w| Some((find(w[0], path_var)?, w)));
    let (path, argv): (String, Vec<String>) = match direct {
        Some((p, w)) => (p, w.iter().map(|x| x.to_string()).collect()),
        None => ("/bin/sh".into(), vec!["/bin/sh".into(), "-c".into(), format!("exec {}", s.exec)]),
    };
    let argv: Vec<CString> = argv.iter().map(|a| cstr(a)).collect::<std::io::Result<_>>()?;
    let envp: Vec<CString> = env.iter().map(|(k, v)| cstr(&format!("{k}={v}"))).collect::<std::io::Result<_>>()?;
    let mut p = Prepared {
        path: cstr(&path)?,
        argv,
        argv_ptrs: Vec::new(),
        envp,
        envp_ptrs: Vec::new(),
        cwd: cstr(s.cwd)?,
        uid: s.uid,
        gid: s.gid,
        groups: s.groups.clone(),
        stdin,
        log: s.log.as_raw_fd(),
        procs: s.procs.as_raw_fd(),
        err: AtomicI32::new(0),
        step: AtomicI32::new(0),
    };
    p.argv_ptrs = p.argv.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    p.envp_ptrs = p.envp.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    Ok(p)
}

/// The child, between clone and exec. Shares the daemon's memory: it only reads `Prepared`,
/// writes its two atomics, and makes system calls.
extern "C" fn child(arg: *mut c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Prepared` the parent keeps alive, suspended, until this child
    // execs or exits (CLONE_VFORK).
    let p = unsafe { &*(arg as *const Prepared) };
    let fail = |step: i32| -> ! {
        // SAFETY: __errno_location gives this thread's errno; reading it is safe.
        let e = unsafe { *libc::__errno_location() };
        p.err.store(if e == 0 { libc::EINVAL } else { e }, Ordering::SeqCst);
        p.step.store(step, Ordering::SeqCst);
        // SAFETY: _exit ends only this child, without running the parent's atexit work.
        unsafe { libc::_exit(127) }
    };
    // SAFETY: plain system calls on descriptors and strings prepared by the parent.
    unsafe {
        if libc::dup2(p.stdin, 0) < 0 || libc::dup2(p.log, 1) < 0 || libc::dup2(p.log, 2) < 0 {
            fail(1);
        }
        if libc::write(p.procs, b"0".as_ptr().cast(), 1) < 0 {
            fail(2);
        }
        if libc::setsid() < 0 {
            fail(3);
        }
        if let Some(g) = p.gid {
            if libc::setgroups(p.groups.len(), p.groups.as_ptr()) < 0 && p.uid.is_some() {
                fail(4);
            }
            if libc::setgid(g) < 0 {
                fail(4);
            }
        }
        if let Some(u) = p.uid
            && libc::setuid(u) < 0
        {
            fail(4);
        }
        if libc::chdir(p.cwd.as_ptr()) < 0 {
            fail(5);
        }
        // As std gives its children: SIGPIPE as the default, no signal blocked.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execve(p.path.as_ptr(), p.argv_ptrs.as_ptr(), p.envp_ptrs.as_ptr());
    }
    fail(6)
}

/// Starts the method's process; its pid. The caller reaps it (SIGCHLD).
pub fn spawn(s: &Spawn) -> std::io::Result<i32> {
    let stdin = std::fs::File::open("/dev/null")?;
    let p = prepare(s, stdin.as_raw_fd())?;
    let mut stack = vec![0u8; 64 * 1024];
    // The stack grows down: its top, 16-byte aligned.
    let top = {
        let end = stack.as_mut_ptr() as usize + stack.len();
        (end & !15) as *mut c_void
    };
    // Every signal blocked around the clone, so none runs in the child before it has its
    // own dispositions; restored after.
    // SAFETY: a sigset_t of zeroes is a valid (empty) set.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigset operations on local sets; clone with a valid stack and argument that
    // outlive the child's use of them (the parent is suspended until exec or exit).
    let pid = unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &p as *const Prepared as *mut c_void,
        );
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        pid
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let err = p.err.load(Ordering::SeqCst);
    if err != 0 {
        let step = STEPS.get(p.step.load(Ordering::SeqCst) as usize).copied().unwrap_or("start");
        // It has exited: reap it here, so the daemon does not see a method that ran.
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let e = std::io::Error::from_raw_os_error(err);
        return Err(std::io::Error::new(e.kind(), format!("cannot {step}: {e}")));
    }
    drop(stack);
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_commands_skip_the_shell() {
        assert_eq!(plain("sleep 3600"), Some(vec!["sleep", "3600"]));
        assert_eq!(plain("/usr/bin/web -p 8080  --x=y"), Some(vec!["/usr/bin/web", "-p", "8080", "--x=y"]));
        for shell in ["a; b", "a | b", "a > f", "A=b cmd", "echo $HOME", "echo 'q'", "a\\ b", "a && b", "", "x\ty"] {
            assert_eq!(plain(shell), None, "{shell:?}");
        }
    }

    #[test]
    fn find_is_a_path_search() {
        assert_eq!(find("sh", "/nonexistent:/bin"), Some("/bin/sh".into()));
        assert_eq!(find("/x/y", "/bin"), Some("/x/y".into()));
        assert_eq!(find("no-such-command-here", "/bin:/usr/bin"), None);
    }

    fn run(exec: &str, cwd: &str) -> (std::io::Result<i32>, String) {
        let dir = tempfile::tempdir().expect("tmp");
        let log_path = dir.path().join("log");
        let log = std::fs::File::create(&log_path).expect("log");
        // A file stands in for cgroup.procs: the child's write must land there.
        let procs_path = dir.path().join("procs");
        let procs = std::fs::File::create(&procs_path).expect("procs");
        let s = Spawn {
            exec,
            env: vec![("PATH".into(), "/usr/bin:/bin".into()), ("X".into(), "1".into()), ("X".into(), "2".into())],
            cwd,
            uid: None,
            gid: None,
            groups: Vec::new(),
            log: &log,
            procs: &procs,
        };
        let r = spawn(&s);
        if let Ok(pid) = &r {
            let mut st = 0;
            // SAFETY: our child.
            unsafe { libc::waitpid(*pid, &mut st, 0) };
        }
        let out = std::fs::read_to_string(&log_path).unwrap_or_default();
        assert_eq!(std::fs::read_to_string(&procs_path).unwrap_or_default(), "0", "the child joins its contract");
        (r, out)
    }

    #[test]
    fn a_method_runs_with_its_environment_directory_and_output() {
        let (r, out) = run("/bin/sh -c 'echo $X $(pwd); echo err >&2'", "/tmp");
        assert!(r.is_ok());
        assert_eq!(out, "2 /tmp\nerr\n");
        let (r, out) = run("echo plain", "/");
        assert!(r.is_ok());
        assert_eq!(out, "plain\n");
    }

    #[test]
    fn a_failure_before_exec_is_an_error_that_says_which_step() {
        let (r, _) = run("echo x", "/no/such/dir");
        let e = r.expect_err("no such directory");
        assert!(e.to_string().contains("change directory"), "{e}");
    }
}
