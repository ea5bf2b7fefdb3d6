//! svc.startd's control socket and its loop: requests from svcadm and svcs, children's
//! exits, contracts' events and method deadlines, each turn followed by a reconcile.

use super::*;

impl Startd {
    pub(super) fn status(&self) -> Vec<InstStatus> {
        self.insts
            .keys()
            .map(|f| {
                let r = self.run.get(f);
                InstStatus {
                    fmri: f.to_string(),
                    state: r.map(|r| r.state).unwrap_or(State::Uninitialized).as_str().into(),
                    next_state: self.next_state(f).into(),
                    aux: r.map(|r| r.aux.clone()).unwrap_or_default(),
                    stime: r.map(|r| r.stime).unwrap_or(0),
                    enabled: self.enabled(f),
                    temporary: self.temp.contains_key(f),
                    pids: self.contracts.procs(f),
                    contract: self.contracts.dir(f).display().to_string(),
                    log: self.log_path(f).display().to_string(),
                }
            })
            .collect()
    }

    pub(super) fn handle(&mut self, req: Request) -> Response {
        let ok = Response { ok: true, ..Default::default() };
        let fmri_of = |s: &str| -> std::result::Result<Fmri, Response> {
            let f = Fmri::parse(s).map_err(|e| err_response(e.to_string()))?;
            if f.instance.is_none() { Err(err_response(format!("{s} is a service, not an instance"))) } else { Ok(f) }
        };
        macro_rules! inst {
            ($s:expr) => {
                match fmri_of($s) {
                    Ok(f) if self.insts.contains_key(&f) => f,
                    Ok(f) => return err_response(format!("{f}: no such instance")),
                    Err(r) => return r,
                }
            };
        }
        match req {
            Request::Status => return Response { ok: true, error: None, instances: self.status() },
            Request::Reload => {
                // Instances whose definitions changed keep running; new ones appear.
                if let Err(e) = self.load() {
                    return err_response(e.to_string());
                }
            }
            Request::Enable { fmri, temporary } => {
                let f = inst!(&fmri);
                if let Err(e) = self.set_enabled(&f, true, temporary) {
                    return err_response(e.to_string());
                }
            }
            Request::Disable { fmri, temporary } => {
                let f = inst!(&fmri);
                if let Err(e) = self.set_enabled(&f, false, temporary) {
                    return err_response(e.to_string());
                }
            }
            Request::Restart { fmri } => {
                let f = inst!(&fmri);
                // A service's own restart method, when it has one, restarts it in place.
                let restart = self.insts.get(&f).and_then(|i| i.restart.clone());
                if self.up(&f)
                    && let Some(m) = restart
                    && !self.run.get(&f).is_some_and(Run::busy)
                {
                    if let Err(e) = self.run_in_place(&f, Kind::Restart, &m) {
                        self.fault(&f, &e);
                    }
                    self.propagate(&f, Cause::Restart);
                } else if self.up(&f) {
                    self.log(&f, "Stopping because of an administrative restart.");
                    self.begin_stop(&f, Then::Offline, "administrative_request");
                    self.propagate(&f, Cause::Restart);
                }
            }
            Request::Refresh { fmri } => {
                let f = inst!(&fmri);
                // Re-read its definition, then run its refresh method.
                if let Ok(pgs) = self.repo.composed(&f)
                    && let Ok(i) = Inst::from_pgs(&f, &pgs)
                {
                    self.insts.insert(f.clone(), i);
                }
                let refresh = self.insts.get(&f).and_then(|i| i.refresh.clone());
                if self.up(&f)
                    && let Some(m) = refresh
                    && !self.run.get(&f).is_some_and(Run::busy)
                    && let Err(e) = self.run_in_place(&f, Kind::Refresh, &m)
                {
                    self.log(&f, &e);
                }
                self.propagate(&f, Cause::Refresh);
            }
            Request::Clear { fmri } => {
                let f = inst!(&fmri);
                let was = self.state(&f);
                if let Some((state, aux)) = crate::state::clear(was) {
                    if was == State::Maintenance {
                        if let Some(r) = self.run.get_mut(&f) {
                            r.start_failures = 0;
                            r.starts.clear();
                        }
                        // Anything left in the contract goes first.
                        self.contracts.kill(&f, libc::SIGKILL);
                    }
                    self.set_state(&f, state, aux);
                }
            }
            Request::Mark { fmri, state, temporary: _ } => {
                let f = inst!(&fmri);
                match state.as_str() {
                    "maintenance" => {
                        if matches!(self.state(&f), State::Online | State::Degraded)
                            || self.run.get(&f).is_some_and(Run::busy)
                        {
                            self.begin_stop(&f, Then::Maintenance, "administrative_request");
                        } else {
                            self.set_state(&f, State::Maintenance, "administrative_request");
                        }
                    }
                    "degraded" => {
                        if self.state(&f) == State::Online {
                            self.set_state(&f, State::Degraded, "administrative_request");
                        } else {
                            return err_response(format!("{f} is not online"));
                        }
                    }
                    other => return err_response(format!("cannot mark {other:?} (maintenance or degraded)")),
                }
            }
            Request::Shutdown => self.shutting_down = true,
        }
        ok
    }

