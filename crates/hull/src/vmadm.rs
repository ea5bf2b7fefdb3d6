use crate::{CmdResult, Failure};
use clap::Subcommand;
use hull_spec::{Action, Brand};
use std::io::Read;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum VmCmd {
    /// Check a payload without acting on it: prints every problem at once.
    Validate {
        /// create, update or receive
        action: Action,
        brand: Brand,
        /// The payload (default: standard input).
        #[arg(short = 'f')]
        file: Option<PathBuf>,
    },
}

/// Reads a JSON payload from a file or standard input.
pub fn read_payload(file: Option<&PathBuf>) -> Result<serde_json::Value, Failure> {
    let text = match file {
        Some(p) => std::fs::read_to_string(p).map_err(|e| Failure::new(1, format!("read {}: {e}", p.display())))?,
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Failure::new(1, format!("read standard input: {e}")))?;
            s
        }
    };
    serde_json::from_str(&text).map_err(|e| Failure::new(1, format!("payload is not valid JSON: {e}")))
}

pub fn run(cmd: VmCmd) -> CmdResult {
    match cmd {
        VmCmd::Validate { action, brand, file } => {
            let payload = read_payload(file.as_ref())?;
            match hull_spec::vm::validate(action, Some(brand), &payload) {
                Ok(_) => {
                    println!("VALID '{}' payload for {} brand VMs.", action.as_str(), brand);
                    Ok(())
                }
                Err(errs) => {
                    eprintln!("{}", errs.to_json());
                    Err(Failure::new(1, errs))
                }
            }
        }
    }
}
