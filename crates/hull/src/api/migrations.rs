//! Migration through the API (see `crate::migrate`).
//!
//! - Source: `POST /vms/UUID?action=migrate&migration_action=begin|sync|switch|abort`
//!   (`target` with begin), each a job of the VM; progress on the events stream.
//! - Target: `POST /migrations?action=begin` (a stream header) reserves the VM;
//!   `PUT /migrations/UUID/stream` applies a stream as it arrives and answers what it
//!   received; `POST /migrations/UUID?action=switch[&start=true]` makes the VM (and starts
//!   it); `DELETE /migrations/UUID` drops what was received.

use super::Api;
use super::error::{ApiError, ApiResult};
use super::jobs::Work;
use super::routes::blocking;
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

impl From<crate::migrate::MigrateError> for ApiError {
    fn from(e: crate::migrate::MigrateError) -> ApiError {
        use crate::migrate::MigrateError as M;
        match e {
            M::Vm(v) => v.into(),
            M::Img(i) => i.into(),
            e => {
                let (status, code) = match &e {
                    M::NotMigrating(_) => (StatusCode::NOT_FOUND, "MigrationNotFound"),
                    M::Migrating { .. } => (StatusCode::CONFLICT, "MigrationInProgress"),
                    M::Order { .. } => (StatusCode::CONFLICT, "MigrationOrder"),
                    M::Busy(_) => (StatusCode::CONFLICT, "Busy"),
                    M::NoPeer(_) => (StatusCode::UNPROCESSABLE_ENTITY, "UnknownPeer"),
                    M::Target { .. } => (StatusCode::BAD_GATEWAY, "TargetFailed"),
                    _ => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
                };
                ApiError::new(status, code, crate::chain(&e))
            }
        }
    }
}

/// The source's `migrate` action: the work of one phase.
pub fn migrate_work(
    api: Arc<Api>,
    uuid: String,
    q: &BTreeMap<String, String>,
    body: &Map<String, Value>,
) -> ApiResult<Work> {
    let get = |k: &str| q.get(k).cloned().or_else(|| body.get(k).and_then(Value::as_str).map(str::to_string));
    let phase = get("migration_action").ok_or_else(|| {
        ApiError::bad_request("MissingParameter", "migrate needs migration_action (begin, sync, switch or abort)")
    })?;
    let target = get("target");
    if phase == "begin" && target.is_none() {
        return Err(ApiError::bad_request("MissingParameter", "migration_action=begin needs target (a peer's URL)"));
    }
    if !matches!(phase.as_str(), "begin" | "sync" | "switch" | "abort") {
        return Err(ApiError::bad_request(
            "BadParameter",
            format!("migration_action: {phase:?} (begin, sync, switch or abort)"),
        ));
    }
    Ok(Box::new(move || {
        let m = crate::migrate::Migrations::new(&api.node, api.exe.clone());
        let var = api.node.var_dir();
        let u = uuid.clone();
        let progress = move |what: &str, bytes: u64| {
            hull_zone::events::emit(&var, "migrate", &u, vec![json!({"migration": what, "progress_bytes": bytes})]);
        };
        Ok(match phase.as_str() {
            "begin" => serde_json::to_value(m.begin(&uuid, target.as_deref().unwrap_or_default())?),
            "sync" => serde_json::to_value(m.sync(&uuid, &progress)?),
            "switch" => serde_json::to_value(m.switch(&uuid, &progress)?),
            _ => {
                m.abort(&uuid)?;
                Ok(json!({}))
            }
        }
        .unwrap_or_default())
    }))
}

