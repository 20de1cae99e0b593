//! The plugin's configuration: the standard plugin options of DESIGN §5 (command line, only in
//! `--name=value` form, exactly as the Local plugin takes them), then
//! `$RSTUDIO_CONFIG_DIR/launcher.<plugin-name>.conf`, whose values win over the command line
//! for the standard keys and which also holds the Slurm plugin's own keys.
//!
//! Every problem is an error naming the option, or the file, line and key.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where configuration files live when `RSTUDIO_CONFIG_DIR` is not set.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/rstudio";

/// Why the configuration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Argument(String),
    #[error("{file}:{line}: {message}")]
    File {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("cannot read {file}: {message}")]
    Unreadable { file: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// The standard plugin options (DESIGN §5).
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub enable_debug_logging: bool,
    /// `tracing` directive (`off`, `error`, `warn`, `info`, `debug`, `trace`).
    pub log_level: Option<&'static str>,
    pub logging_dir: Option<PathBuf>,
    /// 0 disables the plugin's own heartbeats.
    pub heartbeat_interval_seconds: u64,
    /// Accepted for compatibility; Slurm's `MinJobAge` decides how long ended jobs are kept.
    pub job_expiry_hours: u64,
    pub launcher_config_file: Option<PathBuf>,
    pub plugin_name: String,
    pub max_message_size: usize,
    pub thread_pool_size: Option<usize>,
    pub scratch_path: Option<PathBuf>,
    pub server_user: Option<String>,
    pub unprivileged: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            enable_debug_logging: false,
            log_level: None,
            logging_dir: None,
            heartbeat_interval_seconds: 5,
            job_expiry_hours: 24,
            launcher_config_file: None,
            plugin_name: "slurm".into(),
            max_message_size: launcher_plugin_api::framing::MAX_MESSAGE_BYTES,
            thread_pool_size: None,
            scratch_path: None,
            server_user: None,
            unprivileged: false,
        }
    }
}

/// The effective configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub options: Options,
    pub config_dir: PathBuf,
    pub config_file: PathBuf,
    /// Default output files go under `<scratch-path>/output/<user>/`; on a real cluster it must
    /// be a directory every compute node sees at the same path.
    pub scratch_path: PathBuf,
    /// Whether a job may run as root.
    pub allow_root_jobs: bool,
    /// Directory of the Slurm commands (default: found on PATH).
    pub slurm_bin_path: Option<PathBuf>,
    /// `SLURM_CONF` for every Slurm command (default: Slurm's own default or the environment).
    pub slurm_conf: Option<PathBuf>,
    /// How often `squeue` is polled for status changes.
    pub poll: Duration,
    /// Deadline of one Slurm command.
    pub command_timeout: Duration,
    /// Largest piece of output text in one JobOutput message, in bytes.
    pub output_chunk_bytes: usize,
}

impl Config {
    /// The `tracing` filter directive.
    pub fn log_directive(&self) -> &'static str {
        match self.options.log_level {
            Some(l) => l,
            None if self.options.enable_debug_logging => "debug",
            None => "info",
        }
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "1" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("expected 0 or 1, got {v:?}")),
    }
}

fn parse_uint(v: &str) -> Result<u64, String> {
    v.parse::<u64>()
        .map_err(|_| format!("expected a whole number, got {v:?}"))
}

fn parse_positive(v: &str) -> Result<u64, String> {
    match parse_uint(v)? {
        0 => Err("expected a number above 0, got 0".into()),
        n => Ok(n),
    }
}

fn parse_seconds(v: &str, min: f64, max: f64) -> Result<Duration, String> {
    match v.parse::<f64>() {
        Ok(n) if n.is_finite() && (min..=max).contains(&n) => Ok(Duration::from_secs_f64(n)),
        _ => Err(format!("expected between {min} and {max} seconds, got {v:?}")),
    }
}

fn parse_abs_path(v: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(v);
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(format!("expected an absolute path, got {v:?}"))
    }
}

