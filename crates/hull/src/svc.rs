//! svc.startd, svcs, svcadm, svccfg and svcprop: SMF's tools over hull-svc.

use crate::{CmdResult, Failure};
use clap::{Args, Subcommand};
use hull_storage::Node;
use hull_svc::graph::Target;
use hull_svc::proto::{self, InstStatus, Request};
use hull_svc::repo::Repo;
use hull_svc::{Fmri, Paths, SvcError};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

impl From<SvcError> for Failure {
    fn from(e: SvcError) -> Failure {
        Failure { code: 1, message: crate::chain(&e) }
    }
}

pub fn paths(node: &Node) -> Paths {
    Paths::new(node.root(), &node.var_dir(), node.prefix())
}

/// The manifests hull ships: its own services. svc.startd adds any that its repository
/// lacks, as SMF seeds a new repository.
pub const BUILTIN: &[(&str, &str)] = &[
    ("manifests/system-pool.xml", include_str!("../../../manifests/system-pool.xml")),
    ("manifests/system-zones.xml", include_str!("../../../manifests/system-zones.xml")),
    ("manifests/system-hull-api.xml", include_str!("../../../manifests/system-hull-api.xml")),
    ("manifests/system-hull-lxcfs.xml", include_str!("../../../manifests/system-hull-lxcfs.xml")),
];

#[derive(Args)]
pub struct StartdArgs {}

/// `hull svc.startd`: runs the daemon in the foreground until `svcadm` asks it to shut down
/// (or it is killed: a new one re-adopts what is running).
pub fn startd(node: &Node, _a: StartdArgs) -> CmdResult {
    // One daemon per node: the lock lives as long as this process.
    let _lock = hull_storage::lock::try_lock(&node.lock_path("svc.startd"))?
        .ok_or_else(|| Failure::new(1, "svc.startd is already running for this node"))?;
    let mut p = paths(node);
    {
        let mut repo = Repo::open(&p.repo)?;
        let have = repo.fmris()?;
        for (name, xml) in BUILTIN {
            let bundle = hull_svc::manifest::parse_xml(name, xml)?;
            if bundle.services.iter().any(|s| !have.iter().any(|f| f.service == s.name)) {
                hull_svc::import_text(&mut repo, name, xml)?;
            }
        }
    }
    // Methods drive this node, with this binary.
    let exe = std::env::current_exe().map_err(|e| Failure::new(1, format!("current exe: {e}")))?;
    let dir = exe.parent().map(|d| d.display().to_string()).unwrap_or_default();
    p.env = vec![
        ("HULL_ROOT".into(), node.root().display().to_string()),
        ("HULL_NODE".into(), node.prefix().to_string()),
        ("PATH".into(), format!("{dir}:/usr/sbin:/usr/bin:/sbin:/bin")),
    ];
    let d = hull_svc::startd::Startd::new(p)?;
    d.serve()?;
    Ok(())
}

/// Every instance's status: from the daemon, or from the repository when it is not running.
pub(crate) fn statuses(p: &Paths) -> Result<(Vec<InstStatus>, bool), Failure> {
    if let Ok(r) = proto::call(&p.socket, &Request::Status) {
        return Ok((r.instances, true));
    }
    let repo = Repo::open(&p.repo)?;
    let rows = repo.states()?;
    let mut out = Vec::new();
    for f in repo.instances()? {
        let row = rows.get(&f.to_string()).cloned().unwrap_or_default();
        let enabled =
            repo.prop(&f, "general", "enabled")?.is_some_and(|p| p.values.first().is_some_and(|v| v == "true"));
        out.push(InstStatus {
            fmri: f.to_string(),
            state: if row.state.is_empty() { "uninitialized".into() } else { row.state },
            next_state: "-".into(),
            aux: row.aux,
            stime: row.stime,
            enabled,
            temporary: false,
            pids: Vec::new(),
            contract: String::new(),
            log: p.logs.join(f.log_name()).display().to_string(),
        });
    }
    Ok((out, false))
}

