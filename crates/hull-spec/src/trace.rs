//! bpftrace programs scoped to zones: DTrace's `zonename` and `-z` on a kernel without
//! DTrace.
//!
//! A zone is known to the kernel by its PID namespace: every process in a zone, and every
//! process a zone makes in namespaces of its own, has a PID in the zone's namespace, at the
//! level just below the node's. [`zone_key`] is the bpftrace expression for that
//! namespace's inode number in the current task (0 outside any zone); [`scope`] rewrites a
//! program so that `zonename` reads a map hull fills in `BEGIN` (zone uuid or alias by
//! inode), and, for `-z`, so that probes run by a task fire only for the zone's tasks.
//!
//! The rewrite reads the program's top level only (probe headers, blocks, strings and
//! comments); bpftrace itself parses and checks the rest.

use std::fmt::Write as _;

/// The map hull fills with the zones' names.
pub const ZONE_MAP: &str = "@__hull_zone";

/// The bpftrace expression for the inode of the current task's PID namespace at `level`
/// (the zones' level: one below the node's own), or 0 for a task above it.
pub fn zone_key(level: u32) -> String {
    format!(
        "((uint64)(curtask->thread_pid->level >= {level} ? ((struct upid *)curtask->thread_pid->numbers + {level})->ns->ns.inum : 0))"
    )
}

/// One zone as the program sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// The inode of the zone's PID namespace.
    pub pidns: u64,
    /// What `zonename` reads for it (alias, or uuid when the zone has none).
    pub name: String,
}

/// Why a program cannot be scoped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    #[error("the program ends inside a string, a comment or a block (line {0})")]
    Unterminated(usize),
    #[error("unmatched '}}' at line {0}")]
    Unmatched(usize),
    #[error("a zone name holds a character bpftrace cannot take in a string: {0:?}")]
    BadName(String),
}

/// A piece of a program's top level.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    /// Text kept as it is: preprocessor lines, type definitions, space and comments.
    Verbatim(String),
    /// A probe: its header (attach points and predicate) and the inside of its block.
    Probe { header: String, body: String },
}

/// Splits a program's top level into probes and the rest.
fn items(src: &str) -> Result<Vec<Item>, TraceError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut start = 0; // start of the current header
    let mut line = 1;
    while i < b.len() {
        match b[i] {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b'"' => i = skip_string(b, i, &mut line)?,
            b'/' if b.get(i + 1) == Some(&b'/') => i = skip_line(b, i, &mut line),
            b'/' if b.get(i + 1) == Some(&b'*') => i = skip_comment(b, i, &mut line)?,
            b'#' if at_line_start(b, i) => {
                let end = skip_line(b, i, &mut line);
                out.push(Item::Verbatim(src[start..end].to_string()));
                start = end;
                i = end;
            }
            b'{' => {
                let header = &src[start..i];
                let close = matching(b, i, &mut line)?;
                let body = &src[i + 1..close];
                let h = strip_comments(header);
                let h = h.trim();
                if h.starts_with("struct") || h.starts_with("union") || h.starts_with("enum") {
                    out.push(Item::Verbatim(src[start..=close].to_string()));
                } else {
                    out.push(Item::Probe { header: header.to_string(), body: body.to_string() });
                }
                i = close + 1;
                start = i;
            }
            b'}' => return Err(TraceError::Unmatched(line)),
            _ => i += 1,
        }
    }
    out.push(Item::Verbatim(src[start..].to_string()));
    Ok(out)
}

fn at_line_start(b: &[u8], i: usize) -> bool {
    b[..i].iter().rev().take_while(|c| **c != b'\n').all(|c| c.is_ascii_whitespace())
}

fn skip_string(b: &[u8], mut i: usize, line: &mut usize) -> Result<usize, TraceError> {
    let from = *line;
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Ok(i + 1),
            b'\n' => {
                *line += 1;
                i += 1
            }
            _ => i += 1,
        }
    }
    Err(TraceError::Unterminated(from))
}

fn skip_line(b: &[u8], i: usize, _line: &mut usize) -> usize {
    b[i..].iter().position(|c| *c == b'\n').map_or(b.len(), |p| i + p)
}

fn skip_comment(b: &[u8], i: usize, line: &mut usize) -> Result<usize, TraceError> {
    let from = *line;
    let mut j = i + 2;
    while j + 1 < b.len() {
        if b[j] == b'*' && b[j + 1] == b'/' {
            return Ok(j + 2);
        }
        if b[j] == b'\n' {
            *line += 1;
        }
        j += 1;
    }
    Err(TraceError::Unterminated(from))
}

/// The index of the `}` that closes the `{` at `open`.
fn matching(b: &[u8], open: usize, line: &mut usize) -> Result<usize, TraceError> {
    let from = *line;
    let mut depth = 0usize;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            b'\n' => {
                *line += 1;
                i += 1
            }
            b'"' => i = skip_string(b, i, line)?,
            b'/' if b.get(i + 1) == Some(&b'/') => i = skip_line(b, i, line),
            b'/' if b.get(i + 1) == Some(&b'*') => i = skip_comment(b, i, line)?,
            b'{' => {
                depth += 1;
                i += 1
            }
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i);
                }
                i += 1
            }
            _ => i += 1,
        }
    }
    Err(TraceError::Unterminated(from))
}

