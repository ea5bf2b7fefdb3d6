//! Instances as the restarter sees them, read from their composed property groups, and the
//! dependency graph between them.

use crate::manifest::{Grouping, RestartOn};
use crate::repo::{Pg, Repo};
use crate::{Fmri, Result, SvcError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// svc.startd's own FMRI: a `general/restarter` naming it is the default.
pub const STARTD: &str = "svc:/system/svc/restarter:default";

/// startd/duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Duration {
    /// The start method leaves processes behind; the instance lives while its cgroup has any.
    Contract,
    /// The start method does the work; nothing is left to watch.
    Transient,
    /// The start method's process is the service (`child`, and `wait` the same).
    Child,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    pub exec: String,
    /// None: no timeout.
    pub timeout: Option<std::time::Duration>,
    pub user: Option<String>,
    pub group: Option<String>,
    /// Supplementary group names.
    pub supp_groups: Vec<String>,
    /// An RBAC profile the manifest names (not applied: logged when the method runs).
    pub profile: Option<String>,
    pub working_directory: Option<String>,
    pub environment: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Svc(Fmri),
    /// `file://[host]/path`: satisfied while the path exists.
    Path(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    pub name: String,
    pub grouping: Grouping,
    pub restart_on: RestartOn,
    pub targets: Vec<Target>,
}

/// illumos's rule (usr/src/cmd/svc/startd/method.c, `method_rate_critical`): an instance
/// restarts too quickly when the last `count` starts came on average less than `period`
/// apart. The defaults are restarter.h's RINST_START_TIMES (5) and RINST_FAILURE_RATE_NS
/// (600 s; 1 s for wait-style, here child, services). svc.startd(8) describes the rule
/// differently; the code is what runs. startd/critical_failure_count and
/// startd/critical_failure_period (seconds) override it per instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateRule {
    pub count: usize,
    pub period_ms: i64,
}

impl RateRule {
    pub fn too_quick(&self, starts: &[i64]) -> bool {
        if self.count < 2 || starts.len() < self.count {
            return false;
        }
        let last = &starts[starts.len() - self.count..];
        let avg = (last[last.len() - 1] - last[0]) / (self.count as i64 - 1);
        avg < self.period_ms
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inst {
    pub fmri: Fmri,
    /// general/enabled, as stored (a temporary override lives in the daemon).
    pub enabled: bool,
    pub deps: Vec<Dep>,
    pub start: Option<Method>,
    pub stop: Option<Method>,
    pub refresh: Option<Method>,
    /// Run by `svcadm restart` in place of stop and start, when the service has one.
    pub restart: Option<Method>,
    /// `general/restarter`: another restarter's instance (inetd's), which svc.startd
    /// leaves alone. None: svc.startd's.
    pub restarter: Option<Fmri>,
    pub duration: Duration,
    pub rate: RateRule,
    pub common_name: Option<String>,
}

fn first<'a>(pgs: &'a BTreeMap<String, Pg>, pg: &str, prop: &str) -> Option<&'a str> {
    pgs.get(pg)?.props.get(prop)?.values.first().map(String::as_str)
}

fn method(pgs: &BTreeMap<String, Pg>, name: &str) -> Option<Method> {
    let pg = pgs.get(name).filter(|p| p.ty == "method")?;
    let get = |k: &str| pg.props.get(k).and_then(|p| p.values.first()).cloned();
    let timeout = get("timeout_seconds").and_then(|t| t.parse::<i64>().ok()).filter(|t| *t > 0);
    Some(Method {
        exec: get("exec")?,
        timeout: timeout.map(|t| std::time::Duration::from_secs(t as u64)),
        user: get("user"),
        group: get("group"),
        supp_groups: get("supp_groups")
            .map(|g| g.split(',').map(str::trim).filter(|x| !x.is_empty()).map(String::from).collect())
            .unwrap_or_default(),
        profile: get("profile"),
        working_directory: get("working_directory"),
        environment: pg
            .props
            .get("environment")
            .map(|p| p.values.iter().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect())
            .unwrap_or_default(),
    })
}

/// `file://localhost/etc/x` or `file:///etc/x`.
fn file_path(s: &str) -> Option<PathBuf> {
    let rest = s.strip_prefix("file://")?;
    let path = if rest.starts_with('/') { rest } else { &rest[rest.find('/')?..] };
    Some(PathBuf::from(path))
}

