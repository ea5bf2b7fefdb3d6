//! The restarter's decisions: what an instance does next, as a function of its state and
//! what happened. No I/O here: svc.startd gathers the facts (is it enabled, are its
//! dependencies up, did a method exit), asks this module, and applies the answer (spawn,
//! signal, write the repository).
//!
//! ```text
//!                        enable                     dependencies up
//!   uninitialized ──► disabled ◄────────► offline ───────────────────► (start method)
//!        │              ▲        disable    ▲  ▲                            │
//!        └── enabled ───┼───────────────────┘  │                 exit 0     │ exit 97
//!                       │                      │     ┌─────────────────────┤
//!                       │  disable: stop,      │     ▼                     ▼
//!                       └── then disabled ◄── online ◄──── clear ───── degraded
//!                                              │  ▲
//!                        fault (contract empty,│  │ restart: stop, then offline,
//!                        service exited):      │  │ and up again when its
//!                        stop, then offline ───┘  │ dependencies are
//!                        (maintenance if too quick)
//!
//!   start fails 3 times, or exits 95/96/100, or mark maintenance ──► maintenance
//!   maintenance ── clear ──► offline
//! ```
//!
//! An instance that is running a method (or stopping) is busy: reconciling leaves it alone
//! until the method exits or the stop finishes.

/// An instance's state, as SMF names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Uninitialized,
    Offline,
    Online,
    Degraded,
    Maintenance,
    Disabled,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Uninitialized => "uninitialized",
            State::Offline => "offline",
            State::Online => "online",
            State::Degraded => "degraded",
            State::Maintenance => "maintenance",
            State::Disabled => "disabled",
        }
    }

    /// Running, for its dependents.
    pub fn is_up(self) -> bool {
        matches!(self, State::Online | State::Degraded)
    }
}

/// Where an instance goes once its stop has finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    Offline,
    Disabled,
    Maintenance,
    /// After a fault: offline, or maintenance when restarting too quickly.
    Restart,
}

/// What the daemon knows of an idle instance (no method running, not stopping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub state: State,
    /// Enabled, and the node is not shutting down.
    pub enabled: bool,
    /// None: its dependencies let it start now; Some(name): the first that does not.
    pub waiting_for: Option<String>,
    /// The retry delay after a failed start has passed.
    pub retry_ok: bool,
    /// It must stop because of its dependencies (a required one goes down on purpose, an
    /// excluded one runs).
    pub must_stop: bool,
    /// Some instance that requires it still runs: it stops after them. Read only when it
    /// is up and must stop (disabled, or `must_stop`); the daemon may leave it false
    /// otherwise.
    pub dependents_running: bool,
    /// The aux state it shows now (offline's reason).
    pub aux: String,
}

/// What to do with an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// Change state, with this reason.
    Set(State, String),
    /// Run its start method.
    Start,
    /// Stop it (stop method, then kill what is left), then go to `Then`.
    Stop(Then, &'static str),
}

/// The next step for an idle instance.
pub fn reconcile(f: &Facts) -> Step {
    match f.state {
        State::Uninitialized => Step::Set(if f.enabled { State::Offline } else { State::Disabled }, "none".into()),
        State::Disabled if f.enabled => Step::Set(State::Offline, "none".into()),
        State::Offline if !f.enabled => Step::Set(State::Disabled, "administrative_request".into()),
        State::Offline => match &f.waiting_for {
            None if f.retry_ok => Step::Start,
            None => Step::Nothing,
            Some(dep) => {
                let aux = format!("dependency {dep}");
                if f.aux != aux { Step::Set(State::Offline, aux) } else { Step::Nothing }
            }
        },
        // Dependents first: it stops only once none of them runs.
        State::Online | State::Degraded if (!f.enabled || f.must_stop) && !f.dependents_running => {
            if f.enabled {
                Step::Stop(Then::Offline, "dependency")
            } else {
                Step::Stop(Then::Disabled, "administrative_request")
            }
        }
        _ => Step::Nothing,
    }
}

/// smf_method(7)'s exit codes.
pub const SMF_EXIT_OK: i32 = 0;
pub const SMF_EXIT_ERR_FATAL: i32 = 95;
pub const SMF_EXIT_ERR_CONFIG: i32 = 96;
pub const SMF_EXIT_MON_DEGRADE: i32 = 97;
pub const SMF_EXIT_MON_OFFLINE: i32 = 98;
pub const SMF_EXIT_ERR_NOSMF: i32 = 99;
pub const SMF_EXIT_ERR_PERM: i32 = 100;

