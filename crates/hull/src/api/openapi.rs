//! The API's OpenAPI 3.0 document, generated: the VM payloads from the property table that
//! validates them (`hull_spec::vm::props::json_schema`), jobs and errors from their Rust
//! types (schemars), the paths from the table below, which the router's own test keeps equal
//! to the routes it serves. `hull api openapi` prints it; docs/api/openapi.json is a copy that
//! a test keeps equal (`HULL_BLESS=1` rewrites it).

use serde_json::{Map, Value, json};

/// Every operation: (method, path, operationId, summary, 2xx status).
pub const OPERATIONS: &[(&str, &str, &str, &str, u16)] = &[
    ("get", "/ping", "Ping", "Is the server up (and its version)", 200),
    ("get", "/sysinfo", "Sysinfo", "The node, in SmartOS sysinfo's shape", 200),
    (
        "get",
        "/metrics",
        "Metrics",
        "Prometheus metrics: per VM (cAdvisor's names), the pool, VMs and services by state",
        200,
    ),
    (
        "get",
        "/vms",
        "ListVms",
        "VMs as `vmadm list -j` gives them; query parameters filter as vmadm list's FIELD=VALUE",
        200,
    ),
    ("post", "/vms", "CreateVm", "Create a VM from a vmadm payload (a job)", 202),
    ("get", "/vms/{uuid}", "GetVm", "A VM as `vmadm get` prints it", 200),
    (
        "post",
        "/vms/{uuid}",
        "VmAction",
        "start, stop, reboot, kill, update, a snapshot action or create_image (a job)",
        202,
    ),
    ("delete", "/vms/{uuid}", "DeleteVm", "Delete a VM (a job)", 202),
    ("get", "/vms/{uuid}/console", "GetVmConsole", "The tail of what the VM's console printed", 200),
    ("get", "/jobs", "ListJobs", "Jobs, oldest first", 200),
    ("get", "/jobs/{uuid}", "GetJob", "One job", 200),
    ("get", "/jobs/{uuid}/wait", "WaitJob", "The job once done, or as it is at the timeout", 200),
    ("get", "/images", "ListImages", "Installed images' manifests (IMGAPI's ListImages)", 200),
    (
        "post",
        "/images",
        "ImageAction",
        "action=import: import an image from the node's sources (a job); action=install: start an upload (201)",
        202,
    ),
    ("get", "/images/{uuid}", "GetImage", "An installed image's manifest", 200),
    ("delete", "/images/{uuid}", "DeleteImage", "Delete an installed image (a job)", 202),
    (
        "get",
        "/images/{uuid}/file",
        "GetImageFile",
        "An installed image's file, made from its dataset as it streams (what GET /images/{uuid} describes), or the file of an export made by create_image",
        200,
    ),
    ("put", "/images/{uuid}/file", "PutImageFile", "The file of an install started by action=install (a job)", 202),
    ("delete", "/images/{uuid}/file", "DeleteImageFile", "Drop the file kept by create_image", 204),
    (
        "post",
        "/migrations",
        "BeginMigration",
        "Target of a migration: reserve a VM's uuid and datasets (action=begin, the stream header)",
        201,
    ),
    ("put", "/migrations/{uuid}/stream", "PutMigrationStream", "Target: apply a VM stream as it arrives", 200),
    (
        "post",
        "/migrations/{uuid}",
        "SwitchMigration",
        "Target: make the VM from what was received (action=switch; start=true starts it)",
        200,
    ),
    ("delete", "/migrations/{uuid}", "AbortMigration", "Target: drop what was received", 204),
    ("get", "/events", "Events", "Newline-delimited JSON events with generations; since=GEN replays", 200),
];

fn error_response(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ApiError"}}}})
}

fn uuid_param() -> Value {
    json!({"name": "uuid", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}})
}

fn query(name: &str, schema: Value, desc: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": schema, "description": desc})
}

