//! The configuration repository, in SQLite as illumos's svc.configd keeps it: entities
//! (services and instances) with property groups, and the restarter's record of each
//! instance's state.
//!
//! ```text
//! entity(fmri, manifest)
//! prop(fmri, pg, pgtype, name, type, value)      value: a JSON array of strings
//! state(fmri, state, next_state, aux, stime, starts, enabled_at)
//! ```

use crate::{Fmri, Result, SvcError};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Prop {
    /// astring, count, integer, boolean, fmri...
    pub ty: String,
    pub values: Vec<String>,
}

/// The property types svccfg takes, as `setprop pg/prop = TYPE: value`.
pub const PROP_TYPES: &[&str] =
    &["astring", "ustring", "count", "integer", "boolean", "fmri", "time", "host", "net_address"];

impl Prop {
    /// `[TYPE:] value` as svccfg setprop reads it (astring when no type is named), checked
    /// against its type; surrounding double quotes are dropped.
    pub fn parse_typed(text: &str) -> Result<Prop> {
        let (ty, v) = match text.split_once(':') {
            Some((t, v)) if PROP_TYPES.contains(&t.trim()) => (t.trim().to_string(), v.trim().to_string()),
            _ => ("astring".to_string(), text.trim().to_string()),
        };
        let v = v.trim_matches('"').to_string();
        let ok = match ty.as_str() {
            "count" => v.parse::<u64>().is_ok(),
            "integer" => v.parse::<i64>().is_ok(),
            "boolean" => v == "true" || v == "false",
            "fmri" => v.starts_with("file://") || Fmri::parse(&v).is_ok(),
            _ => true,
        };
        if !ok {
            return Err(SvcError::Invalid(format!("{v:?} is not a valid {ty}")));
        }
        Ok(Prop { ty, values: vec![v] })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pg {
    /// method, dependency, framework, application...
    pub ty: String,
    pub props: BTreeMap<String, Prop>,
}

impl Pg {
    pub fn new(ty: &str) -> Pg {
        Pg { ty: ty.to_string(), props: BTreeMap::new() }
    }
}

/// A service or an instance with its own property groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    pub fmri: Fmri,
    pub pgs: BTreeMap<String, Pg>,
}

/// What the restarter recorded of an instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateRow {
    pub state: String,
    pub next_state: String,
    /// Why: `dependency`, `method_failed`, `restarting_too_quickly`, `administrative_request`...
    pub aux: String,
    /// When the state was entered, seconds since the epoch.
    pub stime: i64,
    /// Recent start times (ms since the epoch) for the restart-rate rule.
    pub starts: Vec<i64>,
}

pub struct Repo {
    db: Connection,
}

fn sql(op: &str, e: rusqlite::Error) -> SvcError {
    SvcError::Repo(format!("{op}: {e}"))
}

