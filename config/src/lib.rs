//! launcher-config: how `launcher.conf` is read, shared by the node and the gateway
//! (docs/configuration.md).
//!
//! One file serves both programs. Each declares its sections' keys once, as a table of
//! [`KeySpec`]s (name, how to set it from text, how to show it); this crate reads the file's
//! lines against those tables ([`read`]), applies `LAUNCHER_*` environment overrides
//! ([`apply_env`]), remembers where every value came from ([`Origins`]) so later checks can
//! point at a line, and reports every problem at once ([`ConfigErrors`]) with file, line,
//! section, key and, for a misspelt key, the key that was probably meant. The `[server]`
//! section, which both programs read, is declared here once ([`server`]).
//!
//! The file's grammar: `[section]` headers, `key=value` lines (whitespace around both trimmed;
//! everything after the first `=` is the value), full-line comments starting with `#` or `;`,
//! and blank lines. The reader is our own rather than an INI crate's because a report must name
//! the line of each problem, which the INI crates we looked at (rust-ini among them) do not
//! keep.
#![forbid(unsafe_code)]

use std::path::PathBuf;

mod problem;
mod reader;
pub mod server;
pub mod values;

pub use problem::{ConfigError, ConfigErrors};
pub use reader::{apply_env, read, KeySpec, Open, Origin, Origins, Sections};

/// Environment variable naming the configuration directory, as RStudio itself uses it.
pub const CONFIG_DIR_ENV: &str = "RSTUDIO_CONFIG_DIR";
/// Configuration directory used when [`CONFIG_DIR_ENV`] is unset or empty.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/rstudio";
/// Name of the launcher's configuration file inside the configuration directory.
pub const CONFIG_FILE_NAME: &str = "launcher.conf";
/// The sections of `launcher.conf`.
pub const SECTION_NAMES: [&str; 3] = ["server", "node", "cluster"];

/// The configuration directory: `$RSTUDIO_CONFIG_DIR`, or `/etc/rstudio` when unset or empty.
pub fn config_dir() -> PathBuf {
    config_dir_from(|name| std::env::var(name).ok())
}

/// [`config_dir`] reading variables through `env`, so tests need not touch the process
/// environment.
pub fn config_dir_from(env: impl Fn(&str) -> Option<String>) -> PathBuf {
    match env(CONFIG_DIR_ENV) {
        Some(dir) if !dir.trim().is_empty() => PathBuf::from(dir.trim()),
        _ => PathBuf::from(DEFAULT_CONFIG_DIR),
    }
}

/// The keys in the first column of the Markdown table under `heading` in `doc` (rows starting
/// with ``| `key` ``), up to the next `## ` heading: for the tests that hold each program's key
/// tables and docs/configuration.md together.
pub fn documented_keys(doc: &str, heading: &str) -> Vec<String> {
    let Some(start) = doc.find(heading) else {
        return Vec::new();
    };
    let body = &doc[start + heading.len()..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    body.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(k, _)| k.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_dir_comes_from_the_environment_unless_blank() {
        assert_eq!(config_dir_from(|_| None), PathBuf::from("/etc/rstudio"));
        assert_eq!(
            config_dir_from(|_| Some("  ".into())),
            PathBuf::from("/etc/rstudio")
        );
        assert_eq!(
            config_dir_from(|_| Some(" /srv/conf ".into())),
            PathBuf::from("/srv/conf")
        );
    }

    #[test]
    fn documented_keys_are_the_first_column_under_the_heading() {
        let doc =
            "## [a]\n\n| key | x |\n|---|---|\n| `one` | 1 |\n| `two` | 2 |\n\n## [b]\n| `three` | 3 |\n";
        assert_eq!(documented_keys(doc, "## [a]\n"), vec!["one", "two"]);
        assert_eq!(documented_keys(doc, "## [b]\n"), vec!["three"]);
        assert!(documented_keys(doc, "## [c]\n").is_empty());
    }
}
