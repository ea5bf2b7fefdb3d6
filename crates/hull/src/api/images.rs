//! Image files through the API, both ways, for an orchestrator that keeps images itself
//! (Nova's Glance):
//!
//! - **out**: `POST /vms/UUID?action=create_image` makes an image of a stopped VM (as
//!   `imgadm create`) and keeps it as an export, `var/hull/api/exports/IMAGE/{manifest.json,
//!   file}`; `GET /images/IMAGE/file` streams the file, `DELETE /images/IMAGE/file` drops it.
//!   Nothing is installed.
//! - **in**: `POST /images?action=install` with a manifest starts an upload
//!   (`var/hull/api/uploads/IMAGE.json`); `PUT /images/IMAGE/file` streams the file (never
//!   more than the manifest's size) and installs it as `imgadm install` does (size and sha1
//!   checked), as a job, which ends the upload whether it installs or refuses the image.
//!
//! Both directories are the API's own, under the node's `var/hull`, root's only.

use super::Api;
use super::error::{ApiError, ApiResult};
use super::jobs::{Ask, Work};
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use hull_spec::manifest::Manifest;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

fn exports(api: &Api) -> PathBuf {
    api.node.var_dir().join("api/exports")
}

fn uploads(api: &Api) -> PathBuf {
    api.node.var_dir().join("api/uploads")
}

fn io_error(what: &str, path: &std::path::Path, e: std::io::Error) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", format!("{what} {}: {e}", path.display()))
}

/// The work of `create_image`: the image into a staging directory, its manifest given the
/// asked uuid, then the directory renamed into place (an export appears whole or not at all).
pub fn create_image_work(
    api: Arc<Api>,
    vm: String,
    image: uuid::Uuid,
    name: String,
    version: String,
    compression: hull_spec::Compression,
) -> Work {
    Box::new(move || {
        let dir = exports(&api);
        std::fs::create_dir_all(&dir).map_err(|e| io_error("create", &dir, e))?;
        let target = dir.join(image.to_string());
        if target.exists() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "ImageExists",
                format!("an export of image {image} is already on this node (DELETE /images/{image}/file)"),
            ));
        }
        let stage = tempfile::Builder::new()
            .prefix(".stage-")
            .tempdir_in(&dir)
            .map_err(|e| io_error("create a staging directory in", &dir, e))?;
        let built = api.vmadm()?.image_create(&vm, &name, &version, false, compression, stage.path())?;
        let mut manifest = built.manifest;
        manifest.uuid = image;
        let text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| ApiError::internal(format!("image {image}'s manifest: {e}")))?;
        let m = stage.path().join("manifest.json");
        hull_exec::write_atomic(&m, &text).map_err(|e| io_error("write", &m, e))?;
        let f = stage.path().join("file");
        std::fs::rename(&built.file_path, &f).map_err(|e| io_error("move", &built.file_path, e))?;
        let _ = std::fs::remove_file(&built.manifest_path);
        let stage = stage.keep();
        std::fs::rename(&stage, &target).map_err(|e| {
            let _ = std::fs::remove_dir_all(&stage);
            io_error("move", &target, e)
        })?;
        Ok(json!({"manifest": manifest, "file": format!("/images/{image}/file")}))
    })
}

/// `GET /images/UUID/file`: an installed image's file, made from its dataset as it streams
/// (what `GET /images/UUID` describes, see `hull_img::serve`), or else an export's file.
pub async fn file(api: Arc<Api>, uuid: uuid::Uuid) -> ApiResult<Response> {
    let api2 = Arc::clone(&api);
    let served = super::routes::blocking(move || {
        let img = hull_img::Imgadm::new(&api2.node);
        match img.served_manifest(&uuid) {
            Ok(m) => Ok(Some(m)),
            Err(hull_img::ImgError::NotInstalled(_)) => Ok(None),
            Err(e) => Err(ApiError::from(e)),
        }
    })
    .await?;
    if let Some(m) = served {
        let len = m.files.first().map_or(0, |f| f.size);
        let node = api.node.clone();
        let body = super::bridge::streamed_body(move |w| {
            hull_img::Imgadm::new(&node).write_served(&uuid, w).map_err(|e| e.to_string())
        });
        return Ok(octets(len, body));
    }
    let path = exports(&api).join(uuid.to_string()).join("file");
    match tokio::fs::File::open(&path).await {
        Ok(f) => {
            let len = f.metadata().await.map_err(|e| io_error("inspect", &path, e))?.len();
            let stream = tokio_util::io::ReaderStream::with_capacity(f, 256 << 10);
            Ok(octets(len, Body::from_stream(stream)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ApiError::not_found("ImageNotFound", format!("image {uuid} is neither installed nor exported here")))
        }
        Err(e) => Err(io_error("open", &path, e)),
    }
}

fn octets(len: u64, body: Body) -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (axum::http::header::CONTENT_LENGTH, len.to_string()),
        ],
        body,
    )
        .into_response()
}

