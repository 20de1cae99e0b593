//! The command line (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Command-line client of the Launcher HTTP API.
#[derive(Parser, Debug)]
#[command(
    name = "launcherctl",
    version,
    about = "Command-line client of the Launcher HTTP API (launcher-gateway)",
    after_help = "Connection: --url, else $LAUNCHER_URL, else the config file, else http://127.0.0.1:5559.\n\
Token: --token, else one minted with --key-file and --user (given before the command), else \
$LAUNCHER_TOKEN, else the one stored by `launcherctl login`.\n\
Config file: $XDG_CONFIG_HOME/launcherctl/config.toml (else ~/.config/launcherctl/config.toml).\n\
Shell completion: `launcherctl completions bash|zsh|fish|elvish|powershell` prints the script.\n\n\
Exit codes:\n\
  0    success (also Ctrl-C ending `jobs list --watch`)\n\
  1    an error answer from the API, or any other failure (the message says which)\n\
  2    usage: bad flags or arguments, or a file they name that cannot be used\n\
  3    the gateway cannot be reached\n\
  N    `jobs wait` and `jobs get --watch`: the job's exit code; 1 when it ended Failed, Killed \
or Canceled without a non-zero one, or had one outside 0-255\n\
  124  `jobs wait` and `jobs get --watch`: --timeout passed before the job ended"
)]
pub struct Cli {
    /// Gateway URL: http(s)://host:port, or unix:/path/to/socket.
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
        env = "LAUNCHER_URL",
        value_name = "URL"
    )]
    pub url: Option<String>,
    /// Bearer token `<user>|<expiry>|<signature>` (else $LAUNCHER_TOKEN or the stored one).
    #[arg(long, global = true, help_heading = "Connection", value_name = "TOKEN")]
    pub token: Option<String>,
    /// The secure-cookie-key file: mint a token with it for --user (given before the command).
    #[arg(long, global = true, help_heading = "Connection", value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// The user to mint a token for with --key-file.
    #[arg(long, value_name = "USER", help_heading = "Connection")]
    pub user: Option<String>,
    /// PEM file of the CA certificates to trust for https (e.g. a private CA).
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
        env = "LAUNCHER_CA_FILE",
        value_name = "FILE"
    )]
    pub ca_file: Option<PathBuf>,
    /// Config file (default: $XDG_CONFIG_HOME/launcherctl/config.toml).
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
        env = "LAUNCHERCTL_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// Seconds a one-shot request may take (streams are bounded by their own options).
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
        default_value_t = 130,
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub request_timeout: u64,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Cluster health: leader, members with role, health and applied index (no token needed).
    Status {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// The clusters the nodes host, with their queues and limits.
    Clusters {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Submit, list, inspect, control and wait for jobs.
    #[command(subcommand)]
    Jobs(JobsCmd),
    /// Print a token for --user signed with --key-file.
    Token {
        /// The user the token authenticates.
        #[arg(long)]
        user: String,
        /// Lifetime: seconds, or a number with s, m, h or d; more than 0, at most --max-lifetime.
        #[arg(long, default_value = "1h", value_parser = lifetime, allow_hyphen_values = true)]
        ttl: u64,
        /// The longest lifetime the gateway accepts: its max-token-lifetime-seconds.
        #[arg(long, default_value = "24h", value_parser = lifetime, allow_hyphen_values = true)]
        max_lifetime: u64,
    },
    /// Check a token against the gateway, then store it (and the URL) in the config file.
    Login {
        /// Mint the token for this user with --key-file (instead of --token / $LAUNCHER_TOKEN).
        #[arg(long)]
        user: Option<String>,
        /// Lifetime of a minted token: seconds, or a number with s, m, h or d; more than 0, at
        /// most --max-lifetime.
        #[arg(long, default_value = "12h", value_parser = lifetime, allow_hyphen_values = true)]
        ttl: u64,
        /// The longest lifetime the gateway accepts: its max-token-lifetime-seconds.
        #[arg(long, default_value = "24h", value_parser = lifetime, allow_hyphen_values = true)]
        max_lifetime: u64,
    },
    /// Forget the stored token.
    Logout,
    /// Cluster membership (admins).
    #[command(subcommand)]
    Members(MembersCmd),
    /// Backups of the job table (admins).
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Print a shell completion script, e.g. `launcherctl completions bash > /etc/bash_completion.d/launcherctl`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `jobs ...`
#[derive(Subcommand, Debug)]
pub enum JobsCmd {
    /// List jobs (your own; admins: --user NAME or --user '*').
    List(ListArgs),
    /// Submit a job from flags or a JSON file; prints the stored job, its id first.
    Submit(Box<SubmitArgs>),
    /// Show one job; --watch prints its status changes as they happen until it ends.
    Get {
        id: String,
        /// Output format; with --watch, json prints one status object a line.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
        /// Only these fields (comma-separated; id is always kept).
        #[arg(long, value_delimiter = ',', conflicts_with = "watch")]
        fields: Vec<String>,
        /// Print each status change (time, status, message) until the job ends, then exit
        /// with its exit code, as `jobs wait` does.
        #[arg(short, long)]
        watch: bool,
        /// With --watch: give up after this long (seconds, or a number with s, m, h or d) and
        /// exit 124.
        #[arg(long, value_parser = duration, requires = "watch")]
        timeout: Option<u64>,
    },
    /// Print a job's output; --follow streams it until the job ends.
    Output {
        id: String,
        /// Which output.
        #[arg(long = "type", value_enum, default_value_t = OutputType::Stdout)]
        kind: OutputType,
        /// Keep streaming until the job ends.
        #[arg(short, long)]
        follow: bool,
    },
    /// Stop a running job (SIGTERM for the Local plugin).
    Stop { id: String },
    /// Kill a running job (SIGKILL for the Local plugin).
    Kill { id: String },
    /// Suspend a running job.
    Suspend { id: String },
    /// Resume a suspended job.
    Resume { id: String },
    /// Cancel a pending job.
    Cancel { id: String },
    /// Remove the record of a job that has ended.
    Delete { id: String },
    /// Wait until a job ends and exit with its exit code.
    Wait {
        id: String,
        /// Give up after this long (seconds, or a number with s, m, h or d) and exit 124.
        #[arg(long, value_parser = duration)]
        timeout: Option<u64>,
    },
}

/// `jobs list` options: the API's filters, the output format and `--watch`.
#[derive(Args, Debug, Clone)]
pub struct ListArgs {
    /// Only jobs carrying all these tags (repeat or comma-separate).
    #[arg(long = "tag", value_delimiter = ',', value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only jobs in any of these statuses (repeat or comma-separate).
    #[arg(
        long = "status",
        value_enum,
        value_delimiter = ',',
        ignore_case = true,
        value_name = "STATUS"
    )]
    pub statuses: Vec<JobStatus>,
    /// Whose jobs: a user name, or '*' for everybody (admins only).
    #[arg(long)]
    pub user: Option<String>,
    /// Jobs submitted at or after this time: RFC 3339, or a duration ago (e.g. 1h).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Jobs submitted at or before this time: RFC 3339, or a duration ago (e.g. 10m).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only these fields (comma-separated; id is always kept); also the table's columns.
    #[arg(long, value_delimiter = ',', value_name = "FIELD")]
    pub fields: Vec<String>,
    /// Answer from the node's own state instead of a linearizable read.
    #[arg(long)]
    pub stale: bool,
    /// At most this many jobs.
    #[arg(long)]
    pub limit: Option<u32>,
    /// The jobs after this job id (paging).
    #[arg(long, value_name = "ID")]
    pub after: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
    pub output: ListFormat,
    /// Refresh the listing in place until Ctrl-C.
    #[arg(short, long)]
    pub watch: bool,
    /// Seconds between refreshes with --watch.
    #[arg(
        long,
        default_value_t = 2,
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub interval: u64,
}

