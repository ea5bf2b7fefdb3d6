//! Service manifests: SMF's XML service bundles (the subset real manifests use) and an
//! equivalent TOML form, both read into [`ServiceDef`]s and then into the repository's
//! property groups, as svccfg import does.

use crate::repo::{Entity, Pg, Prop};
use crate::{Fmri, Result, SvcError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Grouping {
    RequireAll,
    RequireAny,
    OptionalAll,
    ExcludeAll,
}

impl Grouping {
    pub fn parse(s: &str) -> Option<Grouping> {
        Some(match s {
            "require_all" => Grouping::RequireAll,
            "require_any" => Grouping::RequireAny,
            "optional_all" => Grouping::OptionalAll,
            "exclude_all" => Grouping::ExcludeAll,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Grouping::RequireAll => "require_all",
            Grouping::RequireAny => "require_any",
            Grouping::OptionalAll => "optional_all",
            Grouping::ExcludeAll => "exclude_all",
        }
    }
}

/// When a dependent restarts because of its dependency: ordered, each level includes those
/// before it (none < error < restart < refresh).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartOn {
    None,
    Error,
    Restart,
    Refresh,
}

impl RestartOn {
    pub fn parse(s: &str) -> Option<RestartOn> {
        Some(match s {
            "none" => RestartOn::None,
            "error" => RestartOn::Error,
            "restart" => RestartOn::Restart,
            "refresh" => RestartOn::Refresh,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RestartOn::None => "none",
            RestartOn::Error => "error",
            RestartOn::Restart => "restart",
            RestartOn::Refresh => "refresh",
        }
    }
}

fn default_grouping() -> Grouping {
    Grouping::RequireAll
}
fn default_restart_on() -> RestartOn {
    RestartOn::None
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DepDef {
    pub name: String,
    #[serde(default = "default_grouping")]
    pub grouping: Grouping,
    #[serde(default = "default_restart_on")]
    pub restart_on: RestartOn,
    pub fmris: Vec<String>,
    #[serde(skip)]
    pub line: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ContextDef {
    pub user: Option<String>,
    pub group: Option<String>,
    /// `method_credential`'s supplementary groups, comma-separated names (`netadm,sys`).
    #[serde(default)]
    pub supp_groups: Option<String>,
    /// `method_profile`: an RBAC profile, kept and shown; Linux has no RBAC to apply it.
    #[serde(default)]
    pub profile: Option<String>,
    pub working_directory: Option<String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MethodDef {
    pub exec: String,
    /// Seconds; 0 or less for none.
    #[serde(default)]
    pub timeout_seconds: Option<i64>,
    #[serde(default, flatten)]
    pub context: ContextDef,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InstanceDef {
    pub name: String,
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, rename = "dependency")]
    pub dependencies: Vec<DepDef>,
    #[serde(default)]
    pub methods: BTreeMap<String, MethodDef>,
    #[serde(default)]
    pub property_groups: BTreeMap<String, BTreeMap<String, String>>,
    /// Declared types: `pg` → the group's type, `pg/prop` → the property's.
    #[serde(default)]
    pub types: BTreeMap<String, String>,
    /// `<restarter>`: the FMRI of the restarter that runs it, when not svc.startd.
    #[serde(default)]
    pub restarter: Option<String>,
    /// The instance's own template (identity's `node` and `domain` each have one).
    #[serde(default)]
    pub common_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub documentation: Vec<DocDef>,
}

/// A template's documentation: a man page or a link.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum DocDef {
    Manpage { title: String, section: String, manpath: Option<String> },
    DocLink { name: String, uri: String },
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceDef {
    pub name: String,
    #[serde(default)]
    pub common_name: Option<String>,
    /// The template's description.
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub documentation: Vec<DocDef>,
    /// `<restarter>`: the FMRI of the restarter that runs it, when not svc.startd.
    #[serde(default)]
    pub restarter: Option<String>,
    /// `Some(enabled)`: make a `default` instance.
    #[serde(default)]
    pub create_default_instance: Option<bool>,
    #[serde(default)]
    pub single_instance: bool,
    /// startd/duration: contract (the default), transient, child or wait.
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default, rename = "dependency")]
    pub dependencies: Vec<DepDef>,
    #[serde(default, rename = "dependent")]
    pub dependents: Vec<DepDef>,
    #[serde(default)]
    pub methods: BTreeMap<String, MethodDef>,
    #[serde(default)]
    pub context: ContextDef,
    #[serde(default)]
    pub property_groups: BTreeMap<String, BTreeMap<String, String>>,
    /// Declared types: `pg` → the group's type, `pg/prop` → the property's.
    #[serde(default)]
    pub types: BTreeMap<String, String>,
    #[serde(default, rename = "instance")]
    pub instances: Vec<InstanceDef>,
    #[serde(skip)]
    pub line: Option<u32>,
}

/// A parsed manifest: its services, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    pub path: String,
    pub services: Vec<ServiceDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlBundle {
    #[serde(default, rename = "service")]
    services: Vec<ServiceDef>,
}

fn bad(path: &str, line: Option<u32>, reason: impl Into<String>) -> SvcError {
    SvcError::Manifest { path: path.to_string(), line, reason: reason.into() }
}

/// Reads a manifest file: TOML when it ends in `.toml`, SMF XML otherwise.
pub fn load(path: &Path) -> Result<Bundle> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| bad(&p, None, format!("cannot read: {e}")))?;
    if path.extension().is_some_and(|e| e == "toml") { parse_toml(&p, &text) } else { parse_xml(&p, &text) }
}

