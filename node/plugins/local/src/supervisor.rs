//! The supervisor of one job (`launcher-local-plugin supervise <job-dir>`, DESIGN §6).
//!
//! The plugin writes `<job-dir>/spec.json` and starts this process with stdin and stdout on
//! `/dev/null` and stderr on `<job-dir>/supervisor.log`. The supervisor then, in order:
//!
//! 1. leaves the plugin's session and process group (`setsid`), so it outlives the plugin and
//!    never receives signals meant for the plugin's group, and closes every inherited file
//!    descriptor but 0, 1 and 2, so none leaks into the job;
//! 2. resolves the job's account (and its groups) and refuses uid 0 unless `allow_root`;
//! 3. as root: creates the job's TMPDIR owned by the user, enters a new mount namespace with
//!    the masked paths and bind mounts (`sandbox`; each mount resolved as the job's user,
//!    nosuid and nodev, a missing target made in the namespace only: `mounts`), and hands the
//!    job directory to the user (see below);
//! 4. applies the resource limits as rlimits;
//! 5. drops privileges for good (setgroups with the groups read in step 2, setgid, setuid)
//!    and checks they cannot come back; sets `no_new_privs` unless `allow_new_privileges`;
//! 6. opens the output files (regular files only, never through a final symbolic link) and
//!    checks the working directory, as the user;
//! 7. spawns the job in its own process group, writes `started.json`, forwards SIGTERM, SIGINT,
//!    SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 it receives to the job's group, waits for the job,
//!    writes `exit.json`, reaps what the job left behind (below), removes the TMPDIR and exits
//!    with the job's exit code (128+N for death by signal N), so its own exit status passes the
//!    job's through exactly.
//!
//! **Nothing of a killed job outlives its supervisor unreaped.** The supervisor is a child
//! subreaper: the job's orphans become its children rather than init's, and it reaps them as
//! they end (init in a container may reap late, or never). Once the job's process has ended it
//! waits, at most [`LEFTOVER_GRACE`], for the rest to end too: a group killed by the launcher is
//! gone, zombies included, by the time the supervisor exits, which is when the plugin looks at
//! the job's end. Whatever still runs after that (a daemon the job left on purpose) is left to
//! init, as before.
//!
//! The forwarded signals are caught (from the moment after `setsid`) with handlers, never
//! blocked: see `Forwarder`. The launcher's own control signals go straight to the job's
//! group; forwarding is for whoever signals the supervisor.
//!
//! Anything that goes wrong before the job exists writes `failed.json` instead and exits 127
//! (126 for permission problems); `exit.json` is then never written. Nothing ever logs the job's
//! environment values or stdin: they are secrets.
//!
//! **The job directory changes hands.** After step 5 the supervisor runs as the job's user, yet
//! it must still write `started.json` and `exit.json` atomically (temporary file, then rename),
//! which needs write permission on the job directory. So, while still root, it chowns the job
//! directory to the job's user with mode 0700: the plugin (root) can still read it, other users
//! cannot. It reaches the directory through its current directory, entered as root at the
//! start, never by path: the user may not traverse the plugin's root-only `jobs/` above it, and
//! a masked path may hide it in the job's namespace.
//!
//! The consequence the plugin must live with: the job's user can write the state files of their
//! own job, so their contents are claims by that user, not facts. A plugin that acts on
//! `started.json` checks the pid against `/proc` (the start ticks are there for that) before
//! signalling it, and treats `exit.json` as that user's report of their own job. Likewise the
//! TMPDIR: the user can empty it but not unlink it from the plugin's root-only `tmp/`, so the
//! plugin removes the (empty) directory once the job has ended.

mod mounts;
mod sandbox;

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::task::Poll;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{getpid, getuid, setsid, Pid, User};
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::SignalKind;
use tracing::{error, info, warn, Instrument, Span};

use launcher_plugin_api::userfs::{Creds, UserFsError};

use crate::spec::{self, Exited, LaunchSpec, SetupFailed, Started};

