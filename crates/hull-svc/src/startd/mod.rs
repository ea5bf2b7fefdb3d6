//! svc.startd: starts instances once their dependencies allow, watches their contracts,
//! restarts them after faults (into maintenance when they restart too quickly), stops them
//! in dependency order, and answers on its control socket.
//!
//! One thread, one poll loop over the control socket, a signalfd for SIGCHLD (the daemon is
//! a child subreaper, so a daemon's orphans are reaped here) and a pidfd per watched process.
//! Decisions are level-triggered: after every event, [`Startd::reconcile`] looks at every
//! instance and does what its state, its enabled flag and its dependencies call for.

mod deps;
mod server;

use crate::contract::{Contracts, log_line};
use crate::graph::{Duration, Inst, Method};
use crate::manifest::RestartOn;
use crate::proto::{InstStatus, Request, Response};
use crate::repo::{Repo, StateRow};
use crate::{Fmri, Paths, Result, SvcError};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::time::{Instant, SystemTime};

use crate::state::{Facts, Started, Step, Then};
pub use crate::state::{
    SMF_EXIT_ERR_CONFIG, SMF_EXIT_ERR_FATAL, SMF_EXIT_ERR_NOSMF, SMF_EXIT_ERR_PERM, SMF_EXIT_MON_DEGRADE,
    SMF_EXIT_MON_OFFLINE, SMF_EXIT_OK, State,
};

/// How long a `:kill` stop waits for the processes to go before SIGKILL, when the method
/// names no timeout.
const DEFAULT_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Start,
    Stop,
    Refresh,
    Restart,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Start => "start",
            Kind::Stop => "stop",
            Kind::Refresh => "refresh",
            Kind::Restart => "restart",
        }
    }
}

/// Why an instance stops, in illumos's order of restarter errors: a dependent whose
/// restart_on is at least the cause stops with it. (An administrative stop is not
/// propagated this way: dependents that require the instance stop first, by reconcile.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cause {
    Fault,
    Restart,
    Refresh,
}

impl Cause {
    fn reaches(self, r: RestartOn) -> bool {
        match self {
            Cause::Fault => r >= RestartOn::Error,
            Cause::Restart => r >= RestartOn::Restart,
            Cause::Refresh => r >= RestartOn::Refresh,
        }
    }
}

/// Where a stop leads.
#[derive(Debug)]
struct MethodRun {
    kind: Kind,
    pid: i32,
    deadline: Option<Instant>,
}

#[derive(Debug)]
struct StopRun {
    then: Then,
    aux: String,
    /// SIGKILL the contract at this time if it is not empty yet.
    kill_at: Option<Instant>,
    /// The stop method (if any) has finished.
    method_done: bool,
}

#[derive(Debug)]
struct Run {
    state: State,
    aux: String,
    stime: i64,
    starts: Vec<i64>,
    method: Option<MethodRun>,
    stop: Option<StopRun>,
    /// Watched processes: the contract's members (or a child service's process).
    watch: Vec<(i32, OwnedFd)>,
    /// A child service's process (duration child), from its start until its stop ends:
    /// its exit is the service's, whichever of its pidfd and SIGCHLD is seen first.
    service_pid: Option<i32>,
    start_failures: u32,
    retry_at: Option<Instant>,
}

impl Run {
    fn new(state: State) -> Run {
        Run {
            state,
            aux: "none".into(),
            stime: now_s(),
            starts: Vec::new(),
            method: None,
            stop: None,
            watch: Vec::new(),
            service_pid: None,
            start_failures: 0,
            retry_at: None,
        }
    }
    fn busy(&self) -> bool {
        self.method.is_some() || self.stop.is_some()
    }
}

fn now_s() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative return is a new fd that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