pub fn parse_toml(path: &str, text: &str) -> Result<Bundle> {
    let b: TomlBundle = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1) as u32);
        bad(path, line, e.message().to_string())
    })?;
    let bundle = Bundle { path: path.to_string(), services: b.services };
    check(&bundle)?;
    Ok(bundle)
}

// ------------------------------------------------------------------ XML

struct X<'a> {
    path: &'a str,
    doc: &'a roxmltree::Document<'a>,
}

impl<'a> X<'a> {
    fn line(&self, n: roxmltree::Node) -> u32 {
        self.doc.text_pos_at(n.range().start).row
    }
    fn err(&self, n: roxmltree::Node, reason: impl Into<String>) -> SvcError {
        bad(self.path, Some(self.line(n)), reason)
    }
    fn attr(&self, n: roxmltree::Node, name: &str) -> Result<String> {
        n.attribute(name)
            .map(String::from)
            .ok_or_else(|| self.err(n, format!("<{}> needs the attribute {name}", n.tag_name().name())))
    }
    fn children<'b>(&self, n: roxmltree::Node<'b, 'b>) -> impl Iterator<Item = roxmltree::Node<'b, 'b>> {
        n.children().filter(|c| c.is_element())
    }

    fn dependency(&self, n: roxmltree::Node) -> Result<DepDef> {
        let grouping_s = self.attr(n, "grouping")?;
        let grouping =
            Grouping::parse(&grouping_s).ok_or_else(|| self.err(n, format!("unknown grouping {grouping_s:?}")))?;
        let restart_s = self.attr(n, "restart_on")?;
        let restart_on =
            RestartOn::parse(&restart_s).ok_or_else(|| self.err(n, format!("unknown restart_on {restart_s:?}")))?;
        let mut fmris = Vec::new();
        for c in self.children(n) {
            match c.tag_name().name() {
                "service_fmri" => fmris.push(self.attr(c, "value")?),
                "stability" => {}
                other => return Err(self.err(c, format!("unknown element <{other}> in <{}>", n.tag_name().name()))),
            }
        }
        if fmris.is_empty() {
            return Err(self.err(n, "a dependency needs at least one <service_fmri>"));
        }
        Ok(DepDef { name: self.attr(n, "name")?, grouping, restart_on, fmris, line: Some(self.line(n)) })
    }

    fn context(&self, n: roxmltree::Node, into: &mut ContextDef) -> Result<()> {
        if let Some(w) = n.attribute("working_directory") {
            into.working_directory = Some(w.to_string());
        }
        for c in self.children(n) {
            match c.tag_name().name() {
                "method_credential" => {
                    into.user = c.attribute("user").map(String::from);
                    into.group = c.attribute("group").map(String::from);
                    into.supp_groups = c.attribute("supp_groups").map(String::from);
                }
                "method_environment" => {
                    for e in self.children(c) {
                        if e.tag_name().name() != "envvar" {
                            return Err(self
                                .err(e, format!("unknown element <{}> in <method_environment>", e.tag_name().name())));
                        }
                        into.environment.insert(self.attr(e, "name")?, self.attr(e, "value")?);
                    }
                }
                "method_profile" => into.profile = Some(self.attr(c, "name")?),
                other => return Err(self.err(c, format!("unknown element <{other}> in <method_context>"))),
            }
        }
        Ok(())
    }

    fn method(&self, n: roxmltree::Node) -> Result<(String, MethodDef)> {
        let name = self.attr(n, "name")?;
        let timeout = match n.attribute("timeout_seconds") {
            Some(t) => {
                Some(t.parse::<i64>().map_err(|_| self.err(n, format!("timeout_seconds {t:?} is not a number")))?)
            }
            None => None,
        };
        let mut m = MethodDef { exec: self.attr(n, "exec")?, timeout_seconds: timeout, context: ContextDef::default() };
        for c in self.children(n) {
            match c.tag_name().name() {
                "method_context" => self.context(c, &mut m.context)?,
                "stability" | "propval" | "property" => {}
                other => return Err(self.err(c, format!("unknown element <{other}> in <exec_method>"))),
            }
        }
        Ok((name, m))
    }

    /// A property group: its name, its properties, and the types it declares (`pg` and
    /// `pg/prop` keys, as [`ServiceDef::types`]).
    #[allow(clippy::type_complexity)]
    fn property_group(
        &self,
        n: roxmltree::Node,
    ) -> Result<(String, BTreeMap<String, String>, BTreeMap<String, String>)> {
        let name = self.attr(n, "name")?;
        let mut props = BTreeMap::new();
        let mut types = BTreeMap::new();
        if let Some(t) = n.attribute("type") {
            types.insert(name.clone(), t.to_string());
        }
        for c in self.children(n) {
            match c.tag_name().name() {
                "propval" => {
                    let p = self.attr(c, "name")?;
                    if let Some(t) = c.attribute("type") {
                        types.insert(format!("{name}/{p}"), t.to_string());
                    }
                    props.insert(p, self.attr(c, "value")?);
                }
                "property" => {
                    let p = self.attr(c, "name")?;
                    if let Some(t) = c.attribute("type") {
                        types.insert(format!("{name}/{p}"), t.to_string());
                    }
                    let values: Vec<String> = self
                        .children(c)
                        .flat_map(|list| list.children().filter(|v| v.has_tag_name("value_node")))
                        .filter_map(|v| v.attribute("value").map(String::from))
                        .collect();
                    props.insert(p, values.join(" "));
                }
                "stability" => {}
                other => return Err(self.err(c, format!("unknown element <{other}> in <property_group>"))),
            }
        }
        Ok((name, props, types))
    }

    /// The children a service and an instance share.
    fn common(
        &self,
        c: roxmltree::Node,
        deps: &mut Vec<DepDef>,
        methods: &mut BTreeMap<String, MethodDef>,
        context: &mut ContextDef,
        pgs: &mut BTreeMap<String, BTreeMap<String, String>>,
        types: &mut BTreeMap<String, String>,
    ) -> Result<bool> {
        match c.tag_name().name() {
            "dependency" => deps.push(self.dependency(c)?),
            "exec_method" => {
                let (name, m) = self.method(c)?;
                methods.insert(name, m);
            }
            "method_context" => self.context(c, context)?,
            "property_group" => {
                let (name, props, t) = self.property_group(c)?;
                pgs.entry(name).or_default().extend(props);
                types.extend(t);
            }
            "stability" | "template" | "restarter" => {}
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn service(&self, n: roxmltree::Node) -> Result<ServiceDef> {
        let mut s = ServiceDef { name: self.attr(n, "name")?, line: Some(self.line(n)), ..Default::default() };
        for c in self.children(n) {
            let (mut deps, mut methods, mut ctx, mut pgs) = (
                std::mem::take(&mut s.dependencies),
                std::mem::take(&mut s.methods),
                std::mem::take(&mut s.context),
                std::mem::take(&mut s.property_groups),
            );
            let known = self.common(c, &mut deps, &mut methods, &mut ctx, &mut pgs, &mut s.types)?;
            (s.dependencies, s.methods, s.context, s.property_groups) = (deps, methods, ctx, pgs);
            if known {
                if c.has_tag_name("template") {
                    self.template(c, &mut s)?;
                }
                if c.has_tag_name("restarter") {
                    s.restarter = Some(self.restarter(c)?);
                }
                continue;
            }
            match c.tag_name().name() {
                "create_default_instance" => s.create_default_instance = Some(self.attr(c, "enabled")? == "true"),
                "single_instance" => s.single_instance = true,
                "dependent" => {
                    let mut d = self.dependency(c)?;
                    d.line = Some(self.line(c));
                    s.dependents.push(d);
                }
                "instance" => s.instances.push(self.instance(c)?),
                other => return Err(self.err(c, format!("unknown element <{other}> in <service>"))),
            }
        }
        if let Some(d) = s.property_groups.get("startd").and_then(|pg| pg.get("duration")) {
            s.duration = Some(d.clone());
        }
        Ok(s)
    }

    /// `<restarter><service_fmri value="svc:/network/inetd:default"/></restarter>`.
    fn restarter(&self, n: roxmltree::Node) -> Result<String> {
        let f = self
            .children(n)
            .find(|c| c.has_tag_name("service_fmri"))
            .ok_or_else(|| self.err(n, "<restarter> needs a <service_fmri>"))?;
        let v = self.attr(f, "value")?;
        Fmri::parse(&v).map_err(|_| self.err(f, format!("restarter {v:?} is not an FMRI")))?;
        Ok(v)
    }

    /// A template's common name, description and documentation (the C locale's text, or the
    /// first); its property patterns are accepted and not acted on.
    fn template(&self, n: roxmltree::Node, s: &mut ServiceDef) -> Result<()> {
        let text = |name: &str| {
            let el = n.children().find(|d| d.has_tag_name(name))?;
            let locs: Vec<roxmltree::Node> = el.children().filter(|d| d.has_tag_name("loctext")).collect();
            let pick = locs.iter().find(|l| l.attribute(("http://www.w3.org/XML/1998/namespace", "lang")) == Some("C"));
            pick.or(locs.first()).and_then(|l| l.text()).map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
        };
        s.common_name = text("common_name").or(s.common_name.take());
        s.description = text("description").or(s.description.take());
        for d in n.children().filter(|d| d.has_tag_name("documentation")) {
            for c in self.children(d) {
                match c.tag_name().name() {
                    "manpage" => s.documentation.push(DocDef::Manpage {
                        title: self.attr(c, "title")?,
                        section: self.attr(c, "section")?,
                        manpath: c.attribute("manpath").map(String::from),
                    }),
                    "doc_link" => {
                        s.documentation.push(DocDef::DocLink { name: self.attr(c, "name")?, uri: self.attr(c, "uri")? })
                    }
                    other => return Err(self.err(c, format!("unknown element <{other}> in <documentation>"))),
                }
            }
        }
        Ok(())
    }

    fn instance(&self, n: roxmltree::Node) -> Result<InstanceDef> {
        let enabled = self.attr(n, "enabled")? == "true";
        let mut i = InstanceDef { name: self.attr(n, "name")?, enabled, ..Default::default() };
        let mut ctx = ContextDef::default();
        for c in self.children(n) {
            if !self.common(c, &mut i.dependencies, &mut i.methods, &mut ctx, &mut i.property_groups, &mut i.types)? {
                return Err(self.err(c, format!("unknown element <{}> in <instance>", c.tag_name().name())));
            }
            if c.has_tag_name("restarter") {
                i.restarter = Some(self.restarter(c)?);
            }
            if c.has_tag_name("template") {
                let mut t = ServiceDef::default();
                self.template(c, &mut t)?;
                (i.common_name, i.description, i.documentation) = (t.common_name, t.description, t.documentation);
            }
        }
        // An instance-level method context applies to its methods.
        if ctx != ContextDef::default() {
            for m in i.methods.values_mut() {
                merge_context(&mut m.context, &ctx);
            }
        }
        Ok(i)
    }
}

fn merge_context(into: &mut ContextDef, from: &ContextDef) {
    into.user = into.user.take().or(from.user.clone());
    into.group = into.group.take().or(from.group.clone());
    into.supp_groups = into.supp_groups.take().or(from.supp_groups.clone());
    into.profile = into.profile.take().or(from.profile.clone());
    into.working_directory = into.working_directory.take().or(from.working_directory.clone());
    for (k, v) in &from.environment {
        into.environment.entry(k.clone()).or_insert(v.clone());
    }
}

pub fn parse_xml(path: &str, text: &str) -> Result<Bundle> {
    let opts = roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() };
    let doc = roxmltree::Document::parse_with_options(text, opts).map_err(|e| {
        let pos = e.pos();
        bad(path, Some(pos.row), e.to_string())
    })?;
    let x = X { path, doc: &doc };
    let root = doc.root_element();
    if !root.has_tag_name("service_bundle") {
        return Err(x.err(root, format!("the root element is <{}>, not <service_bundle>", root.tag_name().name())));
    }
    let mut services = Vec::new();
    for c in x.children(root) {
        match c.tag_name().name() {
            "service" => services.push(x.service(c)?),
            other => return Err(x.err(c, format!("unknown element <{other}> in <service_bundle>"))),
        }
    }
    let bundle = Bundle { path: path.to_string(), services };
    check(&bundle)?;
    Ok(bundle)
}

