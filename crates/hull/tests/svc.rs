//! The service manager: real processes under a real svc.startd, one daemon and one cgroup
//! tree per test (each test has its own node prefix).

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Smf {
    node: TestNode,
    prefix: String,
    daemon: Option<Child>,
}

fn prefix() -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut x = (n as u64) ^ (std::process::id() as u64) << 20;
    let mut s = String::from("hs");
    for _ in 0..6 {
        s.push(alphabet[(x % 36) as usize] as char);
        x /= 36;
    }
    s
}

impl Smf {
    fn new() -> Smf {
        Smf { node: TestNode::bare(), prefix: prefix(), daemon: None }
    }

    fn root(&self) -> &Path {
        self.node.root()
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(HULL);
        c.env("HULL_ROOT", self.root()).env("HULL_NODE", &self.prefix).env_remove("HULL_FAILPOINT");
        c
    }

    fn run(&self, args: &[&str]) -> Run {
        common::bounded(self.cmd().args(args))
    }

    fn start_daemon(&mut self) {
        let log_path =
            self.root().join(format!("startd-{}.log", self.root().read_dir().map(|d| d.count()).unwrap_or(0)));
        let log = std::fs::File::create(&log_path).expect("log");
        let child =
            self.cmd().arg("svc.startd").stdout(log.try_clone().expect("log")).stderr(log).spawn().expect("svc.startd");
        self.daemon = Some(child);
        let sock = self.root().join("var/hull/svc/startd.sock");
        let t = Instant::now();
        while !sock.exists() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            sock.exists(),
            "svc.startd did not come up: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }

    fn kill_daemon(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        let _ = std::fs::remove_file(self.root().join("var/hull/svc/startd.sock"));
    }

    /// Writes a manifest and imports it.
    fn import(&self, name: &str, xml: &str) -> Run {
        let p = self.root().join(name);
        std::fs::write(&p, xml).expect("write manifest");
        self.run(&["svccfg", "import", &p.to_string_lossy()])
    }

    fn state(&self, fmri: &str) -> String {
        let out = self.run(&["svcs", "-H", "-o", "state", fmri]).ok();
        out.trim().to_string()
    }

    fn wait_state(&self, fmri: &str, want: &str) {
        let t = Instant::now();
        let mut last = String::new();
        while t.elapsed() < Duration::from_secs(15) {
            last = self.state(fmri);
            if last == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let x = self.run(&["svcs", "-xv", fmri]).stdout;
        panic!("{fmri} is {last}, not {want}\n{x}");
    }

    fn pids(&self, fmri: &str) -> Vec<i32> {
        let dir = self.contract_dir(fmri);
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    fn contract_dir(&self, fmri: &str) -> PathBuf {
        let f = hull_svc::Fmri::parse(fmri).expect("fmri");
        hull_svc::contract::Contracts::new(&format!("{}-svc", self.prefix)).dir(&f)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.root().join(name)
    }
}

impl Drop for Smf {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            let _ = self.run(&["svcadm", "shutdown"]);
            let t = Instant::now();
            while let Some(d) = self.daemon.as_mut() {
                if d.try_wait().ok().flatten().is_some() || t.elapsed() > Duration::from_secs(10) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            self.kill_daemon();
        }
        // Whatever is left in this node's contracts goes.
        let base = hull_svc::contract::Contracts::new(&format!("{}-svc", self.prefix));
        for (_, pids) in base.live() {
            for p in pids {
                // SAFETY: kill takes two integers.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
        std::thread::sleep(Duration::from_millis(50));
        base.remove_all_empty();
    }
}

/// An SMF manifest for one service: `deps` are (name, grouping, restart_on, fmri).
fn manifest(
    name: &str,
    start: &str,
    stop: &str,
    duration: &str,
    deps: &[(&str, &str, &str, &str)],
    extra: &str,
) -> String {
    let deps: String = deps
        .iter()
        .map(|(n, g, r, f)| {
            let fmris: String = f.split(' ').map(|f| format!("      <service_fmri value='{f}'/>\n")).collect();
            format!(
                "    <dependency name='{n}' grouping='{g}' restart_on='{r}' type='service'>\n{fmris}    </dependency>\n"
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0"?>
<!DOCTYPE service_bundle SYSTEM "/usr/share/lib/xml/dtd/service_bundle.dtd.1">
<service_bundle type="manifest" name="test:{name}">
  <service name="{name}" type="service" version="1">
    <create_default_instance enabled="true"/>
    <single_instance/>
{deps}    <exec_method type="method" name="start" exec="{start}" timeout_seconds="10"/>
    <exec_method type="method" name="stop" exec="{stop}" timeout_seconds="3"/>
    <property_group name="startd" type="framework">
      <propval name="duration" type="astring" value="{duration}"/>
    </property_group>
{extra}  </service>
</service_bundle>
"#
    )
}

/// A contract service whose methods note their order in `order`.
fn ordered(name: &str, order: &Path, deps: &[(&str, &str, &str, &str)]) -> String {
    let o = order.display();
    let short = name.rsplit('/').next().unwrap_or(name);
    manifest(
        name,
        &format!("/bin/sh -c 'echo start-{short} &gt;&gt; {o}; sleep 1000 &amp;'"),
        &format!("/bin/sh -c 'echo stop-{short} &gt;&gt; {o}'"),
        "contract",
        deps,
        "",
    )
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p).unwrap_or_default().lines().map(String::from).collect()
}

#[test]
fn dependencies_order_start_and_stop() {
    let mut s = Smf::new();
    let order = s.file("order");
    s.import("a.xml", &ordered("test/a", &order, &[])).ok();
    s.import("b.xml", &ordered("test/b", &order, &[("a", "require_all", "none", "svc:/test/a")])).ok();
    s.import("c.xml", &ordered("test/c", &order, &[("b", "require_all", "none", "svc:/test/b:default")])).ok();
    s.start_daemon();
    s.wait_state("svc:/test/c:default", "online");
    assert_eq!(lines(&order), vec!["start-a", "start-b", "start-c"]);
    // Disabling the root stops its dependents first, leaves first.
    s.run(&["svcadm", "disable", "-s", "test/a"]).ok();
    assert_eq!(&lines(&order)[3..], &["stop-c", "stop-b", "stop-a"]);
    assert_eq!(s.state("svc:/test/c:default"), "offline");
    assert!(s.pids("svc:/test/b:default").is_empty(), "the contract is empty after a stop");
    let x = s.run(&["svcs", "-x", "test/c"]).ok();
    assert!(x.contains("Dependency svc:/test/a:default is not running: Disabled by an administrator."), "{x}");
    s.run(&["svcadm", "enable", "-s", "test/a"]).ok();
    s.wait_state("svc:/test/c:default", "online");
    assert_eq!(&lines(&order)[6..], &["start-a", "start-b", "start-c"]);
}

#[test]
fn each_grouping_gates_as_smf_does() {
    let mut s = Smf::new();
    let sleeper = |n: &str, deps: &[(&str, &str, &str, &str)]| manifest(n, "sleep 1000", ":kill", "child", deps, "");
    s.import("x.xml", &sleeper("test/x", &[])).ok();
    s.import("y.xml", &sleeper("test/y", &[])).ok();
    s.import("any.xml", &sleeper("test/any", &[("xy", "require_any", "none", "svc:/test/x svc:/test/y")])).ok();
    s.import("opt.xml", &sleeper("test/opt", &[("x", "optional_all", "none", "svc:/test/x")])).ok();
    s.import("excl.xml", &sleeper("test/excl", &[("x", "exclude_all", "none", "svc:/test/x")])).ok();
    s.start_daemon();
    s.wait_state("svc:/test/any:default", "online");
    s.wait_state("svc:/test/opt:default", "online");
    s.wait_state("svc:/test/excl:default", "offline");
    // require_any: one of x and y is enough; neither is not.
    s.run(&["svcadm", "disable", "-s", "test/x"]).ok();
    s.wait_state("svc:/test/excl:default", "online");
    assert_eq!(s.state("svc:/test/any:default"), "online");
    assert_eq!(s.state("svc:/test/opt:default"), "online", "optional_all on a disabled service");
    s.run(&["svcadm", "disable", "-s", "test/y"]).ok();
    s.wait_state("svc:/test/any:default", "offline");
    // exclude_all: x coming back takes excl down, as illumos propagates a start to the
    // dependents that exclude it.
    s.run(&["svcadm", "enable", "-s", "test/x"]).ok();
    s.wait_state("svc:/test/excl:default", "offline");
    s.wait_state("svc:/test/any:default", "online");
}

#[test]
fn restart_on_propagates_by_level_and_a_forking_daemon_is_followed() {
    let mut s = Smf::new();
    // A daemon that forks twice and whose parent exits: only its cgroup knows it.
    s.import("db.xml", &manifest("test/db", "/bin/sh -c '(sleep 1000 &amp;) ; exit 0'", ":kill", "contract", &[], ""))
        .ok();
    s.import(
        "err.xml",
        &manifest("test/onerr", "sleep 1000", ":kill", "child", &[("db", "require_all", "error", "svc:/test/db")], ""),
    )
    .ok();
    s.import(
        "none.xml",
        &manifest("test/onnone", "sleep 1000", ":kill", "child", &[("db", "require_all", "none", "svc:/test/db")], ""),
    )
    .ok();
    s.import(
        "rst.xml",
        &manifest(
            "test/onrestart",
            "sleep 1000",
            ":kill",
            "child",
            &[("db", "require_all", "restart", "svc:/test/db")],
            "",
        ),
    )
    .ok();
    s.start_daemon();
    for f in ["test/onerr", "test/onnone", "test/onrestart"] {
        s.wait_state(&format!("svc:/{f}:default"), "online");
    }
    let before = |f: &str| s.pids(&format!("svc:/{f}:default"));
    let (db0, err0, none0, rst0) =
        (before("test/db"), before("test/onerr"), before("test/onnone"), before("test/onrestart"));
    assert_eq!(db0.len(), 1, "the grandchild is the contract's only process");
    // A fault: the daemon dies.
    // SAFETY: kill takes two integers.
    unsafe { libc::kill(db0[0], libc::SIGKILL) };
    let t = Instant::now();
    while (before("test/db") == db0 || before("test/db").is_empty()) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    s.wait_state("svc:/test/db:default", "online");
    s.wait_state("svc:/test/onerr:default", "online");
    s.wait_state("svc:/test/onrestart:default", "online");
    assert_ne!(before("test/db"), db0, "db was restarted");
    assert_ne!(before("test/onerr"), err0, "restart_on=error restarts on a fault");
    assert_ne!(before("test/onrestart"), rst0, "restart_on=restart includes faults");
    assert_eq!(before("test/onnone"), none0, "restart_on=none keeps running");
    // An administrative restart reaches restart_on=restart, not error.
    let (err1, rst1) = (before("test/onerr"), before("test/onrestart"));
    s.run(&["svcadm", "restart", "test/db"]).ok();
    let t = Instant::now();
    while before("test/onrestart") == rst1 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    s.wait_state("svc:/test/onrestart:default", "online");
    assert_ne!(before("test/onrestart"), rst1);
    assert_eq!(before("test/onerr"), err1, "restart_on=error ignores a restart");
}

#[test]
fn a_crashing_service_goes_to_maintenance_and_clear_brings_it_back() {
    let mut s = Smf::new();
    let flag = s.file("healthy");
    // Exits at once until the flag exists.
    let start = format!("/bin/sh -c 'test -e {} &amp;&amp; exec sleep 1000; exit 1'", flag.display());
    let extra = "    <property_group name='app' type='application'>\n      <propval name='x' type='astring' value='y'/>\n    </property_group>\n";
    s.import("crash.xml", &manifest("test/crash", &start, ":kill", "child", &[], extra)).ok();
    s.import(
        "dep.xml",
        &manifest("test/dep", "sleep 1000", ":kill", "child", &[("c", "require_all", "none", "svc:/test/crash")], ""),
    )
    .ok();
    s.start_daemon();
    s.wait_state("svc:/test/crash:default", "maintenance");
    let x = s.run(&["svcs", "-xv"]).ok();
    assert!(x.contains("svc:/test/crash:default") && x.contains("Restarting too quickly."), "{x}");
    assert!(x.contains("Dependency svc:/test/crash:default is not running"), "the dependent points at the root: {x}");
    assert!(x.contains("Stopping because the service process exited with status 1."), "the log's tail: {x}");
    let log = s.run(&["svcs", "-L", "test/crash"]).ok();
    assert!(log.trim().ends_with("var/svc/log/test-crash:default.log"), "{log}");
    std::fs::write(&flag, "").expect("flag");
    s.run(&["svcadm", "clear", "test/crash"]).ok();
    s.wait_state("svc:/test/crash:default", "online");
    s.wait_state("svc:/test/dep:default", "online");
    // Marking and clearing by hand.
    s.run(&["svcadm", "mark", "maintenance", "test/dep"]).ok();
    s.wait_state("svc:/test/dep:default", "maintenance");
    s.run(&["svcadm", "clear", "test/dep"]).ok();
    s.wait_state("svc:/test/dep:default", "online");
    s.run(&["svcadm", "mark", "degraded", "test/dep"]).ok();
    assert_eq!(s.state("test/dep"), "degraded");
}

#[test]
fn a_hung_stop_method_is_killed_at_its_timeout() {
    let mut s = Smf::new();
    // The stop method hangs (3 s timeout), and the service ignores SIGTERM.
    s.import(
        "hang.xml",
        &manifest(
            "test/hang",
            "/bin/sh -c 'trap &quot;&quot; TERM; while true; do sleep 1; done'",
            "sleep 1000",
            "child",
            &[],
            "",
        ),
    )
    .ok();
    s.start_daemon();
    s.wait_state("svc:/test/hang:default", "online");
    let t = Instant::now();
    s.run(&["svcadm", "disable", "-s", "test/hang"]).ok();
    let took = t.elapsed();
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(8), "stopped after {took:?}");
    assert!(s.pids("svc:/test/hang:default").is_empty());
    let log = std::fs::read_to_string(s.root().join("var/svc/log/test-hang:default.log")).expect("log");
    assert!(log.contains("timed out"), "{log}");
}

#[test]
fn temporary_changes_end_with_the_daemon_and_a_restarted_daemon_adopts_its_instances() {
    let mut s = Smf::new();
    s.import("p.xml", &manifest("test/persist", "/bin/sh -c 'sleep 1000 &amp;'", ":kill", "contract", &[], "")).ok();
    s.import("t.xml", &manifest("test/temp", "sleep 1000", ":kill", "child", &[], "")).ok();
    let once = s.file("ONCE");
    let exec = format!("/bin/sh -c 'echo ran &gt;&gt; {}'", once.display());
    s.import("tr.xml", &manifest("test/once", &exec, ":true", "transient", &[], "")).ok();
    s.start_daemon();
    s.wait_state("svc:/test/persist:default", "online");
    s.wait_state("svc:/test/once:default", "online");
    let second = s.run(&["svc.startd"]);
    assert_eq!(second.code, 1, "a second daemon for one node");
    assert!(second.stderr.contains("already running"), "{}", second.stderr);
    s.run(&["svcadm", "disable", "-s", "-t", "test/temp"]).ok();
    s.run(&["svcadm", "disable", "-s", "test/persist"]).ok();
    s.run(&["svcadm", "enable", "-s", "test/persist"]).ok();
    let (persist, once_runs) = (s.pids("svc:/test/persist:default"), lines(&once).len());
    assert_eq!(persist.len(), 1);
    assert_eq!(once_runs, 1, "the transient service ran once");
    let l = s.run(&["svcs", "-l", "test/temp"]).ok();
    assert!(l.contains("enabled      false (temporary)"), "{l}");
    // SIGKILL the daemon: the instances keep running; a new daemon adopts them.
    s.kill_daemon();
    assert_eq!(s.pids("svc:/test/persist:default"), persist, "the service outlived its restarter");
    s.start_daemon();
    s.wait_state("svc:/test/persist:default", "online");
    // The temporary disable is gone: temp comes back up; persist was not started twice.
    s.wait_state("svc:/test/temp:default", "online");
    assert_eq!(s.pids("svc:/test/persist:default"), persist, "adopted, not started again");
    assert_eq!(s.pids("svc:/test/temp:default").len(), 1);
    assert_eq!(lines(&once).len(), once_runs, "a transient service is not run again");
    assert_eq!(s.state("test/once"), "online");
    let p = s.run(&["svcs", "-p", "test/persist"]).ok();
    assert!(p.contains(&persist[0].to_string()), "{p}");
}

#[test]
fn bad_manifests_leave_the_repository_unchanged() {
    let s = Smf::new();
    s.import("ok.xml", &manifest("test/ok", "sleep 1000", ":kill", "child", &[], "")).ok();
    let before = s.run(&["svcs", "-a", "-H", "-o", "fmri"]).ok();
    let good = manifest("test/new", "sleep 1000", ":kill", "child", &[], "");
    let cases: Vec<(String, &str)> = vec![
        (good.replace("<single_instance/>", "<single_instance>"), "bad.xml:"),
        (good.replace("<single_instance/>", "<frobnicate/>"), "unknown element <frobnicate>"),
        (
            good.replace(r#"exec=":kill" timeout_seconds="3""#, r#"exec=" " timeout_seconds="3""#),
            "the stop method has an empty exec",
        ),
        // A dependency on an absent service imports (SMF's rule); one that is no FMRI does not.
        (
            manifest(
                "test/new",
                "sleep 1",
                ":kill",
                "child",
                &[("x", "require_all", "none", "svc:/test/Bad Name")],
                "",
            ),
            "is not an FMRI",
        ),
    ];
    for (xml, needle) in &cases {
        let r = s.import("bad.xml", xml);
        assert_eq!(r.code, 1, "{needle}: {}", r.stderr);
        assert!(r.stderr.contains(needle) && r.stderr.contains("bad.xml"), "{needle}: {}", r.stderr);
    }
    // A line number where the parser knows it.
    let r = s.import("bad.xml", &good.replace("<single_instance/>", "<frobnicate/>"));
    assert!(r.stderr.contains("bad.xml:6:"), "{}", r.stderr);
    // A cycle through an existing service: ok depends on new, new on ok.
    s.run(&["svccfg", "import", &{
        let p = s.file("ok2.xml");
        std::fs::write(&p, manifest("test/ok", "sleep 1000", ":kill", "child", &[], "")).expect("write");
        p.to_string_lossy().into_owned()
    }])
    .ok();
    let a = manifest("test/cyc-a", "sleep 1", ":kill", "child", &[("b", "require_all", "none", "svc:/test/cyc-b")], "");
    let b = manifest("test/cyc-b", "sleep 1", ":kill", "child", &[("a", "require_all", "none", "svc:/test/cyc-a")], "");
    let both = a.replace("</service_bundle>", "") + &b[b.find("<service name").expect("service")..];
    let r = s.import("cycle.xml", &both);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("dependency cycle") && r.stderr.contains("cycle.xml"), "{}", r.stderr);
    let toml = "[[service]]\nname = \"test/t\"\ncreate_default_instance = true\nbogus = 1\n";
    let p = s.file("bad.toml");
    std::fs::write(&p, toml).expect("write");
    let r = s.run(&["svccfg", "import", &p.to_string_lossy()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("bad.toml:") && r.stderr.contains("bogus"), "{}", r.stderr);
    assert_eq!(s.run(&["svcs", "-a", "-H", "-o", "fmri"]).ok(), before, "the repository changed");
}

#[test]
fn svccfg_and_svcprop_read_and_change_properties() {
    let mut s = Smf::new();
    let out = s.file("port");
    let start =
        format!("/bin/sh -c 'echo %{{config/port}} %s %i $SMF_FMRI $GREETING &gt; {}; exec sleep 1000'", out.display());
    let extra = "    <property_group name='config' type='application'>\n      <propval name='port' type='count' value='8080'/>\n    </property_group>\n";
    let xml = manifest("test/web", &start, ":kill", "child", &[], extra)
        .replace("<single_instance/>", "<single_instance/>\n    <method_context><method_environment><envvar name='GREETING' value='hello'/></method_environment></method_context>");
    s.import("web.xml", &xml).ok();
    assert_eq!(s.run(&["svcprop", "-p", "config/port", "test/web:default"]).ok().trim(), "8080");
    s.run(&["svccfg", "setprop", "svc:/test/web", "config/port", "=", "count:", "9090"]).ok();
    assert_eq!(s.run(&["svccfg", "setprop", "svc:/test/web", "config/port", "=", "count:", "x"]).code, 1);
    let lp = s.run(&["svccfg", "listprop", "svc:/test/web", "config/*"]).ok();
    assert!(lp.contains("config/port") && lp.contains("9090"), "{lp}");
    s.start_daemon();
    s.wait_state("svc:/test/web:default", "online");
    assert_eq!(written_line(&out).trim(), "9090 test/web default svc:/test/web:default hello");
    let exported = s.run(&["svccfg", "export", "test/web"]).ok();
    assert!(exported.contains("<exec_method name='start'") && exported.contains("name='port'"), "{exported}");
    // What svccfg export writes, svccfg import reads.
    let again = s.file("exported.xml");
    std::fs::write(&again, exported.replace("test/web", "test/web2")).expect("write");
    s.run(&["svccfg", "import", &again.to_string_lossy()]).ok();
    assert_eq!(s.run(&["svcprop", "-p", "config/port", "test/web2"]).ok().trim(), "9090");
    assert_eq!(s.run(&["svccfg", "delete", "test/web"]).code, 1, "running");
    s.run(&["svcadm", "disable", "-s", "test/web"]).ok();
    s.run(&["svccfg", "delete", "test/web"]).ok();
    assert!(!s.run(&["svcs", "-a", "-H", "-o", "fmri"]).ok().contains("svc:/test/web:default"));
}

#[test]
fn hull_s_own_services_boot_and_stop_the_zones() {
    let node = TestNode::new("512M");
    let img = node.busybox();
    let payload = node.root().join("vm.json");
    std::fs::write(
        &payload,
        serde_json::json!({"brand": "joyent-minimal", "image_uuid": img, "max_physical_memory": 64}).to_string(),
    )
    .expect("payload");
    let out = node.hull(&["vmadm", "create", "-f", &payload.to_string_lossy()]).ok();
    let uuid = out.trim().rsplit(' ').next().expect("uuid").to_string();
    // Stopped as the node's shutdown stops it (autoboot stays true; `vmadm stop` would set it
    // false, as SmartOS's does).
    node.hull(&["vmadm", "stop-all"]).ok();
    let vm_state = |n: &TestNode| {
        let v: serde_json::Value = serde_json::from_str(&n.hull(&["vmadm", "get", &uuid]).ok()).expect("json");
        v["state"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(vm_state(&node), "stopped");
    // The node's own prefix: the daemon drives this node's VMs.
    let mut s = Smf { prefix: node.prefix.clone(), node, daemon: None };
    s.start_daemon();
    s.wait_state("svc:/system/hull/pool:default", "online");
    s.wait_state("svc:/system/zones:default", "online");
    assert_eq!(vm_state(&s.node), "running", "boot-all ran once the pool was up");
    // The API is a service of the node too, answering on its socket.
    s.wait_state("svc:/system/hull/api:default", "online");
    let sock = s.root().join("var/run/hull/api.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    let ping = loop {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "5", "--unix-socket"])
            .arg(&sock)
            .arg("http://hull/ping")
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(ping.contains("pong"), "the API service does not answer: {ping}");
    // Let busybox's init set its signal handlers before it is asked to power off: a zone's
    // PID 1 ignores signals it has no handler for yet, and the stop would wait its timeout.
    s.node.hull(&["zlogin", &uuid, "true"]).ok();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(s.run(&["svcprop", "-p", "zones/stop_timeout", "zones"]).ok().trim(), "60");
    let t = Instant::now();
    s.run(&["svcadm", "disable", "-s", "system/zones"]).ok();
    let took = t.elapsed();
    assert_eq!(vm_state(&s.node), "stopped", "stop-all ran at disable");
    let zlog = std::fs::read_to_string(s.root().join(format!("var/hull/z/{uuid}/zoneadmd.log"))).unwrap_or_default();
    eprintln!("disable took {took:?}; zoneadmd: {zlog}");
    let log = std::fs::read_to_string(s.root().join("var/svc/log/system-zones:default.log")).expect("log");
    assert!(log.contains("Successfully started VM") && log.contains("Successfully completed stop"), "{log}");
}

#[test]
fn method_contexts_exit_codes_refresh_and_the_rate_override() {
    let mut s = Smf::new();
    let who = s.file("who");
    // Runs as nobody:nogroup in /tmp.
    let start = format!("/bin/sh -c 'echo $(id -un):$(id -gn):$(pwd) &gt; {}; exec sleep 1000'", who.display());
    std::fs::set_permissions(s.root(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
    let ctx = "    <method_context working_directory='/tmp'><method_credential user='nobody' group='nogroup'/></method_context>\n";
    let xml = manifest("test/who", &start, ":kill", "child", &[], "")
        .replace("<single_instance/>", &format!("<single_instance/>\n{ctx}"));
    s.import("who.xml", &xml).ok();
    // Exit 96 (SMF_EXIT_ERR_CONFIG): maintenance at once, no retries.
    let conf = s.file("CONF");
    let exec = format!("/bin/sh -c 'echo tried &gt;&gt; {}; exit 96'", conf.display());
    s.import("conf.xml", &manifest("test/conf", &exec, ":true", "contract", &[], "")).ok();
    // Two quick starts are too many when critical_failure_count says 2.
    let quick = manifest("test/quick", "/bin/sh -c 'sleep 0.05; exit 0'", ":kill", "child", &[], "").replace(
        "value=\"child\"/>",
        "value=\"child\"/>\n      <propval name='critical_failure_count' type='count' value='2'/>",
    );
    s.import("quick.xml", &quick).ok();
    s.import("db.xml", &manifest("test/db", "sleep 1000", ":kill", "child", &[], "")).ok();
    s.import(
        "onref.xml",
        &manifest(
            "test/onrefresh",
            "sleep 1000",
            ":kill",
            "child",
            &[("db", "require_all", "refresh", "svc:/test/db")],
            "",
        ),
    )
    .ok();
    s.import(
        "onrst.xml",
        &manifest(
            "test/onrestart",
            "sleep 1000",
            ":kill",
            "child",
            &[("db", "require_all", "restart", "svc:/test/db")],
            "",
        ),
    )
    .ok();
    s.start_daemon();
    s.wait_state("svc:/test/who:default", "online");
    assert_eq!(written_line(&who).trim(), "nobody:nogroup:/tmp");
    s.wait_state("svc:/test/conf:default", "maintenance");
    assert_eq!(lines(&conf).len(), 1, "exit 96 is not retried");
    s.wait_state("svc:/test/quick:default", "maintenance");
    let x = s.run(&["svcs", "-x", "test/quick"]).ok();
    assert!(x.contains("Restarting too quickly."), "{x}");
    // refresh reaches restart_on=refresh only.
    s.wait_state("svc:/test/onrefresh:default", "online");
    s.wait_state("svc:/test/onrestart:default", "online");
    let (r0, s0) = (s.pids("svc:/test/onrefresh:default"), s.pids("svc:/test/onrestart:default"));
    s.run(&["svcadm", "refresh", "test/db"]).ok();
    let t = Instant::now();
    while s.pids("svc:/test/onrefresh:default") == r0 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    s.wait_state("svc:/test/onrefresh:default", "online");
    assert_ne!(s.pids("svc:/test/onrefresh:default"), r0, "restart_on=refresh restarts on a refresh");
    assert_eq!(s.pids("svc:/test/onrestart:default"), s0, "restart_on=restart ignores a refresh");
    // -d and -D.
    let d = s.run(&["svcs", "-H", "-o", "fmri", "-s", "fmri", "-D", "test/db"]).ok();
    assert_eq!(d.lines().collect::<Vec<_>>(), vec!["svc:/test/onrefresh:default", "svc:/test/onrestart:default"]);
    let d = s.run(&["svcs", "-H", "-o", "fmri", "-d", "test/onrestart"]).ok();
    assert_eq!(d.trim(), "svc:/test/db:default");
}

#[test]
fn one_vm_that_fails_to_boot_stops_no_other() {
    let node = TestNode::new("512M");
    let img = node.busybox();
    let create = |n: &TestNode, extra: serde_json::Value| {
        let mut p = serde_json::json!({"brand": "joyent-minimal", "image_uuid": img, "max_physical_memory": 64});
        for (k, v) in extra.as_object().expect("object") {
            p[k] = v.clone();
        }
        let f = n.root().join(format!("vm-{}.json", p.to_string().len()));
        std::fs::write(&f, p.to_string()).expect("payload");
        let out = n.hull(&["vmadm", "create", "-f", &f.to_string_lossy()]).ok();
        out.trim().rsplit(' ').next().expect("uuid").to_string()
    };
    let good = create(&node, serde_json::json!({"alias": "good"}));
    let bad = create(&node, serde_json::json!({"alias": "bad", "autoboot": false, "init_name": "/no/such/init"}));
    node.hull(&["vmadm", "update", &bad, "autoboot=true"]).ok();
    let get = |n: &TestNode, uuid: &str| -> serde_json::Value {
        serde_json::from_str(&n.hull(&["vmadm", "get", uuid]).ok()).expect("json")
    };
    let before = get(&node, &good)["pid"].clone();
    assert_eq!(get(&node, &good)["state"], "running");
    let mut s = Smf { prefix: node.prefix.clone(), node, daemon: None };
    s.start_daemon();
    s.wait_state("svc:/system/hull/pool:default", "online");
    s.wait_state("svc:/system/zones:default", "online");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.state("svc:/system/zones:default"), "online", "the service stays online");
    let g = get(&s.node, &good);
    assert_eq!(g["state"], "running", "the running VM was not stopped");
    assert_eq!(g["pid"], before, "and not restarted");
    let log = std::fs::read_to_string(s.root().join("var/svc/log/system-zones:default.log")).unwrap_or_default();
    assert_eq!(get(&s.node, &bad)["state"], "failed", "the zones service's log: {log}");
    assert!(log.contains(&bad) && log.contains("1 of 1 VMs failed to boot"), "{log}");
    assert!(!log.contains("Successfully completed stop"), "stop-all ran: {log}");
    // The zones service's contract does not hold the supervisors: restarting the service
    // manager's own services leaves the zone running.
    s.kill_daemon();
    s.start_daemon();
    s.wait_state("svc:/system/zones:default", "online");
    assert_eq!(get(&s.node, &good)["pid"], before, "the zone survived the service manager's restart");
}

/// What a method wrote to `path`, once a whole line is there: a shell's `>` creates the file
/// before `echo` writes to it, so the file's name alone says nothing (a CI run read it empty).
fn written_line(path: &Path) -> String {
    let t = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.ends_with('\n') || t.elapsed() > Duration::from_secs(10) {
            return text;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn manifests_as_smf_takes_them_absent_dependencies_restart_methods_and_expansion() {
    let mut s = Smf::new();
    s.start_daemon();
    // A dependency on a service not yet in the repository: imported, and waits.
    let web =
        manifest("site/web", "/bin/sleep 600", ":kill", "child", &[("db", "require_all", "none", "svc:/site/db")], "");
    s.import("web.xml", &web).ok();
    s.wait_state("svc:/site/web:default", "offline");
    let x = s.run(&["svcs", "-x", "svc:/site/web:default"]).ok();
    assert!(x.contains("svc:/site/db") && x.contains("absent"), "{x}");
    // It arrives; the waiting service goes online.
    s.import("db.xml", &manifest("site/db", "/bin/sleep 600", ":kill", "child", &[], "")).ok();
    s.wait_state("svc:/site/web:default", "online");

    // A restart method, used by svcadm restart in place of stop and start.
    let mark = s.file("restarted");
    let restart = format!(
        "    <exec_method type='method' name='restart' exec='/bin/sh -c \"echo %m %{{config/word}} &gt; {}\"' timeout_seconds='5'/>\n    <property_group name='config' type='application'><propval name='word' type='astring' value='again'/></property_group>\n",
        mark.display()
    );
    s.import("rs.xml", &manifest("site/rs", "/bin/sleep 600", ":kill", "child", &[], &restart)).ok();
    s.wait_state("svc:/site/rs:default", "online");
    let before = s.pids("svc:/site/rs:default");
    s.run(&["svcadm", "restart", "svc:/site/rs:default"]).ok();
    assert_eq!(written_line(&mark).trim(), "restart again");
    s.wait_state("svc:/site/rs:default", "online");
    assert!(before.iter().all(|p| s.pids("svc:/site/rs:default").contains(p)), "stopped, not restarted in place");

    // %{prop} is the application group's property; a value is data, never shell.
    let out = s.file("expanded");
    let expand = format!(
        "    <property_group name='application' type='application'><propval name='greeting' type='astring' value='hi; touch {}'/></property_group>\n",
        s.file("injected").display()
    );
    let start = format!("/bin/sh -c 'echo %{{greeting}} &gt; {}'", out.display());
    s.import("ex.xml", &manifest("site/ex", &start, ":true", "transient", &[], &expand)).ok();
    s.wait_state("svc:/site/ex:default", "online");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap_or_default().trim(),
        format!("hi; touch {}", s.file("injected").display())
    );
    assert!(!s.file("injected").exists(), "a property's value ran as shell");
    // A property that does not exist fails the method, and the log names it.
    s.import("bad.xml", &manifest("site/bad", "/bin/echo %{config/nosuch}", ":true", "transient", &[], "")).ok();
    s.wait_state("svc:/site/bad:default", "maintenance");
    let log = std::fs::read_to_string(s.root().join("var/svc/log/site-bad:default.log")).unwrap_or_default();
    let xv = s.run(&["svcs", "-xv", "svc:/site/bad:default"]).ok();
    assert!(log.contains("%{config/nosuch}") || xv.contains("%{config/nosuch}"), "{log}\n{xv}");
}

#[test]
fn another_restarter_s_service_imports_and_svcs_says_why_it_does_not_run() {
    let mut s = Smf::new();
    s.start_daemon();
    let xml = r#"<?xml version="1.0"?>
<!DOCTYPE service_bundle SYSTEM "/usr/share/lib/xml/dtd/service_bundle.dtd.1">
<service_bundle type="manifest" name="site:finger">
  <service name="site/finger" type="service" version="1">
    <restarter><service_fmri value="svc:/network/inetd:default"/></restarter>
    <exec_method type="method" name="inetd_start" exec="/usr/sbin/in.fingerd" timeout_seconds="0"/>
    <exec_method type="method" name="inetd_disable" exec=":kill" timeout_seconds="0"/>
    <property_group name="inetd" type="framework">
      <propval name="endpoint_type" type="astring" value="stream"/>
    </property_group>
    <instance name="default" enabled="true"/>
    <template>
      <common_name><loctext xml:lang="C">finger</loctext></common_name>
      <description><loctext xml:lang="C">Answers finger queries.</loctext></description>
      <documentation><manpage title="in.fingerd" section="8"/></documentation>
    </template>
  </service>
</service_bundle>
"#;
    // Validate changes nothing; import keeps everything.
    let p = s.file("finger.xml");
    std::fs::write(&p, xml).expect("write");
    s.run(&["svccfg", "validate", &p.to_string_lossy()]).ok();
    assert!(s.run(&["svcs", "-H", "svc:/site/finger:default"]).code != 0, "validate imported it");
    std::fs::write(s.file("broken.xml"), xml.replace("</service>", "")).expect("write");
    let r = s.run(&["svccfg", "validate", &s.file("broken.xml").to_string_lossy()]);
    assert!(r.code != 0 && r.stderr.contains("broken.xml"), "{}", r.stderr);
    s.import("finger.xml", xml).ok();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.state("svc:/site/finger:default"), "uninitialized");
    let l = s.run(&["svcs", "-l", "svc:/site/finger:default"]).ok();
    assert!(l.contains("svc:/network/inetd:default"), "{l}");
    let x = s.run(&["svcs", "-x", "svc:/site/finger:default"]).ok();
    assert!(x.contains("inetd"), "{x}");
    let props = s.run(&["svcprop", "svc:/site/finger:default"]).ok();
    assert!(props.contains("tm_description/C") && props.contains("tm_man_in_fingerd_8/title"), "{props}");
    // Exported, it says all of it again, and reads back.
    let xml = s.run(&["svccfg", "export", "svc:/site/finger"]).ok();
    for want in [
        "<restarter><service_fmri value='svc:/network/inetd:default'/>",
        "inetd_start",
        "Answers finger queries.",
        "<manpage title='in.fingerd' section='8'/>",
    ] {
        assert!(xml.contains(want), "{want}: {xml}");
    }
    let back = s.file("back.xml");
    std::fs::write(&back, &xml).expect("write");
    s.run(&["svccfg", "validate", &back.to_string_lossy()]).ok();
}

#[test]
fn a_refresh_method_that_is_a_token_signals_the_contract() {
    let mut s = Smf::new();
    s.start_daemon();
    let mark = s.file("hupped");
    // The service writes a file when it gets SIGHUP; its refresh is `:kill -HUP`, as cron's
    // is `:kill -THAW`.
    let start =
        format!("/bin/sh -c 'trap &quot;echo hup &gt;&gt; {}&quot; HUP; while :; do sleep 0.1; done'", mark.display());
    let extra = "    <exec_method type='method' name='refresh' exec=':kill -HUP' timeout_seconds='5'/>\n";
    s.import("hup.xml", &manifest("site/hup", &start, ":kill", "child", &[], extra)).ok();
    s.wait_state("svc:/site/hup:default", "online");
    std::thread::sleep(Duration::from_millis(200));
    s.run(&["svcadm", "refresh", "svc:/site/hup:default"]).ok();
    assert_eq!(written_line(&mark).trim(), "hup");
    assert_eq!(s.state("svc:/site/hup:default"), "online");
    // A signal Linux does not have is said in the log, and nothing is sent.
    let extra = "    <exec_method type='method' name='refresh' exec=':kill -THAW' timeout_seconds='5'/>\n";
    s.import("thaw.xml", &manifest("site/thaw", "/bin/sleep 600", ":kill", "child", &[], extra)).ok();
    s.wait_state("svc:/site/thaw:default", "online");
    s.run(&["svcadm", "refresh", "svc:/site/thaw:default"]).ok();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.state("svc:/site/thaw:default"), "online");
    let log = s.run(&["svcs", "-xv", "svc:/site/thaw:default"]).stdout;
    let logfile = s.root().join("var/svc/log/site-thaw:default.log");
    let text = std::fs::read_to_string(logfile).unwrap_or_default();
    assert!(text.contains("no such signal on Linux"), "{text}\n{log}");
}

#[test]
fn method_credentials_give_supplementary_groups_and_a_profile_is_kept() {
    let mut s = Smf::new();
    s.start_daemon();
    let out = s.file("ids");
    let xml = format!(
        r#"<?xml version="1.0"?>
<service_bundle type='manifest' name='site:creds'>
<service name='site/creds' type='service' version='1'>
  <create_default_instance enabled='true'/>
  <exec_method type='method' name='start' exec='/bin/sh -c "id -G &gt; {}"' timeout_seconds='10'>
    <method_context>
      <method_credential user='daemon' group='daemon' supp_groups='adm' privileges='basic'/>
    </method_context>
  </exec_method>
  <exec_method type='method' name='stop' exec=':true' timeout_seconds='10'>
    <method_context><method_profile name='Network Management'/></method_context>
  </exec_method>
  <property_group name='startd' type='framework'><propval name='duration' type='astring' value='transient'/></property_group>
</service>
</service_bundle>"#,
        out.display()
    );
    // The output file is written by daemon (uid 1): give it a place it may write.
    std::fs::set_permissions(s.root(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
    s.import("creds.xml", &xml).ok();
    s.wait_state("svc:/site/creds:default", "online");
    let ids: Vec<String> =
        std::fs::read_to_string(&out).unwrap_or_default().split_whitespace().map(String::from).collect();
    assert_eq!(ids, ["1", "4"], "daemon's group, then adm");
    let props = s.run(&["svcprop", "svc:/site/creds:default"]).ok();
    assert!(props.contains("stop/profile") && props.contains("Network Management"), "{props}");
}

#[test]
fn only_root_drives_svc_startd() {
    use std::os::unix::fs::PermissionsExt;
    let mut s = Smf::new();
    s.start_daemon();
    s.import("web.xml", &manifest("site/web", "/bin/sleep 600", ":kill", "child", &[], "")).ok();
    s.wait_state("svc:/site/web:default", "online");
    let sock = s.root().join("var/hull/svc/startd.sock");
    assert_eq!(std::fs::metadata(&sock).expect("socket").permissions().mode() & 0o777, 0o600);
    // Even with the way open (every directory and the socket opened up, as a careless
    // umask or chmod would), an unprivileged user is answered no.
    let mut p = sock.clone();
    while let Some(d) = p.parent().map(Path::to_path_buf) {
        if !d.starts_with(s.root()) {
            break;
        }
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p = d;
    }
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", HULL])
        .env("HULL_ROOT", s.root())
        .env("HULL_NODE", &s.prefix)
        .args(["svcadm", "disable", "svc:/site/web:default"])
        .output()
        .expect("setpriv");
    assert!(!out.status.success(), "nobody disabled a service");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("permission denied: root only"), "{said}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(s.state("svc:/site/web:default"), "online");
}
