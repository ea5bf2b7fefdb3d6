use hull_spec::ManifestError;
use std::path::PathBuf;
use uuid::Uuid;

/// What went wrong in an imgadm verb; each names the image, file or source at fault.
#[derive(Debug, thiserror::Error)]
pub enum ImgError {
    #[error("image {0} is not installed")]
    NotInstalled(Uuid),
    #[error("image {0} is already installed")]
    AlreadyInstalled(Uuid),
    #[error("image {0} is being installed or deleted by another command; try again when it is done")]
    Busy(Uuid),
    #[error("{}: {source}", path.display())]
    Manifest {
        path: PathBuf,
        #[source]
        source: ManifestError,
    },
    #[error("image {0} has no file in its manifest")]
    NoFile(Uuid),
    #[error("image {uuid}: file {} has {what} {actual}, the manifest says {expected}", path.display())]
    FileMismatch { uuid: Uuid, path: PathBuf, what: &'static str, expected: String, actual: String },
    #[error("image {uuid}: file {} is not a valid {compression} image archive: {reason}", path.display())]
    Corrupt { uuid: Uuid, path: PathBuf, compression: &'static str, reason: String },
    #[error("image {uuid}: compression {compression} is not supported (gzip, zstd or none)")]
    UnsupportedCompression { uuid: Uuid, compression: &'static str },
    #[error("image {uuid}: the pool is out of space")]
    NoSpace { uuid: Uuid },
    #[error("image {uuid} has dependent clones ({}); delete them first", .clones.join(", "))]
    HasClones { uuid: Uuid, clones: Vec<String> },
    #[error("image {uuid} needs its origin image {origin}, which is not installed (imgadm import {origin})")]
    OriginNotInstalled { uuid: Uuid, origin: Uuid },
    #[error("image {uuid}: origin chain deeper than {max} images")]
    OriginTooDeep { uuid: Uuid, max: usize },
    #[error("image {0} was not found in any image source")]
    NotInSources(Uuid),
    #[error("no image sources are configured (imgadm sources -a URL)")]
    NoSources,
    #[error("image source {url}: {reason}")]
    Source { url: String, reason: String },
    #[error("invalid source URL {url:?}: {reason}")]
    BadSourceUrl { url: String, reason: String },
    #[error("build: {0}")]
    Build(String),
    #[error(transparent)]
    Storage(#[from] hull_storage::StorageError),
    #[error(transparent)]
    Exec(#[from] hull_exec::ExecError),
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ImgError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ImgError::Io { op, path: path.into(), source }
    }

    /// imgadm's exit status: 3 when the image is not installed, 1 for any other failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            ImgError::NotInstalled(_) => 3,
            _ => 1,
        }
    }
}

pub type Result<T, E = ImgError> = std::result::Result<T, E>;
