use crate::table::{self, Filter};
use crate::{CmdResult, Failure, print_json};
use clap::Subcommand;
use hull_spec::{Action, Brand};
use hull_storage::Node;
use hull_vm::{VmError, Vmadm};
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

/// `vmadm list`'s columns, from the property table.
fn list_columns() -> String {
    hull_spec::vm::props::list_columns().join(",")
}
const LIST_SORT: &str = "ram,uuid";

impl From<VmError> for Failure {
    fn from(e: VmError) -> Failure {
        Failure { code: 1, message: crate::chain(&e) }
    }
}

/// `vmadm create --help`: an example and where the properties are listed.
const CREATE_HELP: &str = "\
Example (a zone of 512 MiB on the admin nic tag):

  vmadm create <<EOF
  {
    \"brand\": \"joyent-minimal\",
    \"image_uuid\": \"IMAGE-UUID\",
    \"alias\": \"web01\",
    \"hostname\": \"web01\",
    \"max_physical_memory\": 512,
    \"quota\": 10,
    \"resolvers\": [\"8.8.8.8\"],
    \"nics\": [{\"nic_tag\": \"admin\", \"ips\": [\"10.0.0.5/24\"], \"gateways\": [\"10.0.0.1\"]}]
  }
  EOF

Brands: joyent (the default), joyent-minimal, lx (needs kernel_version), kvm, bhyve.
Properties are SmartOS's (vmadm(8)); `man vmadm` from `hull manpages` and docs/zones.md
list what hull does with each. `vmadm validate create -f FILE` checks a payload first.";

#[derive(Subcommand)]
pub enum VmCmd {
    /// Create a VM from a JSON payload (a file, or standard input).
    #[command(after_long_help = CREATE_HELP)]
    Create {
        #[arg(short = 'f')]
        file: Option<PathBuf>,
        /// Print the new VM as JSON.
        #[arg(short = 'j')]
        json: bool,
    },
    /// Print a VM as JSON.
    Get { uuid: String },
    /// List VMs.
    List {
        #[arg(short = 'o', default_value_t = list_columns())]
        columns: String,
        #[arg(short = 's', default_value = LIST_SORT, allow_hyphen_values = true)]
        sort: String,
        #[arg(short = 'H')]
        no_header: bool,
        /// Parseable: no header, columns separated by ':'.
        #[arg(short = 'p')]
        parseable: bool,
        #[arg(short = 'j')]
        json: bool,
        /// FIELD=VALUE or FIELD=~SUBSTRING
        filters: Vec<Filter>,
    },
    /// Print the uuids of the VMs that match.
    Lookup {
        #[arg(short = 'j')]
        json: bool,
        /// Exactly one VM must match.
        #[arg(short = '1')]
        one: bool,
        #[arg(short = 'o')]
        columns: Option<String>,
        filters: Vec<Filter>,
    },
    /// Boot a stopped VM (and set its autoboot true, as SmartOS's start does).
    Start { uuid: String },
    /// Ask the VM to power off; -F kills it, -t sets how long to wait before killing.
    /// Sets autoboot false, as SmartOS's stop does: the VM stays down when the node boots.
    Stop {
        uuid: String,
        #[arg(short = 'F')]
        force: bool,
        #[arg(short = 't', default_value_t = 60)]
        timeout: u64,
    },
    /// Stop and start a VM (-F: kill it rather than ask its init to reboot).
    Reboot {
        uuid: String,
        #[arg(short = 'F')]
        force: bool,
    },
    /// Send a signal to the VM (default SIGKILL).
    Kill {
        #[arg(short = 's', default_value = "KILL")]
        signal: String,
        uuid: String,
    },
    /// Delete a VM: stop it if it runs, then remove its datasets, snapshots and disks.
    Delete { uuid: String },
    /// Change a VM: a JSON payload (-f or standard input) or PROPERTY=VALUE pairs.
    Update {
        uuid: String,
        #[arg(short = 'f')]
        file: Option<PathBuf>,
        assignments: Vec<String>,
    },
    /// Attach to a running VM's console (detach with Ctrl-]).
    Console { uuid: String },
    /// Start every VM whose autoboot is true (the service manager calls this at boot).
    BootAll {
        /// Exit 0 even when some VMs failed to boot (they are marked `failed` and named on
        /// stderr): the zones service's start method, so one bad VM never fails the node's
        /// boot, and never makes the service manager stop the VMs that did boot.
        #[arg(short = 'k', long = "keep-going")]
        keep_going: bool,
    },
    /// Stop every running VM, the most recently started first (the service manager calls
    /// this at shutdown).
    StopAll {
        #[arg(short = 't', default_value_t = 60)]
        timeout: u64,
    },
    /// Print VM events (create, modify, delete); -f follows new ones.
    Events {
        #[arg(short = 'f')]
        follow: bool,
        #[arg(short = 'j')]
        json: bool,
        /// Only this VM's events.
        uuid: Option<String>,
    },
    /// Runtime information (KVM VMs only, as on SmartOS).
    Info { uuid: String, types: Vec<String> },
    /// Snapshot a VM's dataset.
    CreateSnapshot { uuid: String, name: String },
    /// Write a stopped VM, whole (config, every dataset, snapshots), to standard output.
    Send { uuid: String },
    /// Make a VM, stopped, from a stream `vmadm send` wrote (standard input).
    Receive,
    /// Put a VM back to a snapshot (stopping and starting it if it runs).
    RollbackSnapshot { uuid: String, name: String },
    /// Delete one of a VM's snapshots.
    DeleteSnapshot { uuid: String, name: String },
    /// Check a payload without acting on it: prints every problem at once.
    /// `validate create [-f FILE]` takes the brand from the payload; `validate update BRAND`.
    Validate {
        /// create, update or receive
        action: Action,
        /// The VM's brand (update: required; create: the payload's, when not given)
        brand: Option<Brand>,
        /// The payload (default: standard input).
        #[arg(short = 'f')]
        file: Option<PathBuf>,
    },
}