fn strip_comments(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    let mut line = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            i = skip_line(b, i, &mut line);
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i = skip_comment(b, i, &mut line).unwrap_or(b.len());
        } else {
            let c = s[i..].chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The attach points of a probe header, without its predicate.
fn attach_points(header: &str) -> Vec<String> {
    let h = strip_comments(header);
    // A predicate starts at a '/' that follows space or an attach point's end and is not
    // part of a path (uprobe:/usr/bin/x:f): the points are separated by ',' and space.
    let mut points = Vec::new();
    for tok in h.split(|c: char| c == ',' || c.is_whitespace()) {
        let t = tok.trim();
        if t.is_empty() {
            continue;
        }
        if t.starts_with('/') {
            break;
        }
        points.push(t.to_string());
    }
    points
}

/// The provider of an attach point (`tracepoint`, `kprobe`...), long form.
pub fn provider(point: &str) -> String {
    let p = point.split(':').next().unwrap_or("");
    match p {
        "t" => "tracepoint",
        "k" => "kprobe",
        "kr" => "kretprobe",
        "u" => "uprobe",
        "ur" => "uretprobe",
        "U" => "usdt",
        "p" => "profile",
        "i" => "interval",
        "s" => "software",
        "h" => "hardware",
        "f" | "fentry" => "kfunc",
        "fr" | "fexit" => "kretfunc",
        "rt" => "rawtracepoint",
        "w" => "watchpoint",
        other => other,
    }
    .to_string()
}

/// Every provider a program attaches to.
pub fn providers(src: &str) -> Result<Vec<String>, TraceError> {
    let mut out: Vec<String> = Vec::new();
    for it in items(src)? {
        if let Item::Probe { header, .. } = it {
            for p in attach_points(&header) {
                let prov = provider(&p);
                if !out.contains(&prov) {
                    out.push(prov);
                }
            }
        }
    }
    Ok(out)
}

/// Whether a probe fires in the task it is about: `-z` applies to those only. Timers,
/// `BEGIN`/`END` and completions (run from interrupts) are left unfiltered.
fn task_context(points: &[String]) -> bool {
    points.iter().all(|p| {
        let prov = provider(p);
        !(p == "BEGIN"
            || p == "END"
            || prov == "interval"
            || p.contains("_complete")
            || p.starts_with("tracepoint:irq")
            || p.starts_with("tracepoint:timer"))
    })
}

/// Replaces the word `zonename` (not `@zonename`, `$zonename` or `x.zonename`) outside
/// strings and comments with `with` (the map lookup, or the one zone's name).
fn replace_zonename(body: &str, with: &str) -> String {
    let b = body.as_bytes();
    let mut out = String::with_capacity(body.len());
    let mut i = 0;
    let mut line = 0;
    let word = b"zonename";
    while i < b.len() {
        let next = match b[i] {
            b'"' => skip_string(b, i, &mut line).unwrap_or(b.len()),
            b'/' if b.get(i + 1) == Some(&b'/') => skip_line(b, i, &mut line),
            b'/' if b.get(i + 1) == Some(&b'*') => skip_comment(b, i, &mut line).unwrap_or(b.len()),
            _ if b[i..].starts_with(word) => {
                let before = if i == 0 { b' ' } else { b[i - 1] };
                let after = b.get(i + word.len()).copied().unwrap_or(b' ');
                let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
                if !ident(before) && !ident(after) && !matches!(before, b'@' | b'$' | b'.') {
                    out.push_str(with);
                    i += word.len();
                    continue;
                }
                i + word.len()
            }
            _ => i + s_len(body, i),
        };
        out.push_str(&body[i..next]);
        i = next;
    }
    out
}

fn s_len(s: &str, i: usize) -> usize {
    s[i..].chars().next().map_or(1, char::len_utf8)
}

/// Whether bpftrace can take `name` between quotes as it is (no quote, backslash or
/// control character, and within bpftrace's 64-byte strings).
pub fn fits_in_string(name: &str) -> bool {
    name.len() <= 63 && !name.chars().any(|c| c == '"' || c == '\\' || c.is_control())
}

/// A string bpftrace takes between quotes.
fn quoted(name: &str) -> Result<String, TraceError> {
    if !fits_in_string(name) {
        return Err(TraceError::BadName(name.to_string()));
    }
    Ok(format!("\"{name}\""))
}

/// Rewrites `src` for hull: `zonename` reads the zones' names (`"global"` outside any zone),
/// and with `only` set, probes that run in a task fire only for that zone's tasks.
pub fn scope(src: &str, level: u32, zones: &[Zone], only: Option<u64>) -> Result<String, TraceError> {
    let key = zone_key(level);
    let mut fill = format!("{ZONE_MAP}[(uint64)0] = \"global\"; ");
    for z in zones {
        write!(fill, "{ZONE_MAP}[(uint64){}] = {}; ", z.pidns, quoted(&z.name)?).ok();
    }
    let mut out = String::new();
    let mut begin = false;
    let mut end = false;
    for it in items(src)? {
        match it {
            Item::Verbatim(v) => out.push_str(&v),
            Item::Probe { header, body } => {
                let points = attach_points(&header);
                let lookup = format!("{ZONE_MAP}[{key}]");
                // Under -z a task's probe fires for the zone's tasks only: its zonename is
                // the zone's name, with no lookup per event.
                let filtered = only.is_some() && task_context(&points);
                let with = match only.and_then(|ns| zones.iter().find(|z| z.pidns == ns)) {
                    Some(z) if filtered => quoted(&z.name)?,
                    _ => lookup,
                };
                let header = replace_zonename(&header, &with);
                let mut body = replace_zonename(&body, &with);
                if points.iter().any(|p| p == "BEGIN") {
                    begin = true;
                    body = format!(" {fill}{body}");
                }
                if points.iter().any(|p| p == "END") {
                    end = true;
                    body = format!("{body}\n clear({ZONE_MAP}); ");
                }
                if let Some(ns) = only
                    && filtered
                {
                    body = format!(" if ({key} == {ns}) {{{body}}} ");
                }
                write!(out, "{header}{{{body}}}").ok();
            }
        }
    }
    if !begin {
        out = format!("BEGIN {{ {fill}}}\n{out}");
    }
    if !end {
        write!(out, "\nEND {{ clear({ZONE_MAP}); }}\n").ok();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zones() -> Vec<Zone> {
        vec![Zone { pidns: 42, name: "web".into() }]
    }

    #[test]
    fn zonename_reads_the_map_and_strings_and_maps_stay() {
        let p = r#"t:syscalls:sys_enter_openat /zonename == "web"/ { @zonename[zonename] = count(); printf("zonename\n"); }"#;
        let out = scope(p, 1, &zones(), None).expect("scope");
        assert!(out.contains(&format!("/{ZONE_MAP}[")), "{out}");
        assert!(out.contains(&format!("@zonename[{ZONE_MAP}[")), "{out}");
        assert!(out.contains(r#"printf("zonename\n")"#), "{out}");
        assert!(out.starts_with("BEGIN {"), "{out}");
        assert!(out.contains("[(uint64)42] = \"web\""), "{out}");
        assert!(out.trim_end().ends_with(&format!("END {{ clear({ZONE_MAP}); }}")), "{out}");
    }

    #[test]
    fn a_zone_filter_wraps_task_probes_only() {
        let p = "BEGIN { printf(\"hi\"); }\ntracepoint:block:block_bio_complete { @c = count(); }\ninterval:s:1 { exit(); }\nuprobe:/usr/bin/bash:readline { @r = count(); }";
        let out = scope(p, 1, &zones(), Some(42)).expect("scope");
        assert_eq!(out.matches("== 42) {").count(), 1, "{out}");
        let z = scope("t:syscalls:sys_enter_read { @[zonename] = count(); }", 1, &zones(), Some(42)).expect("scope");
        assert!(z.contains("@[\"web\"] = count()"), "the filtered probe's zonename is the zone's: {z}");
        assert!(out.contains("readline { if ("), "{out}");
        // The user's BEGIN gets the fill; no second BEGIN.
        assert_eq!(out.matches("BEGIN").count(), 1, "{out}");
    }

    #[test]
    fn providers_are_found_in_long_and_short_forms() {
        let p = "k:do_sys_open, kretprobe:vfs_read { } f:vfs_write /pid == 1/ { } uprobe:/bin/sh:main { }";
        assert_eq!(providers(p).expect("providers"), ["kprobe", "kretprobe", "kfunc", "uprobe"]);
    }

    #[test]
    fn type_definitions_and_includes_are_kept() {
        let p = "#include <linux/sched.h>\nstruct foo { int a; };\nBEGIN { exit(); }";
        let out = scope(p, 1, &[], Some(7)).expect("scope");
        assert!(out.contains("#include <linux/sched.h>\n"), "{out}");
        assert!(out.contains("struct foo { int a; };"), "{out}");
    }

    #[test]
    fn broken_programs_and_names_are_refused() {
        assert!(matches!(scope("BEGIN { \"x }", 1, &[], None), Err(TraceError::Unterminated(_))));
        assert!(matches!(scope("BEGIN { } }", 1, &[], None), Err(TraceError::Unmatched(_))));
        assert!(matches!(scope("/* x", 1, &[], None), Err(TraceError::Unterminated(_))));
        let bad = [Zone { pidns: 1, name: "a\"; system(\"x".into() }];
        assert!(matches!(scope("BEGIN { }", 1, &bad, None), Err(TraceError::BadName(_))));
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_scoped_or_refused_without_panic(s in ".{0,200}") {
            let _ = scope(&s, 1, &zones(), Some(42));
            let _ = providers(&s);
        }
    }
}