pub struct Startd {
    paths: Paths,
    repo: Repo,
    insts: BTreeMap<Fmri, Inst>,
    run: BTreeMap<Fmri, Run>,
    /// `svcadm enable -t` / `disable -t`: gone when the daemon restarts.
    temp: BTreeMap<Fmri, bool>,
    contracts: Contracts,
    children: HashMap<i32, (Fmri, Kind)>,
    dirty: BTreeSet<Fmri>,
    /// Time spent in fork and exec of methods, for HULL_LOG=debug's per-phase figures.
    spawn_time: std::time::Duration,
    shutting_down: bool,
    /// Instances on their way down on purpose, with everything that requires them: worked
    /// out afresh on each pass (see [`Startd::going_down`]).
    down: BTreeSet<Fmri>,
}

impl Startd {
    /// Opens the repository and takes over what a previous daemon left: instances whose
    /// contracts still have processes are online again, not started twice.
    pub fn new(paths: Paths) -> Result<Startd> {
        let repo = Repo::open(&paths.repo)?;
        std::fs::create_dir_all(&paths.logs).map_err(|e| SvcError::Io {
            op: "create",
            path: paths.logs.clone(),
            source: e,
        })?;
        let contracts = Contracts::new(&paths.cgroup);
        let mut d = Startd {
            paths,
            repo,
            insts: BTreeMap::new(),
            run: BTreeMap::new(),
            temp: BTreeMap::new(),
            contracts,
            children: HashMap::new(),
            dirty: BTreeSet::new(),
            spawn_time: std::time::Duration::ZERO,
            shutting_down: false,
            down: BTreeSet::new(),
        };
        d.load()?;
        Ok(d)
    }

    fn log_path(&self, f: &Fmri) -> std::path::PathBuf {
        self.paths.logs.join(f.log_name())
    }

    fn log(&self, f: &Fmri, text: &str) {
        log_line(&self.log_path(f), text);
    }

    /// Reads the repository; adopts running contracts; keeps the runtime state of
    /// instances already known.
    fn load(&mut self) -> Result<()> {
        self.insts = crate::graph::load(&self.repo)?;
        let cycles = crate::graph::cycles(&self.insts);
        let in_cycle: BTreeSet<Fmri> = cycles.iter().flatten().cloned().collect();
        let rows = self.repo.states()?;
        for (f, inst) in &self.insts {
            if self.run.contains_key(f) {
                continue;
            }
            let row = rows.get(&f.to_string()).cloned().unwrap_or_default();
            let procs = self.contracts.procs(f);
            let mut r = Run::new(State::Uninitialized);
            r.starts = row.starts.clone();
            if !procs.is_empty() {
                r.state = if row.state == "degraded" { State::Degraded } else { State::Online };
                r.aux = "none".into();
                r.stime = if row.stime > 0 { row.stime } else { now_s() };
                r.watch = procs.iter().filter_map(|p| Some((*p, pidfd(*p)?))).collect();
                tracing::info!(%f, pids = ?procs, "adopting a running contract");
            } else if row.state == "maintenance" {
                r.state = State::Maintenance;
                r.aux = row.aux.clone();
                r.stime = row.stime;
            } else if row.state == "online" && inst.duration == Duration::Transient {
                r.state = State::Online;
                r.stime = row.stime;
            }
            if in_cycle.contains(f) {
                r.state = State::Maintenance;
                r.aux = "dependency_cycle".into();
            }
            self.run.insert(f.clone(), r);
            self.dirty.insert(f.clone());
        }
        // Instances deleted from the repository: stop what they left.
        let gone: Vec<Fmri> = self.run.keys().filter(|f| !self.insts.contains_key(f)).cloned().collect();
        for f in gone {
            self.contracts.kill(&f, libc::SIGKILL);
            self.contracts.remove(&f);
            self.run.remove(&f);
        }
        for c in &cycles {
            let names: Vec<String> = c.iter().map(ToString::to_string).collect();
            tracing::warn!("dependency cycle: {}", names.join(" -> "));
        }
        Ok(())
    }

    fn enabled(&self, f: &Fmri) -> bool {
        self.temp.get(f).copied().unwrap_or_else(|| self.insts.get(f).is_some_and(|i| i.enabled))
    }

    fn state(&self, f: &Fmri) -> State {
        self.run.get(f).map(|r| r.state).unwrap_or(State::Uninitialized)
    }

