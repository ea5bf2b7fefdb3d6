//! One way to run a host tool, and the host facts every subsystem reads (`mountinfo`).
//!
//! Every host command hull runs goes through [`run`]: an absolute path, an argument vector
//! (never `sh -c`), and on failure an error that carries the command line, its exit status,
//! and what it printed. Callers add the identity of what they were doing (dataset, image).

pub mod mountinfo;
pub mod phase;
pub mod probes;
pub mod tree;

use std::ffi::OsStr;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// A host command that could not be run, or that exited unsuccessfully.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("could not run {command}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed ({status}): {}", summary(stderr, stdout))]
    Failed { command: String, status: ExitStatus, stdout: String, stderr: String },
}

impl ExecError {
    /// The stderr of a command that ran and failed; empty otherwise.
    pub fn stderr(&self) -> &str {
        match self {
            ExecError::Failed { stderr, .. } => stderr,
            ExecError::Spawn { .. } => "",
        }
    }
}

fn summary(stderr: &str, stdout: &str) -> String {
    let text = if stderr.trim().is_empty() { stdout } else { stderr };
    let text = text.trim();
    if text.is_empty() { "no output".to_string() } else { text.to_string() }
}

/// A command line, as it will be shown in errors and logs.
pub struct CommandLine {
    program: PathBuf,
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
}

impl CommandLine {
    pub fn new(program: impl AsRef<Path>) -> Self {
        CommandLine { program: program.as_ref().to_path_buf(), args: Vec::new(), stdin: None }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_string_lossy().into_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    /// Bytes fed to the command's standard input.
    pub fn stdin(mut self, data: Vec<u8>) -> Self {
        self.stdin = Some(data);
        self
    }

    /// Runs the command to completion and returns its stdout when it exits with status 0.
    pub fn run(&self) -> Result<String, ExecError> {
        let command = self.to_string();
        tracing::debug!(%command, "exec");
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd.spawn().map_err(|source| ExecError::Spawn { command: command.clone(), source })?;
        if let (Some(data), Some(mut pipe)) = (&self.stdin, child.stdin.take()) {
            // A command that exits early closes its stdin; its status tells the story.
            let _ = pipe.write_all(data);
        }
        let out = child.wait_with_output().map_err(|source| ExecError::Spawn { command: command.clone(), source })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(ExecError::Failed {
                command,
                status: out.status,
                stdout,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
    }
}

impl fmt::Display for CommandLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.program.display())?;
        for a in &self.args {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
                write!(f, " '{}'", a.replace('\'', "'\\''"))?;
            } else {
                write!(f, " {a}")?;
            }
        }
        Ok(())
    }
}

/// An error and every cause under it, joined with `: `.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    text
}

/// Numbers each atomic write's temporary file: threads of one process (the API server,
/// zoneadmd) may write the same file at once, and one must not rename the other's away.
static ATOMIC_WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Writes a file so that readers see the old contents or the new, never part: into a
/// temporary file beside it, synced, then renamed over it, and the directory synced, so that
/// a power cut leaves one or the other too. Makes the parent directory if needed.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(path, data, 0o666)
}

/// [`write_atomic`], the file made with `mode` (less the umask) from its first byte: a key
/// is never readable by others, not even between its write and a chmod. The temporary file
/// is made new (`O_EXCL`, so a link planted at its name is not written through).
pub fn write_atomic_mode(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    write_renamed(path, data, mode, true)
}

/// Replaces `path` with a file holding `data` as [`write_atomic`] does (a reader sees the old
/// file or the new one, never half), without waiting for the disk: for what the node writes
/// again at each boot (a running zone's files under `var/hull/z`), which a power cut makes
/// stale anyway. Two syncs on btrfs cost a create-and-boot a few milliseconds each.
pub fn write_replace(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_renamed(path, data, 0o666, false)
}

fn write_renamed(path: &Path, data: &[u8], mode: u32, durable: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = ATOMIC_WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp.{}.{n}", std::process::id()));
    // A crashed writer's leftover (or anything else by that name) goes first.
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if durable && let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Finds a host tool by name in the standard system directories, so that a hostile or odd
/// `PATH` cannot change what hull runs.
pub fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(name)
}

/// A crash point for tests: when `HULL_FAILPOINT` names this point, the process aborts here,
/// as a power cut or a `kill -9` would stop it. Tests use it to prove that every step of a
/// multi-step operation leaves state the next command repairs.
pub fn failpoint(name: &str) {
    if std::env::var_os("HULL_FAILPOINT").is_some_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_does_not_follow_a_link_planted_at_its_temporary_name() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tempdir");
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"host file").expect("victim");
        let target = d.path().join("key");
        // At the names this write and the next few (other tests') will use.
        let next = ATOMIC_WRITES.load(std::sync::atomic::Ordering::Relaxed);
        let planted: Vec<PathBuf> =
            (next..next + 16).map(|n| d.path().join(format!(".key.tmp.{}.{n}", std::process::id()))).collect();
        for tmp in &planted {
            std::os::unix::fs::symlink(&victim, tmp).expect("plant");
        }
        write_atomic_mode(&target, b"secret", 0o600).expect("write");
        let tmp = planted.iter().find(|p| std::fs::symlink_metadata(p).is_err()).expect("one planted name was used");
        assert_eq!(std::fs::read(&victim).expect("victim"), b"host file");
        assert_eq!(std::fs::read(&target).expect("key"), b"secret");
        assert_eq!(std::fs::metadata(&target).expect("key").permissions().mode() & 0o077, 0);
        assert!(std::fs::symlink_metadata(tmp).is_err(), "the planted name is gone");
    }

    #[test]
    fn failure_carries_command_status_and_stderr() {
        let err = CommandLine::new("/bin/sh").args(["-c", "echo oops >&2; exit 3"]).run().expect_err("must fail");
        let text = err.to_string();
        assert!(text.contains("/bin/sh -c 'echo oops >&2; exit 3'"), "{text}");
        assert!(text.contains("exit status: 3"), "{text}");
        assert!(text.contains("oops"), "{text}");
        assert_eq!(err.stderr().trim(), "oops");
    }

    #[test]
    fn stdout_and_stdin() {
        let out = CommandLine::new("/bin/cat").stdin(b"hello".to_vec()).run().expect("cat");
        assert_eq!(out, "hello");
    }

    #[test]
    fn atomic_writes_replace_whole_and_leave_no_temporary() {
        let dir = tempfile_dir();
        let p = dir.join("sub/f.json");
        write_atomic(&p, b"one").expect("write");
        write_atomic(&p, b"two").expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        assert_eq!(std::fs::read_dir(dir.join("sub")).expect("dir").count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn atomic_writes_of_one_file_from_many_threads_all_land_whole() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("same.json");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let p = p.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        write_atomic(&p, format!("writer {i}").as_bytes())?;
                    }
                    Ok::<(), std::io::Error>(())
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread").expect("every write lands");
        }
        let text = std::fs::read_to_string(&p).expect("read");
        assert!(text.starts_with("writer "), "{text}");
        assert_eq!(std::fs::read_dir(d.path()).expect("dir").count(), 1, "a temporary file was left");
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("hull-exec-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = CommandLine::new("/nonexistent/tool").run().expect_err("must fail");
        assert!(matches!(err, ExecError::Spawn { .. }));
        assert!(err.to_string().contains("/nonexistent/tool"));
    }
}