/// Reads a JSON payload from a file or standard input.
pub fn read_payload(file: Option<&PathBuf>) -> Result<serde_json::Value, Failure> {
    let text = match file {
        Some(p) => std::fs::read_to_string(p).map_err(|e| Failure::new(1, format!("read {}: {e}", p.display())))?,
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Failure::new(1, format!("read standard input: {e}")))?;
            s
        }
    };
    serde_json::from_str(&text).map_err(|e| Failure::new(1, format!("payload is not valid JSON: {e}")))
}

pub(crate) fn parse_signal(s: &str) -> Result<i32, Failure> {
    let name = s.trim_start_matches("SIG").to_ascii_uppercase();
    if let Ok(n) = name.parse::<i32>() {
        return Ok(n);
    }
    format!("SIG{name}")
        .parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| Failure::new(1, format!("unknown signal {s:?}")))
}

/// The top-level property of each field path (`nics.0.ip` is `nics`).
fn top_level(fields: impl Iterator<Item = String>) -> std::collections::BTreeSet<String> {
    fields.map(|f| f.split('.').next().unwrap_or_default().to_string()).collect()
}

fn vm_row(v: serde_json::Map<String, serde_json::Value>) -> serde_json::Value {
    serde_json::Value::Object(v)
}

/// This program, which runs each VM's supervisor.
fn exe() -> Result<std::path::PathBuf, Failure> {
    std::env::current_exe().map_err(|e| Failure::new(1, format!("cannot find this program: {e}")))
}

pub(crate) fn open(node: &Node) -> Result<Vmadm, Failure> {
    Ok(Vmadm::open(node, exe()?)?)
}

/// [`open`] for a command on one VM, or one that makes a VM (see [`Vmadm::open_for`]).
fn open_for(node: &Node, uuid: Option<&str>) -> Result<Vmadm, Failure> {
    Ok(Vmadm::open_for(node, exe()?, uuid)?)
}

/// [`open`] for a command that only reads (see [`Vmadm::open_to_read`]).
fn open_to_read(node: &Node) -> Result<Vmadm, Failure> {
    Ok(Vmadm::open_to_read(node, exe()?)?)
}