    pub(super) fn set_enabled(&mut self, f: &Fmri, on: bool, temporary: bool) -> Result<()> {
        if temporary {
            self.temp.insert(f.clone(), on);
        } else {
            self.temp.remove(f);
            self.repo.set_prop(
                f,
                "general",
                "framework",
                "enabled",
                &crate::repo::Prop { ty: "boolean".into(), values: vec![on.to_string()] },
            )?;
            if let Some(i) = self.insts.get_mut(f) {
                i.enabled = on;
            }
        }
        Ok(())
    }

    /// Serves until a shutdown request has stopped everything.
    pub fn serve(mut self) -> Result<()> {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes integers only.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.thread_block().map_err(|e| SvcError::Daemon(format!("block SIGCHLD: {e}")))?;
        let sigfd = SignalFd::with_flags(
            &mask,
            nix::sys::signalfd::SfdFlags::SFD_NONBLOCK | nix::sys::signalfd::SfdFlags::SFD_CLOEXEC,
        )
        .map_err(|e| SvcError::Daemon(format!("signalfd: {e}")))?;
        if let Some(d) = self.paths.socket.parent() {
            std::fs::create_dir_all(d).map_err(|e| SvcError::Io { op: "create", path: d.to_path_buf(), source: e })?;
        }
        let _ = std::fs::remove_file(&self.paths.socket);
        let listener = UnixListener::bind(&self.paths.socket).map_err(|e| SvcError::Io {
            op: "bind",
            path: self.paths.socket.clone(),
            source: e,
        })?;
        // Root's alone: the socket enables, disables and stops every service of the node.
        std::fs::set_permissions(&self.paths.socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(|e| SvcError::Io { op: "chmod", path: self.paths.socket.clone(), source: e })?;
        listener.set_nonblocking(true).map_err(|e| SvcError::Daemon(e.to_string()))?;
        self.reap();
        self.reconcile();
        loop {
            if self.shutting_down
                && self.run.values().all(|r| !r.busy() && !matches!(r.state, State::Online | State::Degraded))
            {
                break;
            }
            let next = self.deadlines();
            let timeout = next
                .map(|d| d.saturating_duration_since(Instant::now()))
                .unwrap_or(std::time::Duration::from_secs(1))
                .min(std::time::Duration::from_secs(1));
            let watched: Vec<(Fmri, usize)> =
                self.run.iter().flat_map(|(f, r)| (0..r.watch.len()).map(move |i| (f.clone(), i))).collect();
            let ready: Vec<bool> = {
                let mut fds = vec![
                    PollFd::new(listener.as_fd(), PollFlags::POLLIN),
                    PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
                ];
                for (f, i) in &watched {
                    if let Some(r) = self.run.get(f) {
                        fds.push(PollFd::new(r.watch[*i].1.as_fd(), PollFlags::POLLIN));
                    }
                }
                let ms = PollTimeout::from(timeout.as_millis().min(1000) as u16);
                match poll(&mut fds, ms) {
                    Ok(_) | Err(nix::Error::EINTR) => {}
                    Err(e) => return Err(SvcError::Daemon(format!("poll: {e}"))),
                }
                fds.iter().map(|p| p.revents().is_some_and(|r| !r.is_empty())).collect()
            };
            if ready.get(1).copied().unwrap_or(false) {
                while let Ok(Some(_)) = sigfd.read_signal() {}
                self.reap();
            }
            let mut to_check = BTreeSet::new();
            for (k, (f, _)) in watched.iter().enumerate() {
                if ready.get(k + 2).copied().unwrap_or(false) {
                    to_check.insert(f.clone());
                }
            }
            for f in to_check {
                self.check_contract(&f);
            }
            if ready.first().copied().unwrap_or(false) {
                // A few connections per turn: a client that polls without pause must not
                // starve the children's exits and the contracts' events.
                for _ in 0..8 {
                    let Ok((stream, _)) = listener.accept() else { break };
                    // And checked again by who is asking, whatever the socket's mode became.
                    let peer = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials);
                    if !peer.is_ok_and(|c| c.uid() == 0) {
                        let mut s = &stream;
                        let _ = writeln!(
                            s,
                            "{}",
                            serde_json::to_string(&err_response("permission denied: root only".into()))
                                .unwrap_or_default()
                        );
                        continue;
                    }
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                    let mut line = String::new();
                    if BufReader::new(&stream).read_line(&mut line).is_err() {
                        continue;
                    }
                    let resp = match serde_json::from_str::<Request>(&line) {
                        Ok(req) => self.handle(req),
                        Err(e) => err_response(format!("bad request: {e}")),
                    };
                    let mut out = serde_json::to_string(&resp).unwrap_or_default();
                    out.push('\n');
                    let mut s = &stream;
                    let _ = s.write_all(out.as_bytes());
                    self.reconcile();
                }
            }
            self.reconcile();
        }
        self.persist();
        let _ = std::fs::remove_file(&self.paths.socket);
        self.contracts.remove_all_empty();
        Ok(())
    }