/// `POST /migrations?action=begin`: reserves a VM's uuid and datasets for its streams.
pub async fn begin(api: Arc<Api>, q: BTreeMap<String, String>, body: Map<String, Value>) -> ApiResult<Response> {
    if q.get("action").map(String::as_str) != Some("begin") {
        return Err(ApiError::bad_request("BadParameter", "POST /migrations takes ?action=begin"));
    }
    let h: hull_vm::send::Header = serde_json::from_value(Value::Object(body))
        .map_err(|e| ApiError::bad_request("BadBody", format!("a migration's header: {e}")))?;
    // Before any path is made of it.
    hull_vm::send::check_header(&h)?;
    let uuid = h.uuid.clone();
    blocking(move || {
        let rec = crate::migrate::in_path(&api.node, &h.uuid);
        if rec.exists() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "MigrationInProgress",
                format!("VM {} is being received here already", h.uuid),
            ));
        }
        // The reservation first: from then on, no repair takes the staging for a dead
        // receive's remains.
        if let Some(d) = rec.parent() {
            std::fs::create_dir_all(d).map_err(|e| ApiError::internal(format!("{}: {e}", d.display())))?;
        }
        let text = serde_json::to_vec(&json!({"uuid": h.uuid, "datasets": h.datasets})).unwrap_or_default();
        hull_exec::write_atomic(&rec, &text).map_err(|e| ApiError::internal(format!("{}: {e}", rec.display())))?;
        if let Err(e) = api.vmadm().and_then(|vm| Ok(vm.receive_begin(&h)?)) {
            let _ = std::fs::remove_file(&rec);
            return Err(e);
        }
        Ok(())
    })
    .await?;
    Ok((StatusCode::CREATED, axum::Json(json!({"uuid": uuid}))).into_response())
}

/// A reservation's datasets, or 404.
fn reserved(api: &Api, uuid: &str) -> ApiResult<Vec<String>> {
    let rec = crate::migrate::in_path(&api.node, uuid);
    let v: Value = std::fs::read(&rec)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| ApiError::not_found("MigrationNotFound", format!("VM {uuid} is not being received here")))?;
    Ok(v["datasets"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default())
}

/// `PUT /migrations/UUID/stream`: applies a stream as it arrives.
pub async fn stream(api: Arc<Api>, uuid: String, body: Body) -> ApiResult<Response> {
    {
        let (api, uuid) = (Arc::clone(&api), uuid.clone());
        blocking(move || reserved(&api, &uuid).map(|_| ())).await?;
    }
    let mut r = super::bridge::body_reader(body);
    let applied = blocking(move || {
        let (_, applied) = api.vmadm()?.receive_apply(&mut r, &uuid)?;
        Ok(applied)
    })
    .await;
    Ok(axum::Json(serde_json::to_value(applied?).unwrap_or_default()).into_response())
}

/// `POST /migrations/UUID?action=switch[&start=true]`: the VM from what was received.
pub async fn switch(api: Arc<Api>, uuid: String, q: BTreeMap<String, String>) -> ApiResult<Response> {
    if q.get("action").map(String::as_str) != Some("switch") {
        return Err(ApiError::bad_request("BadParameter", "POST /migrations/UUID takes ?action=switch"));
    }
    let start = q.get("start").map(String::as_str) == Some("true");
    let vm = blocking(move || {
        let datasets = reserved(&api, &uuid)?;
        let vm = api.vmadm()?;
        vm.receive_finish(&uuid, &datasets)?;
        let _ = std::fs::remove_file(crate::migrate::in_path(&api.node, &uuid));
        if start && let Err(e) = vm.start(&uuid) {
            // The source stays the VM's (it starts its zone again): this copy goes, so that
            // the VM is never on two nodes.
            if let Err(e2) = vm.delete(&uuid) {
                tracing::error!(vm = %uuid, "a migrated VM that did not start could not be removed: {e2}");
            }
            return Err(e.into());
        }
        Ok(vm.get(&uuid)?)
    })
    .await?;
    Ok(axum::Json(Value::Object(vm)).into_response())
}

/// `DELETE /migrations/UUID`: what was received goes.
pub async fn abort(api: Arc<Api>, uuid: String) -> ApiResult<Response> {
    blocking(move || {
        let datasets = reserved(&api, &uuid)?;
        api.vmadm()?.receive_abort(&uuid, &datasets)?;
        let _ = std::fs::remove_file(crate::migrate::in_path(&api.node, &uuid));
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