/// Start method failures in a row before maintenance.
pub const MAX_START_FAILURES: u32 = 3;

/// What a start method's exit means (for a service whose start method is not the service
/// itself: duration contract or transient).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    Online,
    Degraded,
    /// Failed; `fatal` goes to maintenance at once, else it is retried.
    Failed {
        why: String,
        fatal: bool,
    },
}

/// A start method exited with `status`; `transient` services need nothing left behind,
/// the others need processes left in their contract (`left`).
pub fn start_exited(status: i32, transient: bool, left: bool) -> Started {
    match status {
        SMF_EXIT_OK if transient || left => Started::Online,
        SMF_EXIT_OK => {
            Started::Failed { why: "the start method left no processes in the contract".into(), fatal: false }
        }
        SMF_EXIT_ERR_FATAL | SMF_EXIT_ERR_CONFIG | SMF_EXIT_ERR_PERM => {
            Started::Failed { why: format!("the start method exited with status {status}"), fatal: true }
        }
        SMF_EXIT_MON_DEGRADE => Started::Degraded,
        _ => Started::Failed { why: format!("the start method failed with status {status}"), fatal: false },
    }
}

/// After a failed start (its `failures`-th in a row): stop what it left, then offline to be
/// retried, or maintenance.
pub fn after_failed_start(failures: u32, fatal: bool) -> Step {
    if fatal || failures >= MAX_START_FAILURES {
        Step::Stop(Then::Maintenance, "method_failed")
    } else {
        Step::Stop(Then::Offline, "method_failed")
    }
}

/// Where a finished stop leaves the instance; `too_quick` when its starts break the rate rule.
pub fn stop_finished(then: Then, aux: &str, too_quick: bool) -> (State, String) {
    match then {
        Then::Offline => (State::Offline, aux.into()),
        Then::Disabled => (State::Disabled, aux.into()),
        Then::Maintenance => (State::Maintenance, aux.into()),
        Then::Restart if too_quick => (State::Maintenance, "restarting_too_quickly".into()),
        Then::Restart => (State::Offline, "fault".into()),
    }
}