/// PATH of a job that does not set its own.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Signals the supervisor passes on to the job's process group.
const FORWARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// How long, after the job's process ended, the supervisor waits for the processes the job left
/// behind to end too (those of a killed group die within milliseconds).
pub const LEFTOVER_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// RFC 3339 UTC with microseconds, as in the job's timestamps.
const TIMESTAMP: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// Why the job could not be started; its message becomes `failed.json` and the job's
/// statusMessage, so it names what went wrong and never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot start the supervisor's runtime: {0}")]
    Runtime(io::Error),
    #[error("cannot read the job's spec {path}: {source}")]
    ReadSpec { path: PathBuf, source: io::Error },
    #[error("user '{0}' does not exist on this host")]
    UnknownUser(String),
    #[error("cannot look up user '{user}' in the user database: {source}")]
    UserLookup { user: String, source: io::Error },
    #[error("the supervisor's own uid {0} has no entry in the user database")]
    UnknownOwnUid(u32),
    #[error("refusing to run a job as root; set allow-root-jobs=1 in the plugin's config to allow it")]
    RootRefused,
    #[error("cannot run a job as user '{0}': the supervisor is not running as root")]
    NotRoot(String),
    #[error("the job has {0}; exactly one of command and exe must be set")]
    Program(&'static str),
    #[error("environment variable #{index} has an invalid {what} (names must be non-empty without '=' or NUL; values without NUL)")]
    Environment { index: usize, what: &'static str },
    #[error("resource limit {kind}={value:?} is not a non-negative number")]
    BadLimit { kind: String, value: String },
    #[error("unknown resource limit type {0:?} (known: cpuCount, cpuTime, memory, memorySwap)")]
    UnknownLimit(String),
    #[error("cannot set resource limit {kind}: {source}")]
    SetLimit { kind: &'static str, source: io::Error },
    #[error("cannot create the job's TMPDIR {path}: {source}")]
    TmpDir { path: PathBuf, source: io::Error },
    #[error("cannot hand the job directory to the job's user: {0}")]
    JobDir(io::Error),
    #[error("cannot set up the job's mount namespace: {what}: {source}")]
    Namespace { what: String, source: io::Error },
    #[error("mount source {0}")]
    MountSource(UserFsError),
    #[error("mount target {0}")]
    MountTarget(UserFsError),
    #[error("mount target {}: {why}", target.display())]
    MountTargetRefused { target: PathBuf, why: &'static str },
    #[error("cannot stop the job from gaining privileges (no_new_privs): {0}")]
    NoNewPrivileges(io::Error),
    #[error("cannot switch to user '{user}': {what}")]
    DropPrivileges { user: String, what: String },
    #[error("cannot open output file {path}: {source}")]
    OutputFile { path: PathBuf, source: io::Error },
    #[error("cannot use working directory {path}: {source}")]
    WorkingDirectory { path: PathBuf, source: io::Error },
    #[error("cannot start {program}: {source}")]
    Spawn { program: String, source: io::Error },
}

impl SetupError {
    /// The supervisor's exit code for this failure: 126 for permission problems, else 127.
    pub fn exit_code(&self) -> i32 {
        let denied = |e: &io::Error| e.kind() == io::ErrorKind::PermissionDenied;
        match self {
            SetupError::RootRefused | SetupError::NotRoot(_) | SetupError::DropPrivileges { .. } => 126,
            SetupError::Runtime(source)
            | SetupError::ReadSpec { source, .. }
            | SetupError::UserLookup { source, .. }
            | SetupError::SetLimit { source, .. }
            | SetupError::TmpDir { source, .. }
            | SetupError::JobDir(source)
            | SetupError::Namespace { source, .. }
            | SetupError::NoNewPrivileges(source)
            | SetupError::OutputFile { source, .. }
            | SetupError::WorkingDirectory { source, .. }
            | SetupError::Spawn { source, .. }
                if denied(source) =>
            {
                126
            }
            _ => 127,
        }
    }
}

/// Runs the job described in `dir/spec.json`; returns the exit code to exit with.
pub fn run(dir: &Path) -> i32 {
    // Before anything else, leave the plugin's session and group: from here on a signal sent to
    // the plugin's group no longer reaches us (and so is never forwarded to the job).
    let session = setsid();
    // Before anything of ours is open: whatever else we inherited must not reach the job.
    let closed = close_inherited_fds();
    init_logging();
    if closed > 0 {
        info!("closed {closed} inherited file descriptor(s) beyond stdin, stdout and stderr");
    }
    match session {
        Ok(sid) => {
            info!(dir = %dir.display(), session = sid.as_raw(), "supervisor started in its own session")
        }
        // EPERM: we already lead a process group (the plugin spawned us with process_group(0)),
        // so no signal to the plugin's group reaches us; we only stay in its session.
        Err(e) => warn!(dir = %dir.display(), "setsid failed ({e}); staying in the plugin's session"),
    }
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    // The supervisor works inside the job directory from here on and reaches its files by
    // relative paths: once it runs as the job's user it may not traverse the directories above
    // (the plugin's `jobs/` is root-only), and a masked path may hide them in its namespace.
    if let Err(e) = nix::unistd::chdir(&dir) {
        let source = io::Error::from(e);
        return fail(
            &dir,
            SetupError::ReadSpec {
                path: dir.clone(),
                source,
            },
            None,
        );
    }
    let here = Path::new(".");

    // A single-threaded runtime, only for its signal handlers and child reaping.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(source) => return fail(here, SetupError::Runtime(source), None),
    };
    let _runtime = runtime.enter();
    // Caught from now on, so a signal that arrives during setup is held for the job instead of
    // killing the supervisor.
    let mut forwarder = Forwarder::install();

    let spec: LaunchSpec = match spec::read_json(here, spec::SPEC_FILE) {
        Ok(Some(spec)) => spec,
        Ok(None) => {
            let source = io::Error::from(io::ErrorKind::NotFound);
            return fail(
                here,
                SetupError::ReadSpec {
                    path: dir.join(spec::SPEC_FILE),
                    source,
                },
                None,
            );
        }
        Err(source) => {
            return fail(
                here,
                SetupError::ReadSpec {
                    path: dir.join(spec::SPEC_FILE),
                    source,
                },
                None,
            )
        }
    };
    let span = tracing::info_span!("supervise", job_id = %spec.job_id);
    let _entered = span.enter();

    let mut tmpdir = None;
    match supervise(here, &spec, &runtime, &mut forwarder, &mut tmpdir) {
        Ok(code) => code,
        Err(e) => fail(here, e, tmpdir.as_deref()),
    }
}

/// Reports a failure before the job started: `failed.json` in the job directory `dir`, and
/// removes the TMPDIR if we made one.
fn fail(dir: &Path, e: SetupError, tmpdir: Option<&Path>) -> i32 {
    error!("the job was not started: {e}");
    if let Some(tmpdir) = tmpdir {
        remove_tmpdir(tmpdir);
    }
    let failed = SetupFailed {
        message: e.to_string(),
    };
    if let Err(w) = spec::write_atomic(dir, spec::FAILED_FILE, &failed) {
        error!("cannot write {}: {w}", dir.join(spec::FAILED_FILE).display());
    }
    e.exit_code()
}

/// Closes every descriptor but 0, 1 and 2, which the plugin (or whoever started us) may have
/// let us inherit; returns how many it closed. Called while nothing of ours is open.
fn close_inherited_fds() -> usize {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let fds: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    // The listing's own descriptor is among them, already closed again: EBADF, not counted.
    fds.into_iter()
        .filter(|&fd| nix::unistd::close(fd).is_ok())
        .count()
}

/// Logs to stderr, which the plugin points at `supervisor.log`.
fn init_logging() {
    // Fails only if a subscriber is already installed, which is then used instead.
    let _ = tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}

/// Steps 2 to 7 (module doc), with the job directory at `dir` (the current directory). `tmpdir`
/// is set once the TMPDIR exists, so a failure removes it.
fn supervise(
    dir: &Path,
    spec: &LaunchSpec,
    runtime: &tokio::runtime::Runtime,
    forwarder: &mut Forwarder,
    tmpdir: &mut Option<PathBuf>,
) -> Result<i32, SetupError> {
    let account = resolve_account(spec)?;
    info!(user = %account.name, uid = account.uid.as_raw(), gid = account.gid.as_raw(), "account resolved");
    if account.uid.is_root() && !spec.allow_root {
        return Err(SetupError::RootRefused);
    }
    // Everything that can be checked without side effects is checked first.
    let limits = sandbox::Limits::parse(&spec.resource_limits)?;
    let mut command = build_command(spec, &account)?;
    let tmp = std::path::absolute(&spec.tmpdir).unwrap_or_else(|_| spec.tmpdir.clone());

    // The user's groups, read while the user database is still the host's (see `drop_privileges`).
    let creds = Creds::of(&account).map_err(|source| SetupError::UserLookup {
        user: account.name.clone(),
        source,
    })?;
    if spec.switch_user {
        if !nix::unistd::geteuid().is_root() && account.uid != nix::unistd::geteuid() {
            return Err(SetupError::NotRoot(account.name.clone()));
        }
        sandbox::create_tmpdir(&tmp, Some((account.uid, account.gid)))?;
        *tmpdir = Some(tmp.clone());
        info!(path = %tmp.display(), "created the job's TMPDIR");
        if spec.namespace {
            sandbox::enter_mount_namespace(dir, &spec.masked_paths, &spec.mounts, &creds)?;
        }
        sandbox::hand_over_job_dir(dir, account.uid, account.gid)?;
        info!("job directory handed to the job's user (mode 0700)");
    } else {
        sandbox::create_tmpdir(&tmp, None)?;
        *tmpdir = Some(tmp.clone());
        info!(path = %tmp.display(), "created the job's TMPDIR");
        if spec.namespace {
            warn!("not switching users (unprivileged): running without a mount namespace, so masked paths and mounts are not applied");
        }
    }
    limits.apply()?;
    if spec.switch_user {
        sandbox::drop_privileges(&account, &creds)?;
        info!(
            uid = account.uid.as_raw(),
            gid = account.gid.as_raw(),
            "dropped privileges"
        );
    }

    if spec.allow_new_privileges {
        warn!("allow-new-privileges is set: setuid programs run by the job gain their privileges");
    } else {
        // Inherited by the job and kept across exec: a setuid or file-capability program it runs
        // gets no more privileges than the job has.
        nix::sys::prctl::set_no_new_privs().map_err(|e| SetupError::NoNewPrivileges(e.into()))?;
        info!("no_new_privs set: the job cannot gain privileges through exec");
    }

    // From here on as the job's user (when switching users): the output files and their
    // directories are the user's to make.
    let (stdout, stderr) = open_outputs(spec)?;
    info!(stdout = %spec.stdout_file.display(), stderr = %spec.stderr_file.display(), "opened output files");
    let cwd = spec
        .working_directory
        .clone()
        .unwrap_or_else(|| account.dir.clone());
    check_working_directory(&cwd)?;
    info!(path = %cwd.display(), "working directory checked");

    command
        .stdout(stdout)
        .stderr(stderr)
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .current_dir(&cwd)
        .process_group(0);
    let program = program_name(spec);
    // Before the job exists, so none of its orphans ever goes to init (see the module doc).
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        warn!("cannot become a child subreaper ({e}): the job's orphans are left to init");
    }
    let mut sigchld = match tokio::signal::unix::signal(SignalKind::child()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!("cannot watch SIGCHLD ({e}): the job's orphans are reaped only after it ends");
            None
        }
    };
    let mut command = tokio::process::Command::from(command);
    let mut child = command.spawn().map_err(|source| SetupError::Spawn {
        program: program.clone(),
        source,
    })?;
    // Our copies of the job's stdio end here, so the stdin pipe closes when the job's side does.
    drop(command);

    // The job exists: from here on nothing writes failed.json.
    let Some(pid) = child.id() else {
        // Unreachable: the child is only reaped by `wait` below.
        error!("the job's pid is unknown right after spawning it");
        return Ok(127);
    };
    let pid = pid as i32;
    info!(pid, program = %program, "job started in its own process group");
    let started = Started {
        supervisor_pid: getpid().as_raw(),
        supervisor_start_ticks: spec::process_start_ticks(getpid().as_raw()).unwrap_or(0),
        pid,
        // The job cannot have been reaped yet, so its /proc entry is there even if it exited.
        pid_start_ticks: spec::process_start_ticks(pid).unwrap_or(0),
        started_at: now(),
    };
    if let Err(e) = spec::write_atomic(dir, spec::STARTED_FILE, &started) {
        error!("cannot write {}: {e}", spec::STARTED_FILE);
    }

    let exited = runtime.block_on(async {
        if let (Some(stdin), Some(input)) = (child.stdin.take(), spec.stdin.clone()) {
            tokio::spawn(feed_stdin(stdin, input).instrument(Span::current()));
        }
        let group = Pid::from_raw(pid);
        // The job's pid (its group id) cannot be reused before the job is reaped, and only
        // `wait` reaps it; once it has, the loop ends, so a signal never reaches a stranger.
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                signal = forwarder.next() => forward(group, signal),
                () = next_sigchld(&mut sigchld) => reap_orphans(pid),
            }
        };
        exited(status)
    });
    info!(exit_code = exited.exit_code, signal = exited.signal, "job ended");
    if let Err(e) = spec::write_atomic(dir, spec::EXIT_FILE, &exited) {
        error!("cannot write {}: {e}", spec::EXIT_FILE);
    }
    runtime.block_on(reap_leftovers(&mut sigchld, LEFTOVER_GRACE));
    remove_tmpdir(&tmp);
    Ok(exited.exit_code)
}