pub fn run(node: &Node, cmd: VmCmd) -> CmdResult {
    match cmd {
        VmCmd::Create { file, json } => {
            let payload = read_payload(file.as_ref())?;
            let vm = open_for(node, None)?;
            let uuid = vm.create(&payload).map_err(|e| {
                if let VmError::Invalid(errs) = &e {
                    eprintln!("{}", errs.to_json());
                }
                Failure::from(e)
            })?;
            if json {
                print_json(&vm.get(&uuid)?);
            } else {
                println!("Successfully created VM {uuid}");
            }
        }
        VmCmd::Get { uuid } => print_json(&open_to_read(node)?.get(&uuid)?),
        VmCmd::List { columns, sort, no_header, parseable, json, filters } => {
            let vm = open_to_read(node)?;
            let snaps = json
                || [&columns, &sort].iter().any(|c| c.contains("snapshots"))
                || filters.iter().any(|f| f.field().starts_with("snapshots"));
            // A table reads only the properties it shows, sorts by or filters on.
            let pick = (!json).then(|| {
                let named = table::fields(&columns).into_iter().chain(table::fields(&sort));
                top_level(named.chain(filters.iter().map(|f| f.field().to_string())))
            });
            let mut rows: Vec<_> = vm
                .list_picked(snaps, pick.as_ref())?
                .into_iter()
                .map(vm_row)
                .filter(|r| filters.iter().all(|f| f.matches(r)))
                .collect();
            let keys = table::fields(&sort);
            rows.sort_by(|a, b| table::cmp_rows(a, b, &keys));
            if json {
                print_json(&rows);
            } else if parseable {
                let cols = table::fields(&columns);
                for r in &rows {
                    let cells: Vec<String> = cols.iter().map(|c| table::cell(table::lookup(r, c))).collect();
                    println!("{}", cells.join(":"));
                }
            } else {
                print!("{}", table::render(&rows, &table::fields(&columns), no_header));
            }
        }
        VmCmd::Lookup { json, one, columns, filters } => {
            let vm = open_to_read(node)?;
            let snaps = json || filters.iter().any(|f| f.field().starts_with("snapshots"));
            let pick = match (&columns, json) {
                (_, false) => Some(top_level(filters.iter().map(|f| f.field().to_string()))),
                (Some(c), true) => {
                    Some(top_level(table::fields(c).into_iter().chain(filters.iter().map(|f| f.field().to_string()))))
                }
                (None, true) => None,
            };
            let rows: Vec<_> = vm
                .list_picked(snaps, pick.as_ref())?
                .into_iter()
                .map(vm_row)
                .filter(|r| filters.iter().all(|f| f.matches(r)))
                .collect();
            if one && rows.len() != 1 {
                return Err(Failure::new(1, format!("requested exactly one VM, but {} matched", rows.len())));
            }
            if json {
                match &columns {
                    Some(c) => {
                        let cols = table::fields(c);
                        let picked: Vec<serde_json::Value> = rows
                            .iter()
                            .map(|r| {
                                serde_json::Value::Object(
                                    cols.iter()
                                        .filter_map(|k| table::lookup(r, k).map(|v| (k.clone(), v.clone())))
                                        .collect(),
                                )
                            })
                            .collect();
                        print_json(&picked);
                    }
                    None => print_json(&rows),
                }
            } else {
                for r in rows {
                    println!("{}", table::cell(table::lookup(&r, "uuid")));
                }
            }
        }
        VmCmd::Start { uuid } => {
            open_for(node, Some(&uuid))?.start(&uuid)?;
            println!("Successfully started VM {uuid}");
        }
        VmCmd::Stop { uuid, force, timeout } => {
            open_for(node, Some(&uuid))?.stop(&uuid, force, Duration::from_secs(timeout))?;
            println!("Successfully completed stop for VM {uuid}");
        }
        VmCmd::Reboot { uuid, force } => {
            open_for(node, Some(&uuid))?.reboot(&uuid, force, Duration::from_secs(60))?;
            println!("Successfully completed reboot for VM {uuid}");
        }
        VmCmd::Kill { signal, uuid } => {
            open_for(node, Some(&uuid))?.kill(&uuid, parse_signal(&signal)?)?;
            println!("Successfully sent {signal} to VM {uuid}");
        }
        VmCmd::Delete { uuid } => {
            open_for(node, Some(&uuid))?.delete(&uuid)?;
            println!("Successfully deleted VM {uuid}");
        }
        VmCmd::Update { uuid, file, assignments } => {
            let payload = if assignments.is_empty() {
                read_payload(file.as_ref())?
            } else {
                let mut m = serde_json::Map::new();
                for a in &assignments {
                    let (k, v) = a
                        .split_once('=')
                        .ok_or_else(|| Failure::new(2, format!("expected PROPERTY=VALUE, got {a:?}")))?;
                    m.insert(k.to_string(), serde_json::Value::from(v));
                }
                serde_json::Value::Object(m)
            };
            let report = open_for(node, Some(&uuid))?.update(&uuid, &payload).map_err(|e| {
                if let VmError::Invalid(errs) = &e {
                    eprintln!("{}", errs.to_json());
                }
                Failure::from(e)
            })?;
            for (what, list) in [
                ("applied live", &report.live),
                ("stored, applies at the next boot", &report.reboot),
                ("stored, not yet applied by hull", &report.not_yet),
            ] {
                // On stderr: stdout is SmartOS's one line, which scripts read.
                if !list.is_empty() {
                    eprintln!("{what}: {}", list.join(", "));
                }
            }
            println!("Successfully updated VM {uuid}");
        }
        VmCmd::Console { uuid } => console(&open_for(node, Some(&uuid))?.console_socket(&uuid)?)?,
        VmCmd::CreateSnapshot { uuid, name } => {
            open_for(node, Some(&uuid))?.create_snapshot(&uuid, &name)?;
            println!("Created snapshot {name} for VM {uuid}");
        }
        VmCmd::Send { uuid } => {
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                return Err(Failure::new(2, "vmadm send writes a binary stream: send it to a file or a pipe"));
            }
            let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            match open_for(node, Some(&uuid))?.send(&uuid, &mut out) {
                Ok(n) => tracing::info!(vm = %uuid, bytes = n, "sent"),
                // Its reader went away (`| head`, a closed connection): end quietly.
                Err(e) if crate::chain(&e).contains("Broken pipe") => return Err(Failure::new(1, "")),
                Err(e) => return Err(e.into()),
            }
        }
        VmCmd::Receive => {
            let mut inp = std::io::BufReader::with_capacity(1 << 20, std::io::stdin().lock());
            let uuid = open(node)?.receive(&mut inp)?;
            println!("Successfully received VM {uuid}");
        }
        VmCmd::RollbackSnapshot { uuid, name } => {
            open_for(node, Some(&uuid))?.rollback_snapshot(&uuid, &name)?;
            println!("Rolled back VM {uuid} to snapshot {name}");
        }
        VmCmd::DeleteSnapshot { uuid, name } => {
            open_for(node, Some(&uuid))?.delete_snapshot(&uuid, &name)?;
            println!("Deleted snapshot {name} of VM {uuid}");
        }
        VmCmd::Events { follow, json, uuid } => events(node, follow, json, uuid.as_deref())?,
        VmCmd::Info { uuid, types } => {
            let info = open_for(node, Some(&uuid))?.info(&uuid, &types)?;
            print_json(&info);
        }
        VmCmd::BootAll { keep_going } => {
            let hull_vm::BootAll { started, failed } = open(node)?.boot_all()?;
            for u in &started {
                println!("Successfully started VM {u}");
            }
            for (u, e) in &failed {
                eprintln!("vmadm: error: VM {u}: {}", crate::chain(e));
            }
            if !failed.is_empty() {
                let msg = format!("{} of {} VMs failed to boot", failed.len(), failed.len() + started.len());
                if keep_going {
                    eprintln!("vmadm: {msg}");
                } else {
                    return Err(Failure::new(1, msg));
                }
            }
        }
        VmCmd::StopAll { timeout } => {
            let hull_vm::BootAll { started: stopped, failed } = open(node)?.stop_all(Duration::from_secs(timeout))?;
            for u in &stopped {
                println!("Successfully completed stop for VM {u}");
            }
            for (u, e) in &failed {
                eprintln!("vmadm: error: VM {u}: {}", crate::chain(e));
            }
            if !failed.is_empty() {
                return Err(Failure::new(
                    1,
                    format!("{} of {} VMs failed to stop", failed.len(), failed.len() + stopped.len()),
                ));
            }
        }
        VmCmd::Validate { action, brand, file } => {
            if action == Action::Update && brand.is_none() {
                return Err(Failure::new(2, "validate update needs the VM's brand: vmadm validate update BRAND"));
            }
            let payload = read_payload(file.as_ref())?;
            // The node's images are checked where it has a pool; none is made to check.
            let vm = match node.existing_pool() {
                Ok(Some(_)) => Some(open(node)?),
                _ => None,
            };
            let out = match hull_vm::validate(vm.as_ref(), action, brand, &payload) {
                Ok(out) => out,
                Err(errs) => {
                    eprintln!("{}", errs.to_json());
                    return Err(Failure::new(1, errs));
                }
            };
            let shown =
                brand.map(|b| b.to_string()).or_else(|| out.get("brand").and_then(|b| b.as_str()).map(String::from));
            println!("VALID '{}' payload for {} brand VMs.", action.as_str(), shown.unwrap_or_default());
        }
    }
    Ok(())
}

