//! `svccfg export`: a service, as the repository holds it, written back as an SMF manifest
//! that `svccfg import` reads again.

use crate::repo::{Pg, Repo};
use crate::{Fmri, Result};
use std::collections::BTreeMap;
use std::fmt::Write;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

/// The manifest of `f`'s service, with its instances (only `f` when it names one).
pub fn to_xml(repo: &Repo, f: &Fmri) -> Result<String> {
    let svc = f.service_fmri();
    let mut out = String::new();
    out.push_str("<?xml version='1.0'?>\n");
    out.push_str("<!DOCTYPE service_bundle SYSTEM '/usr/share/lib/xml/dtd/service_bundle.dtd.1'>\n");
    out.push_str("<service_bundle type='manifest' name='export'>\n");
    let _ = writeln!(out, "  <service name='{}' type='service' version='0'>", esc(&svc.service));
    pgs(&mut out, &repo.pgs(&svc)?, "    ");
    for i in repo.instances()?.into_iter().filter(|i| i.service == svc.service && (f.instance.is_none() || *i == *f)) {
        let p = repo.pgs(&i)?;
        let enabled = p
            .get("general")
            .and_then(|g| g.props.get("enabled"))
            .and_then(|p| p.values.first())
            .cloned()
            .unwrap_or_else(|| "false".into());
        let _ = writeln!(
            out,
            "    <instance name='{}' enabled='{}'>",
            esc(i.instance.as_deref().unwrap_or("")),
            esc(&enabled)
        );
        pgs(&mut out, &p, "      ");
        out.push_str("    </instance>\n");
    }
    out.push_str("  </service>\n</service_bundle>\n");
    Ok(out)
}

/// Property groups in the order the DTD wants their elements: restarter, dependencies,
/// methods, property groups, then the template.
fn pgs(out: &mut String, pgs: &BTreeMap<String, Pg>, ind: &str) {
    let first = |g: &Pg, k: &str| g.props.get(k).and_then(|p| p.values.first()).cloned().unwrap_or_default();
    if let Some(r) = pgs.get("general").and_then(|g| g.props.get("restarter")).and_then(|p| p.values.first()) {
        let _ = writeln!(out, "{ind}<restarter><service_fmri value='{}'/></restarter>", esc(r));
    }
    for (name, g) in pgs.iter().filter(|(_, g)| g.ty == "dependency") {
        let _ = writeln!(
            out,
            "{ind}<dependency name='{}' grouping='{}' restart_on='{}' type='{}'>",
            esc(name),
            esc(&first(g, "grouping")),
            esc(&first(g, "restart_on")),
            esc(&first(g, "type"))
        );
        for e in g.props.get("entities").map(|p| p.values.clone()).unwrap_or_default() {
            let _ = writeln!(out, "{ind}  <service_fmri value='{}'/>", esc(&e));
        }
        let _ = writeln!(out, "{ind}</dependency>");
    }
    for (name, g) in pgs.iter().filter(|(_, g)| g.ty == "method") {
        let _ = writeln!(
            out,
            "{ind}<exec_method name='{}' type='method' exec='{}' timeout_seconds='{}'/>",
            esc(name),
            esc(&first(g, "exec")),
            esc(&first(g, "timeout_seconds"))
        );
    }
    let skip = |name: &str, g: &Pg| {
        matches!(g.ty.as_str(), "dependency" | "method")
            || name.starts_with("tm_")
            || (name == "general" && g.props.keys().all(|k| k == "enabled" || k == "restarter"))
    };
    for (name, g) in pgs.iter().filter(|(n, g)| !skip(n, g)) {
        let _ = writeln!(out, "{ind}<property_group name='{}' type='{}'>", esc(name), esc(&g.ty));
        for (k, p) in
            g.props.iter().filter(|(k, _)| !(name == "general" && matches!(k.as_str(), "enabled" | "restarter")))
        {
            let _ = writeln!(
                out,
                "{ind}  <propval name='{}' type='{}' value='{}'/>",
                esc(k),
                esc(&p.ty),
                esc(&p.values.join(" "))
            );
        }
        let _ = writeln!(out, "{ind}</property_group>");
    }
    // The template: what svccfg stored from one.
    let text = |pg: &str| pgs.get(pg).map(|g| first(g, "C")).filter(|t| !t.is_empty());
    let docs: Vec<(&String, &Pg)> =
        pgs.iter().filter(|(n, _)| n.starts_with("tm_man_") || n.starts_with("tm_doc_")).collect();
    let (cn, desc) = (text("tm_common_name"), text("tm_description"));
    if cn.is_none() && desc.is_none() && docs.is_empty() {
        return;
    }
    let _ = writeln!(out, "{ind}<template>");
    if let Some(c) = cn {
        let _ = writeln!(out, "{ind}  <common_name><loctext xml:lang='C'>{}</loctext></common_name>", esc(&c));
    }
    if let Some(d) = desc {
        let _ = writeln!(out, "{ind}  <description><loctext xml:lang='C'>{}</loctext></description>", esc(&d));
    }
    if !docs.is_empty() {
        let _ = writeln!(out, "{ind}  <documentation>");
        for (name, g) in docs {
            if name.starts_with("tm_man_") {
                let manpath = g.props.get("manpath").and_then(|p| p.values.first());
                let mp = manpath.map(|m| format!(" manpath='{}'", esc(m))).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{ind}    <manpage title='{}' section='{}'{mp}/>",
                    esc(&first(g, "title")),
                    esc(&first(g, "section"))
                );
            } else {
                let _ = writeln!(
                    out,
                    "{ind}    <doc_link name='{}' uri='{}'/>",
                    esc(&first(g, "name")),
                    esc(&first(g, "uri"))
                );
            }
        }
        let _ = writeln!(out, "{ind}  </documentation>");
    }
    let _ = writeln!(out, "{ind}</template>");
}