/// Checks, as the job's user, that `cwd` is a directory they may enter, so a bad one is reported
/// as such rather than as a failure to start the program.
fn check_working_directory(cwd: &Path) -> Result<(), SetupError> {
    let err = |source| SetupError::WorkingDirectory {
        path: cwd.to_path_buf(),
        source,
    };
    if !std::fs::metadata(cwd).map_err(err)?.is_dir() {
        return Err(err(io::Error::from(Errno::ENOTDIR)));
    }
    nix::unistd::access(cwd, nix::unistd::AccessFlags::X_OK).map_err(|e| err(e.into()))
}

/// The job's account: `spec.user` when switching users, else our own.
fn resolve_account(spec: &LaunchSpec) -> Result<User, SetupError> {
    if spec.switch_user {
        match User::from_name(&spec.user) {
            Ok(Some(user)) => Ok(user),
            Ok(None) => Err(SetupError::UnknownUser(spec.user.clone())),
            Err(e) => Err(SetupError::UserLookup {
                user: spec.user.clone(),
                source: e.into(),
            }),
        }
    } else {
        let uid = getuid();
        let user = match User::from_uid(uid) {
            Ok(Some(user)) => user,
            Ok(None) => return Err(SetupError::UnknownOwnUid(uid.as_raw())),
            Err(e) => {
                return Err(SetupError::UserLookup {
                    user: uid.to_string(),
                    source: e.into(),
                })
            }
        };
        if user.name != spec.user {
            info!(job_user = %spec.user, "not switching users: the job runs as {}", user.name);
        }
        Ok(user)
    }
}

