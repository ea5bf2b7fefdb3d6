//! `svcs -x`: why an instance is not running, followed through its required dependencies
//! to the root cause, and which dependents that holds back. The binary prints; this decides.

use crate::Fmri;
use crate::graph::{Inst, Target};
use crate::manifest::Grouping;
use crate::proto::InstStatus;
use std::collections::BTreeMap;

/// One instance's explanation.
pub struct Explanation<'a> {
    pub status: &'a InstStatus,
    /// The instance the reason is about: itself, or a dependency down the chain.
    pub root: Fmri,
    pub why: String,
    /// Dependents of it that are not online.
    pub impacted: Vec<String>,
    /// The log to read for the root cause.
    pub root_log: String,
}

/// The explanations `svcs -x` prints: for `named` instances, or every enabled one that is
/// not online.
pub fn explain<'a>(
    all: &'a [InstStatus],
    insts: &BTreeMap<Fmri, Inst>,
    named: Option<&[Fmri]>,
) -> Vec<Explanation<'a>> {
    let by: BTreeMap<String, &InstStatus> = all.iter().map(|s| (s.fmri.clone(), s)).collect();
    let mut out = Vec::new();
    for s in all {
        let Ok(f) = Fmri::parse(&s.fmri) else { continue };
        let picked = match named {
            Some(n) => n.contains(&f),
            None => s.enabled && s.state != "online",
        };
        if !picked {
            continue;
        }
        let (root, why) = root_cause(&f, &by, insts, 0);
        let impacted: Vec<String> = insts
            .values()
            .filter(|i| {
                i.deps.iter().flat_map(|d| d.targets.iter()).any(|t| matches!(t, Target::Svc(x) if x.covers(&f)))
            })
            .map(|i| i.fmri.to_string())
            .filter(|x| by.get(x).is_some_and(|s| s.state != "online"))
            .collect();
        let root_log = by.get(&root.to_string()).map(|r| r.log.clone()).unwrap_or_else(|| s.log.clone());
        out.push(Explanation { status: s, root, why, impacted, root_log });
    }
    out
}

/// Why an instance is not online, following required dependencies to the root.
pub fn root_cause(
    f: &Fmri,
    all: &BTreeMap<String, &InstStatus>,
    insts: &BTreeMap<Fmri, crate::graph::Inst>,
    depth: u32,
) -> (Fmri, String) {
    let Some(s) = all.get(&f.to_string()) else { return (f.clone(), "is absent".into()) };
    match s.state.as_str() {
        "maintenance" => {
            let why = match s.aux.as_str() {
                "restarting_too_quickly" => "Restarting too quickly.",
                "method_failed" => "Start method failed repeatedly, or exited with a fatal status.",
                "administrative_request" => "Maintenance requested by an administrator.",
                "dependency_cycle" => "It is part of a dependency cycle.",
                "method_missing" => "It has no start method.",
                _ => "In maintenance.",
            };
            return (f.clone(), why.into());
        }
        "disabled" => return (f.clone(), "Disabled by an administrator.".into()),
        "degraded" => return (f.clone(), "Degraded.".into()),
        _ => {}
    }
    if let Some(r) = insts.get(f).and_then(|i| i.restarter.as_ref()) {
        return (f.clone(), format!("Its restarter {r} is not running: hull has no such restarter (no inetd)."));
    }
    if depth > 32 {
        return (f.clone(), "The dependency chain is too deep.".into());
    }
    if let Some(i) = insts.get(f) {
        for d in i.deps.iter().filter(|d| matches!(d.grouping, Grouping::RequireAll | Grouping::RequireAny)) {
            for t in &d.targets {
                match t {
                    Target::Path(p) if !p.exists() => return (f.clone(), format!("File {} is absent.", p.display())),
                    Target::Svc(tf) => {
                        let targets: Vec<Fmri> = crate::graph::expand(tf, insts.keys());
                        if targets.is_empty() {
                            return (f.clone(), format!("Dependency {tf} is absent."));
                        }
                        for x in targets {
                            let st = all.get(&x.to_string()).map(|s| s.state.as_str()).unwrap_or("absent");
                            if !matches!(st, "online" | "degraded") {
                                return root_cause(&x, all, insts, depth + 1);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    (
        f.clone(),
        if s.next_state == "online" {
            "Start method is running.".into()
        } else {
            "Waiting for its dependencies.".into()
        },
    )
}

/// Every instance `f` requires (require_all and require_any), transitively, added to `out`:
/// what `svcadm enable -r` enables.
pub fn required(insts: &BTreeMap<Fmri, crate::graph::Inst>, f: &Fmri, out: &mut Vec<Fmri>) {
    let Some(i) = insts.get(f) else { return };
    for d in i.deps.iter().filter(|d| matches!(d.grouping, Grouping::RequireAll | Grouping::RequireAny)) {
        for t in &d.targets {
            if let Target::Svc(s) = t {
                for x in crate::graph::expand_in(s, insts) {
                    if !out.contains(&x) {
                        out.push(x.clone());
                        required(insts, &x, out);
                    }
                }
            }
        }
    }
}