impl Repo {
    pub fn open(path: &Path) -> Result<Repo> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(|e| SvcError::Repo(format!("create {}: {e}", d.display())))?;
        }
        let db = Connection::open(path).map_err(|e| sql("open the repository", e))?;
        db.busy_timeout(std::time::Duration::from_secs(10)).map_err(|e| sql("busy timeout", e))?;
        db.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS entity(fmri TEXT PRIMARY KEY, manifest TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS prop(fmri TEXT NOT NULL, pg TEXT NOT NULL, pgtype TEXT NOT NULL,
                 name TEXT NOT NULL, type TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY(fmri, pg, name));
             CREATE TABLE IF NOT EXISTS state(fmri TEXT PRIMARY KEY, row TEXT NOT NULL);",
        )
        .map_err(|e| sql("create the schema", e))?;
        Ok(Repo { db })
    }

    /// Every entity, services before their instances.
    pub fn fmris(&self) -> Result<Vec<Fmri>> {
        let mut st = self.db.prepare("SELECT fmri FROM entity ORDER BY fmri").map_err(|e| sql("list", e))?;
        let rows = st.query_map([], |r| r.get::<_, String>(0)).map_err(|e| sql("list", e))?;
        let mut out = Vec::new();
        for r in rows {
            let f = r.map_err(|e| sql("list", e))?;
            out.push(Fmri::parse(&f)?);
        }
        Ok(out)
    }

    pub fn instances(&self) -> Result<Vec<Fmri>> {
        Ok(self.fmris()?.into_iter().filter(|f| f.instance.is_some()).collect())
    }

    pub fn exists(&self, f: &Fmri) -> Result<bool> {
        Ok(self
            .db
            .query_row("SELECT 1 FROM entity WHERE fmri = ?1", [f.to_string()], |_| Ok(()))
            .optional()
            .map_err(|e| sql("look up", e))?
            .is_some())
    }

    pub fn manifest_of(&self, f: &Fmri) -> Result<Option<String>> {
        self.db
            .query_row("SELECT manifest FROM entity WHERE fmri = ?1", [f.to_string()], |r| r.get(0))
            .optional()
            .map_err(|e| sql("look up", e))
    }

    /// An entity's own property groups (not composed with its service's).
    pub fn pgs(&self, f: &Fmri) -> Result<BTreeMap<String, Pg>> {
        let mut st = self
            .db
            .prepare("SELECT pg, pgtype, name, type, value FROM prop WHERE fmri = ?1 ORDER BY pg, name")
            .map_err(|e| sql("read", e))?;
        let rows = st
            .query_map([f.to_string()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .map_err(|e| sql("read", e))?;
        let mut out: BTreeMap<String, Pg> = BTreeMap::new();
        for r in rows {
            let (pg, pgty, name, ty, value) = r.map_err(|e| sql("read", e))?;
            let values: Vec<String> = serde_json::from_str(&value).unwrap_or_default();
            let pg = out.entry(pg).or_insert_with(|| Pg::new(&pgty));
            // An empty pg is stored as one row without a name.
            if !name.is_empty() {
                pg.props.insert(name, Prop { ty, values });
            }
        }
        Ok(out)
    }

    /// An instance's composed view: its service's property groups, overlaid by its own.
    pub fn composed(&self, f: &Fmri) -> Result<BTreeMap<String, Pg>> {
        let mut out = self.pgs(&f.service_fmri())?;
        if f.instance.is_some() {
            for (name, pg) in self.pgs(f)? {
                let into = out.entry(name).or_insert_with(|| Pg::new(&pg.ty));
                into.ty = pg.ty.clone();
                into.props.extend(pg.props);
            }
        }
        Ok(out)
    }

    /// One property's values, composed: `pg/prop`.
    pub fn prop(&self, f: &Fmri, pg: &str, name: &str) -> Result<Option<Prop>> {
        Ok(self.composed(f)?.get(pg).and_then(|p| p.props.get(name)).cloned())
    }

    pub fn set_prop(&mut self, f: &Fmri, pg: &str, pgtype: &str, name: &str, p: &Prop) -> Result<()> {
        if !self.exists(f)? {
            return Err(SvcError::NotFound(f.to_string()));
        }
        self.db
            .execute(
                "INSERT OR REPLACE INTO prop(fmri, pg, pgtype, name, type, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![f.to_string(), pg, pgtype, name, p.ty, serde_json::to_string(&p.values).unwrap_or_default()],
            )
            .map_err(|e| sql("set property", e))?;
        Ok(())
    }

    /// Adds entities (a manifest's import) in one transaction: each entity's property groups
    /// are replaced, and `added` dependency groups go onto existing entities.
    pub fn import(&mut self, manifest: &str, ents: &[Entity], added: &[(Fmri, String, Pg)]) -> Result<()> {
        let tx = self.db.transaction().map_err(|e| sql("begin", e))?;
        for e in ents {
            let f = e.fmri.to_string();
            tx.execute("INSERT OR REPLACE INTO entity(fmri, manifest) VALUES (?1, ?2)", params![f, manifest])
                .map_err(|e| sql("import", e))?;
            // Instance state (general/enabled) kept by an earlier import survives a re-import.
            let keep_enabled: Option<String> = if e.fmri.instance.is_some() {
                tx.query_row(
                    "SELECT value FROM prop WHERE fmri = ?1 AND pg = 'general' AND name = 'enabled'",
                    [&f],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| sql("import", e))?
            } else {
                None
            };
            // A dependency group another service's <dependent> put here is that service's: it
            // survives this entity's import (SMF keeps it; the other records it in its own
            // `dependents` group). Everything else of the entity is the manifest's.
            let others: Vec<String> = {
                let mut st = tx
                    .prepare("SELECT fmri, name, value FROM prop WHERE pg = 'dependents'")
                    .map_err(|e| sql("import", e))?;
                let rows = st
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))
                    .map_err(|e| sql("import", e))?;
                rows.filter_map(std::result::Result::ok)
                    .filter(|(src, _, v)| {
                        Fmri::parse(src).is_ok_and(|s| s.service != e.fmri.service)
                            && serde_json::from_str::<Vec<String>>(v).is_ok_and(|t| t.contains(&f))
                    })
                    .map(|(_, name, _)| name)
                    .collect()
            };
            let pgs: Vec<String> = {
                let mut st =
                    tx.prepare("SELECT DISTINCT pg FROM prop WHERE fmri = ?1").map_err(|e| sql("import", e))?;
                let rows = st.query_map([&f], |r| r.get::<_, String>(0)).map_err(|e| sql("import", e))?;
                rows.filter_map(std::result::Result::ok).collect()
            };
            for pg in pgs.iter().filter(|pg| !others.contains(pg)) {
                tx.execute("DELETE FROM prop WHERE fmri = ?1 AND pg = ?2", params![f, pg])
                    .map_err(|e| sql("import", e))?;
            }
            for (pg, g) in &e.pgs {
                insert_pg(&tx, &f, pg, g)?;
            }
            if let Some(v) = keep_enabled {
                tx.execute(
                    "UPDATE prop SET value = ?2 WHERE fmri = ?1 AND pg = 'general' AND name = 'enabled'",
                    params![f, v],
                )
                .map_err(|e| sql("import", e))?;
            }
        }
        for (target, name, pg) in added {
            insert_pg(&tx, &target.to_string(), name, pg)?;
        }
        tx.commit().map_err(|e| sql("commit", e))
    }

    /// Deletes a service (and its instances) or an instance.
    pub fn delete(&mut self, f: &Fmri) -> Result<Vec<Fmri>> {
        let gone: Vec<Fmri> = self.fmris()?.into_iter().filter(|e| f.covers(e)).collect();
        if gone.is_empty() {
            return Err(SvcError::NotFound(f.to_string()));
        }
        let tx = self.db.transaction().map_err(|e| sql("begin", e))?;
        for g in &gone {
            for table in ["entity", "prop", "state"] {
                tx.execute(&format!("DELETE FROM {table} WHERE fmri = ?1"), [g.to_string()])
                    .map_err(|e| sql("delete", e))?;
            }
        }
        tx.commit().map_err(|e| sql("commit", e))?;
        Ok(gone)
    }

    pub fn state(&self, f: &Fmri) -> Result<Option<StateRow>> {
        let row: Option<String> = self
            .db
            .query_row("SELECT row FROM state WHERE fmri = ?1", [f.to_string()], |r| r.get(0))
            .optional()
            .map_err(|e| sql("read state", e))?;
        Ok(row.and_then(|r| serde_json::from_str(&r).ok()))
    }

    pub fn states(&self) -> Result<BTreeMap<String, StateRow>> {
        let mut st = self.db.prepare("SELECT fmri, row FROM state").map_err(|e| sql("read state", e))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| sql("read state", e))?;
        let mut out = BTreeMap::new();
        for r in rows {
            let (f, row) = r.map_err(|e| sql("read state", e))?;
            if let Ok(s) = serde_json::from_str(&row) {
                out.insert(f, s);
            }
        }
        Ok(out)
    }

    /// Writes many instances' states in one transaction.
    pub fn put_states(&mut self, rows: &[(String, StateRow)]) -> Result<()> {
        let tx = self.db.transaction().map_err(|e| sql("begin", e))?;
        for (f, row) in rows {
            tx.execute(
                "INSERT OR REPLACE INTO state(fmri, row) VALUES (?1, ?2)",
                params![f, serde_json::to_string(row).unwrap_or_default()],
            )
            .map_err(|e| sql("write state", e))?;
        }
        tx.commit().map_err(|e| sql("commit", e))
    }
}

