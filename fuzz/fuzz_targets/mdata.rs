#![no_main]
use libfuzzer_sys::fuzz_target;
use serde_json::json;

// A zone writes any bytes it likes to its metadata socket: the session must answer every
// complete line, never panic, and never let a tenant write an sdc: key or a namespace's.
struct Vm(serde_json::Map<String, serde_json::Value>);

impl hull_mdata::Store for Vm {
    fn get(&mut self, key: &str) -> Result<Option<String>, String> {
        hull_mdata::keys::get(&self.0, key)
    }
    fn keys(&mut self) -> Result<Vec<String>, String> {
        Ok(hull_mdata::keys::keys(&self.0))
    }
    fn put(&mut self, key: &str, value: &str) -> Result<(), String> {
        let which = hull_mdata::keys::writable(&self.0, key)?;
        assert!(!key.starts_with("sdc:") && !key.starts_with("docker:"), "{key} was let through");
        if let Some(m) = self.0.get_mut(which).and_then(|m| m.as_object_mut()) {
            m.insert(key.into(), json!(value));
        }
        Ok(())
    }
    fn delete(&mut self, key: &str) -> Result<(), String> {
        let which = hull_mdata::keys::writable(&self.0, key)?;
        assert!(!key.starts_with("sdc:") && !key.starts_with("docker:"), "{key} was let through");
        if let Some(m) = self.0.get_mut(which).and_then(|m| m.as_object_mut()) {
            m.remove(key);
        }
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let vm = json!({"uuid": "u", "nics": [{"ip": "10.0.0.1", "mac": "02:00:00:00:00:01"}],
                    "routes": {"10.1.0.0/16": "nics[0]", "x": "macs[zz]"},
                    "customer_metadata": {"a": "b"}, "internal_metadata": {"x_pw": "y"},
                    "internal_metadata_namespaces": ["docker"]});
    let mut store = Vm(vm.as_object().cloned().unwrap_or_default());
    let mut s = hull_mdata::Session::new();
    // Fed in two pieces, as reads split it.
    let cut = data.first().map(|b| *b as usize % (data.len() + 1)).unwrap_or(0);
    let mut out = s.feed(&data[..cut], &mut store);
    out.extend(s.feed(&data[cut..], &mut store));
    let lines = data.iter().filter(|b| **b == b'\n').count();
    assert!(out.iter().filter(|b| **b == b'\n').count() >= lines);
});
