use crate::table;
use crate::{CmdResult, Failure, print_json};
use clap::Subcommand;
use hull_spec::size::{format_size, parse_size};
use hull_storage::name::strip_pool;
use hull_storage::{DatasetInfo, DatasetKind, DatasetName, Node, Pool, SnapshotName};

#[derive(Subcommand)]
pub enum DatasetCmd {
    /// List datasets (and with -t snapshot or all, snapshots).
    List {
        #[arg(short = 'j')]
        json: bool,
        /// No header; tab-separated.
        #[arg(short = 'H')]
        no_header: bool,
        /// Exact numbers instead of 1.5G.
        #[arg(short = 'p')]
        parseable: bool,
        /// filesystem, snapshot or all.
        #[arg(short = 't', default_value = "filesystem")]
        kind: String,
        #[arg(short = 'o', default_value = "name,used,referenced,origin,mountpoint")]
        columns: String,
    },
    /// Make an empty dataset: zones/NAME.
    Create {
        name: String,
    },
    /// Take a read-only snapshot: zones/NAME@SNAP.
    Snapshot {
        name: String,
    },
    /// Make a writable dataset from a snapshot.
    Clone {
        snapshot: String,
        target: String,
    },
    Rename {
        from: String,
        to: String,
    },
    /// Destroy a dataset or snapshot; -r also destroys its snapshots and dependent clones.
    Destroy {
        #[arg(short = 'r', short_alias = 'R')]
        recursive: bool,
        name: String,
    },
    /// Print a property: used, referenced, origin, quota, mountpoint, creation, type.
    Get {
        property: String,
        name: String,
        #[arg(short = 'p')]
        parseable: bool,
    },
    /// Set a property: quota=SIZE|none.
    Set {
        assignment: String,
        name: String,
    },
}

fn row(d: &DatasetInfo, pool: &str, parseable: bool) -> serde_json::Value {
    let size = |n: u64| {
        if parseable { serde_json::json!(n) } else { serde_json::json!(format_size(n)) }
    };
    serde_json::json!({
        "name": format!("{pool}/{}", d.name),
        "type": d.kind,
        "used": size(d.used),
        "referenced": size(d.referenced),
        "refer": size(d.referenced),
        "origin": d.origin.as_ref().map(|o| format!("{pool}/{o}")),
        "quota": d.quota.map(size),
        "mountpoint": d.mountpoint,
        "creation": d.creation,
    })
}

fn ds(pool: &dyn Pool, name: &str) -> Result<DatasetName, Failure> {
    Ok(DatasetName::parse(strip_pool(pool.name(), name)?)?)
}

fn snap(pool: &dyn Pool, name: &str) -> Result<SnapshotName, Failure> {
    Ok(SnapshotName::parse(strip_pool(pool.name(), name)?)?)
}

pub fn run(node: &Node, cmd: DatasetCmd) -> CmdResult {
    let pool = node.pool()?;
    let pool = pool.as_ref();
    match cmd {
        DatasetCmd::List { json, no_header, parseable, kind, columns } => {
            let want: &[DatasetKind] = match kind.as_str() {
                "filesystem" => &[DatasetKind::Filesystem],
                "snapshot" => &[DatasetKind::Snapshot],
                "all" => &[DatasetKind::Filesystem, DatasetKind::Snapshot],
                other => {
                    return Err(Failure::new(2, format!("invalid type {other:?} (filesystem, snapshot or all)")));
                }
            };
            let mut list = pool.list()?;
            list.retain(|d| want.contains(&d.kind));
            list.sort_by(|a, b| a.name.cmp(&b.name));
            if json {
                let rows: Vec<_> = list.iter().map(|d| row(d, pool.name(), true)).collect();
                print_json(&rows);
            } else {
                let rows: Vec<_> = list.iter().map(|d| row(d, pool.name(), parseable)).collect();
                print!("{}", table::render(&rows, &table::fields(&columns), no_header));
            }
        }
        DatasetCmd::Create { name } => pool.create(&ds(pool, &name)?)?,
        DatasetCmd::Snapshot { name } => pool.snapshot(&snap(pool, &name)?)?,
        DatasetCmd::Clone { snapshot, target } => pool.clone_snapshot(&snap(pool, &snapshot)?, &ds(pool, &target)?)?,
        DatasetCmd::Rename { from, to } => pool.rename(&ds(pool, &from)?, &ds(pool, &to)?)?,
        DatasetCmd::Destroy { recursive, name } => {
            let gone = if name.contains('@') {
                hull_storage::destroy_snapshot(pool, &snap(pool, &name)?, recursive)?
            } else {
                hull_storage::destroy(pool, &ds(pool, &name)?, recursive)?
            };
            for g in gone {
                println!("destroyed {g}");
            }
        }
        DatasetCmd::Get { property, name, parseable } => {
            let short = strip_pool(pool.name(), &name)?;
            let d = hull_storage::get(pool, short)?;
            let r = row(&d, pool.name(), parseable);
            let v = table::lookup(&r, &property)
                .ok_or_else(|| Failure::new(1, format!("unknown property {property:?}")))?;
            println!("{}", table::cell(Some(v)));
        }
        DatasetCmd::Set { assignment, name } => {
            let (prop, value) = assignment
                .split_once('=')
                .ok_or_else(|| Failure::new(2, format!("expected PROPERTY=VALUE, got {assignment:?}")))?;
            match prop {
                "quota" => {
                    let q = match value {
                        "none" | "0" => None,
                        v => Some(parse_size(v).map_err(|e| Failure::new(1, e))?),
                    };
                    pool.set_quota(&ds(pool, &name)?, q)?;
                }
                other => {
                    return Err(Failure::new(1, format!("property {other:?} cannot be set (quota)")));
                }
            }
        }
    }
    Ok(())
}