/// What the failure message calls the program: the exe as given, or the shell.
fn program_name(spec: &LaunchSpec) -> String {
    spec.exe.clone().unwrap_or_else(|| "/bin/sh".to_string())
}

/// The job's command line and environment (stdio and process group are set by the caller).
fn build_command(spec: &LaunchSpec, account: &User) -> Result<Command, SetupError> {
    let mut command = match (&spec.command, &spec.exe) {
        (Some(line), None) => {
            // Arguments given with a shell command are appended to its line, each quoted, so
            // they reach the command as the words they were.
            let mut line = line.clone();
            for arg in &spec.args {
                line.push(' ');
                line.push_str(&shell_quote(arg));
            }
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(line);
            c
        }
        (None, Some(exe)) => {
            let mut c = Command::new(exe);
            c.args(&spec.args);
            c
        }
        (None, None) => return Err(SetupError::Program("neither command nor exe")),
        (Some(_), Some(_)) => return Err(SetupError::Program("both command and exe")),
    };

    command.env_clear();
    if !spec.environment.iter().any(|(name, _)| name == "PATH") {
        command.env("PATH", DEFAULT_PATH);
    }
    for (index, (name, value)) in spec.environment.iter().enumerate() {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(SetupError::Environment { index, what: "name" });
        }
        if value.contains('\0') {
            return Err(SetupError::Environment { index, what: "value" });
        }
        command.env(name, value);
    }
    let shell: OsString = if account.shell.as_os_str().is_empty() {
        "/bin/sh".into()
    } else {
        account.shell.clone().into()
    };
    let tmpdir = std::path::absolute(&spec.tmpdir).unwrap_or_else(|_| spec.tmpdir.clone());
    command
        .env("HOME", &account.dir)
        .env("USER", &account.name)
        .env("LOGNAME", &account.name)
        .env("SHELL", shell)
        .env("TMPDIR", tmpdir);
    Ok(command)
}

