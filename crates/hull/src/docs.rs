//! `hull manpages DIR` and `hull completions SHELL`: man pages and shell completions made
//! from the command line's own definition (clap), so they cannot drift from it.

use crate::{CmdResult, Failure};
use clap::CommandFactory;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ManArgs {
    /// Where to write the pages (`hull.8`, `vmadm.8`, `imgadm.8` ...).
    dir: PathBuf,
}

#[derive(clap::Args)]
pub struct CompletionArgs {
    /// bash, zsh, fish, elvish or powershell
    shell: clap_complete::Shell,
}

/// The SmartOS tools a link can name, each with its own page.
fn tools() -> Vec<clap::Command> {
    let hull = crate::Cli::command();
    hull.get_subcommands()
        .filter(|c| crate::TOOLS.contains(&c.get_name()) || c.get_name() == "pool" || c.get_name() == "dataset")
        .cloned()
        .collect()
}

/// vmadm(8)'s PROPERTIES section, from the property table: no other list of them exists.
fn properties_section() -> String {
    use hull_spec::vm::props::PROPS;
    let mut s =
        String::from(".SH PROPERTIES\nEvery payload property, the brands that take it and when a change applies.\n");
    for p in PROPS {
        let (ty, apply) = (p.ty.describe(), p.apply.describe());
        let brands = if p.allowed.is_empty() { "shown only".to_string() } else { p.brands_text() };
        s.push_str(&format!(
            ".TP\n\\fB{}\\fR\n{}\n.br\n{ty}; {brands}; {apply}\n",
            p.name.replace('-', "\\-"),
            p.doc.replace('\\', "\\\\").replace('-', "\\-")
        ));
    }
    s
}

/// Writes `cmd`'s page and its subcommands' (`vmadm-create.8` ...), section 8.
fn pages(cmd: &clap::Command, dir: &std::path::Path, written: &mut Vec<PathBuf>, deep: bool) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| deep && !s.is_hide_set()) {
        pages(sub, dir, written, true)?;
    }
    let man = clap_mangen::Man::new(cmd.clone()).section("8");
    let path = dir.join(man.get_filename());
    let mut out = Vec::new();
    man.render(&mut out)?;
    if cmd.get_display_name() == Some("vmadm") || (cmd.get_display_name().is_none() && cmd.get_name() == "vmadm") {
        out.extend_from_slice(properties_section().as_bytes());
    }
    std::fs::write(&path, out)?;
    written.push(path);
    Ok(())
}

pub fn manpages(a: ManArgs) -> CmdResult {
    std::fs::create_dir_all(&a.dir).map_err(|e| Failure::new(1, format!("create {}: {e}", a.dir.display())))?;
    let mut roots = vec![("hull".to_string(), crate::Cli::command())];
    roots.extend(tools().into_iter().map(|c| (c.get_name().to_string(), c)));
    let mut written = Vec::new();
    for (name, cmd) in roots {
        let mut cmd = cmd.bin_name(name.clone()).display_name(name.clone()).disable_help_subcommand(true);
        cmd.build();
        // hull's own page lists the tools; each tool's pages are under its own name.
        pages(&cmd, &a.dir, &mut written, name != "hull")
            .map_err(|e| Failure::new(1, format!("write the {name} pages: {e}")))?;
    }
    for p in written {
        println!("{}", p.display());
    }
    Ok(())
}

pub fn completions(a: CompletionArgs) -> CmdResult {
    let mut cmd = crate::Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "hull", &mut std::io::stdout());
    // The tools' own names, as links to hull run them.
    for mut tool in tools() {
        let name = tool.get_name().to_string();
        if crate::TOOLS.contains(&name.as_str()) {
            clap_complete::generate(a.shell, &mut tool, name, &mut std::io::stdout());
        }
    }
    Ok(())
}
