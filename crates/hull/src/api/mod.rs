//! `hull api`: the node's REST API, for an orchestrator. One server, two listeners: a unix
//! socket for local callers (authorised by their credentials: root, or a member of
//! `--group`), and with `--tls ADDR` TLS over TCP for callers with a client certificate the
//! node CA signed and `hull api trust` lists. There is no plain-HTTP TCP listener. Jobs,
//! events and the error shape are in their own modules; docs/api.md says how to drive it.
//!
//! The HTTP stack is axum over hyper on tokio: axum serves any stream hyper can (a unix
//! socket here, TLS later) with per-connection facts (the peer's credentials) handed to every
//! request as an extension. Dropshot was weighed and set aside: it binds TCP only and has no
//! hook for a unix peer's credentials or a client certificate.

mod bridge;
pub mod error;
mod events;
mod images;
pub mod jobs;
mod metrics;
mod migrations;
mod openapi;
mod routes;
mod sysinfo;
mod tls;

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
    /// Client certificates the TLS listener lets in.
    #[command(subcommand)]
    Trust(TrustCmd),
    /// Print the node CA's certificate (clients verify the server with it).
    Ca,
    /// Print the API's OpenAPI document (generated from the code; docs/api/openapi.json).
    Openapi,
}

#[derive(Subcommand)]
pub enum TrustCmd {
    /// Sign a client certificate for NAME with the node CA and trust it: a new key made here,
    /// or the key of a certificate signing request (--csr). Writes NAME.crt, NAME.key and
    /// ca.crt into --out.
    Add {
        name: String,
        /// A PEM certificate signing request; its key stays with the client.
        #[arg(long)]
        csr: Option<PathBuf>,
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// List trusted client certificates.
    List {
        #[arg(short = 'j')]
        json: bool,
    },
    /// Stop trusting a client certificate (by name or fingerprint); effective at once.
    Remove { what: String },
}

#[derive(Args)]
pub struct ServeArgs {
    /// The unix socket to listen on (default: var/run/hull/api.sock under the node's root).
    #[arg(long)]
    unix: Option<PathBuf>,
    /// Members of this group may use the unix socket too (root always may).
    #[arg(long, env = "HULL_API_GROUP")]
    group: Option<String>,
    /// Also listen with TLS on this address (`0.0.0.0:4443`, `[::]:4443`); clients must
    /// present a certificate from `hull api trust add`.
    #[arg(long, env = "HULL_API_TLS")]
    tls: Option<std::net::SocketAddr>,
    /// Names and addresses the server's certificate carries (default: the host's name,
    /// localhost, 127.0.0.1, ::1 and the --tls address).
    #[arg(long = "tls-name")]
    tls_names: Vec<String>,
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
    /// Opened vmadms, kept between requests: opening one opens and checks the pool (a
    /// mount check and a repair pass), which was most of a `GET /vms/UUID`.
    idle: std::sync::Mutex<Vec<Vmadm>>,
}

/// A vmadm lent to one request or job; back to the server's idle list when dropped.
pub struct Lent<'a> {
    api: &'a Api,
    vm: Option<Vmadm>,
}

impl std::ops::Deref for Lent<'_> {
    type Target = Vmadm;
    fn deref(&self) -> &Vmadm {
        // Taken only in drop.
        self.vm.as_ref().unwrap_or_else(|| unreachable!("a lent vmadm is present until dropped"))
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(vm) = self.vm.take() {
            let mut idle = self.api.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < 32 {
                idle.push(vm);
            }
        }
    }
}

impl Api {
    pub fn vmadm(&self) -> error::ApiResult<Lent<'_>> {
        let kept = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let vm = match kept {
            Some(vm) => vm,
            None => Vmadm::open(&self.node, self.exe.clone())?,
        };
        Ok(Lent { api: self, vm: Some(vm) })
    }

    /// Root, or a process whose group or one of whose supplementary groups is the API's:
    /// the caller's own credentials as the kernel gave them at connect, not what the user
    /// database says its user could have (a process that dropped the group is not in it).
    fn may(&self, uid: u32, gid: u32, groups: &[u32]) -> bool {
        uid == 0 || self.group.is_some_and(|g| gid == g.as_raw() || groups.contains(&g.as_raw()))
    }
}

