//! Parses `btrfs qgroup show`.

use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qgroup {
    pub referenced: u64,
    pub exclusive: u64,
    pub max_referenced: Option<u64>,
}

/// Parses the output of `btrfs qgroup show --raw -r -e --sync <mnt>` (btrfs-progs 6.2) into
/// level-0 qgroups keyed by subvolume id. Rows that are not `0/<id>` are skipped.
pub fn parse_show(text: &str) -> Result<HashMap<u64, Qgroup>, String> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some(id) = f.first().and_then(|q| q.strip_prefix("0/")) else {
            continue;
        };
        let Ok(id) = id.parse::<u64>() else { continue };
        if f.len() < 5 {
            return Err(format!("short qgroup row: {line:?}"));
        }
        let num = |s: &str| s.parse::<u64>().map_err(|_| format!("bad number {s:?} in qgroup row {line:?}"));
        let max = match f[3] {
            "none" => None,
            s => Some(num(s)?),
        };
        out.insert(id, Qgroup { referenced: num(f[1])?, exclusive: num(f[2])?, max_referenced: max });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // btrfs qgroup show --raw -r -e --sync /tmp/qx/m   (btrfs-progs v6.2, Debian 12)
    const CAPTURED: &str = "\
Qgroupid    Referenced    Exclusive  Max referenced  Max exclusive   Path 
--------    ----------    ---------  --------------  -------------   ---- 
0/5              16384        16384            none           none   <toplevel>
0/256        524304384        16384            none           none   img
0/257        524304384        16384        10485760           none   img@final
1/100            16384        16384            none           none   <0 member qgroups>
";

    #[test]
    fn parses_captured_output() {
        let q = parse_show(CAPTURED).expect("parse");
        assert_eq!(q.len(), 3);
        assert_eq!(q[&256], Qgroup { referenced: 524304384, exclusive: 16384, max_referenced: None });
        assert_eq!(q[&257].max_referenced, Some(10485760));
    }

    #[test]
    fn rejects_garbage_numbers() {
        assert!(parse_show("0/256 12x 3 none none p").is_err());
        assert!(parse_show("0/256 12").is_err());
    }
}