/// Prints the event log, and with `follow` new events as they come.
fn events(node: &Node, follow: bool, json: bool, only: Option<&str>) -> CmdResult {
    use std::io::{BufRead, Seek};
    let path = hull_zone::events::path(&node.var_dir());
    let mut file = loop {
        match std::fs::File::open(&path) {
            Ok(f) => break f,
            Err(_) if follow => std::thread::sleep(Duration::from_millis(200)),
            Err(_) => return Ok(()),
        }
    };
    let mut pos = 0u64;
    loop {
        file.seek(std::io::SeekFrom::Start(pos)).map_err(|e| Failure::new(1, e))?;
        let mut reader = std::io::BufReader::new(&file);
        let mut line = String::new();
        while reader.read_line(&mut line).map_err(|e| Failure::new(1, e))? > 0 {
            if !line.ends_with('\n') {
                break; // a line still being written: read it whole next time
            }
            pos += line.len() as u64;
            if let Ok(ev) = serde_json::from_str::<serde_json::Value>(&line)
                && only.is_none_or(|u| ev["uuid"] == u)
            {
                if json {
                    println!("{}", ev);
                } else {
                    let changes: Vec<String> = ev["changes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| {
                            format!(
                                "{} {} -> {}",
                                table::cell(Some(&c["prettyPath"])),
                                table::cell(Some(&c["oldValue"])),
                                table::cell(Some(&c["newValue"]))
                            )
                        })
                        .collect();
                    println!(
                        "[{}] {} {}{}",
                        table::cell(Some(&ev["date"])),
                        table::cell(Some(&ev["uuid"])),
                        table::cell(Some(&ev["type"])),
                        if changes.is_empty() { String::new() } else { format!(": {}", changes.join(", ")) }
                    );
                }
            }
            line.clear();
        }
        let _ = std::io::Write::flush(&mut std::io::stdout());
        if !follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Relays the terminal to a zone's console socket until either side closes, or Ctrl-].
pub fn console(sock: &std::path::Path) -> CmdResult {
    use std::io::Write;
    // The socket's directory is bound into the VM's zone: no link in its place is followed.
    let stream = hull_exec::tree::connect_socket(sock)
        .map_err(|e| Failure::new(1, format!("cannot attach to {}: {e}", sock.display())))?;
    let mut to_zone = stream.try_clone().map_err(|e| Failure::new(1, e))?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut stdin = std::io::stdin();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    // End of input: let the zone's answer drain, then the supervisor hangs up.
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    let _ = to_zone.shutdown(std::net::Shutdown::Write);
                    break;
                }
                Ok(n) => {
                    // Ctrl-] detaches, as on SmartOS's zlogin -C (~. there).
                    if let Some(i) = buf[..n].iter().position(|b| *b == 0x1d) {
                        let _ = to_zone.write_all(&buf[..i]);
                        let _ = to_zone.shutdown(std::net::Shutdown::Both);
                        break;
                    }
                    if to_zone.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut from_zone = stream;
    let mut out = std::io::stdout();
    let mut buf = [0u8; 4096];
    loop {
        match from_zone.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    break;
                }
            }
        }
    }
    Ok(())
}
