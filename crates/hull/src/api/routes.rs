//! The API's resources: Triton's VMAPI and IMGAPI paths where they overlap, over the same
//! code vmadm and imgadm run (one place where a VM is created).

use super::error::{ApiError, ApiResult};
use super::jobs::{Ask, Job, Work};
use super::{Api, Peer};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use hull_spec::Action;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The largest request body: a VM payload with its metadata (SmartOS caps customer_metadata
/// far below this).
pub const BODY_LIMIT: usize = 1 << 20;

type Q = Query<BTreeMap<String, String>>;

pub fn router(api: Arc<Api>) -> axum::Router {
    axum::Router::new()
        .route("/ping", get(ping))
        .route("/sysinfo", get(sysinfo))
        .route("/metrics", get(metrics))
        .route("/vms", get(list_vms).post(create_vm))
        .route("/vms/{uuid}", get(get_vm).post(vm_action).delete(delete_vm))
        .route("/vms/{uuid}/console", get(vm_console))
        .route("/jobs", get(list_jobs))
        .route("/jobs/{uuid}", get(get_job))
        .route("/jobs/{uuid}/wait", get(wait_job))
        .route("/images", get(list_images).post(image_action))
        .route("/images/{uuid}", get(get_image).delete(delete_image))
        .route("/images/{uuid}/file", get(image_file).put(upload_image_file).delete(drop_image_file))
        .route("/migrations", post(migration_begin))
        .route("/migrations/{uuid}", post(migration_switch).delete(migration_abort))
        .route("/migrations/{uuid}/stream", put(migration_stream))
        .route("/events", get(events))
        .fallback(|| async { ApiError::not_found("ResourceNotFound", "no such resource") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "BadMethod", "this resource does not take that method")
        })
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(authorise))
        .with_state(api)
}

/// Callers the listener did not authorise get 403 and nothing else.
async fn authorise(req: Request, next: Next) -> Response {
    match req.extensions().get::<Peer>() {
        Some(p) if p.authorised => {
            // The api__request probe: method, path, status and time, once a tracer attaches.
            let (method, uri, start) = (req.method().clone(), req.uri().clone(), std::time::Instant::now());
            let res = next.run(req).await;
            let nanos = start.elapsed().as_nanos() as u64;
            hull_exec::probes::api_request(method.as_str(), uri.path(), res.status().as_u16(), nanos);
            res
        }
        Some(p) => ApiError::new(StatusCode::FORBIDDEN, "Forbidden", format!("{} may not use this node's API", p.who))
            .into_response(),
        None => ApiError::new(StatusCode::FORBIDDEN, "Forbidden", "unknown caller").into_response(),
    }
}

/// Runs blocking work (vmadm, imgadm) off the server's threads.
pub(super) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> ApiResult<T> + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(ApiError::internal(format!("worker: {e}"))))
}

/// A request's JSON body, an object; bad JSON, another type or too large a body is a 4xx.
fn body_object(body: Result<Bytes, BytesRejection>, required: bool) -> ApiResult<Map<String, Value>> {
    let bytes = body.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BodyTooLarge",
            format!("the request body is over {BODY_LIMIT} bytes"),
        ),
        e => ApiError::bad_request("BadBody", e.body_text()),
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        if required {
            return Err(ApiError::bad_request("InvalidJson", "the request needs a JSON object body"));
        }
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request("InvalidJson", "the body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request("InvalidJson", format!("the body is not JSON: {e}"))),
    }
}

/// A uuid in a path; anything else names nothing here (`code`: VmNotFound, ImageNotFound).
fn path_uuid(s: &str, code: &str) -> ApiResult<uuid::Uuid> {
    s.parse::<uuid::Uuid>()
        .map_err(|_| ApiError::not_found(code, format!("{s:?} is not a uuid, so names nothing here")))
}

