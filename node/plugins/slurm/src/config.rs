//! The plugin's configuration: the standard plugin options of DESIGN §5 (command line, only in
//! `--name=value` form, exactly as the Local plugin takes them), then
//! `$RSTUDIO_CONFIG_DIR/launcher.<plugin-name>.conf`, whose values win over the command line
//! for the standard keys and which also holds the Slurm plugin's own keys.
//!
//! Every problem is an error naming the option, or the file, line and key.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use launcher_plugin_api::options::{
    config_dir_from_env, ConfigError, LogLevel, Options, DEFAULT_CONFIG_DIR,
};
use launcher_plugin_api::options::{parse_abs_path, parse_bool, parse_uint};

/// The plugin's name unless `--plugin-name` says otherwise.
pub const PLUGIN_NAME: &str = "slurm";

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
    /// How often `sstat` is asked for the resource use of a job with an open resource stream;
    /// Slurm's own figures are only as fresh as its `JobAcctGatherFrequency`.
    pub resource_poll: Duration,
}

impl Config {
    /// The `tracing` filter directive.
    pub fn log_directive(&self) -> &'static str {
        self.options.effective_log_level().directive()
    }
}

fn parse_seconds(v: &str, min: f64, max: f64) -> Result<Duration, String> {
    match v.parse::<f64>() {
        Ok(n) if n.is_finite() && (min..=max).contains(&n) => Ok(Duration::from_secs_f64(n)),
        _ => Err(format!("expected between {min} and {max} seconds, got {v:?}")),
    }
}

/// Parses the command line (without the program name).
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Options, ConfigError> {
    launcher_plugin_api::options::parse_args(PLUGIN_NAME, args)
}

#[derive(Debug, Default)]
struct FileSettings {
    allow_root_jobs: Option<bool>,
    slurm_bin_path: Option<PathBuf>,
    slurm_conf: Option<PathBuf>,
    poll: Option<Duration>,
    command_timeout: Option<Duration>,
    output_chunk_bytes: Option<usize>,
    resource_poll: Option<Duration>,
}

fn set_own(s: &mut FileSettings, key: &str, v: &str) -> Result<bool, String> {
    match key {
        "allow-root-jobs" => s.allow_root_jobs = Some(parse_bool(v)?),
        "slurm-bin-path" => s.slurm_bin_path = Some(parse_abs_path(v)?),
        "slurm-conf" => s.slurm_conf = Some(parse_abs_path(v)?),
        "poll-seconds" => s.poll = Some(parse_seconds(v, 0.1, 600.0)?),
        "resource-poll-seconds" => s.resource_poll = Some(parse_seconds(v, 0.1, 3600.0)?),
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

/// Reads `launcher.<plugin-name>.conf` from `config_dir` (a missing file means defaults).
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
        slurm_bin_path: s.slurm_bin_path,
        slurm_conf: s.slurm_conf,
        poll: s.poll.unwrap_or(Duration::from_secs(1)),
        command_timeout: s.command_timeout.unwrap_or(Duration::from_secs(30)),
        output_chunk_bytes: s.output_chunk_bytes.unwrap_or(65536),
        resource_poll: s.resource_poll.unwrap_or(Duration::from_secs(5)),
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
        assert_eq!(
            (o.log_level, o.plugin_name.as_str()),
            (Some(LogLevel::Warn), "hpc")
        );
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
            "# c\nslurm-conf=/x/slurm.conf\nslurm-bin-path=/opt/slurm/bin\npoll-seconds=0.5\nallow-root-jobs=1\n\
             resource-poll-seconds=1.5\n",
        )
        .unwrap();
        let c = load(Options::new(PLUGIN_NAME), d.path()).unwrap();
        assert_eq!(c.slurm_conf.as_deref(), Some(Path::new("/x/slurm.conf")));
        assert_eq!(c.slurm_bin_path.as_deref(), Some(Path::new("/opt/slurm/bin")));
        assert_eq!((c.poll, c.allow_root_jobs), (Duration::from_millis(500), true));
        assert_eq!(c.resource_poll, Duration::from_millis(1500));
        assert_eq!(c.scratch_path, PathBuf::from("/var/lib/rstudio-launcher/slurm"));
        std::fs::write(d.path().join("launcher.slurm.conf"), "poll-seconds=1\nbogus=1\n").unwrap();
        let e = load(Options::new(PLUGIN_NAME), d.path()).unwrap_err().to_string();
        assert!(e.ends_with("launcher.slurm.conf:2: unknown key bogus"), "{e}");
        std::fs::write(d.path().join("launcher.slurm.conf"), "slurm-conf=relative\n").unwrap();
        let e = load(Options::new(PLUGIN_NAME), d.path()).unwrap_err().to_string();
        assert!(e.contains(":1: key slurm-conf: expected an absolute path"), "{e}");
    }
}