pub fn run(node: &Node, cmd: ApiCmd) -> CmdResult {
    let pki = tls::Pki::new(node);
    match cmd {
        ApiCmd::Serve(a) => serve(node, a),
        ApiCmd::Openapi => {
            println!("{}", serde_json::to_string_pretty(&openapi::document()).unwrap_or_default());
            Ok(())
        }
        ApiCmd::Ca => {
            print!("{}", pki.ca_pem()?);
            Ok(())
        }
        ApiCmd::Trust(TrustCmd::Add { name, csr, out }) => {
            tls::check_name(&name)?;
            if pki.trusted()?.iter().any(|t| t.name == name) {
                return Err(Failure::new(1, format!("a client named {name} is already trusted")));
            }
            let csr = match &csr {
                Some(p) => {
                    Some(std::fs::read_to_string(p).map_err(|e| Failure::new(1, format!("{}: {e}", p.display())))?)
                }
                None => None,
            };
            let (cert, key) = pki.issue_client(&name, csr.as_deref())?;
            let files = tls::write_client(&out, &name, &cert, key.as_deref(), &pki.ca_pem()?)?;
            let t = pki.trust(&name, &cert)?;
            println!("Trusted {} ({})", t.name, t.fingerprint);
            for f in files {
                println!("  {}", f.display());
            }
            Ok(())
        }
        ApiCmd::Trust(TrustCmd::List { json }) => {
            let list = pki.trusted()?;
            if json {
                crate::print_json(&list);
            } else {
                println!("{:<24} {:<26} FINGERPRINT", "NAME", "ADDED");
                for t in list {
                    println!("{:<24} {:<26} {}", t.name, t.added, t.fingerprint);
                }
            }
            Ok(())
        }
        ApiCmd::Trust(TrustCmd::Remove { what }) => {
            let t = pki.untrust(&what)?;
            println!("No longer trusted: {} ({})", t.name, t.fingerprint);
            Ok(())
        }
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
    let api = Arc::new(Api { node: node.clone(), exe, jobs, group, idle: std::sync::Mutex::new(Vec::new()) });
    // What a killed server left half done is put right before anything new starts.
    api.vmadm().and_then(|v| Ok(v.repair()?)).map_err(|e| Failure::new(1, format!("repair: {}", e.message)))?;
    let sock = args.unix.unwrap_or_else(|| default_socket(node));
    let tls = match args.tls {
        None => None,
        Some(addr) => {
            let mut names = args.tls_names.clone();
            if names.is_empty() {
                if let Ok(h) = nix::unistd::gethostname() {
                    names.push(h.to_string_lossy().into_owned());
                }
                names.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
                if !addr.ip().is_unspecified() {
                    names.push(addr.ip().to_string());
                }
            }
            let pki = tls::Pki::new(node);
            Some((addr, pki.server_config(&names)?, pki))
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(1, format!("runtime: {e}")))?;
    rt.block_on(async move {
        let router = routes::router(Arc::clone(&api));
        if let Some((addr, config, pki)) = tls {
            let l =
                tokio::net::TcpListener::bind(addr).await.map_err(|e| Failure::new(1, format!("--tls {addr}: {e}")))?;
            tracing::info!(
                "hull api: listening with TLS on {}",
                l.local_addr().map(|a| a.to_string()).unwrap_or_default()
            );
            tokio::spawn(listen_tls(l, config, pki, router.clone()));
        }
        listen_unix(api, sock, router).await
    })
}

/// Accepts TLS connections: the handshake (client certificate required, chained to the node
/// CA) on a task of its own, bounded in time; then the certificate decides.
async fn listen_tls(
    l: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    pki: tls::Pki,
    router: axum::Router,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let pki = Arc::new(pki);
    loop {
        let (tcp, from) = match l.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, pki, router) = (acceptor.clone(), Arc::clone(&pki), router.clone());
        tokio::spawn(async move {
            let shake = tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await;
            let stream = match shake {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!("TLS from {from} refused: {e}");
                    return;
                }
                Err(_) => {
                    tracing::info!("TLS from {from}: no handshake within 10 s");
                    return;
                }
            };
            let cert = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
            let pki2 = Arc::clone(&pki);
            let trusted = match cert {
                Some(der) => tokio::task::spawn_blocking(move || pki2.lookup(&der)).await.ok().flatten(),
                None => None,
            };
            let peer = match trusted {
                Some(t) => Peer { who: format!("client {} from {from}", t.name), authorised: true },
                None => Peer { who: format!("an untrusted certificate from {from}"), authorised: false },
            };
            serve_connection(stream, router, peer);
        });
    }
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

async fn listen_unix(api: Arc<Api>, sock: PathBuf, router: axum::Router) -> CmdResult {
    let listener = bind(&sock)?;
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
        // A caller that opens a connection and sends nothing (or a header a byte a minute)
        // is dropped rather than holding a descriptor for ever.
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(std::time::Duration::from_secs(30));
        if let Err(e) = http.serve_connection(io, svc).await {
            tracing::debug!("connection: {e}");
        }
    });
}