/// `jobs submit` options.
#[derive(Args, Debug, Clone)]
pub struct SubmitArgs {
    /// A job as JSON (the API's Job object; `-` reads stdin); the flags below override its fields.
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The cluster to run on (see `launcherctl clusters`).
    #[arg(long)]
    pub cluster: Option<String>,
    /// The job's name.
    #[arg(long)]
    pub name: Option<String>,
    /// A shell command to run.
    #[arg(long, conflicts_with = "exe")]
    pub command: Option<String>,
    /// A program to run directly, with ARGS after `--`.
    #[arg(long)]
    pub exe: Option<String>,
    /// Arguments of --exe.
    #[arg(last = true, requires = "exe")]
    pub args: Vec<String>,
    /// An environment variable NAME=VALUE (NAME alone copies it from this environment).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// A queue (repeatable).
    #[arg(long = "queue", value_name = "QUEUE")]
    pub queues: Vec<String>,
    /// A tag (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// The working directory of the job.
    #[arg(long)]
    pub working_dir: Option<String>,
    /// Submit on behalf of this user (admins only).
    #[arg(long)]
    pub user: Option<String>,
    /// Makes retries of this submit return the first job instead of a second one.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Output format of the stored job.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Print only the job id.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `members ...`
#[derive(Subcommand, Debug)]
pub enum MembersCmd {
    /// The members as the leader sees them.
    List {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Remove a node from the cluster for good (it cannot rejoin under its id).
    Remove { id: u64 },
    /// Stop new placements on a node while its jobs finish; --undo puts it back in rotation.
    Drain {
        id: u64,
        #[arg(long)]
        undo: bool,
    },
}

/// `snapshot ...`
#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Download a consistent snapshot to FILE (restore: launcher-node recover --from FILE --force-new-cluster).
    Save { file: PathBuf },
}

/// Output of single objects and small lists.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

/// Output of `jobs list`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFormat {
    /// id, name, user, status, exit code, submission time
    Table,
    /// the table plus cluster, host, pid, tags, last update and status message
    Wide,
    /// the API's JSON
    Json,
}

