//! VM payloads: brands, actions, and validation from the property table.

pub mod memory;
pub mod model;
pub mod nics;
pub mod props;
pub mod state;
mod validate;

pub use model::{Disk, Filesystem, ModelError, Nic, Update, Vm};
pub use state::{State, Verb};
pub use validate::{
    Action, Brand, ImageInfo, ValidationErrors, check_images, check_payload, normal_mac, route_mac, route_nic,
    valid_hostname, validate, validate_lenient, zone_root_types,
};