    fn set_state(&mut self, f: &Fmri, s: State, aux: &str) {
        if let Some(r) = self.run.get_mut(f) {
            if r.state != s {
                r.stime = now_s();
                hull_exec::probes::svc_state(&f.to_string(), r.state.as_str(), s.as_str());
            }
            r.state = s;
            r.aux = aux.to_string();
            self.dirty.insert(f.clone());
        }
    }

    // ------------------------------------------------------------------ methods

    /// Runs a method in the instance's contract ([`crate::spawn`]: the command itself when
    /// it is one plain command, else `/bin/sh -c "exec ..."`).
    fn spawn(&mut self, f: &Fmri, kind: Kind, m: &Method) -> std::result::Result<i32, String> {
        let exec = self.expand_tokens(f, kind, &m.exec)?;
        // One open of the log: the line saying what runs, then the method's own output.
        let mut log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(f)).map_err(|e| e.to_string())?;
        let _ = writeln!(log, "[ {} Executing {} method (\"{exec}\"). ]", crate::contract::timestamp(), kind.name());
        let procs = self.contracts.prepare(f).map_err(|e| e.to_string())?;
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into()),
            ("SMF_FMRI".into(), f.to_string()),
            ("SMF_METHOD".into(), kind.name().into()),
            ("SMF_RESTARTER".into(), crate::graph::STARTD.into()),
            ("SMF_ZONENAME".into(), "global".into()),
        ];
        env.extend(self.paths.env.iter().cloned());
        env.extend(m.environment.iter().cloned());
        let (mut uid, mut gid) = (None, None);
        if let Some(u) = &m.user {
            let user = nix::unistd::User::from_name(u).ok().flatten().ok_or(format!("no user {u:?}"))?;
            (uid, gid) = (Some(user.uid.as_raw()), Some(user.gid.as_raw()));
            env.push(("HOME".into(), user.dir.to_string_lossy().into_owned()));
            env.push(("LOGNAME".into(), u.clone()));
            env.push(("USER".into(), u.clone()));
        }
        if let Some(g) = &m.group {
            let group = nix::unistd::Group::from_name(g).ok().flatten().ok_or(format!("no group {g:?}"))?;
            gid = Some(group.gid.as_raw());
        }
        let mut groups = Vec::new();
        for g in &m.supp_groups {
            let group = nix::unistd::Group::from_name(g).ok().flatten().ok_or(format!("no group {g:?}"))?;
            groups.push(group.gid.as_raw());
        }
        if !groups.is_empty() && gid.is_none() {
            gid = Some(0);
        }
        if let Some(p) = &m.profile {
            self.log(f, &format!("method_profile {p:?} is not applied: Linux has no RBAC profiles."));
        }
        let t = Instant::now();
        let pid = crate::spawn::spawn(&crate::spawn::Spawn {
            exec: &exec,
            env,
            cwd: m.working_directory.as_deref().unwrap_or("/"),
            uid,
            gid,
            groups,
            log: &log,
            procs: &procs,
        })
        .map_err(|e| format!("cannot run the {} method: {e}", kind.name()))?;
        self.spawn_time += t.elapsed();
        self.children.insert(pid, (f.clone(), kind));
        Ok(pid)
    }

    /// The method's exec as smf_method(7) expands it ([`crate::method`]).
    fn expand_tokens(&self, f: &Fmri, kind: Kind, exec: &str) -> std::result::Result<String, String> {
        let t = crate::method::Tokens { restarter: "svc.startd", method: kind.name(), fmri: f };
        crate::method::expand(exec, &t, &|pg, prop| self.repo.prop(f, pg, prop).ok().flatten().map(|p| p.values))
            .map_err(|e| format!("{} method: cannot expand its exec: {e}", kind.name()))
    }

    fn begin_start(&mut self, f: &Fmri) {
        let Some(inst) = self.insts.get(f).cloned() else { return };
        let Some(m) = inst.start.clone() else {
            self.set_state(f, State::Maintenance, "method_missing");
            self.log(f, "Method property group 'start' is not present.");
            return;
        };
        if let Some(r) = self.run.get_mut(f) {
            r.starts.push(now_ms());
            let keep = r.starts.len().saturating_sub(16);
            r.starts.drain(..keep);
            r.retry_at = None;
        }
        self.dirty.insert(f.clone());
        if m.exec.trim() == ":true" {
            self.start_succeeded(f);
            return;
        }
        match self.spawn(f, Kind::Start, &m) {
            Ok(pid) => {
                let deadline = m.timeout.map(|t| Instant::now() + t);
                if let Some(r) = self.run.get_mut(f) {
                    r.method = Some(MethodRun { kind: Kind::Start, pid, deadline });
                }
                if inst.duration == Duration::Child {
                    // The method's process is the service.
                    if let Some(r) = self.run.get_mut(f) {
                        r.method = None;
                        r.service_pid = Some(pid);
                        if let Some(fd) = pidfd(pid) {
                            r.watch = vec![(pid, fd)];
                        }
                    }
                    self.start_succeeded(f);
                }
            }
            Err(e) => {
                self.log(f, &e);
                self.set_state(f, State::Maintenance, "method_failed");
            }
        }
    }

    fn start_succeeded(&mut self, f: &Fmri) {
        if let Some(r) = self.run.get_mut(f) {
            r.start_failures = 0;
        }
        self.set_state(f, State::Online, "none");
    }

    fn begin_stop(&mut self, f: &Fmri, then: Then, aux: &str) {
        let Some(inst) = self.insts.get(f).cloned() else { return };
        let Some(r) = self.run.get_mut(f) else { return };
        if let Some(s) = &mut r.stop {
            // Already stopping: a stronger reason wins (disable over restart).
            if matches!(then, Then::Disabled | Then::Maintenance) {
                s.then = then;
                s.aux = aux.to_string();
            }
            return;
        }
        // A start method still running is cut short.
        let killing_start = r.method.as_ref().is_some_and(|m| m.kind == Kind::Start);
        r.stop = Some(StopRun { then, aux: aux.to_string(), kill_at: None, method_done: false });
        self.dirty.insert(f.clone());
        if killing_start {
            self.contracts.kill(f, libc::SIGKILL);
            return;
        }
        let m = inst.stop.clone();
        let timeout = m.as_ref().and_then(|m| m.timeout).unwrap_or(DEFAULT_STOP_TIMEOUT);
        match m {
            Some(m) if m.exec.trim().starts_with(":kill") => {
                let e = m.exec.trim();
                let sig = e.strip_prefix(":kill").map(str::trim).and_then(parse_signal).unwrap_or(libc::SIGTERM);
                self.log(f, &format!("Stopping: sending signal {sig} to the contract."));
                self.contracts.kill(f, sig);
                if let Some(s) = self.run.get_mut(f).and_then(|r| r.stop.as_mut()) {
                    s.method_done = true;
                    s.kill_at = Some(Instant::now() + timeout);
                }
            }
            Some(m) if m.exec.trim() == ":true" => {
                if let Some(s) = self.run.get_mut(f).and_then(|r| r.stop.as_mut()) {
                    s.method_done = true;
                    s.kill_at = Some(Instant::now());
                }
            }
            Some(m) => match self.spawn(f, Kind::Stop, &m) {
                Ok(pid) => {
                    if let Some(r) = self.run.get_mut(f) {
                        r.method = Some(MethodRun { kind: Kind::Stop, pid, deadline: Some(Instant::now() + timeout) });
                    }
                }
                Err(e) => {
                    self.log(f, &e);
                    if let Some(s) = self.run.get_mut(f).and_then(|r| r.stop.as_mut()) {
                        s.method_done = true;
                        s.kill_at = Some(Instant::now());
                    }
                }
            },
            None => {
                if let Some(s) = self.run.get_mut(f).and_then(|r| r.stop.as_mut()) {
                    s.method_done = true;
                    s.kill_at = Some(Instant::now());
                }
            }
        }
    }

    /// A stop whose method is done and whose contract is empty is finished.
    fn try_finish_stop(&mut self, f: &Fmri) -> bool {
        let Some(r) = self.run.get(f) else { return false };
        let Some(s) = &r.stop else { return false };
        if !s.method_done || r.method.is_some() {
            return false;
        }
        if !self.contracts.procs(f).is_empty() {
            return false;
        }
        let (then, aux) = (s.then, s.aux.clone());
        let starts = r.starts.clone();
        if let Some(r) = self.run.get_mut(f) {
            r.stop = None;
            r.watch.clear();
            r.service_pid = None;
        }
        self.contracts.remove(f);
        let too_quick = then == Then::Restart && self.insts.get(f).is_some_and(|i| i.rate.too_quick(&starts));
        let (state, aux) = crate::state::stop_finished(then, &aux, too_quick);
        if too_quick {
            self.log(f, "Restarting too quickly, changing state to maintenance.");
        }
        self.set_state(f, state, &aux);
        true
    }

    fn fault(&mut self, f: &Fmri, why: &str) {
        self.log(f, why);
        self.begin_stop(f, Then::Restart, "fault");
        self.propagate(f, Cause::Fault);
    }

    fn method_exited(&mut self, f: &Fmri, kind: Kind, pid: i32, status: i32) {
        self.log(f, &format!("Method \"{}\" exited with status {status}.", kind.name()));
        let Some(inst) = self.insts.get(f).cloned() else { return };
        let stopping = self.run.get(f).is_some_and(|r| r.stop.is_some());
        if let Some(r) = self.run.get_mut(f)
            && r.method.as_ref().is_some_and(|m| m.pid == pid)
        {
            r.method = None;
        }
        match kind {
            Kind::Stop => {
                if let Some(s) = self.run.get_mut(f).and_then(|r| r.stop.as_mut()) {
                    s.method_done = true;
                    // Whatever the stop method left is killed now.
                    s.kill_at = Some(Instant::now());
                }
            }
            Kind::Refresh => {}
            Kind::Restart if status != 0 && !stopping => {
                self.fault(f, &format!("Restart method exited with status {status}."));
            }
            Kind::Restart => {}
            Kind::Start if inst.duration == Duration::Child => {
                // The service itself exited.
                if !stopping {
                    self.fault(f, &format!("Stopping because the service process exited with status {status}."));
                } else if let Some(s) = self.run.get_mut(f).and_then(|r| r.stop.as_mut()) {
                    s.kill_at = Some(Instant::now());
                }
            }
            Kind::Start => {
                if stopping {
                    if let Some(s) = self.run.get_mut(f).and_then(|r| r.stop.as_mut()) {
                        s.method_done = true;
                        s.kill_at = Some(Instant::now());
                    }
                    return;
                }
                let transient = inst.duration == Duration::Transient;
                let procs = if transient || status != SMF_EXIT_OK { Vec::new() } else { self.contracts.procs(f) };
                match crate::state::start_exited(status, transient, !procs.is_empty()) {
                    Started::Online => {
                        if let Some(r) = self.run.get_mut(f)
                            && !transient
                        {
                            r.watch = procs.iter().filter_map(|p| Some((*p, pidfd(*p)?))).collect();
                        }
                        self.start_succeeded(f);
                    }
                    Started::Degraded => self.set_state(f, State::Degraded, "method_degraded"),
                    Started::Failed { why, fatal } => self.start_failed(f, &why, fatal),
                }
            }
        }
    }

    fn start_failed(&mut self, f: &Fmri, why: &str, fatal: bool) {
        self.log(f, why);
        self.contracts.kill(f, libc::SIGKILL);
        let failures = self.run.get_mut(f).map(|r| {
            r.start_failures += 1;
            r.start_failures
        });
        match crate::state::after_failed_start(failures.unwrap_or(0), fatal) {
            Step::Stop(Then::Maintenance, aux) => {
                self.log(f, "Method \"start\" failed repeatedly or fatally, changing state to maintenance.");
                self.begin_stop(f, Then::Maintenance, aux);
            }
            Step::Stop(then, aux) => {
                if let Some(r) = self.run.get_mut(f) {
                    r.retry_at = Some(Instant::now() + std::time::Duration::from_millis(100));
                }
                self.begin_stop(f, then, aux);
            }
            Step::Set(state, aux) => self.set_state(f, state, &aux),
            Step::Start | Step::Nothing => {}
        }
    }

    // ------------------------------------------------------------------ the loop

    /// Moves every instance toward what it should be; repeats until nothing changes.
    pub fn reconcile(&mut self) {
        let t0 = Instant::now();
        let spawn0 = self.spawn_time;
        let mut rounds = 0;
        for _ in 0..1000 {
            rounds += 1;
            let mut changed = false;
            self.down = self.going_down();
            let fmris: Vec<Fmri> = self.insts.keys().cloned().collect();
            for f in &fmris {
                changed |= self.try_finish_stop(f);
                let Some(r) = self.run.get(f) else { continue };
                if r.busy() {
                    continue;
                }
                // Another restarter's instance (inetd's): svc.startd does not run it, and
                // hull has no inetd; it stays uninitialized, as under a restarter that is
                // not running (`svcs -x` says why).
                if self.insts.get(f).is_some_and(|i| i.restarter.is_some()) {
                    continue;
                }
                // Each fact is gathered only where the decision reads it: the dependents'
                // walk is a scan of every instance, and a running instance that has no
                // reason to stop needs none (500 online services made it 250,000 steps a
                // round, and a killed service's restart 20 ms).
                let enabled = self.enabled(f) && !self.shutting_down;
                let must_stop = r.state.is_up() && self.must_stop_for_deps(f);
                let facts = Facts {
                    state: r.state,
                    enabled,
                    waiting_for: if r.state == State::Offline { self.unsatisfied(f) } else { None },
                    retry_ok: r.retry_at.is_none_or(|t| Instant::now() >= t),
                    must_stop,
                    dependents_running: r.state.is_up()
                        && (!enabled || must_stop)
                        && !self.running_dependents(f).is_empty(),
                    aux: r.aux.clone(),
                };
                match crate::state::reconcile(&facts) {
                    Step::Nothing => {}
                    Step::Set(state, aux) => {
                        // Saying what an offline instance waits for is not progress.
                        changed |= state != facts.state;
                        self.set_state(f, state, &aux);
                    }
                    Step::Start => {
                        self.begin_start(f);
                        changed = true;
                    }
                    Step::Stop(then, aux) => {
                        self.begin_stop(f, then, aux);
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        let t1 = Instant::now();
        self.persist();
        if rounds > 1 {
            tracing::debug!(
                rounds,
                total_ms = t0.elapsed().as_secs_f64() * 1e3,
                spawn_ms = (self.spawn_time - spawn0).as_secs_f64() * 1e3,
                persist_ms = t1.elapsed().as_secs_f64() * 1e3,
                "reconcile"
            );
        }
    }

    fn persist(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let rows: Vec<(String, StateRow)> = std::mem::take(&mut self.dirty)
            .into_iter()
            .filter_map(|f| {
                let r = self.run.get(&f)?;
                Some((
                    f.to_string(),
                    StateRow {
                        state: r.state.as_str().into(),
                        next_state: self.next_state(&f).into(),
                        aux: r.aux.clone(),
                        stime: r.stime,
                        starts: r.starts.clone(),
                    },
                ))
            })
            .collect();
        if let Err(e) = self.repo.put_states(&rows) {
            tracing::warn!("recording states: {e}");
        }
    }

    fn next_state(&self, f: &Fmri) -> &'static str {
        let Some(r) = self.run.get(f) else { return "-" };
        if let Some(s) = &r.stop {
            return match s.then {
                Then::Disabled => "disabled",
                Then::Maintenance => "maintenance",
                _ => "offline",
            };
        }
        match &r.method {
            Some(m) if m.kind == Kind::Start => "online",
            _ => "-",
        }
    }

    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.exited(pid.as_raw(), code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => self.exited(pid.as_raw(), 128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    fn exited(&mut self, pid: i32, status: i32) {
        if let Some((f, kind)) = self.children.remove(&pid) {
            let Some(r) = self.run.get(&f) else { return };
            let is_method = r.method.as_ref().is_some_and(|m| m.pid == pid);
            // A child service's process is the service while the instance runs; an exit that
            // arrives after its stop finished is old news. (Not judged by the pidfd watch:
            // a pidfd that fires before SIGCHLD is read drops the pid from the watch, and the
            // service's death was then missed.)
            let is_child_service = kind == Kind::Start
                && self.insts.get(&f).is_some_and(|i| i.duration == Duration::Child)
                && r.service_pid == Some(pid);
            if is_method || is_child_service {
                self.method_exited(&f, kind, pid, status);
            }
        }
    }

    /// A watched process ended: is the contract empty now?
    fn check_contract(&mut self, f: &Fmri) {
        let procs = self.contracts.procs(f);
        let Some(r) = self.run.get_mut(f) else { return };
        r.watch.retain(|(p, _)| procs.contains(p));
        for p in &procs {
            if !r.watch.iter().any(|(w, _)| w == p)
                && let Some(fd) = pidfd(*p)
            {
                r.watch.push((*p, fd));
            }
        }
        let idle = r.stop.is_none() && r.method.is_none();
        let online = matches!(r.state, State::Online | State::Degraded);
        let child = self.insts.get(f).is_some_and(|i| i.duration == Duration::Child);
        if procs.is_empty()
            && idle
            && online
            && !child
            && self.insts.get(f).is_some_and(|i| i.duration == Duration::Contract)
        {
            self.fault(f, "Stopping because all processes in service exited.");
        }
    }

    fn deadlines(&mut self) -> Option<Instant> {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut expired_methods = Vec::new();
        let mut expired_stops = Vec::new();
        for (f, r) in &self.run {
            if let Some(m) = &r.method
                && let Some(d) = m.deadline
            {
                if d <= now {
                    expired_methods.push((f.clone(), m.kind))
                } else {
                    next = Some(next.map_or(d, |n| n.min(d)))
                }
            }
            if let Some(s) = &r.stop
                && let Some(d) = s.kill_at
            {
                if d <= now { expired_stops.push(f.clone()) } else { next = Some(next.map_or(d, |n| n.min(d))) }
            }
            if let Some(d) = r.retry_at {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
        }
        for (f, kind) in expired_methods {
            self.log(&f, &format!("Method \"{}\" timed out: killing the contract.", kind.name()));
            self.contracts.kill(&f, libc::SIGKILL);
            if let Some(m) = self.run.get_mut(&f).and_then(|r| r.method.as_mut()) {
                m.deadline = None;
            }
        }
        for f in expired_stops {
            if !self.contracts.procs(&f).is_empty() {
                self.log(&f, "Stop timed out or left processes: sending SIGKILL to the contract.");
                self.contracts.kill(&f, libc::SIGKILL);
            }
            if let Some(s) = self.run.get_mut(&f).and_then(|r| r.stop.as_mut()) {
                // Check again shortly: killed processes take a moment to leave the cgroup.
                s.kill_at = Some(now + std::time::Duration::from_millis(20));
                next = Some(next.map_or(now + std::time::Duration::from_millis(20), |n| {
                    n.min(now + std::time::Duration::from_millis(20))
                }));
            }
        }
        next
    }
}

fn parse_signal(s: &str) -> Option<i32> {
    let s = s.trim_start_matches('-');
    if s.is_empty() {
        return None;
    }
    if let Ok(n) = s.parse() {
        return Some(n);
    }
    let name = if s.starts_with("SIG") { s.to_string() } else { format!("SIG{s}") };
    name.parse::<Signal>().ok().map(|s| s as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_signals() {
        assert_eq!(parse_signal("-9"), Some(9));
        assert_eq!(parse_signal("-TERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("-SIGHUP"), Some(libc::SIGHUP));
        assert_eq!(parse_signal(""), None);
    }

    #[test]
    fn restart_on_reaches_by_level() {
        assert!(!Cause::Fault.reaches(RestartOn::None));
        assert!(Cause::Fault.reaches(RestartOn::Error));
        assert!(!Cause::Restart.reaches(RestartOn::Error));
        assert!(Cause::Restart.reaches(RestartOn::Refresh));
        assert!(!Cause::Refresh.reaches(RestartOn::Restart));
    }
}