fn when(t: i64) -> String {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let secs = t.rem_euclid(86400);
    if now - t < 86400 {
        format!("{:02}:{:02}:{:02}", secs / 3600, (secs % 3600) / 60, secs % 60)
    } else {
        hull_svc::contract::timestamp().split(' ').take(2).collect::<Vec<_>>().join(" ")
    }
}

fn shown_state(s: &InstStatus) -> String {
    let st = if s.state == "maintenance" { "maintenance".to_string() } else { s.state.clone() };
    if s.next_state != "-" && !s.next_state.is_empty() { format!("{st}*") } else { st }
}

// ------------------------------------------------------------------ svcs

#[derive(Args)]
pub struct SvcsArgs {
    /// All instances, disabled ones too.
    #[arg(short = 'a')]
    all: bool,
    /// Explain why instances are not running.
    #[arg(short = 'x')]
    explain: bool,
    /// With -x: more, including the log's tail.
    #[arg(short = 'v')]
    verbose: bool,
    /// Long listing.
    #[arg(short = 'l')]
    long: bool,
    /// Processes of each instance.
    #[arg(short = 'p')]
    procs: bool,
    /// The instances the named ones depend on.
    #[arg(short = 'd')]
    deps: bool,
    /// The instances that depend on the named ones.
    #[arg(short = 'D')]
    dependents: bool,
    /// No header.
    #[arg(short = 'H')]
    no_header: bool,
    /// Columns: state, nstate, stime, fmri, desc, svc, inst, ctid.
    #[arg(short = 'o')]
    columns: Option<String>,
    /// Sort by a column (ascending).
    #[arg(short = 's')]
    sort: Vec<String>,
    /// Sort by a column (descending).
    #[arg(short = 'S')]
    sort_desc: Vec<String>,
    /// The log file of each instance.
    #[arg(short = 'L')]
    logs: bool,
    patterns: Vec<String>,
}

fn cell(s: &InstStatus, col: &str, desc: &BTreeMap<String, String>) -> String {
    let f = Fmri::parse(&s.fmri).ok();
    match col {
        "state" | "sta" => shown_state(s),
        "nstate" | "nsta" => s.next_state.clone(),
        "stime" => when(s.stime),
        "fmri" => s.fmri.clone(),
        "desc" => desc.get(&s.fmri).cloned().unwrap_or_else(|| "-".into()),
        "svc" => f.as_ref().map(|f| format!("svc:/{}", f.service)).unwrap_or_default(),
        "inst" => f.and_then(|f| f.instance).unwrap_or_default(),
        "ctid" => s.contract.rsplit('/').next().unwrap_or("-").to_string(),
        _ => "-".into(),
    }
}