/// `arg` as one word for `/bin/sh`.
fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// Opens (as the job's user) the job's stdout and stderr files, one open file when they are
/// the same path so both streams append to it in order.
fn open_outputs(spec: &LaunchSpec) -> Result<(File, File), SetupError> {
    let stdout = open_output(&spec.stdout_file)?;
    let stderr = if spec.stderr_file == spec.stdout_file {
        stdout.try_clone().map_err(|source| SetupError::OutputFile {
            path: spec.stderr_file.clone(),
            source,
        })?
    } else {
        open_output(&spec.stderr_file)?
    };
    Ok((stdout, stderr))
}

/// Opens one output file to append to, as whoever the supervisor is by now (the job's user when
/// switching users), creating it (0600) and its missing directories (0700) if need be. Only a
/// regular file, never through a symbolic link in its last component: a link planted there is
/// not written through, and a FIFO or device there would block or swallow the job's output.
fn open_output(path: &Path) -> Result<File, SetupError> {
    let err = |source| SetupError::OutputFile {
        path: path.to_path_buf(),
        source,
    };
    let refused = |why: &str| err(io::Error::new(io::ErrorKind::InvalidInput, why.to_string()));
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(err)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        // O_NONBLOCK: opening a FIFO for writing would wait for a reader.
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match Errno::from_raw(e.raw_os_error().unwrap_or(0)) {
            Errno::ELOOP => refused("it is a symbolic link (not followed)"),
            Errno::ENXIO => refused("it is not a regular file"),
            _ => err(e),
        })?;
    if !file.metadata().map_err(err)?.is_file() {
        return Err(refused("it is not a regular file"));
    }
    // The job writes to an ordinary blocking file.
    let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL).map_err(|e| err(e.into()))?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) - nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(|e| err(e.into()))?;
    Ok(file)
}

