//! A plugin's logs: plain text, one line per event, to stderr or to
//! `<logging-dir>/<plugin-name>.log` (the standard `--logging-dir` option); never to stdout,
//! which carries the protocol.

use std::path::PathBuf;

use tracing_subscriber::EnvFilter;

use crate::options::Options;

/// Installs the global subscriber at the options' effective log level. Returns the log file,
/// if logs go to one.
pub fn init(options: &Options) -> Result<Option<PathBuf>, String> {
    let filter = EnvFilter::new(options.effective_log_level().directive());
    let builder = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_target(false)
        .with_env_filter(filter);
    match &options.logging_dir {
        Some(dir) => {
            let (path, file) = crate::options::open_log_file(dir, &options.plugin_name)?;
            builder
                .with_writer(std::sync::Mutex::new(file))
                .try_init()
                .map_err(|e| e.to_string())?;
            Ok(Some(path))
        }
        None => {
            builder
                .with_writer(std::io::stderr)
                .try_init()
                .map_err(|e| e.to_string())?;
            Ok(None)
        }
    }
}
