//! hull's KVM brand, from the bottom: qemu's command line from a VM's payload
//! ([`cmdline`]), a QMP client ([`qmp`]), and the probe that decides between KVM and TCG
//! ([`probe`]).

pub mod cmdline;
pub mod probe;
pub mod qmp;

#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("QMP: {0}")]
    Qmp(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = QemuError> = std::result::Result<T, E>;