// ------------------------------------------------------------------ checks and conversion

const DURATIONS: &[&str] = &["contract", "transient", "child", "wait"];

/// Checks a bundle on its own: names, methods, durations. Dependencies on other services
/// are checked at import, against the repository.
fn check(b: &Bundle) -> Result<()> {
    if b.services.is_empty() {
        return Err(bad(&b.path, None, "the manifest defines no service"));
    }
    for s in &b.services {
        let line = s.line;
        Fmri::parse(&format!("svc:/{}", s.name))
            .map_err(|_| bad(&b.path, line, format!("bad service name {:?}", s.name)))?;
        if let Some(d) = &s.duration
            && !DURATIONS.contains(&d.as_str())
        {
            return Err(bad(
                &b.path,
                line,
                format!("service {}: startd/duration {d:?} is not one of {DURATIONS:?}", s.name),
            ));
        }
        let mut names: Vec<String> = s.instances.iter().map(|i| i.name.clone()).collect();
        if s.create_default_instance.is_some() && !names.iter().any(|n| n == "default") {
            names.push("default".into());
        }
        if names.is_empty() {
            return Err(bad(
                &b.path,
                line,
                format!("service {} has no instance (create_default_instance or <instance>)", s.name),
            ));
        }
        for n in &names {
            Fmri::parse(&format!("svc:/{}:{n}", s.name))
                .map_err(|_| bad(&b.path, line, format!("bad instance name {n:?} in {}", s.name)))?;
        }
        for d in s
            .dependencies
            .iter()
            .chain(s.dependents.iter())
            .chain(s.instances.iter().flat_map(|i| i.dependencies.iter()))
        {
            for f in &d.fmris {
                if !f.starts_with("file://") && Fmri::parse(f).is_err() {
                    return Err(bad(&b.path, d.line.or(line), format!("dependency {}: {f:?} is not an FMRI", d.name)));
                }
            }
        }
        // Methods of any name are stored, as SMF does (`restart`, inetd's `inetd_start`...):
        // their restarter decides which it runs. An instance without a start method
        // imports, and goes to maintenance when svc.startd is asked to start it.
        for (name, m) in s.methods.iter().chain(s.instances.iter().flat_map(|i| i.methods.iter())) {
            if name.is_empty() || name.contains('/') {
                return Err(bad(&b.path, line, format!("bad method name {name:?}")));
            }
            if m.exec.trim().is_empty() {
                return Err(bad(&b.path, line, format!("the {name} method has an empty exec")));
            }
        }
    }
    Ok(())
}

