//! The plugin's configuration: the standard plugin options of DESIGN §5 (command line, only in
//! `--name=value` form), then `$RSTUDIO_CONFIG_DIR/launcher.<plugin-name>.conf`, whose values win
//! over the command line for the standard keys and which also holds the Local plugin's own keys.
//!
//! Every problem is an error that names the option, or the file, line and key: a plugin that
//! guessed would run with settings nobody asked for.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use launcher_plugin_api::options::{
    config_dir_from_env, ConfigError, LogLevel, Options, DEFAULT_CONFIG_DIR,
};
use launcher_plugin_api::options::{parse_abs_path, parse_bool, parse_uint};

/// The plugin's name unless `--plugin-name` says otherwise.
pub const PLUGIN_NAME: &str = "local";

/// The effective configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub options: Options,
    /// The directory of configuration files (`RSTUDIO_CONFIG_DIR`).
    pub config_dir: PathBuf,
    /// The plugin's own config file (whether or not it exists).
    pub config_file: PathBuf,
    pub scratch_path: PathBuf,
    /// Whether a job may run as root.
    pub allow_root_jobs: bool,
    /// Whether jobs may gain privileges through exec (setuid programs); off by default, so jobs
    /// run with `no_new_privs`.
    pub allow_new_privileges: bool,
    /// Paths hidden from jobs (an empty directory is mounted over each).
    pub masked_paths: Vec<PathBuf>,
    /// Queues reported in the cluster info.
    pub queues: Vec<String>,
    pub max_cpu_count: Option<f64>,
    pub max_memory_mb: Option<f64>,
    pub max_cpu_time_seconds: Option<f64>,
    /// How often resource use is sampled and reported.
    pub resource_poll: Duration,
    /// Largest piece of output text in one JobOutput message, in bytes.
    pub output_chunk_bytes: usize,
    /// How long a stopped job (SIGTERM) may take to end before it is sent SIGKILL.
    pub stop_grace: Duration,
}

impl Config {
    /// The level to log at: `log-level` if given, debug with `enable-debug-logging=1`, else info.
    pub fn log_level(&self) -> LogLevel {
        self.options.effective_log_level()
    }
}

fn parse_number(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
        _ => Err(format!("expected a number above 0, got {v:?}")),
    }
}

/// Parses the command line (without the program name). Only `--name=value` forms of the
/// standard options are accepted.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Options, ConfigError> {
    launcher_plugin_api::options::parse_args(PLUGIN_NAME, args)
}

/// The Local plugin's own settings from the config file, before defaults.
#[derive(Debug, Default)]
struct FileSettings {
    allow_root_jobs: Option<bool>,
    allow_new_privileges: Option<bool>,
    masked_paths: Option<Vec<PathBuf>>,
    queues: Option<Vec<String>>,
    max_cpu_count: Option<f64>,
    max_memory_mb: Option<f64>,
    max_cpu_time_seconds: Option<f64>,
    resource_poll_seconds: Option<f64>,
    output_chunk_bytes: Option<usize>,
    stop_grace_seconds: Option<f64>,
}

/// Smallest and largest `output-chunk-bytes`: a chunk must hold any character, and a chunk of
/// control characters (escaped 6 bytes each in JSON) must stay far below the message cap.
const CHUNK_BYTES: std::ops::RangeInclusive<u64> = 16..=512 * 1024;

