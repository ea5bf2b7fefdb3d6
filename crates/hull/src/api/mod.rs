//! `hull api`: the node's REST API, for an orchestrator. One server; a unix socket for local
//! callers (authorised by their credentials: root, or a member of `--group`). Jobs, events
//! and the error shape are in their own modules; docs/api.md says how to drive it.
//!
//! The HTTP stack is axum over hyper on tokio: axum serves any stream hyper can (a unix
//! socket here, TLS later) with per-connection facts (the peer's credentials) handed to every
//! request as an extension. Dropshot was weighed and set aside: it binds TCP only and has no
//! hook for a unix peer's credentials or a client certificate.

mod error;
mod events;
mod jobs;
mod routes;
mod sysinfo;

use crate::{CmdResult, Failure};
use clap::{Args, Subcommand};
use hull_storage::Node;
use hull_vm::Vmadm;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Subcommand)]
pub enum ApiCmd {
    /// Serve the API in the foreground (svc:/system/hull/api:default runs this).
    Serve(ServeArgs),
}

#[derive(Args)]
pub struct ServeArgs {
    /// The unix socket to listen on (default: var/run/hull/api.sock under the node's root).
    #[arg(long)]
    unix: Option<PathBuf>,
    /// Members of this group may use the unix socket too (root always may).
    #[arg(long)]
    group: Option<String>,
}

/// Who is calling, as its listener decided; every request carries it.
#[derive(Clone, Debug)]
pub struct Peer {
    pub who: String,
    pub authorised: bool,
}

pub struct Api {
    pub node: Node,
    exe: PathBuf,
    pub jobs: Arc<jobs::Jobs>,
    group: Option<nix::unistd::Gid>,
}

impl Api {
    pub fn vmadm(&self) -> error::ApiResult<Vmadm> {
        Ok(Vmadm::open(&self.node, self.exe.clone())?)
    }

    /// Root, or a process whose group or one of whose supplementary groups is the API's:
    /// the caller's own credentials as the kernel gave them at connect, not what the user
    /// database says its user could have (a process that dropped the group is not in it).
    fn may(&self, uid: u32, gid: u32, groups: &[u32]) -> bool {
        uid == 0 || self.group.is_some_and(|g| gid == g.as_raw() || groups.contains(&g.as_raw()))
    }
}

pub fn run(node: &Node, cmd: ApiCmd) -> CmdResult {
    match cmd {
        ApiCmd::Serve(a) => serve(node, a),
    }
}

fn default_socket(node: &Node) -> PathBuf {
    node.root().join("var/run/hull/api.sock")
}

fn serve(node: &Node, args: ServeArgs) -> CmdResult {
    let exe = std::env::current_exe().map_err(|e| Failure::new(1, format!("cannot find this program: {e}")))?;
    let group = match &args.group {
        None => None,
        Some(g) => Some(
            nix::unistd::Group::from_name(g)
                .ok()
                .flatten()
                .ok_or_else(|| Failure::new(2, format!("--group {g}: no such group")))?
                .gid,
        ),
    };
    let jobs = jobs::Jobs::open(&node.var_dir())
        .map_err(|e| Failure::new(1, format!("job records in {}: {e}", node.var_dir().display())))?;
    let api = Arc::new(Api { node: node.clone(), exe, jobs, group });
    // What a killed server left half done is put right before anything new starts.
    api.vmadm().and_then(|v| Ok(v.repair()?)).map_err(|e| Failure::new(1, format!("repair: {}", e.message)))?;
    let sock = args.unix.unwrap_or_else(|| default_socket(node));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(1, format!("runtime: {e}")))?;
    rt.block_on(listen_unix(api, sock))
}

/// Binds the socket: a stale socket is replaced, anything else in its place is an error.
fn bind(sock: &std::path::Path) -> Result<tokio::net::UnixListener, Failure> {
    if let Some(dir) = sock.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Failure::new(1, format!("{}: {e}", dir.display())))?;
    }
    match std::fs::symlink_metadata(sock) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(sock).is_ok() {
                return Err(Failure::new(1, format!("{}: another API server is listening there", sock.display())));
            }
            std::fs::remove_file(sock).map_err(|e| Failure::new(1, format!("{}: {e}", sock.display())))?;
        }
        Ok(_) => return Err(Failure::new(1, format!("{}: exists and is not a socket", sock.display()))),
        Err(_) => {}
    }
    let l = tokio::net::UnixListener::bind(sock).map_err(|e| Failure::new(1, format!("{}: {e}", sock.display())))?;
    // Anyone may connect; the peer's credentials decide what it gets (403 or an answer).
    std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| Failure::new(1, format!("{}: {e}", sock.display())))?;
    Ok(l)
}

async fn listen_unix(api: Arc<Api>, sock: PathBuf) -> CmdResult {
    let listener = bind(&sock)?;
    let router = routes::router(Arc::clone(&api));
    tracing::info!("hull api: listening on {}", sock.display());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Failure::new(1, format!("signals: {e}")))?;
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        let stream = match conn {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("accept: {e}");
                continue;
            }
        };
        let peer = match stream.peer_cred() {
            Ok(c) => Peer {
                who: format!("uid {} (pid {})", c.uid(), c.pid().unwrap_or(0)),
                authorised: api.may(c.uid(), c.gid(), &peer_groups(&stream)),
            },
            Err(_) => Peer { who: "a caller without credentials".into(), authorised: false },
        };
        serve_connection(stream, router.clone(), peer);
    }
    let _ = std::fs::remove_file(&sock);
    Ok(())
}

/// The supplementary groups of a unix socket's peer, as they were at connect
/// (`SO_PEERGROUPS`, Linux 4.13); none when the kernel will not say.
fn peer_groups(stream: &tokio::net::UnixStream) -> Vec<u32> {
    use std::os::fd::AsRawFd;
    let mut groups = vec![0u32; 256];
    let mut len = (groups.len() * std::mem::size_of::<u32>()) as libc::socklen_t;
    // SAFETY: the buffer is valid for `len` bytes and the kernel writes at most that many.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERGROUPS,
            groups.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Vec::new();
    }
    groups.truncate(len as usize / std::mem::size_of::<u32>());
    groups
}

/// Serves one connection's requests (HTTP/1.1, kept alive) with its peer attached.
fn serve_connection<S>(stream: S, router: axum::Router, peer: Peer)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper_util::service::TowerToHyperService::new(router.layer(axum::Extension(peer)));
    tokio::spawn(async move {
        let io = hyper_util::rt::TokioIo::new(stream);
        if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await {
            tracing::debug!("connection: {e}");
        }
    });
}
