//! Jobs: every change the API makes runs as one. A job is recorded in
//! `var/hull/api/jobs/UUID.json` at each step (queued, running, succeeded or failed), and each
//! step is an event in the node's event log. Jobs with the same key (a VM's uuid, an image's)
//! run one after another in the order they were asked for; jobs with different keys run in
//! parallel, each on a blocking thread of its own (vmadm's work is blocking).

use super::error::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Execution {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl Execution {
    pub fn done(self) -> bool {
        matches!(self, Execution::Succeeded | Execution::Failed)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Job {
    pub uuid: String,
    /// `create`, `start`, `stop`, `update`, `delete`, `import_image`, ...
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_uuid: Option<String>,
    pub execution: Execution,
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    /// What the job made or changed (the VM as `GET /vms/UUID` shows it, the update report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
    /// Properties dropped from the payload, as vmadm warns of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// What a job does: its result, or why it failed.
pub type Work = Box<dyn FnOnce() -> Result<Value, ApiError> + Send>;

/// What a new job is, before it is queued.
pub struct Ask {
    pub action: String,
    pub vm_uuid: Option<String>,
    pub image_uuid: Option<String>,
    pub warnings: Vec<String>,
}

pub struct Jobs {
    dir: PathBuf,
    var_dir: PathBuf,
    table: Mutex<HashMap<String, Job>>,
    /// Work waiting behind a running job with the same key.
    queues: Mutex<HashMap<String, VecDeque<(String, Work)>>>,
    /// Bumped at every step of every job: waiters look again.
    changed: tokio::sync::watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A job's work runs outside these locks, so a poisoned one only means a panic while
    // a map was edited; the map is still whole.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Jobs {
    /// The node's jobs. Jobs that were queued or running when the last server stopped are
    /// marked failed (`Interrupted`): their VM is as vmadm left it, whole or gone.
    pub fn open(var_dir: &Path) -> std::io::Result<Arc<Jobs>> {
        let dir = var_dir.join("api/jobs");
        std::fs::create_dir_all(&dir)?;
        let mut table = HashMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let Ok(text) = std::fs::read(&path) else { continue };
            let Ok(mut job) = serde_json::from_slice::<Job>(&text) else {
                tracing::warn!("job record {} is unreadable; skipped", path.display());
                continue;
            };
            if !job.execution.done() {
                job.execution = Execution::Failed;
                job.ended = Some(hull_zone::events::now_rfc3339());
                job.error = Some(ApiError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "Interrupted",
                    "the API server stopped while this job was queued or running; the VM is as vmadm left it",
                ));
                write(&dir, &job);
            }
            table.insert(job.uuid.clone(), job);
        }
        let (changed, _) = tokio::sync::watch::channel(0);
        Ok(Arc::new(Jobs {
            dir,
            var_dir: var_dir.to_path_buf(),
            table: Mutex::new(table),
            queues: Mutex::new(HashMap::new()),
            changed,
        }))
    }

    /// Queues `work` behind every job with the same `key`; returns the job as queued.
    pub fn submit(self: &Arc<Self>, key: &str, ask: Ask, work: Work) -> Job {
        let job = Job {
            uuid: uuid::Uuid::new_v4().to_string(),
            action: ask.action,
            vm_uuid: ask.vm_uuid,
            image_uuid: ask.image_uuid,
            execution: Execution::Queued,
            created: hull_zone::events::now_rfc3339(),
            started: None,
            ended: None,
            result: None,
            error: None,
            warnings: ask.warnings,
        };
        self.record(&job);
        let mut queues = lock(&self.queues);
        if let Some(q) = queues.get_mut(key) {
            q.push_back((job.uuid.clone(), work));
            return job;
        }
        queues.insert(key.to_string(), VecDeque::new());
        drop(queues);
        let (me, key, first) = (Arc::clone(self), key.to_string(), job.uuid.clone());
        tokio::task::spawn_blocking(move || me.drain(&key, first, work));
        job
    }

    /// Runs one key's jobs in order until its queue is empty.
    fn drain(&self, key: &str, first: String, work: Work) {
        let mut next = Some((first, work));
        while let Some((uuid, work)) = next.take() {
            self.run(&uuid, work);
            let mut queues = lock(&self.queues);
            next = queues.get_mut(key).and_then(VecDeque::pop_front);
            if next.is_none() {
                queues.remove(key);
            }
        }
    }

    fn run(&self, uuid: &str, work: Work) {
        let Some(mut job) = self.get(uuid) else { return };
        job.execution = Execution::Running;
        job.started = Some(hull_zone::events::now_rfc3339());
        self.record(&job);
        // A panic in the work is the job's failure, not the server's.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
            .unwrap_or_else(|_| Err(ApiError::internal("the job's work panicked")));
        job.ended = Some(hull_zone::events::now_rfc3339());
        match outcome {
            Ok(v) => {
                job.execution = Execution::Succeeded;
                job.result = Some(v);
            }
            Err(e) => {
                job.execution = Execution::Failed;
                job.error = Some(e);
            }
        }
        self.record(&job);
    }

    /// Stores the job, tells waiters, and logs the step as an event.
    fn record(&self, job: &Job) {
        write(&self.dir, job);
        lock(&self.table).insert(job.uuid.clone(), job.clone());
        self.changed.send_modify(|n| *n += 1);
        let mut ev = json!({
            "type": "job",
            "date": hull_zone::events::now_rfc3339(),
            "job_uuid": job.uuid,
            "action": job.action,
            "execution": job.execution,
        });
        if let Some(vm) = &job.vm_uuid {
            ev["uuid"] = json!(vm);
        }
        if let Some(img) = &job.image_uuid {
            ev["image_uuid"] = json!(img);
        }
        if let Some(e) = &job.error {
            ev["error"] = json!({"code": e.code, "message": e.message});
        }
        hull_zone::events::append(&self.var_dir, &ev);
    }

    pub fn get(&self, uuid: &str) -> Option<Job> {
        lock(&self.table).get(uuid).cloned()
    }

    /// Jobs, oldest first; only one VM's when `vm` is given.
    pub fn list(&self, vm: Option<&str>) -> Vec<Job> {
        let mut jobs: Vec<Job> = lock(&self.table)
            .values()
            .filter(|j| vm.is_none_or(|v| j.vm_uuid.as_deref() == Some(v)))
            .cloned()
            .collect();
        jobs.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.uuid.cmp(&b.uuid)));
        jobs
    }

    /// The job once it is done, or as it is when `timeout` passes.
    pub async fn wait(&self, uuid: &str, timeout: Duration) -> Option<Job> {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let job = self.get(uuid)?;
            if job.execution.done() {
                return Some(job);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return self.get(uuid),
            }
        }
    }
}

/// Records a job: always atomically (a reader sees the old record or the new); synced to
/// disk only once the job is done. A queued or running record lost to a power cut belongs to
/// a job that never finished (its end is synced), and a restarted server marks every record
/// it finds unfinished as Interrupted; a kill of the server loses nothing (the page cache
/// stays). Syncing each step cost more than the rest of a job's bookkeeping.
fn write(dir: &Path, job: &Job) {
    let path = dir.join(format!("{}.json", job.uuid));
    let text = serde_json::to_vec_pretty(job).unwrap_or_default();
    let written = if job.execution.done() {
        hull_exec::write_atomic(&path, &text)
    } else {
        let tmp = dir.join(format!(".{}.tmp", job.uuid));
        std::fs::write(&tmp, &text).and_then(|_| std::fs::rename(&tmp, &path))
    };
    if let Err(e) = written {
        tracing::warn!("job {}: cannot record it at {}: {e}", job.uuid, path.display());
    }
}
