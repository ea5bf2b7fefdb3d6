//! `hull`: one binary for every tool of the node. Run as `hull imgadm list` or, through a
//! link named `imgadm`, as `imgadm list`. The binary is `main` here; the library exists so
//! that the tests can read the API's answers into the API's own types (`hull::api`).

pub mod api;
mod dataset;
mod demo;
mod docs;
mod imgadm;
pub mod migrate;
mod net;
mod node;
mod pool;
mod stat;
mod svc;
mod table;
mod trace;
mod vmadm;
mod zone;

use clap::{Parser, Subcommand};
use hull_storage::Node;
use std::path::PathBuf;

/// The tools hull answers to when run through a link of that name.
pub(crate) const TOOLS: &[&str] = &[
    "imgadm",
    "vmadm",
    "zlogin",
    "nictagadm",
    "dladm",
    "svcs",
    "svcadm",
    "svccfg",
    "svcprop",
    "svc.startd",
    "zonememstat",
];

#[derive(Parser)]
#[command(name = "hull", version, about = "A SmartOS-style cloud compute node on Linux")]
pub(crate) struct Cli {
    /// The node's root directory.
    #[arg(long, global = true, env = "HULL_ROOT", default_value = "/")]
    root: PathBuf,
    /// Prefix of every kernel object the node makes (1 to 8 letters or digits).
    #[arg(long = "node", global = true, env = "HULL_NODE", default_value = "hull")]
    prefix: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The storage pool: create, import, status, destroy.
    #[command(subcommand)]
    Pool(pool::PoolCmd),
    /// Datasets, snapshots and clones in the pool, as zfs(8) shows them.
    #[command(subcommand)]
    Dataset(dataset::DatasetCmd),
    /// Manage images (SmartOS imgadm).
    #[command(subcommand)]
    Imgadm(imgadm::ImgCmd),
    /// Manage VMs (SmartOS vmadm).
    #[command(subcommand)]
    Vmadm(vmadm::VmCmd),
    /// Nic tags: the names VMs' NICs use for the node's uplinks and local switches (SmartOS nictagadm).
    #[command(subcommand)]
    Nictagadm(net::NictagCmd),
    /// Links, VNICs and etherstubs (SmartOS dladm).
    #[command(subcommand)]
    Dladm(net::DladmCmd),
    /// VXLAN overlays and the peers that carry each of their networks.
    #[command(subcommand)]
    Overlay(net::OverlayCmd),
    /// The node's whole network.
    #[command(subcommand)]
    Net(net::NetCmd),
    /// Networks the host routes for: NAT, DHCP, a gateway per network.
    #[command(subcommand)]
    Network(net::NetworkCmd),
    /// The node: its pool, its accelerator, its service manager.
    #[command(subcommand)]
    Node(node::NodeCmd),
    /// The service manager's daemon (SMF's svc.startd), in the foreground.
    #[command(name = "svc.startd")]
    Startd(svc::StartdArgs),
    /// Service states (SMF svcs).
    Svcs(svc::SvcsArgs),
    /// Enable, disable, restart, refresh, clear and mark instances (SMF svcadm).
    #[command(subcommand)]
    Svcadm(svc::SvcadmCmd),
    /// The service repository: import, export, delete, setprop, listprop (SMF svccfg).
    #[command(subcommand)]
    Svccfg(svc::SvccfgCmd),
    /// An instance's properties (SMF svcprop).
    Svcprop(svc::SvcpropArgs),
    /// Run a command in a zone, or with -C attach to its console.
    Zlogin(zone::ZloginArgs),
    /// The supervisor of one running zone (started by vmadm start).
    #[command(hide = true)]
    Zoneadmd(zone::ZoneadmdArgs),
    /// The node's REST API for orchestrators (docs/api.md).
    #[command(subcommand)]
    Api(api::ApiCmd),
    /// Move a VM to another node: begin, sync while it runs, switch (docs/nodes.md).
    Migrate(migrate::MigrateArgs),
    /// Nodes this one migrates VMs to.
    #[command(subcommand)]
    Peer(migrate::PeerCmd),
    /// Memory per zone: RSS, cap, times over it, paged out, swap used (SmartOS zonememstat).
    Zonememstat(stat::MemstatArgs),
    /// CPU, memory, processes, net and disk rates per zone, every INTERVAL (prstat -Z).
    Zonestat(stat::ZonestatArgs),
    /// bpftrace scoped to zones: `zonename` in programs, -z for one zone, named scripts (-l).
    Trace(trace::TraceArgs),
    /// The main job: build an image, install it, clone twenty instances, report time and space.
    Demo(demo::DemoArgs),
    /// Write man pages for hull and each of its tools (vmadm.8 lists every property).
    Manpages(docs::ManArgs),
    /// Print shell completions for hull and each of its tools.
    Completions(docs::CompletionArgs),
}

