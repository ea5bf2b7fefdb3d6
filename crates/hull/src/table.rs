//! Output formats shared by the tools: `-o` columns, `-s` sort keys, `-H` (no header,
//! tab-separated), `field=value` filters, all over rows that are JSON objects.

use serde_json::Value;
use std::cmp::Ordering;

/// A field by dotted path: `files.0.size`, `tags.role`.
pub fn lookup<'a>(row: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = row;
    for part in path.split('.') {
        cur = match cur {
            Value::Object(m) => m.get(part)?,
            Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// A value as a table cell: strings bare, `-` for nothing.
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => {
            if a.is_empty() {
                "-".into()
            } else {
                a.iter().map(|x| cell(Some(x))).collect::<Vec<_>>().join(",")
            }
        }
        Some(v) => v.to_string(),
    }
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            x.as_f64().unwrap_or(0.0).partial_cmp(&y.as_f64().unwrap_or(0.0)).unwrap_or(Ordering::Equal)
        }
        (None | Some(Value::Null), None | Some(Value::Null)) => Ordering::Equal,
        (None | Some(Value::Null), _) => Ordering::Less,
        (_, None | Some(Value::Null)) => Ordering::Greater,
        (x, y) => cell(x).cmp(&cell(y)),
    }
}

/// Orders two rows by keys in turn; `-key` orders that key descending.
pub fn cmp_rows(a: &Value, b: &Value, keys: &[String]) -> Ordering {
    for k in keys {
        let (k, desc) = match k.strip_prefix('-') {
            Some(k) => (k, true),
            None => (k.as_str(), false),
        };
        let o = compare(lookup(a, k), lookup(b, k));
        let o = if desc { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// A filter as imgadm and vmadm take them: `field=value` (equal), `field=~text`
/// (contains). Booleans and numbers compare by their text.
#[derive(Debug, Clone)]
pub struct Filter {
    field: String,
    value: String,
    contains: bool,
}

impl std::str::FromStr for Filter {
    type Err = String;
    fn from_str(s: &str) -> Result<Filter, String> {
        let (field, value) = s.split_once('=').ok_or_else(|| format!("invalid filter {s:?}: expected FIELD=VALUE"))?;
        if field.is_empty() {
            return Err(format!("invalid filter {s:?}: no field"));
        }
        let (value, contains) = match value.strip_prefix('~') {
            Some(v) => (v.to_string(), true),
            None => (value.to_string(), false),
        };
        Ok(Filter { field: field.to_string(), value, contains })
    }
}

impl Filter {
    pub fn field(&self) -> &str {
        &self.field
    }

    pub fn matches(&self, row: &Value) -> bool {
        let v = cell(lookup(row, &self.field));
        if self.contains { v.contains(&self.value) } else { v == self.value }
    }
}

/// Renders rows as a table: upper-case header, left-aligned columns two spaces apart; with
/// `parseable` no header and tab-separated.
pub fn render(rows: &[Value], cols: &[String], parseable: bool) -> String {
    let cells: Vec<Vec<String>> = rows.iter().map(|r| cols.iter().map(|c| cell(lookup(r, c))).collect()).collect();
    let mut out = String::new();
    if parseable {
        for r in cells {
            out.push_str(&r.join("\t"));
            out.push('\n');
        }
        return out;
    }
    let header: Vec<String> = cols.iter().map(|c| c.to_uppercase()).collect();
    let widths: Vec<usize> = (0..cols.len())
        .map(|i| cells.iter().map(|r| r[i].chars().count()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    for r in std::iter::once(&header).chain(cells.iter()) {
        // Padded by hand: `format!`'s width is a u16 and panics past it (a 65,536-character
        // alias did that to every `vmadm list`).
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| {
                let mut cell = c.clone();
                cell.extend(std::iter::repeat_n(' ', w.saturating_sub(c.chars().count())));
                cell
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Splits `a,b,c`.
pub fn fields(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|f| !f.is_empty()).map(String::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_sort_filter() {
        let mut rows = vec![
            json!({"name": "b", "size": 10, "files": [{"sha1": "x"}], "on": true}),
            json!({"name": "a", "size": 200, "files": [], "on": false}),
        ];
        rows.sort_by(|a, b| cmp_rows(a, b, &["name".into()]));
        assert_eq!(
            render(&rows, &fields("name,size,files.0.sha1"), false),
            "NAME  SIZE  FILES.0.SHA1\na     200   -\nb     10    x\n"
        );
        rows.sort_by(|a, b| cmp_rows(a, b, &["-size".into()]));
        assert_eq!(render(&rows, &fields("name,size"), true), "a\t200\nb\t10\n");
        let f: Filter = "on=true".parse().expect("filter");
        assert!(f.matches(&rows[1]) && !f.matches(&rows[0]));
        let f: Filter = "name=~b".parse().expect("filter");
        assert!(f.matches(&rows[1]));
        assert!("noequals".parse::<Filter>().is_err());
        let long = "x".repeat(70_000);
        let out = render(&[json!({"alias": long, "n": 1})], &fields("alias,n"), false);
        assert!(out.lines().nth(1).is_some_and(|l| l.len() == 70_003), "wide cells are padded, not a panic");
    }
}
