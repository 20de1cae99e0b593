//! The progress bar on stderr: one bar over the bench's steps, a second one while jobs load.
//!
//! When stderr is not a terminal indicatif draws nothing, and the step lines are printed plainly
//! instead, so a log file of the run still says what happened.

use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    multi: MultiProgress,
    steps: ProgressBar,
}

static PROGRESS: OnceLock<Progress> = OnceLock::new();

fn get() -> &'static Progress {
    PROGRESS.get_or_init(|| {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let steps = multi.add(ProgressBar::new(0));
        steps.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps  {wide_msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        steps.enable_steady_tick(Duration::from_millis(250));
        Progress { multi, steps }
    })
}

/// Sets the number of steps the run will take.
pub fn set_steps(n: u64) {
    get().steps.set_length(n);
}

/// Starts the next step, named `msg`.
pub fn step(msg: impl Into<String>) {
    let msg = msg.into();
    let p = get();
    if p.steps.position() < p.steps.length().unwrap_or(0) {
        p.steps.inc(1);
    }
    p.steps.set_message(msg.clone());
    log(format!(
        "[{}/{}] {msg}",
        p.steps.position(),
        p.steps.length().unwrap_or(0)
    ));
}

/// Prints a line above the bars (or plainly when they are hidden).
pub fn log(line: impl AsRef<str>) {
    let p = get();
    if p.multi.is_hidden() {
        eprintln!("{}", line.as_ref());
    } else {
        let _ = p.multi.println(line.as_ref());
    }
}

/// A second bar counting `len` items (jobs loaded), removed with [`finish`].
pub fn counter(len: u64, what: &str) -> ProgressBar {
    let bar = get().multi.add(ProgressBar::new(len));
    bar.set_style(
        ProgressStyle::with_template("  {msg} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Removes a bar made by [`counter`].
pub fn finish(bar: ProgressBar) {
    bar.finish_and_clear();
    get().multi.remove(&bar);
}

/// Clears the bars before the report is printed.
pub fn done() {
    get().steps.finish_and_clear();
}
