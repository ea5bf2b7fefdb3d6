//! The node's event log, `$ROOT/var/hull/events.jsonl`: one JSON object a line, in the shape
//! of SmartOS's vminfod events: `{"type": "create"|"modify"|"delete", "date", "uuid",
//! "zonename", "changes": [{"path", "action", "oldValue", "newValue"}]}`. Appended with one
//! `write(2)` per event on an `O_APPEND` file, so writers do not interleave.

use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};

pub fn path(var_dir: &Path) -> PathBuf {
    var_dir.join("events.jsonl")
}

/// Now, as the log dates its events (RFC 3339, milliseconds, UTC).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// The longest string value an event carries; a longer one (a tenant's metadata, a
/// user-script) is logged by its size. The log is the host's: what a tenant writes must not
/// grow it by its own size at each change.
pub const MAX_LOGGED: usize = 1024;

fn bounded(v: Value) -> Value {
    match v {
        Value::String(s) if s.len() > MAX_LOGGED => Value::String(format!("({} bytes)", s.len())),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, bounded(v))).collect()),
        Value::Array(a) => Value::Array(a.into_iter().map(bounded).collect()),
        v => v,
    }
}

/// A change of one property.
pub fn change(path: &str, old: Value, new: Value) -> Value {
    let (old, new) = (bounded(old), bounded(new));
    let action = match (&old, &new) {
        (Value::Null, _) => "added",
        (_, Value::Null) => "removed",
        _ => "changed",
    };
    json!({"prettyPath": path, "path": [path], "action": action, "oldValue": old, "newValue": new})
}

/// Appends an event; a log that cannot be written is reported and otherwise ignored: the
/// work it describes is done.
pub fn emit(var_dir: &Path, kind: &str, uuid: &str, changes: Vec<Value>) {
    let mut ev = json!({"type": kind, "date": now_rfc3339(), "uuid": uuid, "zonename": uuid});
    if !changes.is_empty() {
        ev["changes"] = Value::Array(changes);
    }
    append(var_dir, &ev);
}

/// Appends one event of any shape (the API's job events), as [`emit`] does.
pub fn append(var_dir: &Path, ev: &Value) {
    let mut line = ev.to_string();
    line.push('\n');
    let p = path(var_dir);
    let written =
        std::fs::OpenOptions::new().create(true).append(true).open(&p).and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        tracing::warn!("event log {}: {e}", p.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339() {
        let d = now_rfc3339();
        assert_eq!(d.len(), 24, "{d}");
        assert!(d.starts_with("20") && d.ends_with('Z') && d.as_bytes()[10] == b'T', "{d}");
    }

    #[test]
    fn long_values_are_logged_by_their_size() {
        let big = "x".repeat(MAX_LOGGED + 1);
        let c = change("customer_metadata", json!({"k": big, "s": "short"}), Value::Null);
        assert_eq!(c["oldValue"]["k"], format!("({} bytes)", MAX_LOGGED + 1));
        assert_eq!(c["oldValue"]["s"], "short");
    }

    #[test]
    fn changes_say_what_happened() {
        assert_eq!(change("state", json!("stopped"), json!("running"))["action"], "changed");
        assert_eq!(change("alias", Value::Null, json!("a"))["action"], "added");
    }
}