fn s(v: &str) -> Prop {
    Prop { ty: "astring".into(), values: vec![v.to_string()] }
}

fn dep_pg(d: &DepDef) -> Pg {
    let mut p = Pg::new("dependency");
    p.props.insert("grouping".into(), s(d.grouping.as_str()));
    p.props.insert("restart_on".into(), s(d.restart_on.as_str()));
    p.props.insert("type".into(), s(if d.fmris.iter().all(|f| f.starts_with("file://")) { "path" } else { "service" }));
    p.props.insert("entities".into(), Prop { ty: "fmri".into(), values: d.fmris.clone() });
    p
}

fn method_pg(m: &MethodDef, service_ctx: &ContextDef) -> Pg {
    let mut ctx = m.context.clone();
    merge_context(&mut ctx, service_ctx);
    let mut p = Pg::new("method");
    p.props.insert("type".into(), s("method"));
    p.props.insert("exec".into(), s(&m.exec));
    p.props.insert(
        "timeout_seconds".into(),
        Prop { ty: "count".into(), values: vec![m.timeout_seconds.unwrap_or(0).max(0).to_string()] },
    );
    for (k, v) in [
        ("user", &ctx.user),
        ("group", &ctx.group),
        ("supp_groups", &ctx.supp_groups),
        ("profile", &ctx.profile),
        ("working_directory", &ctx.working_directory),
    ] {
        if let Some(v) = v {
            p.props.insert(k.into(), s(v));
        }
    }
    if !ctx.environment.is_empty() {
        p.props.insert(
            "environment".into(),
            Prop { ty: "astring".into(), values: ctx.environment.iter().map(|(k, v)| format!("{k}={v}")).collect() },
        );
    }
    p
}