/// What an operation answers on success.
fn success(id: &str) -> Value {
    let json_of = |schema: Value| json!({"application/json": {"schema": schema}});
    match id {
        "Ping" => json_of(
            json!({"type": "object", "required": ["ping"], "properties": {"ping": {"type": "string"}, "version": {"type": "string"}}}),
        ),
        "Sysinfo" => json_of(json!({"type": "object", "required": ["UUID", "Hostname"], "additionalProperties": true})),
        "ListVms" => json_of(json!({"type": "array", "items": {"$ref": "#/components/schemas/Vm"}})),
        "GetVm" => json_of(json!({"$ref": "#/components/schemas/Vm"})),
        "ListJobs" => json_of(json!({"type": "array", "items": {"$ref": "#/components/schemas/Job"}})),
        "GetJob" | "WaitJob" => json_of(json!({"$ref": "#/components/schemas/Job"})),
        "ListImages" => json_of(json!({"type": "array", "items": {"$ref": "#/components/schemas/ImageManifest"}})),
        "GetImage" => json_of(json!({"$ref": "#/components/schemas/ImageManifest"})),
        "GetImageFile" => json!({"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}),
        "GetVmConsole" => json!({"text/plain": {"schema": {"type": "string"}}}),
        "Metrics" => json!({
            "text/plain": {"schema": {"type": "string"}},
            "application/openmetrics-text": {"schema": {"type": "string"}}
        }),
        "BeginMigration" => {
            json_of(json!({"type": "object", "required": ["uuid"], "properties": {"uuid": {"type": "string"}}}))
        }
        "PutMigrationStream" => json_of(json!({"type": "object", "required": ["parts", "bytes"],
            "properties": {"parts": {"type": "array"}, "bytes": {"type": "integer"}}})),
        "SwitchMigration" => json_of(json!({"$ref": "#/components/schemas/Vm"})),
        "AbortMigration" => json!({}),
        "Events" => json!({"application/x-ndjson": {"schema": {"type": "string"}}}),
        _ => json_of(json!({"$ref": "#/components/schemas/Accepted"})),
    }
}

fn parameters(id: &str) -> Vec<Value> {
    let secs = |max: u64| json!({"type": "integer", "minimum": 0, "maximum": max});
    match id {
        "GetVm" | "DeleteVm" | "GetJob" | "GetImage" | "DeleteImage" | "GetImageFile" | "PutImageFile"
        | "DeleteImageFile" | "PutMigrationStream" | "AbortMigration" => vec![uuid_param()],
        "BeginMigration" => vec![
            json!({"name": "action", "in": "query", "required": true, "schema": {"type": "string", "enum": ["begin"]}}),
        ],
        "SwitchMigration" => vec![
            uuid_param(),
            json!({"name": "action", "in": "query", "required": true, "schema": {"type": "string", "enum": ["switch"]}}),
            query("start", json!({"type": "string", "enum": ["true", "false"]}), "start the VM once made"),
        ],
        "VmAction" => vec![
            uuid_param(),
            json!({"name": "action", "in": "query", "required": true, "schema": {"type": "string",
                   "enum": ["start", "stop", "reboot", "kill", "update", "create_snapshot", "rollback_snapshot",
                            "delete_snapshot", "create_image", "migrate"]}}),
            query(
                "force",
                json!({"type": "string", "enum": ["true", "false"]}),
                "stop, reboot: without waiting for the guest",
            ),
            query("timeout", secs(86_400), "stop, reboot: seconds to wait before killing"),
            query("signal", json!({"type": "string"}), "kill: the signal (SIGKILL by default)"),
            query("snapshot_name", json!({"type": "string"}), "the snapshot actions: which snapshot"),
            query("name", json!({"type": "string"}), "create_image: the image's name"),
            query("version", json!({"type": "string"}), "create_image: its version (1.0.0)"),
            query("image_uuid", json!({"type": "string", "format": "uuid"}), "create_image: its uuid (a new one)"),
            query(
                "compression",
                json!({"type": "string", "enum": ["gzip", "zstd", "none"]}),
                "create_image: the file's compression (gzip)",
            ),
            query(
                "migration_action",
                json!({"type": "string", "enum": ["begin", "sync", "switch", "abort"]}),
                "migrate: the phase",
            ),
            query("target", json!({"type": "string"}), "migrate, begin: the target node's API (a peer)"),
        ],
        "WaitJob" => vec![uuid_param(), query("timeout", secs(86_400), "seconds to wait (at most 600 are waited)")],
        "GetVmConsole" => vec![
            uuid_param(),
            query(
                "bytes",
                json!({"type": "integer", "minimum": 1, "maximum": 1 << 20}),
                "how much of the end (64 KiB)",
            ),
        ],
        "ListJobs" => vec![query("vm_uuid", json!({"type": "string", "format": "uuid"}), "only this VM's jobs")],
        "ImageAction" => vec![
            json!({"name": "action", "in": "query", "required": true, "schema": {"type": "string", "enum": ["import", "install"]}}),
            query("uuid", json!({"type": "string", "format": "uuid"}), "import: the image to import"),
        ],
        "Events" => vec![query("since", json!({"type": "integer", "minimum": 0}), "the last generation seen")],
        "ListVms" => vec![
            query("state", json!({"type": "string"}), "FIELD=VALUE, or FIELD=~SUBSTRING, for any VM property"),
            query("alias", json!({"type": "string"}), "as state"),
            query("brand", json!({"type": "string"}), "as state"),
        ],
        _ => Vec::new(),
    }
}

fn request_body(id: &str) -> Option<Value> {
    let body = |schema: &str, required: bool| json!({"required": required, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    match id {
        "CreateVm" => Some(body("CreatePayload", true)),
        "VmAction" => Some(body("UpdatePayload", false)),
        "ImageAction" => Some(json!({"required": false, "content": {"application/json": {"schema": {
            "description": "import: {uuid}; install: the image's manifest",
            "type": "object", "properties": {"uuid": {"type": "string", "format": "uuid"}}}}}})),
        "PutImageFile" | "PutMigrationStream" => {
            Some(json!({"required": true, "content": {"application/octet-stream": {"schema": {
            "type": "string", "format": "binary"}}}}))
        }
        "BeginMigration" => Some(json!({"required": true, "content": {"application/json": {"schema": {
            "description": "the stream header: uuid, brand, datasets, config", "type": "object"}}}})),
        _ => None,
    }
}

/// The error statuses an operation can answer (besides 403, which every one can).
fn errors(id: &str) -> &'static [(u16, &'static str)] {
    match id {
        "Ping" | "ListJobs" => &[],
        "Sysinfo" => &[(500, "the node could not be read")],
        "ListVms" => &[(400, "a bad filter")],
        "CreateVm" => &[
            (400, "not a JSON object"),
            (409, "the VM exists"),
            (413, "body too large"),
            (422, "the payload did not validate"),
        ],
        "GetVm" | "DeleteVm" => &[(404, "no such VM")],
        "GetVmConsole" => &[(400, "bytes is not 1 to 1 MiB"), (404, "no such VM")],
        "VmAction" => &[
            (400, "a bad action or parameter"),
            (404, "no such VM"),
            (413, "body too large"),
            (422, "the payload did not validate"),
        ],
        "GetJob" => &[(404, "no such job")],
        "BeginMigration" => &[(400, "not a stream header"), (409, "the VM, or its migration, is here already")],
        "PutMigrationStream" => &[(400, "a stream this node does not take"), (404, "no such migration")],
        "SwitchMigration" => &[(400, "a bad action"), (404, "no such migration"), (409, "the VM could not be made")],
        "AbortMigration" => &[(404, "no such migration")],
        "WaitJob" => &[(400, "a bad timeout"), (404, "no such job")],
        "ListImages" => &[],
        "ImageAction" => &[
            (400, "a bad action, uuid or manifest"),
            (409, "the node has no image sources, or has the image"),
            (413, "body too large"),
        ],
        "PutImageFile" => &[
            (400, "not the manifest's size"),
            (404, "no install started for the image"),
            (413, "more than the manifest's size"),
        ],
        "DeleteImageFile" => &[(404, "no kept file of the image")],
        "GetImage" | "DeleteImage" | "GetImageFile" => &[(404, "no such image, or its file is not kept")],
        "Events" => &[(400, "since is not a generation of this node"), (410, "the log no longer reaches since")],
        _ => &[],
    }
}

pub fn document() -> Value {
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    generator.subschema_for::<super::jobs::Job>();
    generator.subschema_for::<super::error::ApiError>();
    let mut schemas: Map<String, Value> = generator.take_definitions(true);
    schemas.insert("CreatePayload".into(), hull_spec::vm::props::json_schema(hull_spec::vm::props::C));
    schemas.insert("UpdatePayload".into(), hull_spec::vm::props::json_schema(hull_spec::vm::props::U));
    schemas.insert(
        "Vm".into(),
        json!({"allOf": [{"$ref": "#/components/schemas/CreatePayload"}], "type": "object",
               "required": ["uuid", "brand", "state"],
               "properties": {"uuid": {"type": "string", "format": "uuid"}, "state": {"type": "string"}}}),
    );
    schemas.insert(
        "ImageManifest".into(),
        json!({"type": "object", "required": ["uuid", "name", "version"], "additionalProperties": true,
               "properties": {"uuid": {"type": "string", "format": "uuid"}, "name": {"type": "string"}, "version": {"type": "string"}}}),
    );
    schemas.insert(
        "Accepted".into(),
        json!({"type": "object", "required": ["job_uuid", "job"],
               "properties": {"job_uuid": {"type": "string", "format": "uuid"}, "job": {"$ref": "#/components/schemas/Job"},
                              "vm_uuid": {"type": "string", "format": "uuid"}, "image_uuid": {"type": "string", "format": "uuid"},
                              "warnings": {"type": "array", "items": {"type": "string"}}}}),
    );
    let mut paths = Map::new();
    for (method, path, id, summary, ok) in OPERATIONS {
        let mut responses = Map::new();
        let desc = if *ok == 202 { "Accepted: the job that does it" } else { "OK" };
        let mut ok_response = json!({"description": desc, "content": success(id)});
        if *ok == 202 {
            // Where the answer leads: the job, and for a VM the VM (OpenAPI links, which
            // stateful testers such as schemathesis follow).
            let mut links = json!({
                "GetJob": {"operationId": "GetJob", "parameters": {"uuid": "$response.body#/job_uuid"}},
                "WaitJob": {"operationId": "WaitJob", "parameters": {"uuid": "$response.body#/job_uuid"}},
            });
            if *id == "CreateVm" {
                for target in ["GetVm", "VmAction", "DeleteVm"] {
                    links[target] = json!({"operationId": target, "parameters": {"uuid": "$response.body#/vm_uuid"}});
                }
            }
            ok_response["links"] = links;
        }
        if *ok == 204 {
            ok_response = json!({"description": "Done"});
        }
        responses.insert(ok.to_string(), ok_response);
        if *id == "ImageAction" {
            responses.insert(
                "201".into(),
                json!({"description": "install: the upload is expected at `upload`", "content": {"application/json": {"schema":
                    {"type": "object", "required": ["uuid", "upload"],
                     "properties": {"uuid": {"type": "string", "format": "uuid"}, "upload": {"type": "string"}}}}}}),
            );
        }
        for (status, why) in errors(id) {
            responses.insert(status.to_string(), error_response(why));
        }
        responses.insert("403".into(), error_response("the caller may not use this node's API"));
        let mut op = json!({"operationId": id, "summary": summary, "responses": responses});
        let params = parameters(id);
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some(b) = request_body(id) {
            op["requestBody"] = b;
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "hull node API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "The REST API of one hull node: VMs, jobs, images and events (docs/api.md)."},
        "servers": [{"url": "https://localhost:4443"}],
        "paths": paths,
        "components": {"schemas": schemas},
    })
}