/// Catches the signals the supervisor passes on to the job, through tokio's handlers.
///
/// Not `sigwait` on a blocked mask: std's `Command` hands the parent's signal mask down to the
/// child (rust-lang/rust#101077), so blocked signals would stay blocked in the job, and
/// unblocking them around the spawn would let one kill the supervisor. Caught signals, unlike
/// blocked or ignored ones, revert to their default action in the job at exec.
struct Forwarder {
    streams: Vec<(Signal, tokio::signal::unix::Signal)>,
}

impl Forwarder {
    /// Installs the handlers; needs the runtime entered. Signals caught before the job exists
    /// are held (one per kind) and forwarded as soon as it does.
    fn install() -> Forwarder {
        let mut streams = Vec::new();
        for signal in FORWARDED {
            match tokio::signal::unix::signal(SignalKind::from_raw(signal as i32)) {
                Ok(stream) => streams.push((signal, stream)),
                Err(e) => error!("cannot catch {signal} ({e}); it will not be forwarded to the job"),
            }
        }
        Forwarder { streams }
    }

    /// The next caught signal.
    async fn next(&mut self) -> Signal {
        std::future::poll_fn(|cx| {
            for (signal, stream) in &mut self.streams {
                if let Poll::Ready(Some(())) = stream.poll_recv(cx) {
                    return Poll::Ready(*signal);
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// The next SIGCHLD (never, without a way to watch for it).
async fn next_sigchld(sigchld: &mut Option<tokio::signal::unix::Signal>) {
    match sigchld {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Reaps the ended orphans of a running job (children of ours through the subreaper), but never
/// the job's own process `leader`, which tokio waits for.
fn reap_orphans(leader: i32) {
    let me = getpid().as_raw();
    for st in crate::procfs::all_pids()
        .into_iter()
        .filter(|p| *p != leader)
        .filter_map(crate::procfs::read_stat)
        .filter(|st| st.ppid == me && st.state == 'Z')
    {
        let _ = nix::sys::wait::waitpid(Pid::from_raw(st.pid), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
    }
}

/// After the job's process ended: reaps every child left (the job's orphans) as it ends, until
/// none is left or `grace` has passed.
async fn reap_leftovers(sigchld: &mut Option<tokio::signal::unix::Signal>, grace: std::time::Duration) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let deadline = tokio::time::Instant::now() + grace;
    let mut reaped = 0;
    loop {
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) | Err(Errno::EINTR) => reaped += 1,
                Err(Errno::ECHILD) => {
                    if reaped > 0 {
                        info!("reaped {reaped} process(es) the job left behind");
                    }
                    return;
                }
                Err(e) => return warn!("cannot wait for the processes the job left behind: {e}"),
            }
        }
        // Without SIGCHLD to wake us, look again every few milliseconds.
        let woke = match sigchld {
            Some(s) => tokio::time::timeout_at(deadline, s.recv()).await.is_ok(),
            None => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                tokio::time::Instant::now() < deadline
            }
        };
        if !woke {
            return info!("processes the job left behind still run after {grace:?}; leaving them to init");
        }
    }
}

/// Passes `signal` on to the job's process group.
fn forward(group: Pid, signal: Signal) {
    match killpg(group, signal) {
        Ok(()) => info!("forwarded {signal} to the job's process group"),
        Err(Errno::ESRCH) => info!("received {signal}; the job's process group is gone"),
        Err(e) => warn!("cannot forward {signal} to the job's process group: {e}"),
    }
}

/// Writes `input` to the job's stdin, then closes it. A job that exits or closes its stdin
/// without reading it all is fine (EPIPE: SIGPIPE is ignored in this process). The task is
/// dropped, closing the pipe, if the job ends first.
async fn feed_stdin(mut stdin: tokio::process::ChildStdin, input: String) {
    match stdin.write_all(input.as_bytes()).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            info!("the job closed its stdin before reading all of it")
        }
        // The error never quotes the data.
        Err(e) => warn!("writing the job's stdin failed: {e}"),
    }
}

/// The job's `exit.json` from its wait status.
fn exited(status: io::Result<ExitStatus>) -> Exited {
    let (exit_code, signal) = match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => (code, None),
            (None, Some(signal)) => (128 + signal, Some(signal)),
            (None, None) => {
                error!("the job's wait status {status:?} has neither exit code nor signal");
                (127, None)
            }
        },
        Err(e) => {
            error!("cannot wait for the job: {e}");
            (127, None)
        }
    };
    Exited {
        exit_code,
        signal,
        finished_at: now(),
    }
}

