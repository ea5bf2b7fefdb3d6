//! The API's one error shape: `{"code": "VmNotFound", "message": "..."}`, with SmartOS's
//! `bad_values`/`bad_properties`/`missing_properties` when a payload did not validate.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hull_img::ImgError;
use hull_vm::VmError;
use serde::{Deserialize, Serialize};

/// An error as the API answers it (and as a failed job records it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    /// Stable: clients match on it (`ValidationFailed`, `VmNotFound`, `WrongState`, ...).
    pub code: String,
    pub message: String,
    /// A payload that did not validate: vmadm's lists.
    #[serde(default, flatten, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<Box<Invalid>>,
}

/// What vmadm prints of a payload that did not validate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Invalid {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bad_brand: Option<String>,
    pub bad_values: Vec<String>,
    pub bad_properties: Vec<String>,
    pub missing_properties: Vec<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError { status: status.as_u16(), code: code.into(), message: message.into(), invalid: None }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// A payload that did not validate, in vmadm's words.
    pub fn invalid(errs: &hull_spec::ValidationErrors) -> ApiError {
        ApiError {
            invalid: Some(Box::new(Invalid {
                bad_brand: errs.bad_brand.clone(),
                bad_values: errs.bad_values.clone(),
                bad_properties: errs.bad_properties.clone(),
                missing_properties: errs.missing_properties.clone(),
            })),
            ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "ValidationFailed", errs.to_string())
        }
    }
}

impl From<VmError> for ApiError {
    fn from(e: VmError) -> ApiError {
        let message = crate::chain(&e);
        let (status, code) = match &e {
            VmError::Invalid(errs) => return ApiError::invalid(errs),
            VmError::Nics { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "ValidationFailed"),
            VmError::NotFound(_) => (StatusCode::NOT_FOUND, "VmNotFound"),
            VmError::NoSnapshot { .. } => (StatusCode::NOT_FOUND, "SnapshotNotFound"),
            VmError::NoDisk { .. } => (StatusCode::NOT_FOUND, "DiskNotFound"),
            VmError::Exists(_) => (StatusCode::CONFLICT, "VmExists"),
            VmError::SnapshotExists { .. } => (StatusCode::CONFLICT, "SnapshotExists"),
            VmError::WrongState { .. } => (StatusCode::CONFLICT, "WrongState"),
            VmError::Busy(_) => (StatusCode::CONFLICT, "Busy"),
            VmError::Indestructible { .. } => (StatusCode::CONFLICT, "Indestructible"),
            VmError::Refused { .. } => (StatusCode::CONFLICT, "Refused"),
            VmError::Image { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "ImageUnusable"),
            VmError::Stream(_) => (StatusCode::BAD_REQUEST, "BadStream"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        };
        ApiError::new(status, code, message)
    }
}

impl From<ImgError> for ApiError {
    fn from(e: ImgError) -> ApiError {
        let message = crate::chain(&e);
        let (status, code) = match &e {
            ImgError::NotInstalled(_) => (StatusCode::NOT_FOUND, "ImageNotFound"),
            ImgError::NotInSources(_) => (StatusCode::NOT_FOUND, "ImageNotInSources"),
            ImgError::NoSources => (StatusCode::CONFLICT, "NoSources"),
            ImgError::AlreadyInstalled(_) => (StatusCode::CONFLICT, "ImageExists"),
            ImgError::Busy(_) => (StatusCode::CONFLICT, "Busy"),
            ImgError::HasClones { .. } => (StatusCode::CONFLICT, "ImageInUse"),
            ImgError::Source { .. } | ImgError::BadSourceUrl { .. } => (StatusCode::BAD_GATEWAY, "SourceFailed"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        };
        ApiError::new(status, code, message)
    }
}

impl From<hull_storage::StorageError> for ApiError {
    fn from(e: hull_storage::StorageError) -> ApiError {
        ApiError::internal(crate::chain(&e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
