//! The standard plugin options of DESIGN §5 and the config-file format, shared by our plugins:
//! the command line (only in `--name=value` form), then `<config-dir>/launcher.<plugin-name>.conf`,
//! whose values win over the command line for the standard keys and which also holds each
//! plugin's own keys (given to the plugin's `set_own`).
//!
//! Every problem is an error that names the option, or the file, line and key: a plugin that
//! guessed would run with settings nobody asked for.

use std::path::{Path, PathBuf};

/// Where configuration files live when `RSTUDIO_CONFIG_DIR` is not set (as RStudio itself).
pub const DEFAULT_CONFIG_DIR: &str = "/etc/rstudio";

/// Why the configuration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A command-line argument is wrong.
    #[error("{0}")]
    Argument(String),
    /// A line of the config file is wrong.
    #[error("{file}:{line}: {message}")]
    File {
        file: PathBuf,
        line: usize,
        message: String,
    },
    /// The config file exists but cannot be read.
    #[error("cannot read {file}: {message}")]
    Unreadable { file: PathBuf, message: String },
    /// The settings are each fine but do not work together (or with this machine).
    #[error("{0}")]
    Invalid(String),
}

/// How much to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// `off`/`none`, `error`/`err`, `warn`/`warning`, `info`, `debug`, `trace`, in any case.
    pub fn parse(s: &str) -> Option<LogLevel> {
        Some(match s.to_ascii_lowercase().as_str() {
            "off" | "none" => LogLevel::Off,
            "error" | "err" => LogLevel::Error,
            "warn" | "warning" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => return None,
        })
    }

    /// The `tracing` filter directive.
    pub fn directive(self) -> &'static str {
        match self {
            LogLevel::Off => "off",
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// The standard plugin options (DESIGN §5).
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub enable_debug_logging: bool,
    pub log_level: Option<LogLevel>,
    pub logging_dir: Option<PathBuf>,
    /// 0 disables the plugin's own heartbeats.
    pub heartbeat_interval_seconds: u64,
    /// How long terminal jobs are kept (what 0 means is the plugin's to say).
    pub job_expiry_hours: u64,
    /// Accepted for compatibility with SDK plugins.
    pub launcher_config_file: Option<PathBuf>,
    pub plugin_name: String,
    /// Largest request accepted, in bytes.
    pub max_message_size: usize,
    /// Worker threads of the runtime (default: the number of CPUs).
    pub thread_pool_size: Option<usize>,
    /// Default `/var/lib/rstudio-launcher/<plugin-name>`.
    pub scratch_path: Option<PathBuf>,
    pub server_user: Option<String>,
    pub unprivileged: bool,
}

impl Options {
    /// The defaults, for a plugin whose name is `plugin_name` unless `--plugin-name` says otherwise.
    pub fn new(plugin_name: &str) -> Options {
        Options {
            enable_debug_logging: false,
            log_level: None,
            logging_dir: None,
            heartbeat_interval_seconds: 5,
            job_expiry_hours: 24,
            launcher_config_file: None,
            plugin_name: plugin_name.into(),
            max_message_size: crate::framing::MAX_MESSAGE_BYTES,
            thread_pool_size: None,
            scratch_path: None,
            server_user: None,
            unprivileged: false,
        }
    }

    /// The level to log at: `log-level` if given, debug with `enable-debug-logging=1`, else info.
    pub fn effective_log_level(&self) -> LogLevel {
        match self.log_level {
            Some(l) => l,
            None if self.enable_debug_logging => LogLevel::Debug,
            None => LogLevel::Info,
        }
    }

    /// `scratch-path`, else `/var/lib/rstudio-launcher/<plugin-name>`.
    pub fn effective_scratch_path(&self) -> PathBuf {
        self.scratch_path
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/lib/rstudio-launcher").join(&self.plugin_name))
    }
}

/// `0`/`1` (or `false`/`true`).
pub fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "1" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("expected 0 or 1, got {v:?}")),
    }
}

/// A whole number, 0 or more.
pub fn parse_uint(v: &str) -> Result<u64, String> {
    v.parse::<u64>()
        .map_err(|_| format!("expected a whole number, got {v:?}"))
}

/// A whole number above 0.
pub fn parse_positive(v: &str) -> Result<u64, String> {
    match parse_uint(v)? {
        0 => Err("expected a number above 0, got 0".into()),
        n => Ok(n),
    }
}

/// An absolute path.
pub fn parse_abs_path(v: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(v);
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(format!("expected an absolute path, got {v:?}"))
    }
}