    /// Runs a method that leaves the instance online (refresh, restart): the method tokens
    /// work as in stop (`:kill [-SIG]` signals the contract, as cron's refresh `:kill -THAW`
    /// asks; `:true` does nothing); anything else is spawned and its exit awaited.
    fn run_in_place(&mut self, f: &Fmri, kind: Kind, m: &Method) -> std::result::Result<(), String> {
        let exec = m.exec.trim();
        if let Some(sig) = exec.strip_prefix(":kill") {
            let sig = sig.trim();
            let n = if sig.is_empty() { Some(libc::SIGTERM) } else { parse_signal(sig) };
            match n {
                Some(n) => {
                    self.log(f, &format!("{} method: sending signal {n} to the contract.", kind.name()));
                    self.contracts.kill(f, n);
                }
                None => {
                    self.log(f, &format!("{} method {exec:?}: no such signal on Linux; nothing sent.", kind.name()))
                }
            }
            return Ok(());
        }
        if exec == ":true" {
            return Ok(());
        }
        let pid = self.spawn(f, kind, m)?;
        if let Some(r) = self.run.get_mut(f) {
            r.method = Some(MethodRun { kind, pid, deadline: m.timeout.map(|t| Instant::now() + t) });
        }
        Ok(())
    }
}

pub(super) fn err_response(e: String) -> Response {
    Response { ok: false, error: Some(e), instances: Vec::new() }
}