/// Removes the job's TMPDIR and everything in it; errors are logged, never fatal.
///
/// Running as the job's user, the supervisor can empty the TMPDIR but cannot unlink it from a
/// parent only root may write (the plugin's `tmp/`, mode 0711): it then leaves the empty
/// directory, says so, and the plugin removes it once the job has ended.
fn remove_tmpdir(path: &Path) {
    match std::fs::remove_dir_all(path) {
        Ok(()) => return info!(path = %path.display(), "removed the job's TMPDIR"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(_) => {}
    }
    // The job may have left directories it cannot write (mode 0500): open them up first.
    make_writable(path);
    if let Err(e) = empty_dir(path) {
        return error!(path = %path.display(), "cannot empty the job's TMPDIR: {e}");
    }
    match std::fs::remove_dir(path) {
        Ok(()) => info!(path = %path.display(), "removed the job's TMPDIR"),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => info!(
            path = %path.display(),
            "emptied the job's TMPDIR; its parent is not writable by the job's user, so the plugin removes the directory"
        ),
        Err(e) => error!(path = %path.display(), "cannot remove the job's TMPDIR: {e}"),
    }
}

/// Removes everything in the directory `path` (symlinks themselves, never their targets).
fn empty_dir(path: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Gives the owner rwx on every directory under `path` (symlinks are not followed).
fn make_writable(path: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mode = meta.permissions().mode();
    if mode & 0o700 != 0o700 {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o700));
    }
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            make_writable(&entry.path());
        }
    }
}

/// Now, RFC 3339 UTC with microseconds.
fn now() -> String {
    OffsetDateTime::now_utc()
        .format(TIMESTAMP)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000000Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_keeps_words_whole() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let t = now();
        assert_eq!(t.len(), "2026-01-01T00:00:00.000000Z".len(), "{t}");
        assert!(t.ends_with('Z'));
        OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).unwrap();
    }
}