fn parse_nonempty(v: &str) -> Result<String, String> {
    if v.is_empty() {
        Err("expected a value, got nothing".into())
    } else {
        Ok(v.to_string())
    }
}

fn parse_level(v: &str) -> Result<&'static str, String> {
    Ok(match v.to_ascii_lowercase().as_str() {
        "off" | "none" => "off",
        "error" | "err" => "error",
        "warn" | "warning" => "warn",
        "info" => "info",
        "debug" => "debug",
        "trace" => "trace",
        _ => {
            return Err(format!(
                "expected off, error, warn, info, debug or trace, got {v:?}"
            ))
        }
    })
}

/// Sets one standard option. `Ok(false)` when `key` is not a standard option.
fn set_standard(o: &mut Options, key: &str, v: &str) -> Result<bool, String> {
    match key {
        "enable-debug-logging" => o.enable_debug_logging = parse_bool(v)?,
        "log-level" => o.log_level = Some(parse_level(v)?),
        "logging-dir" => o.logging_dir = Some(parse_abs_path(v)?),
        "heartbeat-interval-seconds" => o.heartbeat_interval_seconds = parse_uint(v)?,
        "job-expiry-hours" => o.job_expiry_hours = parse_uint(v)?,
        "launcher-config-file" => o.launcher_config_file = Some(PathBuf::from(parse_nonempty(v)?)),
        "plugin-name" => {
            let ok = !v.is_empty()
                && !v.starts_with('.')
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !ok {
                return Err(format!(
                    "expected letters, digits, '-', '_' or '.' (it names files), got {v:?}"
                ));
            }
            o.plugin_name = v.to_string();
        }
        "max-message-size" => {
            o.max_message_size =
                usize::try_from(parse_positive(v)?.min(u32::MAX as u64)).unwrap_or(usize::MAX)
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

/// Parses the command line (without the program name).
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Options, ConfigError> {
    let mut o = Options::default();
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
            Err(p) => return Err(ConfigError::Argument(format!("option --{key}: {p}"))),
        }
    }
    Ok(o)
}

#[derive(Debug, Default)]
struct FileSettings {
    allow_root_jobs: Option<bool>,
    slurm_bin_path: Option<PathBuf>,
    slurm_conf: Option<PathBuf>,
    poll: Option<Duration>,
    command_timeout: Option<Duration>,
    output_chunk_bytes: Option<usize>,
}

fn set_own(s: &mut FileSettings, key: &str, v: &str) -> Result<bool, String> {
    match key {
        "allow-root-jobs" => s.allow_root_jobs = Some(parse_bool(v)?),
        "slurm-bin-path" => s.slurm_bin_path = Some(parse_abs_path(v)?),
        "slurm-conf" => s.slurm_conf = Some(parse_abs_path(v)?),
        "poll-seconds" => s.poll = Some(parse_seconds(v, 0.1, 600.0)?),
        "command-timeout-seconds" => s.command_timeout = Some(parse_seconds(v, 1.0, 3600.0)?),
        "output-chunk-bytes" => {
            let n = parse_uint(v)?;
            if !(16..=512 * 1024).contains(&n) {
                return Err(format!("expected between 16 and 524288 bytes, got {n}"));
            }
            s.output_chunk_bytes = Some(n as usize);
        }
        _ => return Ok(false),
    }
    Ok(true)
}

fn parse_file(file: &Path, text: &str, o: &mut Options) -> Result<FileSettings, ConfigError> {
    let mut s = FileSettings::default();
    for (i, raw) in text.lines().enumerate() {
        let err = |message: String| ConfigError::File {
            file: file.to_path_buf(),
            line: i + 1,
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
            return Err(err(
                "key plugin-name: cannot be set here (the file is chosen by it); pass --plugin-name".into(),
            ));
        }
        let known = match set_standard(o, key, value) {
            Ok(true) => true,
            Ok(false) => set_own(&mut s, key, value).map_err(|p| err(format!("key {key}: {p}")))?,
            Err(p) => return Err(err(format!("key {key}: {p}"))),
        };
        if !known {
            return Err(err(format!("unknown key {key}")));
        }
    }
    Ok(s)
}

/// Reads `launcher.<plugin-name>.conf` from `config_dir` (a missing file means defaults).
pub fn load(mut o: Options, config_dir: &Path) -> Result<Config, ConfigError> {
    let config_file = config_dir.join(format!("launcher.{}.conf", o.plugin_name));
    let s = match std::fs::read_to_string(&config_file) {
        Ok(text) => parse_file(&config_file, &text, &mut o)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileSettings::default(),
        Err(e) => {
            return Err(ConfigError::Unreadable {
                file: config_file,
                message: e.to_string(),
            })
        }
    };
    if let Some(user) = &o.server_user {
        match nix::unistd::User::from_name(user) {
            Ok(Some(_)) => {}
            Ok(None) => {
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
    let scratch_path = o
        .scratch_path
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/lib/rstudio-launcher").join(&o.plugin_name));
    Ok(Config {
        scratch_path,
        allow_root_jobs: s.allow_root_jobs.unwrap_or(false),
        slurm_bin_path: s.slurm_bin_path,
        slurm_conf: s.slurm_conf,
        poll: s.poll.unwrap_or(Duration::from_secs(1)),
        command_timeout: s.command_timeout.unwrap_or(Duration::from_secs(30)),
        output_chunk_bytes: s.output_chunk_bytes.unwrap_or(65536),
        config_dir: config_dir.to_path_buf(),
        config_file,
        options: o,
    })
}

/// `$RSTUDIO_CONFIG_DIR`, else `/etc/rstudio`.
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
        parse_args(a.iter().map(|s| s.to_string()))
    }

    #[test]
    fn the_standard_options_are_those_of_the_local_plugin() {
        let o = args(&[
            "--enable-debug-logging=1",
            "--log-level=WARNING",
            "--heartbeat-interval-seconds=0",
            "--job-expiry-hours=2",
            "--launcher-config-file=/etc/rstudio/launcher.conf",
            "--plugin-name=hpc",
            "--max-message-size=1000",
            "--thread-pool-size=3",
            "--scratch-path=/tmp/s",
            "--server-user=root",
            "--unprivileged=1",
        ])
        .unwrap();
        assert!(o.enable_debug_logging && o.unprivileged);
        assert_eq!((o.log_level, o.plugin_name.as_str()), (Some("warn"), "hpc"));
        assert_eq!(
            args(&["--slurm-service-user=x"]).unwrap_err().to_string(),
            "unknown option --slurm-service-user"
        );
        assert!(args(&["stray"]).is_err());
        assert!(args(&["--unprivileged"])
            .unwrap_err()
            .to_string()
            .contains("--unprivileged=value"));
    }

    #[test]
    fn the_file_sets_slurm_keys_and_names_its_errors() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("launcher.slurm.conf"),
            "# c\nslurm-conf=/x/slurm.conf\nslurm-bin-path=/opt/slurm/bin\npoll-seconds=0.5\nallow-root-jobs=1\n",
        )
        .unwrap();
        let c = load(Options::default(), d.path()).unwrap();
        assert_eq!(c.slurm_conf.as_deref(), Some(Path::new("/x/slurm.conf")));
        assert_eq!(c.slurm_bin_path.as_deref(), Some(Path::new("/opt/slurm/bin")));
        assert_eq!((c.poll, c.allow_root_jobs), (Duration::from_millis(500), true));
        assert_eq!(c.scratch_path, PathBuf::from("/var/lib/rstudio-launcher/slurm"));
        std::fs::write(d.path().join("launcher.slurm.conf"), "poll-seconds=1\nbogus=1\n").unwrap();
        let e = load(Options::default(), d.path()).unwrap_err().to_string();
        assert!(e.ends_with("launcher.slurm.conf:2: unknown key bogus"), "{e}");
        std::fs::write(d.path().join("launcher.slurm.conf"), "slurm-conf=relative\n").unwrap();
        let e = load(Options::default(), d.path()).unwrap_err().to_string();
        assert!(e.contains(":1: key slurm-conf: expected an absolute path"), "{e}");
    }
}