pub(super) fn accepted(job: &Job) -> Response {
    let mut body = json!({"job_uuid": job.uuid, "job": job});
    if let Some(vm) = &job.vm_uuid {
        body["vm_uuid"] = json!(vm);
    }
    if let Some(img) = &job.image_uuid {
        body["image_uuid"] = json!(img);
    }
    if !job.warnings.is_empty() {
        body["warnings"] = json!(job.warnings);
    }
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

async fn ping() -> Json<Value> {
    Json(json!({"ping": "pong", "version": env!("CARGO_PKG_VERSION")}))
}

async fn sysinfo(State(api): State<Arc<Api>>) -> ApiResult<Json<Value>> {
    let node = api.node.clone();
    blocking(move || super::sysinfo::sysinfo(&node)).await.map(Json)
}

/// Prometheus's scrape (docs/observability.md): OpenMetrics text to a scraper that asks for
/// it, Prometheus's text format 0.0.4 otherwise.
async fn metrics(State(api): State<Arc<Api>>, headers: axum::http::HeaderMap) -> ApiResult<Response> {
    let om = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let text = blocking(move || {
        let vm = api.vmadm()?;
        super::metrics::scrape(&api.node, &vm).map_err(ApiError::internal)
    })
    .await?;
    let (ctype, text) = if om {
        ("application/openmetrics-text; version=1.0.0; charset=utf-8", text)
    } else {
        ("text/plain; version=0.0.4; charset=utf-8", super::metrics::prometheus_text(&text))
    };
    Ok(([(axum::http::header::CONTENT_TYPE, ctype)], text).into_response())
}

async fn list_vms(State(api): State<Arc<Api>>, Query(q): Q) -> ApiResult<Json<Vec<Value>>> {
    let mut filters = Vec::new();
    for (k, v) in &q {
        let f: crate::table::Filter =
            format!("{k}={v}").parse().map_err(|e: String| ApiError::bad_request("BadFilter", e))?;
        filters.push(f);
    }
    blocking(move || {
        let vm = api.vmadm()?;
        let rows: Vec<Value> =
            vm.list(true)?.into_iter().map(Value::Object).filter(|r| filters.iter().all(|f| f.matches(r))).collect();
        Ok(rows)
    })
    .await
    .map(Json)
}

async fn get_vm(State(api): State<Arc<Api>>, Path(uuid): Path<String>) -> ApiResult<Json<Map<String, Value>>> {
    let uuid = path_uuid(&uuid, "VmNotFound")?.to_string();
    blocking(move || Ok(api.vmadm()?.get(&uuid)?)).await.map(Json)
}

/// The most of a console one request gets.
const CONSOLE_MAX: u64 = 1 << 20;

/// The tail of what the VM's console printed, as text: `?bytes=N` (default 64 KiB, at most
/// 1 MiB).
async fn vm_console(State(api): State<Arc<Api>>, Path(uuid): Path<String>, Query(q): Q) -> ApiResult<Response> {
    let uuid = path_uuid(&uuid, "VmNotFound")?.to_string();
    let bytes = match q.get("bytes") {
        None => 64 << 10,
        Some(b) => b.parse::<u64>().ok().filter(|n| (1..=CONSOLE_MAX).contains(n)).ok_or_else(|| {
            ApiError::bad_request("BadParameter", format!("bytes={b}: a number of bytes from 1 to {CONSOLE_MAX}"))
        })?,
    };
    let text = blocking(move || Ok(api.vmadm()?.console_tail(&uuid, bytes)?)).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

async fn create_vm(State(api): State<Arc<Api>>, body: Result<Bytes, BytesRejection>) -> ApiResult<Response> {
    let mut payload = body_object(body, true)?;
    // The same checks vmadm create makes first, answered now; the job runs vmadm's create.
    payload.entry("brand").or_insert(json!("joyent"));
    let (_, dropped) = hull_spec::vm::validate_lenient(Action::Create, None, &Value::Object(payload.clone()))
        .map_err(|e| ApiError::invalid(&e))?;
    let uuid = match payload.get("uuid").and_then(Value::as_str) {
        Some(u) => u.to_string(),
        None => {
            let u = uuid::Uuid::new_v4().to_string();
            payload.insert("uuid".into(), json!(u));
            u
        }
    };
    let api2 = Arc::clone(&api);
    let exists = {
        let uuid = uuid.clone();
        blocking(move || Ok(api2.vmadm()?.uuids()?.contains(&uuid))).await?
    };
    if exists {
        return Err(ApiError::new(StatusCode::CONFLICT, "VmExists", format!("VM {uuid} already exists")));
    }
    let payload = Value::Object(payload);
    let work_api = Arc::clone(&api);
    let work: Work = Box::new(move || {
        let vm = work_api.vmadm()?;
        let made = vm.create(&payload)?;
        Ok(Value::Object(vm.get_unlisted(&made)?))
    });
    let ask = Ask { action: "create".into(), vm_uuid: Some(uuid.clone()), image_uuid: None, warnings: dropped };
    Ok(accepted(&api.jobs.submit(&uuid, ask, work)))
}

/// A parameter from the query, else from the body.
fn param(q: &BTreeMap<String, String>, body: &Map<String, Value>, key: &str) -> Option<String> {
    q.get(key).cloned().or_else(|| {
        body.get(key).and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        })
    })
}

