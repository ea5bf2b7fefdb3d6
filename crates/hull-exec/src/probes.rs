//! hull's USDT probes (SystemTap SDT notes in the binary, as the `usdt` crate writes them on
//! Linux): `bpftrace -l 'usdt:/path/to/hull:hull:*'` lists them. Each is a no-op with a
//! semaphore until a tracer attaches: the arguments are not even computed.
//!
//! | probe | arguments |
//! |---|---|
//! | `vm__begin` | verb (`create`, `start`, `stop`, `delete`...), VM uuid |
//! | `vm__done` | verb, VM uuid, nanoseconds taken, 0 or the failure's text |
//! | `zone__console` | VM uuid, `attach` or `detach` |
//! | `mdata__request` | VM uuid, request (`GET`, `PUT`...), key, answer (`SUCCESS`...) |
//! | `svc__state` | FMRI, the state left, the state entered |
//! | `api__request` | method, path, HTTP status, nanoseconds taken |

#[usdt::provider(provider = "hull")]
mod hull {
    fn vm__begin(verb: &str, uuid: &str) {}
    fn vm__done(verb: &str, uuid: &str, nanos: u64, error: &str) {}
    fn zone__console(uuid: &str, event: &str) {}
    fn mdata__request(uuid: &str, request: &str, key: &str, answer: &str) {}
    fn svc__state(fmri: &str, from: &str, to: &str) {}
    fn api__request(method: &str, path: &str, status: u16, nanos: u64) {}
}

/// Fires `zone__console`.
pub fn zone_console(uuid: &str, event: &str) {
    hull::zone__console!(|| (uuid, event));
}

/// Fires `mdata__request`.
pub fn mdata_request(uuid: &str, request: &str, key: &str, answer: &str) {
    hull::mdata__request!(|| (uuid, request, key, answer));
}

/// Fires `svc__state`.
pub fn svc_state(fmri: &str, from: &str, to: &str) {
    hull::svc__state!(|| (fmri, from, to));
}

/// Fires `api__request`.
pub fn api_request(method: &str, path: &str, status: u16, nanos: u64) {
    hull::api__request!(|| (method, path, status, nanos));
}

/// A VM verb in progress: fires `vm__begin` now and `vm__done` when it ends.
pub struct VmVerb {
    verb: &'static str,
    uuid: String,
    start: std::time::Instant,
    error: Option<String>,
}

impl VmVerb {
    pub fn begin(verb: &'static str, uuid: &str) -> VmVerb {
        hull::vm__begin!(|| (verb, uuid));
        VmVerb { verb, uuid: uuid.to_string(), start: std::time::Instant::now(), error: None }
    }

    /// Names the VM once it is known (a create without a uuid in its payload).
    pub fn uuid(&mut self, uuid: &str) {
        self.uuid = uuid.to_string();
    }

    /// Records how the verb ended (a verb dropped without it ended in a panic).
    pub fn finish<T, E: std::fmt::Display>(mut self, r: &Result<T, E>) {
        self.error = Some(match r {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        });
    }
}

impl Drop for VmVerb {
    fn drop(&mut self) {
        let nanos = self.start.elapsed().as_nanos() as u64;
        let error = self.error.as_deref().unwrap_or("unwound");
        let (verb, uuid) = (self.verb, self.uuid.as_str());
        hull::vm__done!(|| (verb, uuid, nanos, error));
    }
}

/// Runs a VM verb between `vm__begin` and `vm__done`.
pub fn vm_verb<T, E: std::fmt::Display>(
    verb: &'static str,
    uuid: &str,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    let p = VmVerb::begin(verb, uuid);
    let r = f();
    p.finish(&r);
    r
}