impl Inst {
    pub fn from_pgs(fmri: &Fmri, pgs: &BTreeMap<String, Pg>) -> Result<Inst> {
        let mut deps = Vec::new();
        for (name, pg) in pgs.iter().filter(|(_, p)| p.ty == "dependency") {
            let bad = |what: &str| SvcError::Invalid(format!("{fmri}: dependency {name}: {what}"));
            let grouping = Grouping::parse(first(pgs, name, "grouping").unwrap_or("require_all"))
                .ok_or_else(|| bad("bad grouping"))?;
            let restart_on = RestartOn::parse(first(pgs, name, "restart_on").unwrap_or("none"))
                .ok_or_else(|| bad("bad restart_on"))?;
            let mut targets = Vec::new();
            for e in pg.props.get("entities").map(|p| p.values.clone()).unwrap_or_default() {
                if let Some(p) = file_path(&e) {
                    targets.push(Target::Path(p));
                } else {
                    targets.push(Target::Svc(Fmri::parse(&e).map_err(|_| bad(&format!("{e:?} is not an FMRI")))?));
                }
            }
            deps.push(Dep { name: name.clone(), grouping, restart_on, targets });
        }
        let duration = match first(pgs, "startd", "duration").unwrap_or("contract") {
            "transient" => Duration::Transient,
            "child" | "wait" => Duration::Child,
            _ => Duration::Contract,
        };
        let default_period = if duration == Duration::Child { 1_000 } else { 600_000 };
        let rate = RateRule {
            count: first(pgs, "startd", "critical_failure_count").and_then(|v| v.parse().ok()).unwrap_or(5),
            period_ms: first(pgs, "startd", "critical_failure_period")
                .and_then(|v| v.parse::<i64>().ok())
                .map(|s| s * 1000)
                .unwrap_or(default_period),
        };
        Ok(Inst {
            fmri: fmri.clone(),
            enabled: first(pgs, "general", "enabled") == Some("true"),
            deps,
            start: method(pgs, "start"),
            stop: method(pgs, "stop"),
            refresh: method(pgs, "refresh"),
            restart: method(pgs, "restart"),
            restarter: first(pgs, "general", "restarter")
                .and_then(|r| Fmri::parse(r).ok())
                .filter(|r| r.to_string() != STARTD),
            duration,
            rate,
            common_name: first(pgs, "tm_common_name", "C").map(String::from),
        })
    }
}

/// Every instance in the repository.
pub fn load(repo: &Repo) -> Result<BTreeMap<Fmri, Inst>> {
    let mut out = BTreeMap::new();
    for f in repo.instances()? {
        let pgs = repo.composed(&f)?;
        out.insert(f.clone(), Inst::from_pgs(&f, &pgs)?);
    }
    Ok(out)
}

/// The instances a dependency target stands for: itself, or every instance of a service.
pub fn expand<'a>(t: &Fmri, all: impl Iterator<Item = &'a Fmri>) -> Vec<Fmri> {
    if t.instance.is_some() { vec![t.clone()] } else { all.filter(|f| f.service == t.service).cloned().collect() }
}

/// [`expand`] over a map keyed by FMRI: the instances of a service are neighbours there (an
/// FMRI sorts by service, then instance), so this is a range, not a scan of every instance.
pub fn expand_in<V>(t: &Fmri, map: &BTreeMap<Fmri, V>) -> Vec<Fmri> {
    if t.instance.is_some() {
        return vec![t.clone()];
    }
    let from = Fmri { service: t.service.clone(), instance: None };
    map.range(from..).map(|(f, _)| f).take_while(|f| f.service == t.service).cloned().collect()
}