fn flag(q: &BTreeMap<String, String>, body: &Map<String, Value>, key: &str) -> ApiResult<bool> {
    match param(q, body, key).as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::bad_request("BadParameter", format!("{key}: {other:?} is not true or false"))),
    }
}

fn seconds(q: &BTreeMap<String, String>, body: &Map<String, Value>, key: &str, default: u64) -> ApiResult<Duration> {
    match param(q, body, key) {
        None => Ok(Duration::from_secs(default)),
        Some(s) => s
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= 86_400)
            .map(Duration::from_secs)
            .ok_or_else(|| ApiError::bad_request("BadParameter", format!("{key}: {s:?} is not 0 to 86400 seconds"))),
    }
}

async fn vm_action(
    State(api): State<Arc<Api>>,
    Path(uuid): Path<String>,
    Query(q): Q,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let uuid = path_uuid(&uuid, "VmNotFound")?.to_string();
    let action = q.get("action").cloned().unwrap_or_default();
    let body = body_object(body, action == "update")?;
    let cfg = {
        let (api, uuid) = (Arc::clone(&api), uuid.clone());
        blocking(move || Ok(api.vmadm()?.load(&uuid)?)).await?
    };
    let mut warnings = Vec::new();
    let w = Arc::clone(&api);
    let u = uuid.clone();
    let work: Work = match action.as_str() {
        "start" => Box::new(move || {
            w.vmadm()?.start(&u)?;
            Ok(json!({}))
        }),
        "stop" | "reboot" => {
            let force = flag(&q, &body, "force")?;
            let timeout = seconds(&q, &body, "timeout", 60)?;
            let reboot = action == "reboot";
            Box::new(move || {
                let vm = w.vmadm()?;
                if reboot {
                    vm.reboot(&u, force, timeout)?
                } else {
                    vm.stop(&u, force, timeout)?
                }
                Ok(json!({}))
            })
        }
        "kill" => {
            let name = param(&q, &body, "signal").unwrap_or_else(|| "SIGKILL".into());
            let signal = crate::vmadm::parse_signal(&name)
                .map_err(|f| ApiError::bad_request("BadParameter", format!("signal: {}", f.message)))?;
            Box::new(move || {
                w.vmadm()?.kill(&u, signal)?;
                Ok(json!({}))
            })
        }
        "update" => {
            let payload = Value::Object(body);
            let brand = hull_spec::Brand::of(&cfg);
            let (_, dropped) = hull_spec::vm::validate_lenient(Action::Update, Some(brand), &payload)
                .map_err(|e| ApiError::invalid(&e))?;
            warnings = dropped;
            Box::new(move || {
                let report = w.vmadm()?.update(&u, &payload)?;
                Ok(serde_json::to_value(report).unwrap_or_default())
            })
        }
        "create_snapshot" | "rollback_snapshot" | "delete_snapshot" => {
            let name = param(&q, &body, "snapshot_name")
                .ok_or_else(|| ApiError::bad_request("MissingParameter", format!("{action} needs snapshot_name")))?;
            let verb = action.clone();
            Box::new(move || {
                let vm = w.vmadm()?;
                match verb.as_str() {
                    "create_snapshot" => vm.create_snapshot(&u, &name)?,
                    "rollback_snapshot" => vm.rollback_snapshot(&u, &name)?,
                    _ => vm.delete_snapshot(&u, &name)?,
                }
                Ok(json!({"snapshot_name": name}))
            })
        }
        "create_image" => {
            let name = param(&q, &body, "name")
                .ok_or_else(|| ApiError::bad_request("MissingParameter", "create_image needs name"))?;
            let version = param(&q, &body, "version").unwrap_or_else(|| "1.0.0".into());
            let image = match param(&q, &body, "image_uuid") {
                Some(raw) => raw
                    .parse()
                    .map_err(|_| ApiError::bad_request("BadParameter", format!("image_uuid: {raw:?} is not a uuid")))?,
                None => uuid::Uuid::new_v4(),
            };
            let compression = match param(&q, &body, "compression") {
                Some(c) => c.parse().map_err(|_| {
                    ApiError::bad_request("BadParameter", format!("compression: {c:?} (gzip, zstd or none)"))
                })?,
                None => hull_spec::Compression::Gzip,
            };
            super::images::create_image_work(Arc::clone(&w), u, image, name, version, compression)
        }
        "migrate" => super::migrations::migrate_work(Arc::clone(&w), u, &q, &body)?,
        "" => return Err(ApiError::bad_request("MissingParameter", "POST /vms/UUID needs ?action=")),
        other => {
            return Err(ApiError::bad_request(
                "UnknownAction",
                format!(
                    "{other:?} is not an action (start, stop, reboot, kill, update, create_snapshot, \
                     rollback_snapshot, delete_snapshot, create_image, migrate)"
                ),
            ));
        }
    };
    let ask = Ask { action, vm_uuid: Some(uuid.clone()), image_uuid: None, warnings };
    Ok(accepted(&api.jobs.submit(&uuid, ask, work)))
}

