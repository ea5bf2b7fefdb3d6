//! Dataset and snapshot names.
//!
//! A name is one path component: letters, digits and `-_.:`, not starting with `.` (hull keeps
//! its own entries there), at most 200 bytes. Nested datasets are not supported yet.

use crate::StorageError;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatasetName(String);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SnapshotName {
    pub dataset: DatasetName,
    pub snap: String,
}

fn check(kind: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("empty {kind} name"));
    }
    if s.len() > 200 {
        return Err(format!("{kind} name longer than 200 bytes"));
    }
    if s.starts_with('.') {
        return Err(format!("{kind} name may not start with '.'"));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || "-_.:".contains(*c))) {
        return Err(format!("{kind} name may not contain {c:?}"));
    }
    Ok(())
}

impl DatasetName {
    /// Parses `<name>` (a dataset in the pool; strip `zones/` first).
    pub fn parse(s: &str) -> Result<Self, StorageError> {
        check("dataset", s).map_err(|reason| StorageError::InvalidName { name: s.to_string(), reason })?;
        Ok(DatasetName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn snapshot(&self, snap: &str) -> Result<SnapshotName, StorageError> {
        SnapshotName::parse(&format!("{}@{snap}", self.0))
    }
}

impl SnapshotName {
    /// Parses `<name>@<snap>`.
    pub fn parse(s: &str) -> Result<Self, StorageError> {
        let bad = |reason: String| StorageError::InvalidName { name: s.to_string(), reason };
        let (ds, snap) = s.split_once('@').ok_or_else(|| bad("a snapshot is named DATASET@SNAP".into()))?;
        check("snapshot", snap).map_err(bad)?;
        Ok(SnapshotName { dataset: DatasetName::parse(ds)?, snap: snap.to_string() })
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for SnapshotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.dataset, self.snap)
    }
}

/// Strips the pool from a user-given name: `zones/foo@s` becomes `foo@s`.
pub fn strip_pool<'a>(pool: &str, name: &'a str) -> Result<&'a str, StorageError> {
    name.strip_prefix(pool).and_then(|rest| rest.strip_prefix('/')).ok_or_else(|| StorageError::InvalidName {
        name: name.to_string(),
        reason: format!("datasets are named {pool}/NAME"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names() {
        assert!(DatasetName::parse("c02a2044-c1bd-11e4-bd8c-dfc1db8b0182").is_ok());
        assert!(DatasetName::parse("img-partial").is_ok());
        let s = SnapshotName::parse("img@final").expect("snap");
        assert_eq!(s.dataset.as_str(), "img");
        assert_eq!(s.snap, "final");
        assert_eq!(strip_pool("zones", "zones/a@b").ok(), Some("a@b"));
    }

    #[test]
    fn bad_names() {
        for bad in ["", ".snapshots", "a/b", "..", "a b", "a@b", "x\0"] {
            assert!(DatasetName::parse(bad).is_err(), "{bad:?} accepted");
        }
        for bad in ["a", "a@", "@s", "a@.x", "a@b@c", "a@b/c"] {
            assert!(SnapshotName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(strip_pool("zones", "tank/a").is_err());
        assert!(strip_pool("zones", "zonesa").is_err());
    }
}