fn set_own(s: &mut FileSettings, key: &str, v: &str) -> Result<bool, String> {
    let list = |v: &str| -> Vec<String> {
        v.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect()
    };
    match key {
        "allow-root-jobs" => s.allow_root_jobs = Some(parse_bool(v)?),
        "allow-new-privileges" => s.allow_new_privileges = Some(parse_bool(v)?),
        "masked-paths" => {
            let paths = list(v)
                .iter()
                .map(|p| parse_abs_path(p))
                .collect::<Result<Vec<_>, _>>()?;
            s.masked_paths = Some(paths);
        }
        "queues" => {
            let q = list(v);
            if q.is_empty() {
                return Err("expected at least one queue name".into());
            }
            s.queues = Some(q);
        }
        "max-cpu-count" => s.max_cpu_count = Some(parse_number(v)?),
        "max-memory-mb" => s.max_memory_mb = Some(parse_number(v)?),
        "max-cpu-time-seconds" => s.max_cpu_time_seconds = Some(parse_number(v)?),
        "resource-poll-seconds" => {
            let n = parse_number(v)?;
            if !(0.05..=3600.0).contains(&n) {
                return Err(format!("expected between 0.05 and 3600 seconds, got {v}"));
            }
            s.resource_poll_seconds = Some(n);
        }
        "stop-grace-seconds" => {
            let n = parse_number(v)?;
            if !(0.1..=3600.0).contains(&n) {
                return Err(format!("expected between 0.1 and 3600 seconds, got {v}"));
            }
            s.stop_grace_seconds = Some(n);
        }
        "output-chunk-bytes" => {
            let n = parse_uint(v)?;
            if !CHUNK_BYTES.contains(&n) {
                return Err(format!(
                    "expected between {} and {} bytes, got {n}",
                    CHUNK_BYTES.start(),
                    CHUNK_BYTES.end()
                ));
            }
            s.output_chunk_bytes = Some(n as usize);
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Reads the config file of the plugin named in `o` from `config_dir` and returns the effective
/// configuration. A missing file is fine (defaults); an unreadable one is not.
pub fn load(mut o: Options, config_dir: &Path) -> Result<Config, ConfigError> {
    let mut s = FileSettings::default();
    let config_file = launcher_plugin_api::options::load(
        &mut o,
        config_dir,
        |key, v| set_own(&mut s, key, v),
        |user| {
            nix::unistd::User::from_name(user)
                .map(|u| u.is_some())
                .map_err(|e| e.to_string())
        },
    )?;
    let scratch_path = o.effective_scratch_path();
    Ok(Config {
        scratch_path,
        allow_root_jobs: s.allow_root_jobs.unwrap_or(false),
        allow_new_privileges: s.allow_new_privileges.unwrap_or(false),
        // The config directory holds the secure-cookie-key: no job should read it.
        masked_paths: s.masked_paths.unwrap_or_else(|| vec![config_dir.to_path_buf()]),
        queues: s.queues.unwrap_or_else(|| vec!["default".into()]),
        max_cpu_count: s.max_cpu_count,
        max_memory_mb: s.max_memory_mb,
        max_cpu_time_seconds: s.max_cpu_time_seconds,
        resource_poll: Duration::from_secs_f64(s.resource_poll_seconds.unwrap_or(1.0)),
        output_chunk_bytes: s.output_chunk_bytes.unwrap_or(65536),
        stop_grace: Duration::from_secs_f64(s.stop_grace_seconds.unwrap_or(10.0)),
        config_dir: config_dir.to_path_buf(),
        config_file,
        options: o,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Options, ConfigError> {
        parse_args(a.iter().map(|s| s.to_string()))
    }

    fn arg_error(a: &[&str]) -> String {
        match args(a) {
            Err(ConfigError::Argument(m)) => m,
            other => panic!("expected an argument error for {a:?}, got {other:?}"),
        }
    }

    #[test]
    fn standard_options_parse_and_default() {
        let o = args(&[]).unwrap();
        assert_eq!(o, Options::new(PLUGIN_NAME));
        assert_eq!((o.heartbeat_interval_seconds, o.job_expiry_hours), (5, 24));
        let o = args(&[
            "--enable-debug-logging=1",
            "--log-level=WARNING",
            "--logging-dir=/var/log/x",
            "--heartbeat-interval-seconds=0",
            "--job-expiry-hours=2",
            "--launcher-config-file=/etc/rstudio/launcher.conf",
            "--plugin-name=local2",
            "--max-message-size=1000",
            "--thread-pool-size=3",
            "--scratch-path=/tmp/s",
            "--server-user=root",
            "--unprivileged=1",
        ])
        .unwrap();
        assert!(o.enable_debug_logging && o.unprivileged);
        assert_eq!(o.log_level, Some(LogLevel::Warn));
        assert_eq!(o.heartbeat_interval_seconds, 0);
        assert_eq!((o.plugin_name.as_str(), o.max_message_size), ("local2", 1000));
        assert_eq!(o.thread_pool_size, Some(3));
        assert_eq!(o.scratch_path.as_deref(), Some(Path::new("/tmp/s")));
        assert_eq!(o.server_user.as_deref(), Some("root"));
    }

    #[test]
    fn bad_arguments_name_what_is_wrong() {
        assert_eq!(arg_error(&["--frobnicate=1"]), "unknown option --frobnicate");
        assert!(arg_error(&["stray"]).contains("\"stray\""));
        assert!(arg_error(&["--unprivileged"]).contains("--unprivileged=value"));
        assert!(arg_error(&["--unprivileged=yes"]).starts_with("option --unprivileged: expected 0 or 1"));
        assert!(arg_error(&["--heartbeat-interval-seconds=-1"]).contains("--heartbeat-interval-seconds"));
        assert!(arg_error(&["--scratch-path=relative"]).contains("absolute"));
        assert!(arg_error(&["--plugin-name=../x"]).contains("--plugin-name"));
        assert!(arg_error(&["--log-level=loud"]).contains("--log-level"));
        assert!(arg_error(&["--thread-pool-size=0"]).contains("--thread-pool-size"));
        assert!(arg_error(&["-x"]).contains("\"-x\""));
    }

    fn load_text(text: &str, cli: &[&str]) -> Result<Config, ConfigError> {
        let d = tempfile::tempdir().unwrap();
        let o = args(cli).unwrap();
        std::fs::write(d.path().join(format!("launcher.{}.conf", o.plugin_name)), text).unwrap();
        load(o, d.path())
    }

    #[test]
    fn the_file_wins_over_the_command_line_and_sets_its_own_keys() {
        let c = load_text(
            "# comment\n\n heartbeat-interval-seconds = 9 \nallow-root-jobs=1\nallow-new-privileges=1\nqueues=a, b,\n\
             masked-paths=/etc/x,/srv/y\nmax-cpu-count=4\nmax-memory-mb=512\nmax-cpu-time-seconds=60\n\
             resource-poll-seconds=0.5\noutput-chunk-bytes=1024\nscratch-path=/srv/scratch\nstop-grace-seconds=2.5\n",
            &["--heartbeat-interval-seconds=2"],
        )
        .unwrap();
        assert_eq!(c.options.heartbeat_interval_seconds, 9);
        assert!(c.allow_root_jobs);
        assert!(c.allow_new_privileges);
        assert_eq!(c.queues, vec!["a", "b"]);
        assert_eq!(
            c.masked_paths,
            vec![PathBuf::from("/etc/x"), PathBuf::from("/srv/y")]
        );
        assert_eq!(
            (c.max_cpu_count, c.max_memory_mb, c.max_cpu_time_seconds),
            (Some(4.0), Some(512.0), Some(60.0))
        );
        assert_eq!(
            (c.resource_poll, c.output_chunk_bytes),
            (Duration::from_millis(500), 1024)
        );
        assert_eq!(c.scratch_path, PathBuf::from("/srv/scratch"));
        assert_eq!(c.stop_grace, Duration::from_millis(2500));
    }

    #[test]
    fn defaults_without_a_file() {
        let d = tempfile::tempdir().unwrap();
        let c = load(args(&["--plugin-name=other"]).unwrap(), d.path()).unwrap();
        assert_eq!(c.scratch_path, PathBuf::from("/var/lib/rstudio-launcher/other"));
        assert_eq!(c.masked_paths, vec![d.path().to_path_buf()]);
        assert_eq!(c.queues, vec!["default"]);
        assert!(!c.allow_root_jobs);
        assert!(
            !c.allow_new_privileges,
            "jobs run with no_new_privs unless allowed"
        );
        assert_eq!(
            (c.resource_poll, c.output_chunk_bytes),
            (Duration::from_secs(1), 65536)
        );
        assert_eq!(c.stop_grace, Duration::from_secs(10));
        assert_eq!(c.config_file, d.path().join("launcher.other.conf"));
        assert_eq!(c.log_level(), LogLevel::Info);
    }

    #[test]
    fn file_errors_name_file_line_and_key() {
        let e = load_text("queues=a\n\nbogus-key=1\n", &[]).unwrap_err();
        match &e {
            ConfigError::File { file, line, message } => {
                assert!(file.ends_with("launcher.local.conf"));
                assert_eq!((*line, message.as_str()), (3, "unknown key bogus-key"));
            }
            other => panic!("{other:?}"),
        }
        assert!(e
            .to_string()
            .contains("launcher.local.conf:3: unknown key bogus-key"));
        let e = load_text("# c\nallow-root-jobs=maybe\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with(":2: key allow-root-jobs: expected 0 or 1, got \"maybe\""),
            "{e}"
        );
        let e = load_text("allow-new-privileges=yes\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with(":1: key allow-new-privileges: expected 0 or 1, got \"yes\""),
            "{e}"
        );
        let e = load_text("max-memory-mb=lots\n", &[]).unwrap_err().to_string();
        assert!(e.contains(":1: key max-memory-mb"), "{e}");
        let e = load_text("just words\n", &[]).unwrap_err().to_string();
        assert!(e.contains(":1: expected key=value"), "{e}");
        let e = load_text("a=1\njob-expiry-hours=x\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains(":1: unknown key a"), "{e}");
        let e = load_text("stop-grace-seconds=0\n", &[]).unwrap_err().to_string();
        assert!(e.contains("key stop-grace-seconds"), "{e}");
        let e = load_text("output-chunk-bytes=3\n", &[]).unwrap_err().to_string();
        assert!(e.contains("key output-chunk-bytes"), "{e}");
        let e = load_text("masked-paths=/a,rel\n", &[]).unwrap_err().to_string();
        assert!(e.contains("key masked-paths: expected an absolute path"), "{e}");
        let e = load_text("server-user=no-such-user-here-xyz\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("server-user no-such-user-here-xyz does not exist"),
            "{e}"
        );
    }
}