/// Any text but the empty one.
pub fn parse_nonempty(v: &str) -> Result<String, String> {
    if v.is_empty() {
        Err("expected a value, got nothing".into())
    } else {
        Ok(v.to_string())
    }
}

/// Sets one standard option. `Ok(false)` when `key` is not a standard option.
fn set_standard(o: &mut Options, key: &str, v: &str) -> Result<bool, String> {
    match key {
        "enable-debug-logging" => o.enable_debug_logging = parse_bool(v)?,
        "log-level" => {
            o.log_level = Some(LogLevel::parse(v).ok_or_else(|| {
                format!("expected one of off, error, warning, info, debug, trace, got {v:?}")
            })?)
        }
        "logging-dir" => o.logging_dir = Some(parse_abs_path(v)?),
        "heartbeat-interval-seconds" => o.heartbeat_interval_seconds = parse_uint(v)?,
        "job-expiry-hours" => o.job_expiry_hours = parse_uint(v)?,
        "launcher-config-file" => o.launcher_config_file = Some(PathBuf::from(parse_nonempty(v)?)),
        "plugin-name" => {
            let ok = !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && !v.starts_with('.');
            if !ok {
                return Err(format!(
                    "expected letters, digits, '-', '_' or '.' (it names files), got {v:?}"
                ));
            }
            o.plugin_name = v.to_string();
        }
        "max-message-size" => {
            let n = parse_positive(v)?;
            o.max_message_size = usize::try_from(n.min(u32::MAX as u64)).unwrap_or(usize::MAX);
        }
        "thread-pool-size" => {
            let n = parse_positive(v)?;
            if n > 1024 {
                return Err(format!("expected at most 1024 threads, got {n}"));
            }
            o.thread_pool_size = Some(n as usize);
        }
        "scratch-path" => o.scratch_path = Some(parse_abs_path(v)?),
        "server-user" => o.server_user = Some(parse_nonempty(v)?),
        "unprivileged" => o.unprivileged = parse_bool(v)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// Parses the command line (without the program name) of the plugin named `plugin_name` by
/// default. Only `--name=value` forms of the standard options are accepted.
pub fn parse_args<I: IntoIterator<Item = String>>(
    plugin_name: &str,
    args: I,
) -> Result<Options, ConfigError> {
    let mut o = Options::new(plugin_name);
    for arg in args {
        let Some(body) = arg.strip_prefix("--") else {
            return Err(ConfigError::Argument(format!(
                "unexpected argument {arg:?}: the plugin takes only --name=value options"
            )));
        };
        let Some((key, value)) = body.split_once('=') else {
            return Err(ConfigError::Argument(format!(
                "option {arg} needs a value: write --{body}=value"
            )));
        };
        match set_standard(&mut o, key, value) {
            Ok(true) => {}
            Ok(false) => return Err(ConfigError::Argument(format!("unknown option --{key}"))),
            Err(problem) => return Err(ConfigError::Argument(format!("option --{key}: {problem}"))),
        }
    }
    Ok(o)
}

/// Applies the text of a config file to `o` (standard keys) and gives every other key to
/// `set_own`, which answers `Ok(false)` for a key it does not know.
pub fn parse_file(
    file: &Path,
    text: &str,
    o: &mut Options,
    mut set_own: impl FnMut(&str, &str) -> Result<bool, String>,
) -> Result<(), ConfigError> {
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |message: String| ConfigError::File {
            file: file.to_path_buf(),
            line,
            message,
        };
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let Some((key, value)) = t.split_once('=') else {
            return Err(err(format!("expected key=value, got {t:?}")));
        };
        let (key, value) = (key.trim(), value.trim());
        if key == "plugin-name" {
            // The file's own name depends on it: changing it here would mean reading another file.
            return Err(err(
                "key plugin-name: cannot be set here (the file is chosen by it); pass --plugin-name".into(),
            ));
        }
        let known = match set_standard(o, key, value) {
            Ok(true) => true,
            Ok(false) => set_own(key, value).map_err(|p| err(format!("key {key}: {p}")))?,
            Err(p) => return Err(err(format!("key {key}: {p}"))),
        };
        if !known {
            return Err(err(format!("unknown key {key}")));
        }
    }
    Ok(())
}

/// Reads the config file of the plugin named in `o` from `config_dir` (see [`parse_file`]) and
/// returns its path. A missing file is fine (defaults); an unreadable one is not. Then checks
/// that `server-user` exists: `user_exists` looks a name up in the user database.
pub fn load(
    o: &mut Options,
    config_dir: &Path,
    set_own: impl FnMut(&str, &str) -> Result<bool, String>,
    user_exists: impl FnOnce(&str) -> Result<bool, String>,
) -> Result<PathBuf, ConfigError> {
    let config_file = config_dir.join(format!("launcher.{}.conf", o.plugin_name));
    match std::fs::read_to_string(&config_file) {
        Ok(text) => parse_file(&config_file, &text, o, set_own)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(ConfigError::Unreadable {
                file: config_file,
                message: e.to_string(),
            })
        }
    }
    if let Some(user) = &o.server_user {
        match user_exists(user) {
            Ok(true) => {}
            Ok(false) => {
                return Err(ConfigError::Invalid(format!(
                    "server-user {user} does not exist in the user database"
                )))
            }
            Err(e) => {
                return Err(ConfigError::Invalid(format!(
                    "cannot look up server-user {user}: {e}"
                )))
            }
        }
    }
    Ok(config_file)
}

