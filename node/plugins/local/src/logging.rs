//! Logs: plain text, one line per event, to stderr or to `<logging-dir>/<plugin-name>.log`;
//! never to stdout, which carries the protocol.

use std::path::PathBuf;

use tracing_subscriber::EnvFilter;

use crate::config::Config;

/// Installs the global subscriber. Returns the log file, if logs go to one.
pub fn init(cfg: &Config) -> Result<Option<PathBuf>, String> {
    let filter = EnvFilter::new(cfg.log_level().directive());
    let builder = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_target(false)
        .with_env_filter(filter);
    match &cfg.options.logging_dir {
        Some(dir) => {
            let (path, file) = launcher_plugin_api::options::open_log_file(dir, &cfg.options.plugin_name)?;
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
