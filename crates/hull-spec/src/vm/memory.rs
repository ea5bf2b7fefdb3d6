//! How an OS zone's memory properties follow one another, as SmartOS's `fixPayloadMemory`
//! (VM.js) has them: `ram` is `max_physical_memory` by another name; a new memory cap
//! moves `max_locked_memory`, `max_swap` and `tmpfs` with it, keeping their distance or
//! ratio to the old cap; `max_swap` is never below the cap nor 256 MiB, `max_locked_memory`
//! and `tmpfs` never above it. Pure: the caller applies the result.

use serde_json::{Map, Value};

/// The smallest `max_swap` SmartOS sets by itself (MiB).
pub const MINIMUM_MAX_SWAP: i64 = 256;

fn num(m: &Map<String, Value>, k: &str) -> Option<i64> {
    m.get(k).and_then(Value::as_i64)
}

/// Fills in and clamps the memory properties of an OS zone's create (`vm` empty) or update
/// (`vm` the zone's stored properties) payload. Returns what it clamped, as warnings.
pub fn fix_os_zone_memory(payload: &mut Map<String, Value>, vm: &Map<String, Value>) -> Vec<String> {
    let mut notes = Vec::new();
    // An OS zone's `ram` is its memory cap (`vmadm get` shows the cap as `ram`).
    if let Some(ram) = payload.remove("ram") {
        payload.entry("max_physical_memory").or_insert(ram);
    }
    if let Some(phys) = num(payload, "max_physical_memory") {
        if !payload.contains_key("max_locked_memory") {
            let locked = match (num(vm, "max_physical_memory"), num(vm, "max_locked_memory")) {
                (Some(p), Some(l)) => phys - (p - l),
                _ => phys,
            };
            payload.insert("max_locked_memory".into(), Value::from(locked));
        }
        if !payload.contains_key("max_swap") {
            let swap = match (num(vm, "max_physical_memory"), num(vm, "max_swap")) {
                // Raised to the minimum before: tie it back to the cap.
                (Some(_), Some(s)) if s == MINIMUM_MAX_SWAP && phys >= MINIMUM_MAX_SWAP => phys,
                (Some(p), Some(s)) => phys + (s - p),
                _ => phys,
            };
            payload.insert("max_swap".into(), Value::from(swap.max(MINIMUM_MAX_SWAP)));
        }
    }
    let cap = num(payload, "max_physical_memory").or(num(vm, "max_physical_memory"));
    if let (Some(t), Some(cap)) = (num(payload, "tmpfs"), cap)
        && t > cap
    {
        notes.push(format!("tmpfs ({t}) > max_physical_memory ({cap}): clamped to {cap}"));
        payload.insert("tmpfs".into(), Value::from(cap));
    }
    if let Some(phys) = num(payload, "max_physical_memory")
        && !payload.contains_key("tmpfs")
    {
        // The same share of the cap as before.
        let tmpfs = match (num(vm, "max_physical_memory"), num(vm, "tmpfs")) {
            (Some(p), Some(t)) if p > 0 => ((t as f64 / p as f64) * phys as f64).round() as i64,
            _ => phys,
        };
        payload.insert("tmpfs".into(), Value::from(tmpfs));
    }
    if let (Some(l), Some(cap)) = (num(payload, "max_locked_memory"), cap)
        && l > cap
    {
        notes.push(format!("max_locked_memory ({l}) > max_physical_memory ({cap}): clamped to {cap}"));
        payload.insert("max_locked_memory".into(), Value::from(cap));
    }
    if let (Some(s), Some(cap)) = (num(payload, "max_swap"), cap)
        && s < cap
    {
        notes.push(format!("max_swap ({s}) < max_physical_memory ({cap}): raised to {cap}"));
        payload.insert("max_swap".into(), Value::from(cap));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fix(p: Value, vm: Value) -> (Value, Vec<String>) {
        let (mut p, vm) = (p.as_object().cloned().expect("object"), vm.as_object().cloned().expect("object"));
        let notes = fix_os_zone_memory(&mut p, &vm);
        (Value::Object(p), notes)
    }

    #[test]
    fn a_create_s_cap_sets_the_rest() {
        let (p, _) = fix(json!({"max_physical_memory": 1024}), json!({}));
        assert_eq!(p, json!({"max_physical_memory": 1024, "max_locked_memory": 1024, "max_swap": 1024, "tmpfs": 1024}));
        let (p, _) = fix(json!({"ram": 128}), json!({}));
        assert_eq!(p, json!({"max_physical_memory": 128, "max_locked_memory": 128, "max_swap": 256, "tmpfs": 128}));
    }

    #[test]
    fn an_update_keeps_distances_and_ratios() {
        let vm = json!({"max_physical_memory": 1024, "max_locked_memory": 512, "max_swap": 2048, "tmpfs": 256});
        let (p, _) = fix(json!({"ram": 2048}), vm.clone());
        assert_eq!(p, json!({"max_physical_memory": 2048, "max_locked_memory": 1536, "max_swap": 3072, "tmpfs": 512}));
        // A swap raised to the minimum before goes back to the cap.
        let (p, _) = fix(json!({"max_physical_memory": 512}), json!({"max_physical_memory": 128, "max_swap": 256}));
        assert_eq!(p["max_swap"], 512);
    }

    #[test]
    fn out_of_order_values_are_clamped_and_said() {
        let vm = json!({"max_physical_memory": 512, "max_swap": 512});
        let (p, notes) = fix(json!({"max_swap": 300, "tmpfs": 4096, "max_locked_memory": 1024}), vm);
        assert_eq!(p, json!({"max_swap": 512, "tmpfs": 512, "max_locked_memory": 512}));
        assert_eq!(notes.len(), 3, "{notes:?}");
    }
}