/// `svcadm clear`: maintenance goes offline (to start again), degraded back online.
pub fn clear(state: State) -> Option<(State, &'static str)> {
    match state {
        State::Maintenance => Some((State::Offline, "administrative_request")),
        State::Degraded => Some((State::Online, "none")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn facts(state: State) -> Facts {
        Facts {
            state,
            enabled: true,
            waiting_for: None,
            retry_ok: true,
            must_stop: false,
            dependents_running: false,
            aux: "none".into(),
        }
    }

    const ALL: [State; 6] =
        [State::Uninitialized, State::Offline, State::Online, State::Degraded, State::Maintenance, State::Disabled];

    #[test]
    fn every_state_and_fact_has_one_answer() {
        // Exhaustive over the boolean facts: a start only from offline, enabled, nothing
        // waited for; a stop only from a running state; maintenance left alone.
        for state in ALL {
            for bits in 0..32u32 {
                let f = Facts {
                    state,
                    enabled: bits & 1 != 0,
                    waiting_for: (bits & 2 != 0).then(|| "db".to_string()),
                    retry_ok: bits & 4 != 0,
                    must_stop: bits & 8 != 0,
                    dependents_running: bits & 16 != 0,
                    aux: "none".into(),
                };
                match reconcile(&f) {
                    Step::Start => {
                        assert!(state == State::Offline && f.enabled && f.waiting_for.is_none() && f.retry_ok, "{f:?}")
                    }
                    Step::Stop(then, _) => {
                        assert!(state.is_up() && !f.dependents_running, "{f:?}");
                        assert!(f.enabled || then == Then::Disabled, "{f:?}");
                    }
                    Step::Set(s, _) => assert!(s != State::Online && s != State::Maintenance, "{f:?} -> {s:?}"),
                    Step::Nothing => {}
                }
                if state == State::Maintenance {
                    assert_eq!(reconcile(&f), Step::Nothing, "maintenance waits for clear");
                }
            }
        }
    }

    #[test]
    fn exit_codes_are_smf_method_s() {
        assert_eq!(start_exited(0, true, false), Started::Online);
        assert_eq!(start_exited(0, false, true), Started::Online);
        assert!(matches!(start_exited(0, false, false), Started::Failed { fatal: false, .. }));
        for fatal in [95, 96, 100] {
            assert!(matches!(start_exited(fatal, false, true), Started::Failed { fatal: true, .. }));
        }
        assert_eq!(start_exited(97, false, true), Started::Degraded);
        assert!(matches!(start_exited(1, false, true), Started::Failed { fatal: false, .. }));
        assert_eq!(after_failed_start(1, false), Step::Stop(Then::Offline, "method_failed"));
        assert_eq!(after_failed_start(3, false), Step::Stop(Then::Maintenance, "method_failed"));
        assert_eq!(after_failed_start(1, true), Step::Stop(Then::Maintenance, "method_failed"));
        assert_eq!(stop_finished(Then::Restart, "fault", true).0, State::Maintenance);
        assert_eq!(clear(State::Maintenance).map(|c| c.0), Some(State::Offline));
        assert_eq!(clear(State::Online), None);
    }

    #[test]
    fn an_offline_instance_says_what_it_waits_for_once() {
        let mut f = facts(State::Offline);
        f.waiting_for = Some("db".into());
        assert_eq!(reconcile(&f), Step::Set(State::Offline, "dependency db".into()));
        f.aux = "dependency db".into();
        assert_eq!(reconcile(&f), Step::Nothing, "no churn once it says so");
    }

    // ---------------------------------------------------------------- a node of instances
    //
    // A model of svc.startd built on the functions above: instances in a DAG (each requires
    // some earlier ones, require_all), methods that succeed at once unless the test says
    // they fail, and a loop that reconciles until nothing changes, as the daemon does.

    #[derive(Debug, Clone)]
    enum Event {
        Enable(usize),
        Disable(usize),
        /// The service's processes died.
        Fault(usize),
        /// The next start of it fails with this status.
        FailNext(usize, i32),
        Mark(usize),
        Clear(usize),
    }

    struct Node {
        deps: Vec<Vec<usize>>,
        state: Vec<State>,
        enabled: Vec<bool>,
        aux: Vec<String>,
        failures: Vec<u32>,
        fail_next: Vec<Option<i32>>,
        starts: Vec<u32>,
    }

    impl Node {
        fn new(deps: Vec<Vec<usize>>, enabled: Vec<bool>) -> Node {
            let n = deps.len();
            Node {
                deps,
                state: vec![State::Uninitialized; n],
                enabled,
                aux: vec!["none".into(); n],
                failures: vec![0; n],
                fail_next: vec![None; n],
                starts: vec![0; n],
            }
        }

        fn admin_down(&self, i: usize) -> bool {
            !self.enabled[i] || self.state[i] == State::Maintenance
        }

        /// Down on purpose, to a fixpoint over required dependencies (startd's going_down).
        fn going_down(&self) -> Vec<bool> {
            let mut down: Vec<bool> = (0..self.deps.len()).map(|i| self.admin_down(i)).collect();
            loop {
                let mut grew = false;
                for i in 0..self.deps.len() {
                    if !down[i] && self.deps[i].iter().any(|d| down[*d]) {
                        down[i] = true;
                        grew = true;
                    }
                }
                if !grew {
                    return down;
                }
            }
        }

        #[allow(clippy::needless_range_loop)]
        fn settle(&mut self) {
            for _ in 0..1000 {
                let down = self.going_down();
                let mut changed = false;
                for i in 0..self.deps.len() {
                    // Up, for a dependent: running and not on its way down (startd's `up`).
                    let waiting =
                        self.deps[i].iter().find(|d| !self.state[**d].is_up() || down[**d]).map(|d| format!("d{d}"));
                    let dependents_running =
                        (0..self.deps.len()).any(|j| self.deps[j].contains(&i) && self.state[j].is_up() && down[j]);
                    let f = Facts {
                        state: self.state[i],
                        enabled: self.enabled[i],
                        waiting_for: waiting,
                        retry_ok: true,
                        must_stop: down[i] && !self.admin_down(i),
                        dependents_running,
                        aux: self.aux[i].clone(),
                    };
                    match reconcile(&f) {
                        Step::Nothing => {}
                        Step::Set(s, aux) => {
                            changed |= self.state[i] != s || self.aux[i] != aux;
                            (self.state[i], self.aux[i]) = (s, aux);
                        }
                        Step::Start => {
                            // The invariant the daemon keeps: what it requires is up first.
                            for d in &self.deps[i] {
                                assert!(self.state[*d].is_up(), "{i} started before {d} ({:?})", self.state[*d]);
                            }
                            assert!(self.enabled[i], "{i} started while disabled");
                            self.starts[i] += 1;
                            changed = true;
                            match start_exited(self.fail_next[i].take().unwrap_or(0), false, true) {
                                Started::Online => {
                                    self.failures[i] = 0;
                                    (self.state[i], self.aux[i]) = (State::Online, "none".into());
                                }
                                Started::Degraded => self.state[i] = State::Degraded,
                                Started::Failed { fatal, .. } => {
                                    self.failures[i] += 1;
                                    self.apply(i, after_failed_start(self.failures[i], fatal));
                                }
                            }
                        }
                        step @ Step::Stop(..) => {
                            changed = true;
                            self.apply(i, step);
                        }
                    }
                }
                if !changed {
                    return;
                }
            }
            panic!("the node never settled");
        }

        fn apply(&mut self, i: usize, step: Step) {
            match step {
                Step::Stop(then, aux) => (self.state[i], self.aux[i]) = stop_finished(then, aux, false),
                Step::Set(s, aux) => (self.state[i], self.aux[i]) = (s, aux),
                Step::Start | Step::Nothing => {}
            }
        }

        fn event(&mut self, e: &Event) {
            let n = self.deps.len();
            match *e {
                Event::Enable(i) => self.enabled[i % n] = true,
                Event::Disable(i) => self.enabled[i % n] = false,
                Event::Fault(i) if self.state[i % n].is_up() => self.apply(i % n, Step::Stop(Then::Restart, "fault")),
                Event::Fault(_) => {}
                Event::FailNext(i, st) => self.fail_next[i % n] = Some(st),
                Event::Mark(i) if self.state[i % n].is_up() || self.state[i % n] == State::Offline => {
                    self.state[i % n] = State::Maintenance
                }
                Event::Mark(_) => {}
                Event::Clear(i) => {
                    if let Some((s, aux)) = clear(self.state[i % n]) {
                        self.failures[i % n] = 0;
                        (self.state[i % n], self.aux[i % n]) = (s, aux.into());
                    }
                }
            }
            self.settle();
        }

        /// What a settled node must look like.
        #[allow(clippy::needless_range_loop)]
        fn check(&self) {
            let down = self.going_down();
            for i in 0..self.deps.len() {
                let s = self.state[i];
                if !self.enabled[i] {
                    assert!(s == State::Disabled || s == State::Maintenance, "{i} disabled but {s:?}");
                }
                if s.is_up() {
                    assert!(!down[i], "{i} is {s:?} though it should be down");
                }
                // Liveness: enabled, nothing it requires down on purpose, not in
                // maintenance: it runs.
                if self.enabled[i] && !down[i] && s != State::Maintenance {
                    assert!(s.is_up(), "{i} should run but is {s:?} ({})", self.aux[i]);
                }
                assert_ne!(s, State::Uninitialized);
            }
        }
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (0..12usize).prop_map(Event::Enable),
            (0..12usize).prop_map(Event::Disable),
            (0..12usize).prop_map(Event::Fault),
            (0..12usize, prop_oneof![Just(1), Just(95), Just(97), Just(100)]).prop_map(|(i, s)| Event::FailNext(i, s)),
            (0..12usize).prop_map(Event::Mark),
            (0..12usize).prop_map(Event::Clear),
        ]
    }

    proptest! {
        #[test]
        fn a_node_of_instances_keeps_its_invariants(
            raw_deps in proptest::collection::vec(proptest::collection::vec(0..12usize, 0..3), 2..12),
            enabled in proptest::collection::vec(any::<bool>(), 12),
            events in proptest::collection::vec(event(), 0..40),
        ) {
            // A DAG: each instance requires only earlier ones.
            let deps: Vec<Vec<usize>> = raw_deps
                .iter()
                .enumerate()
                .map(|(i, ds)| {
                    let mut v: Vec<usize> = ds.iter().filter(|_| i > 0).map(|d| d % i.max(1)).collect();
                    v.sort();
                    v.dedup();
                    v
                })
                .collect();
            let n = deps.len();
            let mut node = Node::new(deps, enabled[..n].to_vec());
            node.settle();
            node.check();
            for e in &events {
                node.event(e);
                node.check();
            }
        }
    }
}
