//! Progress for long byte-counting work: a bar on a terminal, a log line at the end.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar over a known number of bytes; hidden when stderr is not a terminal.
pub struct ByteProgress {
    bar: ProgressBar,
    started: Instant,
}

impl ByteProgress {
    /// `total` is `None` when the amount of work is not known in advance.
    pub fn new(what: &str, total: Option<u64>) -> ByteProgress {
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
        let template = match total {
            Some(_) => "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            None => "{msg:>10} {spinner} {bytes} {bytes_per_sec}",
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        ByteProgress {
            bar,
            started: Instant::now(),
        }
    }

    /// Sets position and length (for work whose size is learnt on the way).
    pub fn set(&self, pos: u64, len: u64, msg: &str) {
        self.bar.set_length(len);
        self.bar.set_position(pos);
        self.bar.set_message(msg.to_string());
    }

    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Clears the bar and returns (bytes, seconds).
    pub fn finish(self) -> (u64, f64) {
        self.bar.finish_and_clear();
        (self.bar.position(), self.started.elapsed().as_secs_f64())
    }
}