/// A failure to report: the message and the exit status.
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn new(code: i32, e: impl std::fmt::Display) -> Failure {
        Failure { code, message: e.to_string() }
    }
}

/// Full error text: the error and each of its causes.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        src = s.source();
    }
    text
}

impl From<hull_storage::StorageError> for Failure {
    fn from(e: hull_storage::StorageError) -> Failure {
        Failure { code: 1, message: chain(&e) }
    }
}

impl From<hull_img::ImgError> for Failure {
    fn from(e: hull_img::ImgError) -> Failure {
        Failure { code: e.exit_code(), message: chain(&e) }
    }
}

pub type CmdResult = Result<(), Failure>;

/// Prints JSON; serialising our own types cannot fail.
pub fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Logs to stderr at `HULL_LOG`'s levels (info by default).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HULL_LOG")
        .unwrap_or_else(|_| "info,libcontainer=error,libcgroups=error".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_target(false)
        .init();
}

/// `hull-zoneadmd --root ROOT --node PREFIX [--monitor] UUID`: a zone's supervisor as a
/// program of its own (src/bin/hull-zoneadmd.rs), which vmadm runs when it sits beside
/// `hull`. The same code as `hull zoneadmd`, in a binary without the command line's, the
/// API's or the image builder's code: it starts in a fraction of the time (a boot waits for
/// it), and each running zone has one. Its arguments are vmadm's own, parsed by hand.
pub fn zoneadmd_main() {
    init_logging();
    let mut args = std::env::args().skip(1);
    let (mut root, mut prefix, mut monitor, mut uuid) = (None, None, false, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--root" => root = args.next(),
            "--node" => prefix = args.next(),
            "--monitor" => monitor = true,
            _ if uuid.is_none() && !a.starts_with('-') => uuid = Some(a),
            _ => {
                eprintln!("hull-zoneadmd: unexpected argument {a:?}");
                std::process::exit(2);
            }
        }
    }
    let (Some(root), Some(prefix), Some(uuid)) = (root, prefix, uuid) else {
        eprintln!("usage: hull-zoneadmd --root ROOT --node PREFIX [--monitor] UUID");
        std::process::exit(2);
    };
    let result = Node::new(std::path::Path::new(&root), &prefix)
        .map_err(Failure::from)
        .and_then(|node| zone::zoneadmd(&node, zone::ZoneadmdArgs { monitor, uuid }));
    finish("zoneadmd", result)
}