/// Dependency cycles among instances (exclude_all dependencies do not order anything and
/// are left out), each as the list of instances around it.
pub fn cycles(insts: &BTreeMap<Fmri, Inst>) -> Vec<Vec<Fmri>> {
    let edges: BTreeMap<&Fmri, Vec<Fmri>> = insts
        .iter()
        .map(|(f, i)| {
            let mut to = Vec::new();
            for d in i.deps.iter().filter(|d| d.grouping != Grouping::ExcludeAll) {
                for t in &d.targets {
                    if let Target::Svc(s) = t {
                        to.extend(expand_in(s, insts));
                    }
                }
            }
            (f, to)
        })
        .collect();
    // Depth-first search with colours; each back edge closes a cycle.
    let mut colour: BTreeMap<&Fmri, u8> = BTreeMap::new();
    let mut found: Vec<Vec<Fmri>> = Vec::new();
    let mut seen_sets: BTreeSet<Vec<Fmri>> = BTreeSet::new();
    for start in insts.keys() {
        if colour.get(start).copied().unwrap_or(0) != 0 {
            continue;
        }
        let mut stack: Vec<(&Fmri, usize)> = vec![(start, 0)];
        colour.insert(start, 1);
        while let Some((node, i)) = stack.pop() {
            let next = edges.get(node).and_then(|e| e.get(i));
            match next {
                None => {
                    colour.insert(node, 2);
                }
                Some(n) => {
                    stack.push((node, i + 1));
                    let Some((key, _)) = edges.get_key_value(n) else { continue };
                    match colour.get(key).copied().unwrap_or(0) {
                        0 => {
                            colour.insert(key, 1);
                            stack.push((key, 0));
                        }
                        1 => {
                            let pos = stack.iter().position(|(f, _)| *f == *key).unwrap_or(0);
                            let cycle: Vec<Fmri> = stack[pos..].iter().map(|(f, _)| (*f).clone()).collect();
                            let mut key_set = cycle.clone();
                            key_set.sort();
                            if seen_sets.insert(key_set) {
                                found.push(cycle);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::Prop;

    fn inst(name: &str, deps: &[&str]) -> (Fmri, Inst) {
        let f = Fmri::instance(name, "default");
        let mut pgs = BTreeMap::new();
        for (i, d) in deps.iter().enumerate() {
            let mut pg = Pg::new("dependency");
            pg.props.insert("entities".into(), Prop { ty: "fmri".into(), values: vec![d.to_string()] });
            pgs.insert(format!("d{i}"), pg);
        }
        (f.clone(), Inst::from_pgs(&f, &pgs).expect("inst"))
    }

    #[test]
    fn cycles_are_found_once() {
        let g: BTreeMap<_, _> =
            [inst("a", &["svc:/b"]), inst("b", &["svc:/c:default"]), inst("c", &["svc:/a"]), inst("d", &["svc:/a"])]
                .into_iter()
                .collect();
        let c = cycles(&g);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].len(), 3);
        let acyclic: BTreeMap<_, _> =
            [inst("a", &["svc:/b"]), inst("b", &[]), inst("d", &["svc:/a", "svc:/b"])].into_iter().collect();
        assert!(cycles(&acyclic).is_empty());
        let own: BTreeMap<_, _> = [inst("a", &["svc:/a:default"])].into_iter().collect();
        assert_eq!(cycles(&own).len(), 1);
    }

    #[test]
    fn expansion_by_range_is_expansion_by_scan() {
        let g: BTreeMap<_, _> = [inst("a", &[]), inst("ab", &[]), inst("b", &[])].into_iter().collect();
        let mut g = g;
        let (f, i) = inst("a", &[]);
        g.insert(Fmri::instance("a", "two"), Inst { fmri: Fmri::instance("a", "two"), ..i });
        for t in ["svc:/a", "svc:/ab", "svc:/b", "svc:/c", "svc:/a:default", "svc:/a:nosuch"] {
            let t = Fmri::parse(t).expect("fmri");
            assert_eq!(expand_in(&t, &g), expand(&t, g.keys()), "{t}");
        }
        assert_eq!(expand_in(&f.service_fmri(), &g).len(), 2);
    }

    #[test]
    fn the_rate_rule_is_illumos_s() {
        let r = RateRule { count: 5, period_ms: 600_000 };
        assert!(!r.too_quick(&[0, 1, 2, 3]), "fewer starts than the count");
        assert!(r.too_quick(&[0, 1, 2, 3, 4]));
        assert!(!r.too_quick(&[0, 600_000, 1_200_000, 1_800_000, 2_400_000]), "one every ten minutes is fine");
        assert!(r.too_quick(&[0, 600_000, 1_200_000, 1_800_000, 2_399_996]));
        assert!(!RateRule { count: 3, period_ms: 1000 }.too_quick(&[0, 1, 5000, 10_000]));
    }

    #[test]
    fn file_dependencies() {
        assert_eq!(file_path("file://localhost/etc/x"), Some(PathBuf::from("/etc/x")));
        assert_eq!(file_path("file:///etc/x"), Some(PathBuf::from("/etc/x")));
    }
}
