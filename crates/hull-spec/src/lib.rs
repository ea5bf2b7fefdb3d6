//! Pure types of hull: image manifests, VM payloads and their property table, node
//! configuration, sizes.
//!
//! Nothing in this crate does I/O. Parsers here take untrusted input (manifests come from
//! image servers and from files an operator was handed) and must reject, never panic.

pub mod manifest;
pub mod node;
pub mod size;
pub mod stream;
pub mod trace;
pub mod vm;

pub use manifest::{Compression, ImageFile, ImageType, Manifest, ManifestError, Os};
pub use node::{NodeConfig, PoolBackend, PoolConfig};
pub use vm::{Action, Brand, State, ValidationErrors, Verb, Vm};
