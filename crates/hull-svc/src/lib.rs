//! hull's service manager: SMF on Linux.
//!
//! - [`manifest`]: SMF XML service bundles and their TOML form.
//! - [`repo`]: the SQLite configuration repository (entities and property groups).
//! - [`graph`]: instances as the restarter reads them; dependency cycles.
//! - [`contract`]: one cgroup per instance, its process contract.
//! - [`startd`]: svc.startd, the daemon that starts, watches and stops instances.
//! - [`proto`]: the daemon's control socket and its client.

pub mod contract;
pub mod explain;
pub mod export;
pub mod fmri;
pub mod graph;
pub mod manifest;
pub mod method;
pub mod proto;
pub mod repo;
pub mod spawn;
pub mod startd;
pub mod state;

pub use fmri::Fmri;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SvcError {
    #[error("{path}{}: {reason}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Manifest { path: String, line: Option<u32>, reason: String },
    #[error("invalid FMRI {0:?}")]
    BadFmri(String),
    #[error("{0}: no such service or instance")]
    NotFound(String),
    #[error("pattern {0:?} matches more than one instance: {1}")]
    Ambiguous(String, String),
    #[error("pattern {0:?} doesn't match any instances")]
    NoMatch(String),
    #[error("repository: {0}")]
    Repo(String),
    #[error("{0}")]
    Invalid(String),
    #[error("svc.startd: {0}")]
    Daemon(String),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = SvcError> = std::result::Result<T, E>;

/// Where a node's service manager keeps its files.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `$ROOT/var/hull/svc/repository.db`
    pub repo: PathBuf,
    /// `$ROOT/var/hull/svc/startd.sock`
    pub socket: PathBuf,
    /// `$ROOT/var/svc/log`
    pub logs: PathBuf,
    /// The cgroup directory (under each hierarchy) holding the instances' cgroups.
    pub cgroup: String,
    /// Environment every method gets besides SMF's own (the node's `HULL_ROOT`,
    /// `HULL_NODE`, and a `PATH` that finds this `hull`).
    pub env: Vec<(String, String)>,
}

impl Paths {
    pub fn new(root: &Path, var_dir: &Path, prefix: &str) -> Paths {
        Paths {
            repo: var_dir.join("svc/repository.db"),
            socket: var_dir.join("svc/startd.sock"),
            logs: root.join("var/svc/log"),
            cgroup: format!("{prefix}-svc"),
            env: Vec::new(),
        }
    }
}

/// svccfg import: reads a manifest and adds it to the repository, after checking that its
/// dependencies are FMRIs (they need not exist yet) and close no cycle. A manifest
/// that fails a check changes nothing.
pub fn import(repo: &mut repo::Repo, path: &Path) -> Result<Vec<Fmri>> {
    import_bundle(repo, manifest::load(path)?)
}

/// Imports a manifest given as text (`name` says which, in errors).
pub fn import_text(repo: &mut repo::Repo, name: &str, xml: &str) -> Result<Vec<Fmri>> {
    import_bundle(repo, manifest::parse_xml(name, xml)?)
}

/// Checks a manifest as [`import`] would (its text, its FMRIs, the dependency graph it would
/// make with the repository's), and changes nothing: SmartOS's `svccfg validate`.
pub fn validate(repo: &repo::Repo, path: &Path) -> Result<()> {
    check_bundle(repo, &manifest::load(path)?).map(|_| ())
}

fn import_bundle(repo: &mut repo::Repo, bundle: manifest::Bundle) -> Result<Vec<Fmri>> {
    let (ents, added) = check_bundle(repo, &bundle)?;
    repo.import(&bundle.path, &ents, &added)?;
    Ok(ents.into_iter().map(|e| e.fmri).collect())
}

type Entities = (Vec<repo::Entity>, Vec<(Fmri, String, repo::Pg)>);

fn check_bundle(repo: &repo::Repo, bundle: &manifest::Bundle) -> Result<Entities> {
    let (ents, added) = manifest::entities(bundle);
    let manifest_err =
        |line: Option<u32>, reason: String| SvcError::Manifest { path: bundle.path.clone(), line, reason };
    // A dependency on a service not in the repository is accepted, as SMF accepts it: the
    // instance waits offline, `svcs -x` names what is absent, and importing it lets it go on.
    for sd in &bundle.services {
        let all = sd.dependencies.iter().chain(sd.instances.iter().flat_map(|i| i.dependencies.iter()));
        for d in all.chain(sd.dependents.iter()) {
            for t in d.fmris.iter().filter(|t| !t.starts_with("file://")) {
                Fmri::parse(t).map_err(|_| manifest_err(d.line.or(sd.line), format!("{t:?} is not an FMRI")))?;
            }
        }
    }
    // The graph as it would be: the repository's instances, with the manifest's replacing
    // and its dependents added.
    let mut composed: BTreeMap<Fmri, BTreeMap<String, repo::Pg>> = BTreeMap::new();
    for f in repo.instances()? {
        composed.insert(f.clone(), repo.composed(&f)?);
    }
    let services: BTreeMap<&str, &repo::Entity> =
        ents.iter().filter(|e| e.fmri.instance.is_none()).map(|e| (e.fmri.service.as_str(), e)).collect();
    for e in ents.iter().filter(|e| e.fmri.instance.is_some()) {
        let mut pgs = services.get(e.fmri.service.as_str()).map(|s| s.pgs.clone()).unwrap_or_default();
        for (name, pg) in &e.pgs {
            pgs.entry(name.clone()).or_insert_with(|| repo::Pg::new(&pg.ty)).props.extend(pg.props.clone());
        }
        composed.insert(e.fmri.clone(), pgs);
    }
    for (target, name, pg) in &added {
        for (f, pgs) in composed.iter_mut() {
            if target.covers(f) {
                pgs.insert(name.clone(), pg.clone());
            }
        }
    }
    let mut insts = BTreeMap::new();
    for (f, pgs) in &composed {
        insts.insert(f.clone(), graph::Inst::from_pgs(f, pgs).map_err(|e| manifest_err(None, e.to_string()))?);
    }
    if let Some(c) = graph::cycles(&insts).first() {
        let names: Vec<String> = c.iter().map(ToString::to_string).collect();
        return Err(manifest_err(None, format!("dependency cycle: {} -> {}", names.join(" -> "), names[0])));
    }
    Ok((ents, added))
}

/// Resolves operands to instances: FMRIs, abbreviations and globs.
pub fn resolve(repo: &repo::Repo, patterns: &[String]) -> Result<Vec<Fmri>> {
    let all = repo.instances()?;
    let mut out: Vec<Fmri> = Vec::new();
    for p in patterns {
        let hits: Vec<&Fmri> = all.iter().filter(|f| f.matches(p)).collect();
        let glob = p.contains('*') || p.contains('?');
        let services: std::collections::BTreeSet<&str> = hits.iter().map(|f| f.service.as_str()).collect();
        match hits.len() {
            0 => return Err(SvcError::NoMatch(p.clone())),
            n if n > 1 && !glob && services.len() > 1 => {
                let names: Vec<String> = hits.iter().map(|f| f.to_string()).collect();
                return Err(SvcError::Ambiguous(p.clone(), names.join(", ")));
            }
            _ => out.extend(hits.into_iter().cloned()),
        }
    }
    out.dedup();
    Ok(out)
}
