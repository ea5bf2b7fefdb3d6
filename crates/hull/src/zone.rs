//! zlogin and zoneadmd.

use crate::{CmdResult, Failure};
use hull_storage::Node;

#[derive(clap::Args)]
pub struct ZloginArgs {
    /// Attach to the console instead of running a command.
    #[arg(short = 'C')]
    console: bool,
    uuid: String,
    /// The command and its arguments (default: a login shell).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(clap::Args)]
pub struct ZoneadmdArgs {
    /// Watch a zone whose supervisor died, instead of starting it.
    #[arg(long)]
    pub monitor: bool,
    pub uuid: String,
}

pub fn zlogin(node: &Node, a: ZloginArgs) -> CmdResult {
    let exe = std::env::current_exe().map_err(|e| Failure::new(1, e))?;
    let vm = hull_vm::Vmadm::open_for(node, exe, Some(&a.uuid))?;
    if a.console {
        return crate::vmadm::console(&vm.console_socket(&a.uuid)?);
    }
    let code = match vm.zlogin(&a.uuid, a.command) {
        Ok(code) => code,
        // As a shell says it, with a shell's status.
        Err(e @ hull_vm::VmError::NoCommand { .. }) => return Err(Failure::new(127, e)),
        Err(e) => return Err(e.into()),
    };
    if code != 0 {
        // The command's status is zlogin's, with no message of our own.
        std::process::exit(code);
    }
    Ok(())
}

/// The `hull` binary: this one, or the one beside `hull-zoneadmd` (what the metadata
/// service and a restart run).
fn hull_exe() -> Result<std::path::PathBuf, Failure> {
    let me = std::env::current_exe().map_err(|e| Failure::new(1, format!("cannot find this program: {e}")))?;
    if me.file_name().is_some_and(|n| n == "hull-zoneadmd") {
        return Ok(me.with_file_name("hull"));
    }
    Ok(me)
}

pub fn zoneadmd(node: &Node, a: ZoneadmdArgs) -> CmdResult {
    // Our own session: the command that started us, and its terminal, may go away.
    let _ = nix::unistd::setsid();
    let mut ph = hull_exec::phase::Phases::new("zoneadmd", &a.uuid);
    let dir = node.var_dir().join("z").join(&a.uuid);
    let rt = hull_zone::runtime::Runtime::new(&node.var_dir());
    // The readiness line goes to the pipe on stdout; stdout itself then points at
    // /dev/null, so that the pipe closes once the line is written.
    let ready = nix::unistd::dup(std::io::stdout()).ok().map(std::fs::File::from);
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
    }
    let text =
        std::fs::read_to_string(dir.join("zone.json")).map_err(|e| Failure::new(1, format!("zone.json: {e}")))?;
    let z: hull_zone::ZoneConfig =
        serde_json::from_str(&text).map_err(|e| Failure::new(1, format!("zone.json: {e}")))?;
    let on_exit = || {
        if let Err(e) = hull_vm::network::down(node, &a.uuid) {
            tracing::warn!(zone = %a.uuid, "taking the network down: {e}");
        }
    };
    // DHCP for the VM's NICs that hull answers (vmadm wrote what to answer): a thread of
    // this supervisor, not a process of its own, seeing only DHCP requests.
    let answers = dir.join("dhcp.json");
    if answers.exists() {
        let uuid = a.uuid.clone();
        std::thread::spawn(move || {
            if let Err(e) = hull_net::dhcp::serve(&answers) {
                tracing::warn!(zone = %uuid, "DHCP responder: {e}");
            }
        });
    }
    // The VM's metadata service: the OS zone's socket, or the guest's second serial port.
    let exe = hull_exe()?;
    {
        let (node, uuid, exe) = (node.clone(), a.uuid.clone(), exe.clone());
        std::thread::spawn(move || {
            if let Err(e) = hull_vm::metadata::serve(&node, exe, &uuid) {
                tracing::warn!(zone = %uuid, "metadata service: {e}");
            }
        });
    }
    ph.mark("read the zone, start its services");
    if a.monitor {
        if let Some(mut r) = ready {
            let _ = std::io::Write::write_all(&mut r, b"ok monitor\n");
        }
        hull_zone::supervisor::monitor(&rt, &z, &dir, &on_exit).map_err(|e| Failure::new(1, e))?;
        return Ok(());
    }
    let status = hull_zone::supervisor::run(&rt, &z, &dir, ready, &on_exit).map_err(|e| Failure::new(1, e))?;
    tracing::info!(zone = %z.id, status, "init exited");
    let vm = hull_vm::Vmadm::open(node, exe)?;
    if vm.after_exit(&a.uuid, status) == hull_vm::AfterExit::Restart {
        tracing::warn!(zone = %z.id, status, "init exited without being asked to: booting the zone again");
        // A new supervisor takes over; this one ends once it reports.
        if let Err(e) = vm.start(&a.uuid) {
            tracing::error!(zone = %z.id, "restart failed: {e}");
        }
    }
    Ok(())
}
