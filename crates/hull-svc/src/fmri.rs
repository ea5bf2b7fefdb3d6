//! FMRIs: `svc:/system/zones:default` names an instance, `svc:/system/zones` its service.
//! Operators abbreviate: `zones`, `system/zones`, `zones:default` and globs such as
//! `svc:/network/*` all resolve against the repository's names.

use crate::{Result, SvcError};

/// A service or instance name, normalised to `svc:/SERVICE[:INSTANCE]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Fmri {
    pub service: String,
    pub instance: Option<String>,
}

fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s.split('/').all(|seg| {
            !seg.is_empty() && seg.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ','))
        })
}

impl Fmri {
    /// Parses a full FMRI (`svc:/a/b:i` or `svc:/a/b`); `svc:` may be left off when the
    /// name starts with `/`.
    pub fn parse(s: &str) -> Result<Fmri> {
        let rest = s.strip_prefix("svc:").unwrap_or(s);
        let rest = rest.strip_prefix('/').ok_or_else(|| SvcError::BadFmri(s.to_string()))?;
        let (service, instance) = match rest.split_once(':') {
            Some((svc, inst)) => (svc, Some(inst)),
            None => (rest, None),
        };
        if !valid_part(service) || instance.is_some_and(|i| !valid_part(i) || i.contains('/')) {
            return Err(SvcError::BadFmri(s.to_string()));
        }
        Ok(Fmri { service: service.to_string(), instance: instance.map(String::from) })
    }

    pub fn instance(service: &str, instance: &str) -> Fmri {
        Fmri { service: service.to_string(), instance: Some(instance.to_string()) }
    }

    /// The service this names (itself, for a service).
    pub fn service_fmri(&self) -> Fmri {
        Fmri { service: self.service.clone(), instance: None }
    }

    /// Whether this FMRI, as a dependency target or an operand, stands for `other`: it is
    /// `other`, or `other`'s service (a service stands for all its instances).
    pub fn covers(&self, other: &Fmri) -> bool {
        self == other || (self.instance.is_none() && self.service == other.service)
    }

    /// The log file's name, as SMF makes it: `system-zones:default.log`.
    pub fn log_name(&self) -> String {
        format!("{}:{}.log", self.service.replace('/', "-"), self.instance.as_deref().unwrap_or("default"))
    }

    /// Whether an operator's abbreviation or glob names this FMRI. A pattern matches on
    /// whole path components from the right: `zones` and `system/zones` match
    /// `svc:/system/zones:default`; `*` matches within a name.
    pub fn matches(&self, pattern: &str) -> bool {
        let full = self.to_string();
        if pattern.contains('*') || pattern.contains('?') {
            let p = if pattern.starts_with("svc:") || pattern.starts_with('/') {
                pattern.strip_prefix("svc:").unwrap_or(pattern).to_string()
            } else {
                format!("*{pattern}")
            };
            let service_only = format!("/{}", self.service);
            return glob(&p, full.strip_prefix("svc:").unwrap_or(&full)) || glob(&p, &service_only);
        }
        if let Ok(f) = Fmri::parse(pattern) {
            return f.covers(self);
        }
        let (svc_pat, inst_pat) = match pattern.split_once(':') {
            Some((s, i)) => (s, Some(i)),
            None => (pattern, None),
        };
        let svc_ok = self.service == svc_pat || self.service.ends_with(&format!("/{svc_pat}"));
        let inst_ok = match inst_pat {
            Some(i) => self.instance.as_deref() == Some(i),
            None => true,
        };
        svc_ok && inst_ok
    }
}

impl std::fmt::Display for Fmri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.instance {
            Some(i) => write!(f, "svc:/{}:{}", self.service, i),
            None => write!(f, "svc:/{}", self.service),
        }
    }
}

/// Shell-style `*` and `?` matching.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let f = Fmri::parse("svc:/system/zones:default").expect("fmri");
        assert_eq!(f, Fmri::instance("system/zones", "default"));
        assert_eq!(f.to_string(), "svc:/system/zones:default");
        assert_eq!(Fmri::parse("/system/zones").expect("service").instance, None);
        for bad in ["zones", "svc:/", "svc:/a//b", "svc:/a:b/c", "svc:/a b", "svc:/a:"] {
            assert!(Fmri::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(f.log_name(), "system-zones:default.log");
        assert!(f.service_fmri().covers(&f) && f.covers(&f));
        assert!(!f.covers(&f.service_fmri()) && !f.covers(&Fmri::instance("system/zones", "other")));
    }

    #[test]
    fn abbreviations_and_globs() {
        let f = Fmri::parse("svc:/network/ssh:default").expect("fmri");
        for yes in ["ssh", "network/ssh", "ssh:default", "svc:/network/ssh", "svc:/network/*", "*ssh*", "network/s?h"] {
            assert!(f.matches(yes), "{yes}");
        }
        for no in ["sh", "work/ssh", "ssh:other", "svc:/system/*", "svc:/network/ssh:x"] {
            assert!(!f.matches(no), "{no}");
        }
    }
}