async fn migration_begin(
    State(api): State<Arc<Api>>,
    Query(q): Q,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body_object(body, true)?;
    super::migrations::begin(api, q, body).await
}

async fn migration_switch(State(api): State<Arc<Api>>, Path(uuid): Path<String>, Query(q): Q) -> ApiResult<Response> {
    let uuid = path_uuid(&uuid, "MigrationNotFound")?.to_string();
    super::migrations::switch(api, uuid, q).await
}

async fn migration_abort(State(api): State<Arc<Api>>, Path(uuid): Path<String>) -> ApiResult<Response> {
    let uuid = path_uuid(&uuid, "MigrationNotFound")?.to_string();
    super::migrations::abort(api, uuid).await
}

async fn migration_stream(State(api): State<Arc<Api>>, Path(uuid): Path<String>, body: Body) -> ApiResult<Response> {
    let uuid = path_uuid(&uuid, "MigrationNotFound")?.to_string();
    super::migrations::stream(api, uuid, body).await
}

async fn delete_vm(State(api): State<Arc<Api>>, Path(uuid): Path<String>) -> ApiResult<Response> {
    let uuid = path_uuid(&uuid, "VmNotFound")?.to_string();
    {
        let (api, uuid) = (Arc::clone(&api), uuid.clone());
        blocking(move || Ok(api.vmadm()?.load(&uuid).map(|_| ())?)).await?;
    }
    let (w, u) = (Arc::clone(&api), uuid.clone());
    let work: Work = Box::new(move || {
        w.vmadm()?.delete(&u)?;
        Ok(json!({}))
    });
    let ask = Ask { action: "delete".into(), vm_uuid: Some(uuid.clone()), image_uuid: None, warnings: Vec::new() };
    Ok(accepted(&api.jobs.submit(&uuid, ask, work)))
}

async fn list_jobs(State(api): State<Arc<Api>>, Query(q): Q) -> Json<Vec<Job>> {
    Json(api.jobs.list(q.get("vm_uuid").map(String::as_str)))
}

async fn get_job(State(api): State<Arc<Api>>, Path(uuid): Path<String>) -> ApiResult<Json<Job>> {
    api.jobs.get(&uuid).map(Json).ok_or_else(|| ApiError::not_found("JobNotFound", format!("no job {uuid}")))
}

async fn wait_job(State(api): State<Arc<Api>>, Path(uuid): Path<String>, Query(q): Q) -> ApiResult<Json<Job>> {
    let timeout = seconds(&q, &Map::new(), "timeout", 60)?.min(Duration::from_secs(600));
    api.jobs
        .wait(&uuid, timeout)
        .await
        .map(Json)
        .ok_or_else(|| ApiError::not_found("JobNotFound", format!("no job {uuid}")))
}

async fn list_images(State(api): State<Arc<Api>>) -> ApiResult<Json<Vec<Value>>> {
    blocking(move || {
        let img = hull_img::Imgadm::new(&api.node);
        // As an image server: each manifest describes the file GET /images/UUID/file serves.
        let mut out = Vec::new();
        for i in img.list()? {
            // One image that cannot be served hides that image (said in the log), not the rest.
            match img.served_manifest(&i.manifest.uuid) {
                Ok(m) => out.push(serde_json::to_value(m).unwrap_or_default()),
                Err(e) => tracing::warn!(image = %i.manifest.uuid, "not listed: it cannot be served: {e}"),
            }
        }
        Ok(out)
    })
    .await
    .map(Json)
}