pub fn svcs(node: &Node, a: SvcsArgs) -> CmdResult {
    let p = paths(node);
    let repo = Repo::open(&p.repo)?;
    let (all, _live) = statuses(&p)?;
    let insts = hull_svc::graph::load(&repo)?;
    let desc: BTreeMap<String, String> =
        insts.iter().filter_map(|(f, i)| Some((f.to_string(), i.common_name.clone()?))).collect();
    let named = if a.patterns.is_empty() { None } else { Some(hull_svc::resolve(&repo, &a.patterns)?) };
    let by_fmri: BTreeMap<String, &InstStatus> = all.iter().map(|s| (s.fmri.clone(), s)).collect();
    if a.explain {
        return explain(&all, &insts, named.as_deref(), a.verbose, &desc);
    }
    let mut rows: Vec<&InstStatus> = if a.deps || a.dependents {
        let Some(named) = &named else { return Err(Failure::new(2, "-d and -D need instances")) };
        let mut out = Vec::new();
        for (f, i) in &insts {
            let related = named.iter().any(|n| {
                if a.deps {
                    insts.get(n).is_some_and(|ni| {
                        ni.deps
                            .iter()
                            .flat_map(|d| d.targets.iter())
                            .any(|t| matches!(t, Target::Svc(s) if s.covers(f)))
                    })
                } else {
                    i.deps.iter().flat_map(|d| d.targets.iter()).any(|t| matches!(t, Target::Svc(s) if s.covers(n)))
                }
            });
            if related && let Some(s) = by_fmri.get(&f.to_string()) {
                out.push(*s);
            }
        }
        out
    } else {
        all.iter()
            .filter(|s| match &named {
                Some(n) => n.iter().any(|f| f.to_string() == s.fmri),
                None => a.all || s.state != "disabled",
            })
            .collect()
    };
    if a.logs {
        for s in rows {
            println!("{}", s.log);
        }
        return Ok(());
    }
    if a.long {
        for s in rows {
            long(s, insts.get(&Fmri::parse(&s.fmri)?), &by_fmri, &desc);
            println!();
        }
        return Ok(());
    }
    let cols: Vec<String> =
        a.columns.as_deref().unwrap_or("state,stime,fmri").split(',').map(|c| c.trim().to_lowercase()).collect();
    let mut keys: Vec<(String, bool)> = a.sort.iter().map(|k| (k.to_lowercase(), false)).collect();
    keys.extend(a.sort_desc.iter().map(|k| (k.to_lowercase(), true)));
    if keys.is_empty() {
        keys.push(("stime".into(), false));
        keys.push(("fmri".into(), false));
    }
    rows.sort_by(|x, y| {
        for (k, desc_order) in &keys {
            let o = if k == "stime" { x.stime.cmp(&y.stime) } else { cell(x, k, &desc).cmp(&cell(y, k, &desc)) };
            let o = if *desc_order { o.reverse() } else { o };
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    });
    let table: Vec<Vec<String>> = rows.iter().map(|s| cols.iter().map(|c| cell(s, c, &desc)).collect()).collect();
    let mut widths: Vec<usize> = cols.iter().map(|c| c.len()).collect();
    for r in &table {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:w$}")).collect();
        println!("{}", parts.join(" ").trim_end());
    };
    if !a.no_header {
        line(cols.iter().map(|c| c.to_uppercase()).collect());
    }
    for (r, s) in table.into_iter().zip(&rows) {
        line(r);
        if a.procs {
            // As illumos prints them: under STIME the process's own start time, then its
            // pid and command name.
            for pid in &s.pids {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                let stime = hull_svc::contract::started(*pid).map(when).unwrap_or_else(|| "-".into());
                println!("{:15}{stime:>8} {pid:>7} {}", "", comm.trim());
            }
        }
    }
    Ok(())
}

fn long(
    s: &InstStatus,
    inst: Option<&hull_svc::graph::Inst>,
    by: &BTreeMap<String, &InstStatus>,
    desc: &BTreeMap<String, String>,
) {
    let kv = |k: &str, v: &str| println!("{k:<12} {v}");
    kv("fmri", &s.fmri);
    if let Some(d) = desc.get(&s.fmri) {
        kv("name", d);
    }
    kv("enabled", &format!("{}{}", s.enabled, if s.temporary { " (temporary)" } else { "" }));
    kv("state", &s.state);
    kv("next_state", &s.next_state);
    kv("state_time", &when(s.stime));
    kv("logfile", &s.log);
    let restarter = inst.and_then(|i| i.restarter.as_ref()).map(ToString::to_string);
    kv("restarter", restarter.as_deref().unwrap_or(hull_svc::graph::STARTD));
    if !s.pids.is_empty() {
        kv("contract_id", &s.contract);
    }
    let Some(i) = inst else { return };
    for d in &i.deps {
        for t in &d.targets {
            let (name, st) = match t {
                Target::Svc(f) => {
                    let st = by
                        .iter()
                        .filter(|(k, _)| Fmri::parse(k).is_ok_and(|x| f.covers(&x)))
                        .map(|(_, v)| v.state.clone())
                        .next()
                        .unwrap_or_else(|| "absent".into());
                    (f.to_string(), st)
                }
                Target::Path(p) => (
                    format!("file://localhost{}", p.display()),
                    if p.exists() { "online".into() } else { "absent".into() },
                ),
            };
            kv("dependency", &format!("{}/{} {name} ({st})", d.grouping.as_str(), d.restart_on.as_str()));
        }
    }
}