/// A property group name from free text: what SMF allows in one (letters, digits, `-_`).
fn pg_safe(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// `general/restarter`: the instance is another restarter's to run.
fn general_restarter(pgs: &mut BTreeMap<String, Pg>, fmri: &str) {
    pgs.entry("general".into())
        .or_insert_with(|| Pg::new("framework"))
        .props
        .insert("restarter".into(), Prop { ty: "fmri".into(), values: vec![fmri.to_string()] });
}

/// Property groups as declared: their types and their properties' (application and
/// astring where the manifest says none; `startd` is framework).
fn user_pgs(
    into: &mut BTreeMap<String, Pg>,
    pgs: &BTreeMap<String, BTreeMap<String, String>>,
    types: &BTreeMap<String, String>,
) {
    for (name, props) in pgs {
        let ty = types
            .get(name)
            .cloned()
            .unwrap_or_else(|| if name == "startd" { "framework" } else { "application" }.into());
        let pg = into.entry(name.clone()).or_insert_with(|| Pg::new(&ty));
        for (k, v) in props {
            let pty = types.get(&format!("{name}/{k}")).cloned().unwrap_or_else(|| "astring".into());
            pg.props.insert(k.clone(), Prop { ty: pty, values: vec![v.clone()] });
        }
    }
}

/// A template's groups, as svccfg stores them: tm_common_name/C, tm_description/C,
/// tm_man_TITLE_SECTION and tm_doc_NAME.
fn template_pgs(pgs: &mut BTreeMap<String, Pg>, cn: Option<&String>, desc: Option<&String>, docs: &[DocDef]) {
    if let Some(cn) = cn {
        pgs.entry("tm_common_name".into()).or_insert_with(|| Pg::new("template")).props.insert("C".into(), s(cn));
    }
    if let Some(d) = desc {
        pgs.entry("tm_description".into()).or_insert_with(|| Pg::new("template")).props.insert("C".into(), s(d));
    }
    for d in docs {
        let (name, pg) = match d {
            DocDef::Manpage { title, section, manpath } => {
                let mut pg = Pg::new("template_doc_manpage");
                pg.props.insert("title".into(), s(title));
                pg.props.insert("section".into(), s(section));
                if let Some(m) = manpath {
                    pg.props.insert("manpath".into(), s(m));
                }
                (format!("tm_man_{}_{}", pg_safe(title), pg_safe(section)), pg)
            }
            DocDef::DocLink { name, uri } => {
                let mut pg = Pg::new("template_doc_link");
                pg.props.insert("name".into(), s(name));
                pg.props.insert("uri".into(), s(uri));
                (format!("tm_doc_{}", pg_safe(name)), pg)
            }
        };
        pgs.insert(name, pg);
    }
}

/// The bundle as repository entities (services, then their instances), and the dependency
/// property groups its `dependent` elements add to other services: (target, pg name, pg).
pub fn entities(b: &Bundle) -> (Vec<Entity>, Vec<(Fmri, String, Pg)>) {
    let mut out = Vec::new();
    let mut added = Vec::new();
    for sd in &b.services {
        let fmri = Fmri { service: sd.name.clone(), instance: None };
        let mut pgs = BTreeMap::new();
        for d in &sd.dependencies {
            pgs.insert(d.name.clone(), dep_pg(d));
        }
        for (name, m) in &sd.methods {
            pgs.insert(name.clone(), method_pg(m, &sd.context));
        }
        user_pgs(&mut pgs, &sd.property_groups, &sd.types);
        if let Some(d) = &sd.duration {
            pgs.entry("startd".into()).or_insert_with(|| Pg::new("framework")).props.insert("duration".into(), s(d));
        }
        template_pgs(&mut pgs, sd.common_name.as_ref(), sd.description.as_ref(), &sd.documentation);
        if let Some(r) = &sd.restarter {
            general_restarter(&mut pgs, r);
        }
        if sd.single_instance {
            pgs.entry("general".into())
                .or_insert_with(|| Pg::new("framework"))
                .props
                .insert("single_instance".into(), Prop { ty: "boolean".into(), values: vec!["true".into()] });
        }
        out.push(Entity { fmri: fmri.clone(), pgs });
        if !sd.dependents.is_empty() {
            // As SMF records them: which groups this service put on others.
            let mut pg = Pg::new("framework");
            for d in &sd.dependents {
                pg.props.insert(d.name.clone(), Prop { ty: "fmri".into(), values: d.fmris.clone() });
            }
            if let Some(e) = out.last_mut() {
                e.pgs.insert("dependents".into(), pg);
            }
        }
        for d in &sd.dependents {
            // A dependent is a dependency of the named service on this one.
            let me = DepDef { fmris: vec![fmri.to_string()], ..d.clone() };
            for target in &d.fmris {
                if let Ok(t) = Fmri::parse(target) {
                    added.push((t, d.name.clone(), dep_pg(&me)));
                }
            }
        }
        let mut insts = sd.instances.clone();
        if let Some(enabled) = sd.create_default_instance
            && !insts.iter().any(|i| i.name == "default")
        {
            insts.push(InstanceDef { name: "default".into(), enabled, ..Default::default() });
        }
        for i in insts {
            let mut pgs = BTreeMap::new();
            let mut general = Pg::new("framework");
            general.props.insert("enabled".into(), Prop { ty: "boolean".into(), values: vec![i.enabled.to_string()] });
            pgs.insert("general".to_string(), general);
            if let Some(r) = &i.restarter {
                general_restarter(&mut pgs, r);
            }
            for d in &i.dependencies {
                pgs.insert(d.name.clone(), dep_pg(d));
            }
            for (name, m) in &i.methods {
                pgs.insert(name.clone(), method_pg(m, &sd.context));
            }
            user_pgs(&mut pgs, &i.property_groups, &i.types);
            template_pgs(&mut pgs, i.common_name.as_ref(), i.description.as_ref(), &i.documentation);
            out.push(Entity { fmri: Fmri::instance(&sd.name, &i.name), pgs });
        }
    }
    (out, added)
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = r#"<?xml version="1.0"?>
<!DOCTYPE service_bundle SYSTEM "/usr/share/lib/xml/dtd/service_bundle.dtd.1">
<service_bundle type="manifest" name="test">
  <service name="site/web" type="service" version="1">
    <create_default_instance enabled="true"/>
    <single_instance/>
    <dependency name="net" grouping="require_all" restart_on="error" type="service">
      <service_fmri value="svc:/site/db"/>
    </dependency>
    <dependency name="conf" grouping="require_all" restart_on="none" type="path">
      <service_fmri value="file://localhost/etc/web.conf"/>
    </dependency>
    <dependent name="web_multi-user" grouping="optional_all" restart_on="none">
      <service_fmri value="svc:/milestone/multi-user"/>
    </dependent>
    <method_context working_directory="/tmp">
      <method_credential user="root" group="root"/>
      <method_environment><envvar name="PORT" value="8080"/></method_environment>
    </method_context>
    <exec_method type="method" name="start" exec="/usr/bin/web -p %{config/port}" timeout_seconds="30"/>
    <exec_method type="method" name="stop" exec=":kill" timeout_seconds="10"/>
    <property_group name="startd" type="framework">
      <propval name="duration" type="astring" value="child"/>
    </property_group>
    <property_group name="config" type="application">
      <propval name="port" type="count" value="8080"/>
    </property_group>
    <stability value="Unstable"/>
    <template><common_name><loctext xml:lang="C">A web server</loctext></common_name></template>
  </service>
</service_bundle>
"#;

    #[test]
    fn a_real_manifest_reads() {
        let b = parse_xml("web.xml", XML).expect("parses");
        let s = &b.services[0];
        assert_eq!(s.name, "site/web");
        assert_eq!(s.create_default_instance, Some(true));
        assert_eq!(s.duration.as_deref(), Some("child"));
        assert_eq!(s.common_name.as_deref(), Some("A web server"));
        assert_eq!(s.dependencies.len(), 2);
        assert_eq!(s.dependencies[0].restart_on, RestartOn::Error);
        assert_eq!(s.dependencies[0].line, Some(7));
        assert_eq!(s.methods["start"].timeout_seconds, Some(30));
        assert_eq!(s.context.environment["PORT"], "8080");
        let (ents, added) = entities(&b);
        assert_eq!(ents.len(), 2);
        assert_eq!(ents[1].fmri.to_string(), "svc:/site/web:default");
        assert_eq!(ents[0].pgs["start"].props["user"].values, vec!["root"]);
        assert_eq!(ents[0].pgs["conf"].props["type"].values, vec!["path"]);
        assert_eq!(added[0].0.to_string(), "svc:/milestone/multi-user");
        assert_eq!(added[0].2.props["entities"].values, vec!["svc:/site/web"]);
    }

    #[test]
    fn errors_name_the_manifest_and_line() {
        let broken = XML.replace("<single_instance/>", "<single_instance>");
        let e = parse_xml("web.xml", &broken).expect_err("malformed").to_string();
        assert!(e.starts_with("web.xml:30:"), "{e}");
        let unknown = XML.replace("<single_instance/>", "<frobnicate/>");
        let e = parse_xml("web.xml", &unknown).expect_err("unknown").to_string();
        assert!(e.contains("web.xml:6") && e.contains("frobnicate"), "{e}");
        let no_stop = XML.replace(r#"<exec_method type="method" name="stop" exec=":kill" timeout_seconds="10"/>"#, "");
        // SMF imports it: the restarter decides what a missing method means.
        assert!(parse_xml("web.xml", &no_stop).is_ok());
        let bad_group = XML.replace("require_all\" restart_on=\"error", "require_some\" restart_on=\"error");
        assert!(parse_xml("web.xml", &bad_group).expect_err("grouping").to_string().contains("require_some"));
    }

    /// An inetd service in the style of illumos's telnet manifest (our own text).
    const INETD: &str = r#"<?xml version="1.0"?>
<!DOCTYPE service_bundle SYSTEM "/usr/share/lib/xml/dtd/service_bundle.dtd.1">
<service_bundle type="manifest" name="site:chat">
  <service name="site/chat" type="service" version="1">
    <restarter><service_fmri value="svc:/network/inetd:default"/></restarter>
    <dependency name="net" grouping="require_all" restart_on="none" type="service">
      <service_fmri value="svc:/network/service"/>
    </dependency>
    <exec_method type="method" name="inetd_start" exec="/usr/sbin/chatd" timeout_seconds="0">
      <method_context><method_credential user="root" group="root"/></method_context>
    </exec_method>
    <exec_method type="method" name="inetd_disable" exec=":kill" timeout_seconds="0"/>
    <exec_method type="method" name="restart" exec="/usr/sbin/chatd -r" timeout_seconds="60"/>
    <property_group name="inetd" type="framework">
      <propval name="name" type="astring" value="chat"/>
      <propval name="endpoint_type" type="astring" value="stream"/>
      <property name="proto" type="astring"><astring_list><value_node value="tcp6"/><value_node value="tcp"/></astring_list></property>
    </property_group>
    <instance name="default" enabled="false"/>
    <stability value="Unstable"/>
    <template>
      <common_name><loctext xml:lang="C">chat
        server</loctext></common_name>
      <description><loctext xml:lang="C">Answers chat connections.</loctext></description>
      <documentation>
        <manpage title="chatd" section="8" manpath="/usr/share/man"/>
        <doc_link name="site.example" uri="https://site.example/chat"/>
      </documentation>
      <pg_pattern name="inetd" type="framework" target="this" required="true">
        <prop_pattern name="name" type="astring" required="true"/>
      </pg_pattern>
    </template>
  </service>
</service_bundle>
"#;

    #[test]
    fn another_restarter_any_method_name_and_templates_are_kept() {
        let b = parse_xml("chat.xml", INETD).expect("parses");
        let s = &b.services[0];
        assert_eq!(s.restarter.as_deref(), Some("svc:/network/inetd:default"));
        assert_eq!(s.methods.keys().collect::<Vec<_>>(), ["inetd_disable", "inetd_start", "restart"]);
        assert_eq!(s.common_name.as_deref(), Some("chat server"));
        assert_eq!(s.description.as_deref(), Some("Answers chat connections."));
        assert_eq!(s.documentation.len(), 2);
        assert_eq!(s.property_groups["inetd"]["proto"], "tcp6 tcp");
        let (ents, _) = entities(&b);
        let svc = &ents[0].pgs;
        assert_eq!(svc["general"].props["restarter"].values, ["svc:/network/inetd:default"]);
        assert_eq!(svc["tm_description"].props["C"].values, ["Answers chat connections."]);
        assert_eq!(svc["tm_man_chatd_8"].props["manpath"].values, ["/usr/share/man"]);
        assert_eq!(svc["tm_doc_site_example"].props["uri"].values, ["https://site.example/chat"]);
        assert_eq!(svc["restart"].props["exec"].values, ["/usr/sbin/chatd -r"]);
        // Composed as the repository composes them: the instance's properties over the service's.
        let mut pgs = svc.clone();
        for (name, pg) in &ents[1].pgs {
            pgs.entry(name.clone()).or_insert_with(|| Pg::new(&pg.ty)).props.extend(pg.props.clone());
        }
        let i = crate::graph::Inst::from_pgs(&ents[1].fmri, &pgs).expect("inst");
        assert_eq!(i.restarter.map(|r| r.to_string()).as_deref(), Some("svc:/network/inetd:default"));
        assert!(i.start.is_none() && i.restart.is_some());
    }

    #[test]
    fn declared_types_and_each_instance_s_template_are_kept() {
        // In the style of illumos's identity and network/physical manifests (our own text).
        let xml = r#"<?xml version="1.0"?>
<service_bundle type='manifest' name='site:ident'>
<service name='site/ident' type='service' version='1'>
  <exec_method type='method' name='stop' exec=':true' timeout_seconds='60' />
  <property_group name='firewall_config' type='com.sun,fw_configuration'>
    <propval name='policy' type='astring' value='use_global' />
  </property_group>
  <instance name='node' enabled='true'>
    <exec_method type='method' name='start' exec='/lib/svc/method/ident node' timeout_seconds='60'>
      <method_context><method_credential user='root' group='root' supp_groups='netadm' privileges='zone' /></method_context>
    </exec_method>
    <property_group name='tune' type='application'>
      <stability value='Unstable' />
      <propval name='debug' type='boolean' value='false' />
      <propval name='wait' type='count' value='60' />
    </property_group>
    <template>
      <common_name><loctext xml:lang='C'>
        site identity (node)
      </loctext></common_name>
      <documentation><doc_link name='Project Page' uri='http://example.org/ident/' /></documentation>
    </template>
  </instance>
  <instance name='domain' enabled='false'>
    <exec_method type='method' name='start' exec='/lib/svc/method/ident domain' timeout_seconds='60' />
  </instance>
  <stability value='Unstable' />
</service>
</service_bundle>"#;
        let b = parse_xml("ident.xml", xml).expect("parses");
        let (ents, _) = entities(&b);
        let svc = &ents[0].pgs;
        assert_eq!(svc["firewall_config"].ty, "com.sun,fw_configuration");
        let node = ents.iter().find(|e| e.fmri.instance.as_deref() == Some("node")).expect("node");
        assert_eq!(node.pgs["tune"].props["debug"].ty, "boolean");
        assert_eq!(node.pgs["tune"].props["wait"].ty, "count");
        assert_eq!(node.pgs["tm_common_name"].props["C"].values, ["site identity (node)"]);
        assert_eq!(node.pgs["tm_doc_Project_Page"].props["uri"].values, ["http://example.org/ident/"]);
        let domain = ents.iter().find(|e| e.fmri.instance.as_deref() == Some("domain")).expect("domain");
        assert!(!domain.pgs.contains_key("tm_common_name"));
    }

    #[test]
    fn the_toml_form_says_the_same() {
        let t = r#"
[[service]]
name = "site/web"
create_default_instance = true
duration = "child"
common_name = "A web server"
[service.methods.start]
exec = "/usr/bin/web"
timeout_seconds = 30
user = "root"
[service.methods.stop]
exec = ":kill"
[[service.dependency]]
name = "net"
grouping = "require_all"
restart_on = "error"
fmris = ["svc:/site/db"]
"#;
        let b = parse_toml("web.toml", t).expect("parses");
        assert_eq!(b.services[0].dependencies[0].restart_on, RestartOn::Error);
        let e = parse_toml("web.toml", &t.replace("duration", "durration")).expect_err("unknown key").to_string();
        assert!(e.contains("web.toml:4"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in ".{0,400}") {
            let _ = parse_xml("x.xml", &text);
            let _ = parse_toml("x.toml", &text);
        }
    }
}
