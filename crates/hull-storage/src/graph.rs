//! Who depends on whom, from a pool listing. Pure.

use crate::{DatasetInfo, DatasetKind};

/// Snapshots of `ds`, by full name.
pub(crate) fn snapshots_of(all: &[DatasetInfo], ds: &str) -> Vec<String> {
    let prefix = format!("{ds}@");
    all.iter()
        .filter(|d| d.kind == DatasetKind::Snapshot && d.name.starts_with(&prefix))
        .map(|d| d.name.clone())
        .collect()
}

/// Whether `name` is a clone of a snapshot of `ds` (a direct dependent).
pub(crate) fn is_clone_root(all: &[DatasetInfo], name: &str, ds: &str) -> bool {
    let prefix = format!("{ds}@");
    all.iter().any(|d| d.name == name && d.origin.as_deref().is_some_and(|o| o.starts_with(&prefix)))
}

/// Everything that must go, children first, to destroy `target` (a dataset or a snapshot):
/// for a dataset its snapshots, and for each snapshot the clones made from it, recursively.
pub(crate) fn destroy_order(all: &[DatasetInfo], target: &str) -> Vec<String> {
    let mut out = Vec::new();
    visit(all, target, &mut out, 0);
    out
}

fn visit(all: &[DatasetInfo], name: &str, out: &mut Vec<String>, depth: usize) {
    if depth > 64 || out.iter().any(|n| n == name) {
        return; // a cycle cannot happen on a real pool; never loop on a broken listing
    }
    if name.contains('@') {
        for clone in all.iter().filter(|d| d.origin.as_deref() == Some(name)) {
            visit(all, &clone.name, out, depth + 1);
        }
    } else {
        for snap in snapshots_of(all, name) {
            visit(all, &snap, out, depth + 1);
        }
    }
    out.push(name.to_string());
}

/// Links origins by uuid for backends that record a parent uuid: `entries` are
/// (name, uuid, parent uuid); a dataset's origin is the snapshot whose uuid is its parent's.
pub(crate) fn origins_by_uuid(entries: &[(String, [u8; 16], [u8; 16])]) -> Vec<Option<String>> {
    entries
        .iter()
        .map(|(name, _, parent)| {
            if name.contains('@') || *parent == [0; 16] {
                return None;
            }
            // A dataset made from its own snapshot is a rollback, not a clone.
            let own = format!("{name}@");
            entries
                .iter()
                .find(|(n, u, _)| n.contains('@') && u == parent)
                .map(|(n, _, _)| n.clone())
                .filter(|n| !n.starts_with(&own))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(name: &str, origin: Option<&str>) -> DatasetInfo {
        DatasetInfo {
            name: name.into(),
            kind: if name.contains('@') { DatasetKind::Snapshot } else { DatasetKind::Filesystem },
            used: 0,
            referenced: 0,
            origin: origin.map(Into::into),
            quota: None,
            mountpoint: None,
            creation: 0,
        }
    }

    #[test]
    fn destroy_order_is_children_first() {
        let all = vec![
            ds("img", None),
            ds("img@final", None),
            ds("a", Some("img@final")),
            ds("a@s", None),
            ds("b", Some("a@s")),
            ds("other", None),
        ];
        assert_eq!(destroy_order(&all, "img"), vec!["b", "a@s", "a", "img@final", "img"]);
        assert_eq!(destroy_order(&all, "a@s"), vec!["b", "a@s"]);
        assert_eq!(destroy_order(&all, "other"), vec!["other"]);
        assert!(is_clone_root(&all, "a", "img"));
        assert!(!is_clone_root(&all, "b", "img"));
    }

    #[test]
    fn origins_follow_parent_uuid_to_snapshots_only() {
        let e = vec![
            ("img".to_string(), [1; 16], [0; 16]),
            ("img@final".to_string(), [2; 16], [1; 16]),
            ("c".to_string(), [3; 16], [2; 16]),
            ("d".to_string(), [4; 16], [1; 16]), // a writable snapshot of a dataset: no origin
            ("img2".to_string(), [5; 16], [6; 16]),
            ("img2@s".to_string(), [6; 16], [0; 16]), // img2 was rolled back to its own @s
        ];
        assert_eq!(origins_by_uuid(&e), vec![None, None, Some("img@final".to_string()), None, None, None]);
    }
}