fn explain(
    all: &[InstStatus],
    insts: &BTreeMap<Fmri, hull_svc::graph::Inst>,
    named: Option<&[Fmri]>,
    verbose: bool,
    desc: &BTreeMap<String, String>,
) -> CmdResult {
    for e in hull_svc::explain::explain(all, insts, named) {
        let s = e.status;
        let name = desc.get(&s.fmri).map(|d| format!(" ({d})")).unwrap_or_default();
        println!("{}{name}", s.fmri);
        println!(" State: {} since {}", s.state, when(s.stime));
        let own = e.root.to_string() == s.fmri;
        if own {
            println!("Reason: {}", e.why);
        } else {
            println!("Reason: Dependency {} is not running: {}", e.root, e.why);
        }
        println!("   See: {}", s.log);
        if !own {
            println!("   See: svcs -xv {}", e.root);
        }
        if e.impacted.is_empty() {
            println!("Impact: This service is not running.");
        } else {
            println!("Impact: {} dependent service(s) are not running:", e.impacted.len());
            for i in &e.impacted {
                println!("        {i}");
            }
        }
        if verbose {
            let text = std::fs::read_to_string(&e.root_log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(8).collect();
            println!("   Log: {}", e.root_log);
            for l in tail.into_iter().rev() {
                println!("        {l}");
            }
        }
        println!();
    }
    Ok(())
}

// ------------------------------------------------------------------ svcadm

#[derive(Subcommand)]
pub enum SvcadmCmd {
    Enable {
        /// Enable the instances it requires too.
        #[arg(short = 'r')]
        recursive: bool,
        /// Wait until online.
        #[arg(short = 's')]
        wait: bool,
        /// Until the daemon restarts only.
        #[arg(short = 't')]
        temporary: bool,
        #[arg(required = true)]
        fmris: Vec<String>,
    },
    Disable {
        #[arg(short = 's')]
        wait: bool,
        #[arg(short = 't')]
        temporary: bool,
        #[arg(required = true)]
        fmris: Vec<String>,
    },
    Restart {
        #[arg(required = true)]
        fmris: Vec<String>,
    },
    Refresh {
        #[arg(required = true)]
        fmris: Vec<String>,
    },
    Clear {
        #[arg(required = true)]
        fmris: Vec<String>,
    },
    /// Mark instances maintenance or degraded.
    Mark {
        /// Immediately (accepted for compatibility).
        #[arg(short = 'I')]
        immediate: bool,
        #[arg(short = 't')]
        temporary: bool,
        state: String,
        #[arg(required = true)]
        fmris: Vec<String>,
    },
    /// Stop every instance in dependency order and end svc.startd.
    Shutdown,
}

fn send(p: &Paths, req: Request) -> CmdResult {
    proto::call(&p.socket, &req)?;
    Ok(())
}

/// Waits until every instance settles: `want` reached, or a state it cannot leave alone.
fn wait_for(p: &Paths, fmris: &[Fmri], want: &str) -> CmdResult {
    let t = Instant::now();
    loop {
        let (all, _) = statuses(p)?;
        let mut pending = false;
        for f in fmris {
            let Some(s) = all.iter().find(|s| s.fmri == f.to_string()) else { continue };
            if s.state == want && s.next_state == "-" {
                continue;
            }
            if want == "online" && s.state == "maintenance" {
                return Err(Failure::new(1, format!("{f} entered maintenance (see svcs -x {f})")));
            }
            pending = true;
        }
        if !pending {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(120) {
            return Err(Failure::new(1, format!("timed out waiting for {want}")));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The instances `f` requires, recursively.
pub fn svcadm(node: &Node, c: SvcadmCmd) -> CmdResult {
    let p = paths(node);
    let repo = Repo::open(&p.repo)?;
    match c {
        SvcadmCmd::Enable { recursive, wait, temporary, fmris } => {
            let mut list = hull_svc::resolve(&repo, &fmris)?;
            if recursive {
                let insts = hull_svc::graph::load(&repo)?;
                for f in list.clone() {
                    hull_svc::explain::required(&insts, &f, &mut list);
                }
            }
            for f in &list {
                send(&p, Request::Enable { fmri: f.to_string(), temporary })?;
            }
            if wait {
                wait_for(&p, &list, "online")?;
            }
        }
        SvcadmCmd::Disable { wait, temporary, fmris } => {
            let list = hull_svc::resolve(&repo, &fmris)?;
            for f in &list {
                send(&p, Request::Disable { fmri: f.to_string(), temporary })?;
            }
            if wait {
                wait_for(&p, &list, "disabled")?;
            }
        }
        SvcadmCmd::Restart { fmris } => {
            for f in hull_svc::resolve(&repo, &fmris)? {
                send(&p, Request::Restart { fmri: f.to_string() })?;
            }
        }
        SvcadmCmd::Refresh { fmris } => {
            for f in hull_svc::resolve(&repo, &fmris)? {
                send(&p, Request::Refresh { fmri: f.to_string() })?;
            }
        }
        SvcadmCmd::Clear { fmris } => {
            for f in hull_svc::resolve(&repo, &fmris)? {
                send(&p, Request::Clear { fmri: f.to_string() })?;
            }
        }
        SvcadmCmd::Mark { immediate: _, temporary, state, fmris } => {
            if !matches!(state.as_str(), "maintenance" | "degraded") {
                return Err(Failure::new(2, format!("cannot mark {state:?}: maintenance or degraded")));
            }
            for f in hull_svc::resolve(&repo, &fmris)? {
                send(&p, Request::Mark { fmri: f.to_string(), state: state.clone(), temporary })?;
            }
        }
        SvcadmCmd::Shutdown => send(&p, Request::Shutdown)?,
    }
    Ok(())
}

// ------------------------------------------------------------------ svccfg and svcprop

#[derive(Subcommand)]
pub enum SvccfgCmd {
    /// Adds a manifest (SMF XML, or TOML when the name ends in .toml) to the repository.
    Import { manifest: std::path::PathBuf },
    /// Checks a manifest as import would, without importing it.
    Validate { manifest: std::path::PathBuf },
    /// Prints a service as an SMF XML manifest.
    Export { fmri: String },
    /// Deletes a service or an instance.
    Delete {
        #[arg(short = 'f')]
        force: bool,
        fmri: String,
    },
    /// `svccfg -s FMRI setprop pg/prop = [type:] value`.
    Setprop { fmri: String, prop: String, eq: String, value: Vec<String> },
    /// Lists property groups and properties.
    Listprop { fmri: String, pattern: Option<String> },
}

fn entity(repo: &Repo, s: &str) -> Result<Fmri, Failure> {
    let f = match Fmri::parse(s) {
        Ok(f) => f,
        Err(_) => {
            let hits: Vec<Fmri> = repo.fmris()?.into_iter().filter(|f| f.matches(s)).collect();
            let svc: Vec<&Fmri> = hits.iter().filter(|f| f.instance.is_none()).collect();
            match (svc.len(), hits.len()) {
                (1, _) if !s.contains(':') => svc[0].clone(),
                (_, 1) => hits[0].clone(),
                _ => return Err(Failure::new(1, format!("{s:?} matches no single service or instance"))),
            }
        }
    };
    if !repo.exists(&f)? {
        return Err(SvcError::NotFound(f.to_string()).into());
    }
    Ok(f)
}

fn notify(p: &Paths) {
    // A daemon that is not running reads the repository when it starts.
    let _ = proto::call(&p.socket, &Request::Reload);
}

pub fn svccfg(node: &Node, c: SvccfgCmd) -> CmdResult {
    let p = paths(node);
    let mut repo = Repo::open(&p.repo)?;
    match c {
        SvccfgCmd::Validate { manifest } => {
            hull_svc::validate(&repo, &manifest)?;
        }
        SvccfgCmd::Import { manifest } => {
            let added = hull_svc::import(&mut repo, &manifest)?;
            notify(&p);
            for f in added {
                eprintln!("svccfg: imported {f}");
            }
        }
        SvccfgCmd::Delete { force, fmri } => {
            let f = entity(&repo, &fmri)?;
            let (all, _) = statuses(&p)?;
            let running: Vec<&InstStatus> = all
                .iter()
                .filter(|s| Fmri::parse(&s.fmri).is_ok_and(|x| f.covers(&x)))
                .filter(|s| matches!(s.state.as_str(), "online" | "degraded") || !s.pids.is_empty())
                .collect();
            if !running.is_empty() && !force {
                return Err(Failure::new(1, format!("{f} is running; disable it first or use -f")));
            }
            repo.delete(&f)?;
            notify(&p);
        }
        SvccfgCmd::Setprop { fmri, prop, eq, value } => {
            if eq != "=" {
                return Err(Failure::new(2, "usage: svccfg setprop FMRI pg/prop = [type:] value"));
            }
            let f = entity(&repo, &fmri)?;
            let (pg, name) = prop.split_once('/').ok_or_else(|| Failure::new(2, format!("{prop:?} is not pg/prop")))?;
            let prop_value =
                hull_svc::repo::Prop::parse_typed(&value.join(" ")).map_err(|e| Failure::new(1, e.to_string()))?;
            let pgtype = repo.pgs(&f)?.get(pg).map(|g| g.ty.clone()).unwrap_or_else(|| "application".into());
            repo.set_prop(&f, pg, &pgtype, name, &prop_value)?;
            notify(&p);
        }
        SvccfgCmd::Listprop { fmri, pattern } => {
            let f = entity(&repo, &fmri)?;
            for (pg, g) in repo.pgs(&f)? {
                if pattern
                    .as_deref()
                    .is_none_or(|pt| hull_svc::fmri::glob(pt, &pg) || pt.starts_with(&format!("{pg}/")))
                {
                    println!("{pg:<32} {}", g.ty);
                }
                for (k, v) in &g.props {
                    let full = format!("{pg}/{k}");
                    if pattern
                        .as_deref()
                        .is_none_or(|pt| hull_svc::fmri::glob(pt, &full) || hull_svc::fmri::glob(pt, &pg))
                    {
                        println!(
                            "{full:<32} {:<8} {}",
                            v.ty,
                            v.values.iter().map(|x| quote(x)).collect::<Vec<_>>().join(" ")
                        );
                    }
                }
            }
        }
        SvccfgCmd::Export { fmri } => {
            let f = entity(&repo, &fmri)?;
            print!("{}", hull_svc::export::to_xml(&repo, &f)?);
        }
    }
    Ok(())
}

fn quote(v: &str) -> String {
    if v.contains(' ') || v.is_empty() { format!("\"{v}\"") } else { v.to_string() }
}

#[derive(Args)]
pub struct SvcpropArgs {
    /// Only this property (pg/prop) or property group: values only.
    #[arg(short = 'p')]
    prop: Option<String>,
    fmri: String,
}

/// svcprop: an instance's composed properties, `pg/prop type value`.
pub fn svcprop(node: &Node, a: SvcpropArgs) -> CmdResult {
    let p = paths(node);
    let repo = Repo::open(&p.repo)?;
    let f = entity(&repo, &a.fmri)?;
    let pgs = repo.composed(&f)?;
    match a.prop.as_deref() {
        Some(pp) if pp.contains('/') => {
            let (pg, name) = pp.split_once('/').unwrap_or((pp, ""));
            let v = pgs
                .get(pg)
                .and_then(|g| g.props.get(name))
                .ok_or_else(|| Failure::new(1, format!("svcprop: couldn't find property {pp} for {f}")))?;
            println!("{}", v.values.iter().map(|x| quote(x)).collect::<Vec<_>>().join(" "));
        }
        only => {
            for (pg, g) in &pgs {
                if only.is_some_and(|o| o != pg) {
                    continue;
                }
                for (k, v) in &g.props {
                    println!("{pg}/{k} {} {}", v.ty, v.values.iter().map(|x| quote(x)).collect::<Vec<_>>().join(" "));
                }
            }
        }
    }
    Ok(())
}