fn insert_pg(tx: &rusqlite::Transaction, f: &str, name: &str, g: &Pg) -> Result<()> {
    if g.props.is_empty() {
        tx.execute(
            "INSERT OR REPLACE INTO prop(fmri, pg, pgtype, name, type, value) VALUES (?1, ?2, ?3, '', '', '[]')",
            params![f, name, g.ty],
        )
        .map_err(|e| sql("import", e))?;
    }
    for (k, p) in &g.props {
        tx.execute(
            "INSERT OR REPLACE INTO prop(fmri, pg, pgtype, name, type, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![f, name, g.ty, k, p.ty, serde_json::to_string(&p.values).unwrap_or_default()],
        )
        .map_err(|e| sql("import", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod typed_tests {
    use super::*;

    #[test]
    fn setprop_values_are_checked_against_their_type() {
        assert_eq!(Prop::parse_typed("count: 5").expect("count").values, ["5"]);
        assert_eq!(Prop::parse_typed("\"hello world\"").expect("astring").ty, "astring");
        assert_eq!(Prop::parse_typed("boolean: true").expect("bool").ty, "boolean");
        assert!(Prop::parse_typed("count: -1").is_err());
        assert!(Prop::parse_typed("boolean: yes").is_err());
        assert!(Prop::parse_typed("fmri: not an fmri").is_err());
        assert_eq!(Prop::parse_typed("fmri: svc:/site/db").expect("fmri").values, ["svc:/site/db"]);
        // A colon in an astring value is not a type.
        assert_eq!(Prop::parse_typed("http://x").expect("url").values, ["http://x"]);
    }
}