/// The binary's entry point (src/main.rs calls it).
pub fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    let argv0 = args.first().map(|a| a.rsplit('/').next().unwrap_or(a).to_string()).unwrap_or_default();
    let tool = if TOOLS.contains(&argv0.as_str()) {
        args.insert(1, argv0.clone());
        argv0
    } else {
        "hull".to_string()
    };
    init_logging();

    let cli = Cli::parse_from(args);
    // vmadm send and receive feed pipes of their own (btrfs send and receive) and see EPIPE
    // as an error to clean up after, not as the end.
    let own_pipes = matches!(cli.cmd, Cmd::Vmadm(vmadm::VmCmd::Send { .. } | vmadm::VmCmd::Receive) | Cmd::Migrate(_));
    if !matches!(cli.cmd, Cmd::Zoneadmd(_) | Cmd::Startd(_) | Cmd::Api(_)) && !own_pipes {
        // A tool whose reader went away (`imgadm list -j | head`) ends quietly, as every
        // Unix tool does, instead of panicking in println!. The daemons keep Rust's
        // ignored SIGPIPE: a client that hangs up must not kill them.
        // SAFETY: setting a signal's disposition to the default before any thread exists.
        unsafe {
            let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl);
        }
    }
    let name = match &cli.cmd {
        Cmd::Imgadm(_) => "imgadm",
        Cmd::Vmadm(_) => "vmadm",
        Cmd::Zlogin(_) => "zlogin",
        Cmd::Zoneadmd(_) => "zoneadmd",
        Cmd::Nictagadm(_) => "nictagadm",
        Cmd::Startd(_) => "svc.startd",
        Cmd::Svcs(_) => "svcs",
        Cmd::Svcadm(_) => "svcadm",
        Cmd::Svccfg(_) => "svccfg",
        Cmd::Svcprop(_) => "svcprop",
        Cmd::Dladm(_) => "dladm",
        Cmd::Zonememstat(_) => "zonememstat",
        _ => tool.as_str(),
    };
    // Made from the command line's definition alone: no node needed.
    let cmd = match cli.cmd {
        Cmd::Manpages(a) => return finish(name, docs::manpages(a)),
        Cmd::Completions(a) => return finish(name, docs::completions(a)),
        cmd => cmd,
    };
    let result = Node::new(&cli.root, &cli.prefix).map_err(Failure::from).and_then(|node| match cmd {
        Cmd::Pool(c) => pool::run(&node, c),
        Cmd::Dataset(c) => dataset::run(&node, c),
        Cmd::Imgadm(c) => imgadm::run(&node, c),
        Cmd::Vmadm(c) => vmadm::run(&node, c),
        Cmd::Zlogin(a) => zone::zlogin(&node, a),
        Cmd::Zoneadmd(a) => zone::zoneadmd(&node, a),
        Cmd::Demo(a) => demo::run(&node, a),
        Cmd::Trace(a) => trace::run(&node, a),
        Cmd::Zonememstat(a) => stat::zonememstat(&node, a),
        Cmd::Zonestat(a) => stat::zonestat(&node, a),
        Cmd::Api(c) => api::run(&node, c),
        Cmd::Migrate(a) => migrate::run(&node, a),
        Cmd::Peer(c) => migrate::peer_cmd(&node, c),
        Cmd::Nictagadm(c) => net::nictagadm(&node, c),
        Cmd::Dladm(c) => net::dladm(&node, c),
        Cmd::Overlay(c) => net::overlay(&node, c),
        Cmd::Network(c) => net::network(&node, c),
        Cmd::Net(c) => net::run(&node, c),
        Cmd::Node(c) => node::run(&node, c),
        Cmd::Startd(a) => svc::startd(&node, a),
        Cmd::Svcs(a) => svc::svcs(&node, a),
        Cmd::Svcadm(c) => svc::svcadm(&node, c),
        Cmd::Svccfg(c) => svc::svccfg(&node, c),
        Cmd::Svcprop(a) => svc::svcprop(&node, a),
        Cmd::Manpages(_) | Cmd::Completions(_) => Ok(()),
    });
    finish(name, result);
}

fn finish(name: &str, result: CmdResult) {
    if let Err(f) = result {
        // An empty message: the tool ended quietly (its reader went away).
        if !f.message.is_empty() {
            eprintln!("{name}: error: {}", f.message);
        }
        std::process::exit(f.code);
    }
}
