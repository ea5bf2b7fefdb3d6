//! Where a verb's time goes: each step of a create, a start or a zone's boot is logged at
//! debug level with the milliseconds it took and since the verb began
//! (`HULL_LOG=hull=debug vmadm create ...`; zoneadmd's land in its `zoneadmd.log`).
//! Nothing is measured unless debug logging is on.

use std::time::Instant;

/// The clock of one verb on one VM.
pub struct Phases {
    verb: &'static str,
    vm: String,
    start: Instant,
    last: Instant,
    on: bool,
}

impl Phases {
    pub fn new(verb: &'static str, vm: &str) -> Phases {
        let now = Instant::now();
        let on = tracing::enabled!(tracing::Level::DEBUG);
        Phases { verb, vm: if on { vm.to_string() } else { String::new() }, start: now, last: now, on }
    }

    /// Logs that `phase` just ended.
    pub fn mark(&mut self, phase: &'static str) {
        if !self.on {
            return;
        }
        let now = Instant::now();
        let ms = |d: std::time::Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
        tracing::debug!(
            verb = self.verb,
            vm = %self.vm,
            phase,
            ms = ms(now - self.last),
            total_ms = ms(now - self.start),
            "phase"
        );
        self.last = now;
    }
}
