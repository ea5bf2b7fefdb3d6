//! The dependency rules: which instances are up for their dependents, which go down with
//! what they require, whether an instance may start now, and whom a stop reaches.

use super::{Cause, Startd, Then};
use crate::Fmri;
use crate::graph::Target;
use crate::manifest::Grouping;
use crate::state::State;
use std::collections::BTreeSet;

impl Startd {
    /// Up, for dependents: online or degraded and not on its way down.
    pub(super) fn up(&self, f: &Fmri) -> bool {
        self.run.get(f).is_some_and(|r| matches!(r.state, State::Online | State::Degraded) && r.stop.is_none())
            && !self.down.contains(f)
    }

    /// The instances that are down on purpose or will be: disabled, in maintenance, and
    /// (to a fixpoint) those whose required dependencies are all in the set. A disabled
    /// instance waits for its dependents to stop; they must see it as down already.
    pub(super) fn going_down(&self) -> BTreeSet<Fmri> {
        let mut down: BTreeSet<Fmri> = self.insts.keys().filter(|f| self.admin_down(f)).cloned().collect();
        loop {
            let mut grew = false;
            for (f, i) in &self.insts {
                if down.contains(f) {
                    continue;
                }
                let gone = |t: &Target| match t {
                    Target::Path(_) => false,
                    Target::Svc(s) => {
                        let xs = self.expand(s);
                        xs.is_empty() || xs.iter().all(|x| down.contains(x))
                    }
                };
                let hit = i.deps.iter().any(|d| match d.grouping {
                    Grouping::RequireAll => d.targets.iter().any(gone),
                    Grouping::RequireAny => d.targets.iter().all(gone),
                    _ => false,
                });
                if hit {
                    down.insert(f.clone());
                    grew = true;
                }
            }
            if !grew {
                return down;
            }
        }
    }

    /// Down on purpose: disabled, in maintenance, or the node shutting down.
    pub(super) fn admin_down(&self, f: &Fmri) -> bool {
        !self.insts.contains_key(f) || !self.enabled(f) || self.state(f) == State::Maintenance || self.shutting_down
    }

    pub(super) fn expand(&self, t: &Fmri) -> Vec<Fmri> {
        crate::graph::expand_in(t, &self.insts)
    }

    pub(super) fn can_come_up(&self, f: &Fmri) -> bool {
        self.can_come_up_in(f, 0, &mut std::collections::HashMap::new())
    }

    /// Memoised: a graph where each service requires several others would otherwise be
    /// walked once per path, exponentially many.
    pub(super) fn can_come_up_in(
        &self,
        f: &Fmri,
        depth: u32,
        memo: &mut std::collections::HashMap<Fmri, bool>,
    ) -> bool {
        if let Some(v) = memo.get(f) {
            return *v;
        }
        let v = self.can_come_up_uncached(f, depth, memo);
        memo.insert(f.clone(), v);
        v
    }

    pub(super) fn can_come_up_uncached(
        &self,
        f: &Fmri,
        depth: u32,
        memo: &mut std::collections::HashMap<Fmri, bool>,
    ) -> bool {
        if depth > 32 || self.admin_down(f) {
            return false;
        }
        if self.up(f) {
            return true;
        }
        let Some(i) = self.insts.get(f) else { return false };
        i.deps.iter().all(|d| {
            let mut ok = |t: &Target| match t {
                Target::Path(p) => p.exists(),
                Target::Svc(s) => self.expand(s).iter().any(|x| self.can_come_up_in(x, depth + 1, memo)),
            };
            match d.grouping {
                Grouping::RequireAll => d.targets.iter().all(&mut ok),
                Grouping::RequireAny => d.targets.iter().any(&mut ok),
                Grouping::OptionalAll | Grouping::ExcludeAll => true,
            }
        })
    }

    /// Whether the dependencies let `f` start now; the first one that does not, if any.
    pub(super) fn unsatisfied(&self, f: &Fmri) -> Option<String> {
        let i = self.insts.get(f)?;
        for d in &i.deps {
            let target_up = |t: &Target| match t {
                Target::Path(p) => p.exists(),
                Target::Svc(s) => self.expand(s).iter().any(|x| self.up(x)),
            };
            let ok = match d.grouping {
                Grouping::RequireAll => d.targets.iter().all(target_up),
                Grouping::RequireAny => d.targets.iter().any(target_up),
                Grouping::OptionalAll => d.targets.iter().all(|t| match t {
                    Target::Path(_) => true,
                    Target::Svc(s) => self.expand(s).iter().all(|x| self.up(x) || !self.can_come_up(x)),
                }),
                // Satisfied only while no target runs or could: an enabled target that can
                // come up excludes as much as an online one.
                Grouping::ExcludeAll => !d.targets.iter().any(|t| match t {
                    Target::Path(p) => p.exists(),
                    Target::Svc(s) => self.expand(s).iter().any(|x| self.up(x) || self.can_come_up(x)),
                }),
            };
            if !ok {
                return Some(d.name.clone());
            }
        }
        None
    }

    /// A running instance whose required dependency goes down on purpose must stop too,
    /// and so must one whose exclude_all target runs.
    pub(super) fn must_stop_for_deps(&self, f: &Fmri) -> bool {
        if self.down.contains(f) && !self.admin_down(f) {
            return true;
        }
        self.insts.get(f).is_some_and(|i| {
            i.deps.iter().filter(|d| d.grouping == Grouping::ExcludeAll).any(|d| {
                d.targets.iter().any(|t| matches!(t, Target::Svc(s) if self.expand(s).iter().any(|x| self.up(x))))
            })
        })
    }

    /// Instances that depend on `f` (require_all or require_any), must stop with it, and
    /// are still running.
    pub(super) fn running_dependents(&self, f: &Fmri) -> Vec<Fmri> {
        self.insts
            .values()
            .filter(|i| self.down.contains(&i.fmri) || self.shutting_down)
            .filter(|i| {
                i.deps.iter().any(|d| {
                    matches!(d.grouping, Grouping::RequireAll | Grouping::RequireAny)
                        && d.targets.iter().any(|t| matches!(t, Target::Svc(s) if self.expand(s).contains(f)))
                })
            })
            .filter(|i| {
                self.run.get(&i.fmri).is_some_and(|r| matches!(r.state, State::Online | State::Degraded) || r.busy())
            })
            .map(|i| i.fmri.clone())
            .collect()
    }

    /// Dependents to stop with `f` for `cause`, by their restart_on.
    pub(super) fn propagate(&mut self, f: &Fmri, cause: Cause) {
        let hit: Vec<Fmri> = self
            .insts
            .values()
            .filter(|i| {
                i.deps.iter().any(|d| {
                    d.grouping != Grouping::ExcludeAll
                        && cause.reaches(d.restart_on)
                        && d.targets.iter().any(|t| matches!(t, Target::Svc(s) if self.expand(s).contains(f)))
                })
            })
            .map(|i| i.fmri.clone())
            .filter(|d| self.up(d))
            .collect();
        for d in hit {
            self.log(&d, &format!("Stopping because dependency {f} stops ({cause:?})."));
            self.begin_stop(&d, Then::Offline, "dependency");
            self.propagate(&d, cause);
        }
    }
}