/// `--type` of `jobs output`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputType {
    Stdout,
    Stderr,
    Both,
}

impl OutputType {
    /// The API's value.
    pub fn api(self) -> &'static str {
        match self {
            OutputType::Stdout => "stdout",
            OutputType::Stderr => "stderr",
            OutputType::Both => "both",
        }
    }
}

/// The API's job statuses.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    #[value(name = "Pending")]
    Pending,
    #[value(name = "Running")]
    Running,
    #[value(name = "Suspended")]
    Suspended,
    #[value(name = "Finished")]
    Finished,
    #[value(name = "Failed")]
    Failed,
    #[value(name = "Killed")]
    Killed,
    #[value(name = "Canceled")]
    Canceled,
}

impl JobStatus {
    /// The API's name.
    pub fn api(self) -> &'static str {
        match self {
            JobStatus::Pending => "Pending",
            JobStatus::Running => "Running",
            JobStatus::Suspended => "Suspended",
            JobStatus::Finished => "Finished",
            JobStatus::Failed => "Failed",
            JobStatus::Killed => "Killed",
            JobStatus::Canceled => "Canceled",
        }
    }
}

fn duration(s: &str) -> Result<u64, String> {
    crate::output::parse_duration(s)
}

/// A token lifetime: a duration of more than 0 (a token of lifetime 0 has expired when minted).
fn lifetime(s: &str) -> Result<u64, String> {
    if s.trim().starts_with('-') {
        return Err(format!("'{s}': a token lifetime must be more than 0"));
    }
    match duration(s)? {
        0 => Err(format!(
            "'{s}': a token lifetime must be more than 0 (the token would have expired when minted)"
        )),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn token_lifetimes_are_positive_durations() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from([["launcherctl", "token", "--user", "u"].as_slice(), args].concat())
        };
        let Command::Token {
            ttl, max_lifetime, ..
        } = parse(&[]).unwrap().command
        else {
            panic!("token")
        };
        assert_eq!((ttl, max_lifetime), (3600, 86_400));
        let Command::Token {
            ttl, max_lifetime, ..
        } = parse(&["--ttl", "100d", "--max-lifetime", "200d"])
            .unwrap()
            .command
        else {
            panic!("token")
        };
        assert_eq!((ttl, max_lifetime), (8_640_000, 17_280_000));
        for bad in [
            ["--ttl", "0"],
            ["--ttl", "0h"],
            ["--ttl", "-5"],
            ["--ttl", "-1d"],
            ["--max-lifetime", "0"],
        ] {
            let e = parse(&bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
            assert!(e.to_string().contains("must be more than 0"), "{bad:?}: {e}");
        }
        let Command::Login {
            ttl, max_lifetime, ..
        } = Cli::try_parse_from(["launcherctl", "login"]).unwrap().command
        else {
            panic!("login")
        };
        assert_eq!((ttl, max_lifetime), (12 * 3600, 86_400));
        assert!(Cli::try_parse_from(["launcherctl", "login", "--ttl", "0"]).is_err());
    }

    #[test]
    fn top_level_user_and_list_user_differ() {
        let cli = Cli::try_parse_from([
            "launcherctl",
            "--user",
            "admin",
            "--key-file",
            "/k",
            "jobs",
            "list",
            "--user",
            "*",
            "--status",
            "running,Finished",
        ])
        .unwrap();
        assert_eq!(cli.user.as_deref(), Some("admin"));
        let Command::Jobs(JobsCmd::List(l)) = cli.command else {
            panic!("jobs list")
        };
        assert_eq!(l.user.as_deref(), Some("*"));
        assert_eq!(l.statuses, vec![JobStatus::Running, JobStatus::Finished]);
    }

    #[test]
    fn submit_flags() {
        let cli = Cli::try_parse_from([
            "launcherctl",
            "jobs",
            "submit",
            "--cluster",
            "Local",
            "--name",
            "n",
            "--exe",
            "/bin/echo",
            "--env",
            "A=1",
            "--",
            "a",
            "--b",
        ])
        .unwrap();
        let Command::Jobs(JobsCmd::Submit(s)) = cli.command else {
            panic!("jobs submit")
        };
        assert_eq!(s.args, vec!["a", "--b"]);
        assert!(
            Cli::try_parse_from(["launcherctl", "jobs", "submit", "--command", "x", "--exe", "y"]).is_err()
        );
        let interval = Cli::try_parse_from(["launcherctl", "jobs", "list", "--watch", "--interval", "0"]);
        assert!(interval.is_err(), "the refresh interval is bounded");
    }
}