/// `DELETE /images/UUID/file`: drops an export.
pub async fn drop_file(api: Arc<Api>, uuid: uuid::Uuid) -> ApiResult<Response> {
    let dir = exports(&api).join(uuid.to_string());
    match tokio::fs::remove_dir_all(&dir).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ApiError::not_found("ImageNotFound", format!("no export of image {uuid} on this node")))
        }
        Err(e) => Err(io_error("remove", &dir, e)),
    }
}

/// `POST /images?action=install` with a manifest: checks it, refuses an image the node has,
/// and keeps the manifest for the file to come.
pub async fn start_install(api: Arc<Api>, body: serde_json::Map<String, Value>) -> ApiResult<Response> {
    let text = Value::Object(body).to_string();
    let manifest = Manifest::parse(&text)
        .and_then(|m| m.validate().map(|()| m))
        .map_err(|e| ApiError::bad_request("BadManifest", format!("the manifest: {e}")))?;
    if manifest.files.is_empty() {
        return Err(ApiError::bad_request("BadManifest", "the manifest names no file"));
    }
    let uuid = manifest.uuid;
    let api2 = Arc::clone(&api);
    super::routes::blocking(move || {
        let img = hull_img::Imgadm::new(&api2.node);
        if img.get(&uuid).is_ok() {
            return Err(ApiError::from(hull_img::ImgError::AlreadyInstalled(uuid)));
        }
        let dir = uploads(&api2);
        std::fs::create_dir_all(&dir).map_err(|e| io_error("create", &dir, e))?;
        let p = dir.join(format!("{uuid}.json"));
        hull_exec::write_atomic(&p, text.as_bytes()).map_err(|e| io_error("write", &p, e))
    })
    .await?;
    Ok((StatusCode::CREATED, axum::Json(json!({"uuid": uuid, "upload": format!("/images/{uuid}/file")})))
        .into_response())
}

/// `PUT /images/UUID/file`: the file of an install started with its manifest, streamed to
/// disk (refused past the manifest's size), then installed by a job.
/// Reads and drops what a refused upload's client is still sending (up to 1 MiB, for at
/// most 5 s) before the answer: closing on unread bytes resets the connection, and a client
/// still writing (over TLS above all) then sees the reset instead of the answer. A larger
/// body should have been sent with `Expect: 100-continue`, which gets the answer first.
async fn linger(body: Body) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), axum::body::to_bytes(body, 1 << 20)).await;
}

pub async fn upload(api: Arc<Api>, uuid: uuid::Uuid, body: Body) -> ApiResult<Response> {
    let dir = uploads(&api);
    let manifest_path = dir.join(format!("{uuid}.json"));
    let Ok(text) = tokio::fs::read_to_string(&manifest_path).await else {
        linger(body).await;
        return Err(ApiError::not_found(
            "UploadNotStarted",
            format!("no install of image {uuid} started: POST /images?action=install"),
        ));
    };
    let manifest = match Manifest::parse(&text) {
        Ok(m) => m,
        Err(e) => {
            linger(body).await;
            return Err(ApiError::bad_request("BadManifest", format!("the stored manifest: {e}")));
        }
    };
    let size = manifest.files.first().map_or(0, |f| f.size);
    let tmp = dir.join(format!("{uuid}.{}.part", uuid::Uuid::new_v4()));
    if let Err(e) = receive(body, &tmp, size, uuid).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    let w = Arc::clone(&api);
    let work: Work = Box::new(move || {
        let res = hull_img::Imgadm::new(&w.node).install(&manifest_path, &tmp);
        // Installed or refused, the upload is over: a retry starts with its manifest again,
        // and nothing of a refused image stays on the node.
        let _ = std::fs::remove_file(&tmp);
        let _ = std::fs::remove_file(&manifest_path);
        let image = res?;
        serde_json::to_value(image.manifest).map_err(|e| ApiError::internal(format!("image {uuid}'s manifest: {e}")))
    });
    let ask =
        Ask { action: "install_image".into(), vm_uuid: None, image_uuid: Some(uuid.to_string()), warnings: vec![] };
    Ok(super::routes::accepted(&api.jobs.submit(&format!("image:{uuid}"), ask, work)))
}

/// An upload's body into `tmp` (made new), refused past `size` bytes or short of it.
async fn receive(body: Body, tmp: &std::path::Path, size: u64, uuid: uuid::Uuid) -> ApiResult<()> {
    let mut out = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .await
        .map_err(|e| io_error("create", tmp, e))?;
    let mut stream = body.into_data_stream();
    let mut got: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request("BadBody", format!("the upload broke off: {e}")))?;
        got += chunk.len() as u64;
        if got > size {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BodyTooLarge",
                format!("image {uuid}: more than the manifest's {size} bytes"),
            ));
        }
        out.write_all(&chunk).await.map_err(|e| io_error("write", tmp, e))?;
    }
    out.flush().await.map_err(|e| io_error("write", tmp, e))?;
    if got != size {
        return Err(ApiError::bad_request("BadBody", format!("image {uuid}: {got} bytes, the manifest says {size}")));
    }
    Ok(())
}