async fn get_image(State(api): State<Arc<Api>>, Path(uuid): Path<String>) -> ApiResult<Json<Value>> {
    let uuid = path_uuid(&uuid, "ImageNotFound")?;
    blocking(move || {
        let img = hull_img::Imgadm::new(&api.node);
        Ok(serde_json::to_value(img.served_manifest(&uuid)?).unwrap_or_default())
    })
    .await
    .map(Json)
}

async fn image_file(State(api): State<Arc<Api>>, Path(uuid): Path<String>) -> ApiResult<Response> {
    let uuid = path_uuid(&uuid, "ImageNotFound")?;
    super::images::file(api, uuid).await
}

async fn drop_image_file(State(api): State<Arc<Api>>, Path(uuid): Path<String>) -> ApiResult<Response> {
    let uuid = path_uuid(&uuid, "ImageNotFound")?;
    super::images::drop_file(api, uuid).await
}

async fn upload_image_file(State(api): State<Arc<Api>>, Path(uuid): Path<String>, body: Body) -> ApiResult<Response> {
    let uuid = path_uuid(&uuid, "ImageNotFound")?;
    super::images::upload(api, uuid, body).await
}

async fn image_action(
    State(api): State<Arc<Api>>,
    Query(q): Q,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let action = q.get("action").map(String::as_str);
    let body = body_object(body, action == Some("install"))?;
    match action {
        Some("import") => {}
        Some("install") => return super::images::start_install(api, body).await,
        Some(other) => {
            return Err(ApiError::bad_request(
                "UnknownAction",
                format!("{other:?} is not an action (import, install)"),
            ));
        }
        None => return Err(ApiError::bad_request("MissingParameter", "POST /images needs ?action=import or install")),
    }
    let raw = param(&q, &body, "uuid")
        .ok_or_else(|| ApiError::bad_request("MissingParameter", "import needs the image's uuid"))?;
    let uuid: uuid::Uuid =
        raw.parse().map_err(|_| ApiError::bad_request("BadParameter", format!("uuid: {raw:?} is not a uuid")))?;
    // A node with no image sources cannot import anything: said now, no job queued.
    {
        let api = Arc::clone(&api);
        let sources = blocking(move || Ok(hull_img::Imgadm::new(&api.node).sources()?)).await?;
        if sources.is_empty() {
            return Err(ApiError::from(hull_img::ImgError::NoSources));
        }
    }
    let w = Arc::clone(&api);
    let work: Work = Box::new(move || {
        let img = hull_img::Imgadm::new(&w.node);
        img.import(&uuid)?;
        Ok(serde_json::to_value(img.served_manifest(&uuid)?).unwrap_or_default())
    });
    let ask =
        Ask { action: "import_image".into(), vm_uuid: None, image_uuid: Some(uuid.to_string()), warnings: vec![] };
    Ok(accepted(&api.jobs.submit(&format!("image:{uuid}"), ask, work)))
}

async fn delete_image(State(api): State<Arc<Api>>, Path(uuid): Path<String>) -> ApiResult<Response> {
    let uuid = path_uuid(&uuid, "ImageNotFound")?;
    {
        let api = Arc::clone(&api);
        blocking(move || Ok(hull_img::Imgadm::new(&api.node).get(&uuid).map(|_| ())?)).await?;
    }
    let w = Arc::clone(&api);
    let work: Work = Box::new(move || {
        hull_img::Imgadm::new(&w.node).delete(&uuid)?;
        Ok(json!({}))
    });
    let ask =
        Ask { action: "delete_image".into(), vm_uuid: None, image_uuid: Some(uuid.to_string()), warnings: vec![] };
    Ok(accepted(&api.jobs.submit(&format!("image:{uuid}"), ask, work)))
}

async fn events(State(api): State<Arc<Api>>, Query(q): Q) -> ApiResult<Response> {
    let since = match q.get("since") {
        None => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request("BadGeneration", format!("since: {s:?} is not a generation")))?,
        ),
    };
    let path = hull_zone::events::path(&api.node.var_dir());
    let from = super::events::start(&path, since).await?;
    let body = Body::from_stream(super::events::stream(path, from));
    Ok(([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}