/// Opens (appending, creating it and `logging_dir` if needed) the log file
/// `<logging_dir>/<plugin_name>.log`; the error says what failed.
pub fn open_log_file(logging_dir: &Path, plugin_name: &str) -> Result<(PathBuf, std::fs::File), String> {
    let dir = logging_dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create logging-dir {}: {e}", dir.display()))?;
    let path = dir.join(format!("{plugin_name}.log"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("cannot open the log file {}: {e}", path.display()))?;
    Ok((path, file))
}

/// The configuration directory: `$RSTUDIO_CONFIG_DIR`, else `/etc/rstudio`.
pub fn config_dir_from_env() -> PathBuf {
    match std::env::var_os("RSTUDIO_CONFIG_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(DEFAULT_CONFIG_DIR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Options, ConfigError> {
        parse_args("p", a.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_follow_the_plugin_name() {
        let o = args(&[]).unwrap();
        assert_eq!(o, Options::new("p"));
        assert_eq!(o.effective_log_level(), LogLevel::Info);
        assert_eq!(
            o.effective_scratch_path(),
            PathBuf::from("/var/lib/rstudio-launcher/p")
        );
        let o = args(&["--enable-debug-logging=1"]).unwrap();
        assert_eq!(o.effective_log_level(), LogLevel::Debug);
        let o = args(&["--enable-debug-logging=1", "--log-level=err"]).unwrap();
        assert_eq!(o.effective_log_level().directive(), "error");
    }

    #[test]
    fn own_keys_go_to_the_plugin_and_unknown_ones_are_errors() {
        let mut o = Options::new("p");
        let mut seen = Vec::new();
        parse_file(
            Path::new("/c"),
            "# x\n own = 1 \nheartbeat-interval-seconds=3\n",
            &mut o,
            |k, v| {
                seen.push((k.to_string(), v.to_string()));
                Ok(k == "own")
            },
        )
        .unwrap();
        assert_eq!(seen, vec![("own".to_string(), "1".to_string())]);
        assert_eq!(o.heartbeat_interval_seconds, 3);
        let e = parse_file(Path::new("/c"), "\nx=1\n", &mut o, |_, _| Ok(false)).unwrap_err();
        assert_eq!(e.to_string(), "/c:2: unknown key x");
        let e = parse_file(Path::new("/c"), "x=1\n", &mut o, |_, _| Err("bad".into())).unwrap_err();
        assert_eq!(e.to_string(), "/c:1: key x: bad");
        let e = parse_file(Path::new("/c"), "plugin-name=q\n", &mut o, |_, _| Ok(true)).unwrap_err();
        assert!(e.to_string().contains("pass --plugin-name"), "{e}");
    }

    #[test]
    fn a_missing_file_is_fine_and_server_user_must_exist() {
        let d = std::env::temp_dir().join(format!("launcher-plugin-api-options-{}", std::process::id()));
        let mut o = args(&["--server-user=nobody-here"]).unwrap();
        let f = load(&mut o, &d, |_, _| Ok(false), |_| Ok(true)).unwrap();
        assert_eq!(f, d.join("launcher.p.conf"));
        let e = load(&mut o, &d, |_, _| Ok(false), |_| Ok(false)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "server-user nobody-here does not exist in the user database"
        );
        let e = load(&mut o, &d, |_, _| Ok(false), |_| Err("down".into())).unwrap_err();
        assert_eq!(e.to_string(), "cannot look up server-user nobody-here: down");
    }
}
