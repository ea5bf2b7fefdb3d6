//! A method's exec string as smf_method(7) expands it, before `/bin/sh -c` runs it.
//!
//! Tokens: `%r` the restarter's name, `%m` the method's, `%s` the service's, `%i` the
//! instance's, `%f` the instance's FMRI, `%%` a `%`, and `%{prop}` a property's values:
//! `%{pg/prop}`, or `%{prop}` for the `application` group's property. The values are joined
//! by a space, or by the character after a colon (`%{config/hosts:,}`), and the shell's
//! metacharacters in them are quoted with a backslash, so a value is one word of data and
//! never shell syntax. An expansion that cannot be made (no such property, an unclosed
//! brace) fails the method, as SMF's does: the error names it.

use crate::Fmri;

/// What the tokens stand for.
pub struct Tokens<'a> {
    pub restarter: &'a str,
    pub method: &'a str,
    pub fmri: &'a Fmri,
}

/// Characters smf_method(7) quotes in a property's value.
const META: &[char] = &[';', '&', '(', ')', '|', '^', '<', '>', '\n', ' ', '\t', '\\', '"', '\'', '`', '$', '*', '?'];

fn quote(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if c == '\n' {
            // A backslash-newline is a line continuation to the shell: quote it instead.
            out.push_str("'\n'");
            continue;
        }
        if META.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Expands `exec`; `lookup(pg, prop)` gives a property's values (None: no such property).
pub fn expand(
    exec: &str,
    t: &Tokens,
    lookup: &dyn Fn(&str, &str) -> Option<Vec<String>>,
) -> std::result::Result<String, String> {
    let mut out = String::new();
    let mut chars = exec.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('r') => out.push_str(t.restarter),
            Some('m') => out.push_str(t.method),
            Some('s') => out.push_str(&t.fmri.service),
            Some('i') => out.push_str(t.fmri.instance.as_deref().unwrap_or("")),
            Some('f') => out.push_str(&t.fmri.to_string()),
            Some('%') => out.push('%'),
            Some('{') => {
                let mut body = String::new();
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '}' {
                        closed = true;
                        break;
                    }
                    body.push(c);
                }
                if !closed {
                    return Err(format!("%{{{body}: no closing brace in the method's exec"));
                }
                let (name, sep) = match body.rsplit_once(':') {
                    Some((n, s)) if s.chars().count() == 1 => (n, s),
                    _ => (body.as_str(), " "),
                };
                let (pg, prop) = name.split_once('/').unwrap_or(("application", name));
                if pg.is_empty() || prop.is_empty() || prop.contains('/') {
                    return Err(format!("%{{{body}}}: not a property name"));
                }
                let values = lookup(pg, prop).ok_or_else(|| format!("%{{{body}}}: no property {pg}/{prop}"))?;
                let quoted: Vec<String> = values.iter().map(|v| quote(v)).collect();
                out.push_str(&quoted.join(sep));
            }
            // Not a token: kept as written.
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(exec: &str) -> std::result::Result<String, String> {
        let f = Fmri::instance("site/web", "blue");
        let t = Tokens { restarter: "svc.startd", method: "start", fmri: &f };
        expand(exec, &t, &|pg, prop| match (pg, prop) {
            ("config", "port") => Some(vec!["8080".into()]),
            ("application", "config_file") => Some(vec!["/etc/web.conf".into()]),
            ("config", "hosts") => Some(vec!["a".into(), "b c".into()]),
            ("config", "evil") => Some(vec!["x; rm -rf / $(id)".into()]),
            ("config", "empty") => Some(vec![]),
            _ => None,
        })
    }

    #[test]
    fn tokens_and_properties() {
        assert_eq!(run("%r %m %s %i %f 100%%").expect("ok"), "svc.startd start site/web blue svc:/site/web:blue 100%");
        assert_eq!(run("web -p %{config/port}").expect("ok"), "web -p 8080");
        assert_eq!(run("web -c %{config_file}").expect("ok"), "web -c /etc/web.conf", "the application group's");
        assert_eq!(run("%{config/hosts}").expect("ok"), "a b\\ c");
        assert_eq!(run("%{config/hosts:,}").expect("ok"), "a,b\\ c");
        assert_eq!(run("x%{config/empty}y").expect("ok"), "xy");
        assert_eq!(run("50%x").expect("ok"), "50%x");
    }

    #[test]
    fn a_value_is_data_not_shell() {
        assert_eq!(run("echo %{config/evil}").expect("ok"), "echo x\\;\\ rm\\ -rf\\ /\\ \\$\\(id\\)");
    }

    #[test]
    fn a_failed_expansion_fails_the_method_and_names_it() {
        let e = run("web -c %{nosuch}").expect_err("fails");
        assert!(e.contains("%{nosuch}") && e.contains("application/nosuch"), "{e}");
        assert!(run("web %{config/port").expect_err("unclosed").contains("closing brace"));
        assert!(run("web %{/x}").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in ".{0,200}") {
            let _ = run(&s);
        }
    }
}
