//! hull-net on its own, as root: a node in a network namespace of its own, zones as bare
//! namespaces, real veths, bridges and nftables.

use hull_net::nic::{self, Network};
use hull_net::{Net, ns};
use hull_spec::NodeConfig;
use hull_spec::node::NicTag;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A node's namespace, entered by a thread for the whole test.
struct Node {
    dir: tempfile::TempDir,
    ns: PathBuf,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::Builder::new().prefix("hull-net-").tempdir().expect("tempdir");
        let ns = dir.path().join("node");
        ns::create(&ns).expect("node netns");
        Node { dir, ns }
    }

    fn zone(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        ns::create(&p).expect("zone netns");
        p
    }

    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        ns::run_in(&self.ns, move || Ok(f())).expect("in node")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for e in std::fs::read_dir(self.dir.path()).expect("dir").flatten() {
            let _ = ns::remove(&e.path());
        }
    }
}

fn ping(zone: &Path, ip: &str) -> bool {
    Command::new("nsenter")
        .arg(format!("--net={}", zone.display()))
        .args(["busybox", "ping", "-c", "1", "-W", "1", ip])
        .output()
        .expect("ping")
        .status
        .success()
}

fn nics(v: Vec<Value>, cfg: &NodeConfig) -> Vec<hull_net::Nic> {
    let mut v = v;
    nic::assign(&mut v, &[]);
    let typed: Vec<hull_spec::vm::model::Nic> = serde_json::from_value(Value::Array(v)).expect("fits the model");
    nic::parse_all(&typed, cfg).expect("valid nics")
}

#[test]
fn zones_on_one_vlan_meet_and_other_vlans_do_not() {
    let node = Node::new();
    let mut cfg = NodeConfig::default();
    cfg.nic_tags.insert("t0".into(), NicTag { local: true, ..Default::default() });
    let (a, b, c) = (node.zone("a"), node.zone("b"), node.zone("c"));
    let net = Net::new("hnt1", cfg.clone());
    let na = nics(vec![json!({"nic_tag": "t0", "vlan_id": 5, "ips": ["10.0.0.1/24"]})], &cfg);
    let nb = nics(vec![json!({"nic_tag": "t0", "vlan_id": 5, "ips": ["10.0.0.2/24"]})], &cfg);
    let nc = nics(vec![json!({"nic_tag": "t0", "vlan_id": 6, "ips": ["10.0.0.3/24"]})], &cfg);
    assert_eq!(na[0].network, Network::Tag { tag: "t0".into(), vlan: 5 });
    let (n2, a2, b2, c2) = (net.clone(), a.clone(), b.clone(), c.clone());
    node.run(move || {
        n2.plug("vm-a", &a2, &na[0]).expect("plug a");
        n2.plug("vm-b", &b2, &nb[0]).expect("plug b");
        n2.plug("vm-c", &c2, &nc[0]).expect("plug c");
    });
    assert!(ping(&a, "10.0.0.2"), "a reaches b on VLAN 5");
    assert!(!ping(&a, "10.0.0.3"), "a must not reach c on VLAN 6");
    let n2 = net.clone();
    let owned = node.run(move || n2.owned().expect("owned"));
    assert_eq!(owned.len(), 5, "three VNICs and two switches: {owned:?}");
    let n2 = net.clone();
    node.run(move || {
        for vm in ["vm-a", "vm-b", "vm-c"] {
            n2.unplug_all(vm).expect("unplug");
        }
        assert!(n2.owned().expect("owned").is_empty());
        assert!(hull_net::nft::protected("hnt1").expect("list").is_empty());
        n2.destroy(Path::new("/nonexistent")).expect("destroy");
    });
}
