//! Progress bars on a terminal; nothing at all when stderr is not one.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `len` bytes, or a spinner counting bytes when the length is unknown.
pub fn bytes(len: Option<u64>, msg: &str) -> ProgressBar {
    // The stderr target draws only when stderr is a terminal.
    let pb = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
    let style = match len {
        Some(_) => ProgressStyle::with_template("{msg:20} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}"),
        None => ProgressStyle::with_template("{spinner} {msg:20} {bytes} {bytes_per_sec}"),
    };
    if let Ok(style) = style {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(msg.to_string());
    pb
}
