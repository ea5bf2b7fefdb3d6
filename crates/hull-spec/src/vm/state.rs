//! What a VM is doing, as `vmadm get` says it, and which verbs each state allows.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A VM's state. SmartOS has more (provisioning, shutting_down, ...): hull's verbs are
/// synchronous, so a VM is seen only at rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Running,
    Stopped,
    /// Stopped after a boot that failed (or an init that kept dying); `start` clears it.
    Failed,
}

/// The verbs whose meaning depends on the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Start,
    Stop,
    Kill,
    Reboot,
    Zlogin,
    Console,
    Info,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Stopped => "stopped",
            State::Failed => "failed",
        }
    }

    pub fn is_running(self) -> bool {
        self == State::Running
    }

    /// Whether `verb` may act on a VM in this state: `start` on one that is not running,
    /// every other state-bound verb on one that is.
    pub fn allows(self, verb: Verb) -> bool {
        match verb {
            Verb::Start => !self.is_running(),
            Verb::Stop | Verb::Kill | Verb::Reboot | Verb::Zlogin | Verb::Console | Verb::Info => self.is_running(),
        }
    }

    /// zonecfg's view, as SmartOS's `zone_state` shows it.
    pub fn zone_state(self) -> &'static str {
        if self.is_running() { "running" } else { "installed" }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        assert!(State::Stopped.allows(Verb::Start) && State::Failed.allows(Verb::Start));
        assert!(!State::Running.allows(Verb::Start));
        for v in [Verb::Stop, Verb::Kill, Verb::Reboot, Verb::Zlogin, Verb::Console, Verb::Info] {
            assert!(State::Running.allows(v) && !State::Stopped.allows(v) && !State::Failed.allows(v));
        }
        assert_eq!(serde_json::to_string(&State::Failed).expect("json"), "\"failed\"");
        assert_eq!((State::Running.zone_state(), State::Failed.zone_state()), ("running", "installed"));
    }
}
