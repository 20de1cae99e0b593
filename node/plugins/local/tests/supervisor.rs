//! The per-job supervisor, run as the real binary (`launcher-local-plugin supervise <job-dir>`)
//! the way the plugin runs it: `spec.json` in a fresh job directory, stdin and stdout on
//! /dev/null, stderr on `supervisor.log`; the state files and exit status are then checked.
//!
//! Tests that need root (switching users, mount namespaces) fail when not run as root: CI runs
//! them as root, and a test that could not run must not pass.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use launcher_local_plugin::spec::{
    self, BindMount, Exited, LaunchSpec, SetupFailed, Started, EXIT_FILE, FAILED_FILE, STARTED_FILE,
    SUPERVISOR_LOG,
};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::{geteuid, Pid, User};

const BIN: &str = env!("CARGO_BIN_EXE_launcher-local-plugin");

/// How long any awaited condition may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);

/// The account created for the switch-user tests.
const TEST_USER: &str = "launcher-sup-test";

fn is_root() -> bool {
    geteuid().is_root()
}

/// Fails the test unless it runs as root.
fn require_root() {
    assert!(is_root(), "this test needs root: run it as root, as CI does");
}

fn me() -> User {
    User::from_uid(nix::unistd::getuid())
        .unwrap()
        .expect("the test's own user is in the user database")
}

/// Polls `f` until it returns Some, failing the test after [`DEADLINE`].
fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `/proc/<pid>/stat` fields after the command name: [0] state, [1] ppid, [2] pgrp, [3] session.
fn stat_fields(pid: i32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// One job directory and the supervisor run in it. Dropping it kills whatever is left of the
/// job's process group and the supervisor, so no test leaves processes behind.
///
/// Laid out as the plugin lays out its scratch path: `<scratch>/jobs/<job>/` (with `jobs/`
/// root-only), the TMPDIR in `<scratch>/tmp/<job>` (`tmp/` traversable), and `<scratch>/output/`.
struct Job {
    scratch: tempfile::TempDir,
    dir: PathBuf,
    spec: LaunchSpec,
    supervisor: Option<Child>,
}

/// The scratch path of the job directory `d`.
fn scratch_of(d: &Path) -> &Path {
    d.parent().and_then(Path::parent).unwrap()
}

impl Job {
    /// A job running as the test's own user (switching to it when root, as the plugin does),
    /// root allowed, working in and writing to its own directory. `edit` gets the job directory.
    fn new(edit: impl FnOnce(&Path, &mut LaunchSpec)) -> Job {
        let scratch = tempfile::tempdir().unwrap();
        let mode =
            |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        mode(scratch.path(), 0o711);
        for (sub, m) in [("jobs", 0o700), ("tmp", 0o711), ("output", 0o755)] {
            std::fs::create_dir(scratch.path().join(sub)).unwrap();
            mode(&scratch.path().join(sub), m);
        }
        let dir = scratch.path().join("jobs/job");
        std::fs::create_dir(&dir).unwrap();
        let d = dir.as_path();
        let mut spec = LaunchSpec {
            job_id: format!("test-{}", scratch.path().file_name().unwrap().to_string_lossy()),
            user: me().name,
            switch_user: is_root(),
            allow_root: true,
            command: None,
            exe: None,
            args: vec![],
            environment: vec![],
            stdin: None,
            working_directory: Some(d.to_path_buf()),
            stdout_file: d.join("out"),
            stderr_file: d.join("err"),
            tmpdir: scratch.path().join("tmp/job"),
            resource_limits: vec![],
            mounts: vec![],
            masked_paths: vec![],
            namespace: false,
            allow_new_privileges: false,
        };
        edit(d, &mut spec);
        spec::write_atomic(d, spec::SPEC_FILE, &spec).unwrap();
        Job {
            scratch,
            dir,
            spec,
            supervisor: None,
        }
    }

    fn shell(command: &str) -> Job {
        Job::new(|_, s| s.command = Some(command.into()))
    }

    fn path(&self) -> &Path {
        &self.dir
    }

    fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    /// Starts the supervisor as the plugin does.
    fn start(&mut self) -> &mut Self {
        let log = std::fs::File::create(self.path().join(SUPERVISOR_LOG)).unwrap();
        let child = Command::new(BIN)
            .arg("supervise")
            .arg(self.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.supervisor = Some(child);
        self
    }

    fn supervisor_pid(&self) -> i32 {
        self.supervisor.as_ref().unwrap().id() as i32
    }

    /// Waits for the supervisor to exit.
    fn wait(&mut self) -> ExitStatus {
        let child = self.supervisor.as_mut().unwrap();
        let status = wait_until("the supervisor to exit", || child.try_wait().unwrap());
        self.supervisor = None;
        status
    }

    /// Runs the supervisor to the end; returns its exit code.
    fn run(&mut self) -> i32 {
        self.start();
        let status = self.wait();
        status
            .code()
            .unwrap_or_else(|| panic!("the supervisor died of {status:?}\n{}", self.log()))
    }

    fn started(&self) -> Option<Started> {
        spec::read_json(self.path(), STARTED_FILE).unwrap()
    }

    fn await_started(&self) -> Started {
        wait_until("started.json", || self.started())
    }

    fn exited(&self) -> Option<Exited> {
        spec::read_json(self.path(), EXIT_FILE).unwrap()
    }

    fn failed(&self) -> Option<SetupFailed> {
        spec::read_json(self.path(), FAILED_FILE).unwrap()
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(name)).unwrap_or_default()
    }

    fn log(&self) -> String {
        self.read(SUPERVISOR_LOG)
    }

    /// The job ran and ended with `code`: exit.json says so, failed.json is absent.
    fn assert_exited(&self, code: i32, signal: Option<i32>) {
        let exited = self
            .exited()
            .unwrap_or_else(|| panic!("no exit.json\n{}", self.log()));
        assert_eq!(
            (exited.exit_code, exited.signal),
            (code, signal),
            "{}",
            self.log()
        );
        assert!(exited.finished_at.ends_with('Z'));
        assert!(self.failed().is_none());
        assert!(self.started().is_some(), "a job that ran has started.json");
    }

    /// The job never started: failed.json holds a message containing `needle`, and neither
    /// started.json nor exit.json exists.
    fn assert_failed(&self, needle: &str) -> String {
        let failed = self
            .failed()
            .unwrap_or_else(|| panic!("no failed.json\n{}", self.log()));
        assert!(
            failed.message.contains(needle),
            "{:?} lacks {needle:?}",
            failed.message
        );
        assert!(
            self.exited().is_none(),
            "exit.json is never written when the job did not start"
        );
        assert!(self.started().is_none());
        failed.message
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(started) = self.started() {
            if spec::process_alive(started.pid, started.pid_start_ticks) {
                let _ = killpg(Pid::from_raw(started.pid), Signal::SIGKILL);
            }
        }
        if let Some(mut child) = self.supervisor.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The TMPDIR of a job run as another user is emptied (even of a directory the job made
/// read-only); the directory itself stays for the plugin, since only root may write `tmp/`,
/// and the log says so.
fn assert_tmpdir_cleaned_as_user(job: &Job) {
    let left: Vec<_> = std::fs::read_dir(&job.spec.tmpdir).unwrap().collect();
    assert!(left.is_empty(), "TMPDIR still holds {left:?}\n{}", job.log());
    assert!(
        job.log().contains("so the plugin removes the directory"),
        "{}",
        job.log()
    );
}

/// The account for the switch-user tests, created once if missing (root only).
fn test_user() -> &'static User {
    static USER: OnceLock<User> = OnceLock::new();
    USER.get_or_init(|| {
        if let Some(user) = User::from_name(TEST_USER).unwrap() {
            return user;
        }
        let out = Command::new("useradd")
            .args(["--create-home", TEST_USER])
            .output()
            .unwrap();
        // Another test process may have created it meanwhile: look again before failing.
        User::from_name(TEST_USER)
            .unwrap()
            .unwrap_or_else(|| panic!("useradd failed: {}", String::from_utf8_lossy(&out.stderr)))
    })
}

/// The job's exit code is the supervisor's, and exit.json records it.
#[test]
fn exit_code_passes_through() {
    let mut job = Job::shell("exit 3");
    assert_eq!(job.run(), 3);
    job.assert_exited(3, None);
}

/// A job killed by SIGTERM ends with 128+15 and signal 15, in exit.json and in the
/// supervisor's own exit status.
#[test]
fn death_by_sigterm_is_143() {
    let mut job = Job::shell("kill -TERM $$");
    assert_eq!(job.run(), 143);
    job.assert_exited(143, Some(15));
}

/// A job killed by SIGKILL ends with 137 and signal 9.
#[test]
fn death_by_sigkill_is_137() {
    let mut job = Job::shell("kill -9 $$");
    assert_eq!(job.run(), 137);
    job.assert_exited(137, Some(9));
}

/// stdout and stderr land in their own files (created mode 0600, parents created), stdin is
/// fed to the job, and neither stdin nor environment values appear in the supervisor's log.
#[test]
fn output_lands_in_files_and_stdin_is_fed() {
    let mut job = Job::new(|d, s| {
        s.command = Some("cat; echo to-stderr >&2".into());
        s.stdin = Some("first line\nstdin-secret-4711\n".into());
        s.environment = vec![("API_TOKEN".into(), "env-secret-0815".into())];
        s.stdout_file = d.join("nested/deeper/job.stdout");
        s.stderr_file = d.join("job.stderr");
    });
    assert_eq!(job.run(), 0);
    job.assert_exited(0, None);
    assert_eq!(
        job.read("nested/deeper/job.stdout"),
        "first line\nstdin-secret-4711\n"
    );
    assert_eq!(job.read("job.stderr"), "to-stderr\n");
    let mode = std::fs::metadata(job.path().join("job.stderr"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let log = job.log();
    assert!(
        !log.contains("stdin-secret-4711") && !log.contains("env-secret-0815"),
        "{log}"
    );
}

/// When stdout and stderr are the same file, both streams append to it in order, after what
/// was there before.
#[test]
fn shared_output_file_is_appended_in_order() {
    let mut job = Job::new(|d, s| {
        s.command = Some("echo out; echo err >&2; echo out2".into());
        s.stdout_file = d.join("both");
        s.stderr_file = d.join("both");
    });
    std::fs::write(job.path().join("both"), "earlier\n").unwrap();
    assert_eq!(job.run(), 0);
    assert_eq!(job.read("both"), "earlier\nout\nerr\nout2\n");
}

/// A job that never reads a large stdin still ends normally: the supervisor neither blocks on
/// the pipe nor dies of SIGPIPE.
#[test]
fn unread_stdin_does_not_block() {
    let mut job = Job::new(|_, s| {
        s.command = Some("exit 4".into());
        s.stdin = Some("x".repeat(4 << 20));
    });
    assert_eq!(job.run(), 4);
    job.assert_exited(4, None);
}

/// The environment is the job's own plus a default PATH, with HOME, USER, LOGNAME and SHELL
/// from the user database and TMPDIR set by the supervisor over the job's values; nothing of
/// the supervisor's environment leaks in. TMPDIR exists (0700) during the job and is gone after.
#[test]
fn environment_and_tmpdir_are_set_by_the_supervisor() {
    let mut job = Job::new(|_, s| {
        s.command = Some(
            "env | sort > env.txt; stat -c %a \"$TMPDIR\" > tmpmode.txt; touch \"$TMPDIR/scratch\"".into(),
        );
        s.environment = vec![
            ("HOME".into(), "/bogus".into()),
            ("TMPDIR".into(), "/bogus".into()),
            ("FOO".into(), "bar baz".into()),
        ];
    });
    assert_eq!(job.run(), 0);
    let user = me();
    let env: Vec<String> = job.read("env.txt").lines().map(str::to_string).collect();
    let shell = if user.shell.as_os_str().is_empty() {
        "/bin/sh".into()
    } else {
        user.shell.clone()
    };
    let expected = [
        "FOO=bar baz".to_string(),
        format!("HOME={}", user.dir.display()),
        format!("LOGNAME={}", user.name),
        "PATH=/usr/local/bin:/usr/bin:/bin".to_string(),
        format!("SHELL={}", shell.display()),
        format!("TMPDIR={}", job.spec.tmpdir.display()),
        format!("USER={}", user.name),
    ];
    for e in &expected {
        assert!(env.contains(e), "{e:?} missing from {env:?}");
    }
    // sh adds PWD (and dash nothing else); everything else came from the spec.
    let others: Vec<_> = env
        .iter()
        .filter(|l| !expected.contains(l) && !l.starts_with("PWD="))
        .collect();
    assert!(others.is_empty(), "unexpected variables: {others:?}");
    assert_eq!(job.read("tmpmode.txt").trim(), "700");
    assert!(!job.spec.tmpdir.exists(), "TMPDIR is removed after the job");
}

/// A job that sets its own PATH keeps it.
#[test]
fn job_path_wins_over_the_default() {
    let mut job = Job::new(|_, s| {
        s.command = Some("echo \"$PATH\" > path.txt".into());
        s.environment = vec![("PATH".into(), "/opt/x/bin:/usr/bin:/bin".into())];
    });
    assert_eq!(job.run(), 0);
    assert_eq!(job.read("path.txt").trim(), "/opt/x/bin:/usr/bin:/bin");
}

/// The job starts with no blocked signals, SIGPIPE and the forwarded signals not ignored,
/// although the supervisor catches the forwarded signals and ignores SIGPIPE.
#[test]
fn job_starts_with_a_clean_signal_state() {
    // Read by the shell itself with builtins: a child it forks would not show its mask.
    let mut job =
        Job::shell("while read -r l; do case $l in Sig[BI]*) echo \"$l\";; esac; done < /proc/$$/status");
    assert_eq!(job.run(), 0);
    let out = job.read("out");
    let field = |name: &str| {
        let value = out
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("{out}"));
        u64::from_str_radix(value.trim(), 16).unwrap()
    };
    assert_eq!(field("SigBlk:"), 0, "no signal is blocked in the job");
    let ignored = field("SigIgn:");
    for signal in [1, 2, 3, 10, 12, 13, 15] {
        assert_eq!(
            ignored & (1 << (signal - 1)),
            0,
            "signal {signal} is not ignored in the job"
        );
    }
}

/// cpuTime and memory become hard and soft RLIMIT_CPU and RLIMIT_AS in the job; cpuCount and
/// memorySwap are logged as not enforced.
#[test]
fn resource_limits_are_rlimits_in_the_job() {
    let mut job = Job::new(|_, s| {
        s.command = Some("ulimit -t; ulimit -H -t; ulimit -v; ulimit -H -v".into());
        s.resource_limits = vec![
            ("cpuTime".into(), "7".into()),
            ("memory".into(), "512".into()),
            ("cpuCount".into(), "2".into()),
            ("memorySwap".into(), "1024".into()),
        ];
    });
    assert_eq!(job.run(), 0);
    assert_eq!(job.read("out"), "7\n7\n524288\n524288\n");
    let log = job.log();
    assert!(log.contains("cpuCount=2 is recorded but not enforced"), "{log}");
    assert!(
        log.contains("memorySwap=1024 is recorded but not enforced"),
        "{log}"
    );
}

/// A resource limit that is not a number fails the job, naming the limit and value.
#[test]
fn bad_resource_limit_fails_the_job() {
    let mut job = Job::new(|_, s| {
        s.command = Some("touch ran".into());
        s.resource_limits = vec![("memory".into(), "lots".into())];
    });
    assert_eq!(job.run(), 127);
    job.assert_failed("memory=\"lots\"");
    assert!(!job.path().join("ran").exists());
}

/// An exe that does not exist fails the job with "cannot start <exe>", exit 127, no exit.json,
/// and its TMPDIR is cleaned up.
#[test]
fn unknown_exe_fails_without_exit_json() {
    let mut job = Job::new(|_, s| s.exe = Some("/nonexistent/launcher-test-exe".into()));
    assert_eq!(job.run(), 127);
    let message = job.assert_failed("cannot start /nonexistent/launcher-test-exe: ");
    assert!(message.contains("No such file or directory"), "{message}");
    assert!(!job.spec.tmpdir.exists());
}

/// An exe that is not executable fails the job with exit 126 (a permission problem).
#[test]
fn non_executable_exe_fails_with_126() {
    let mut job = Job::new(|d, s| s.exe = Some(d.join("script.sh").to_string_lossy().into_owned()));
    std::fs::write(job.path().join("script.sh"), "#!/bin/sh\nexit 0\n").unwrap();
    assert_eq!(job.run(), 126);
    job.assert_failed("cannot start ");
}

/// An exe found on the default PATH runs with its arguments.
#[test]
fn exe_runs_with_args_from_path() {
    let mut job = Job::new(|_, s| {
        s.exe = Some("printf".into());
        s.args = vec!["%s|%s\n".into(), "a b".into(), "it's".into()];
    });
    assert_eq!(job.run(), 0);
    assert_eq!(job.read("out"), "a b|it's\n");
}

/// A user missing from the user database fails the job with a message naming them.
#[test]
fn unknown_user_fails_the_job() {
    let mut job = Job::new(|_, s| {
        s.command = Some("touch ran".into());
        s.user = "launcher-no-such-user".into();
        s.switch_user = true;
    });
    assert_eq!(job.run(), 127);
    job.assert_failed("user 'launcher-no-such-user' does not exist on this host");
    assert!(!job.path().join("ran").exists());
}

/// uid 0 is refused unless allow_root is set; nothing runs and the exit code is 126.
#[test]
fn root_is_refused_without_allow_root() {
    let mut job = Job::new(|_, s| {
        s.command = Some("touch ran".into());
        s.user = "root".into();
        s.switch_user = true;
        s.allow_root = false;
    });
    assert_eq!(job.run(), 126);
    job.assert_failed("refusing to run a job as root; set allow-root-jobs=1");
    assert!(!job.path().join("ran").exists());
}

/// A working directory that does not exist fails the job, naming it.
#[test]
fn missing_working_directory_fails_the_job() {
    let mut job = Job::new(|d, s| {
        s.command = Some("true".into());
        s.working_directory = Some(d.join("no-such-dir"));
    });
    assert_eq!(job.run(), 127);
    job.assert_failed(&format!(
        "cannot use working directory {}",
        job.spec.working_directory.clone().unwrap().display()
    ));
}

/// An output file that cannot be opened fails the job, naming the path and the OS error.
#[test]
fn unopenable_output_file_fails_the_job() {
    let mut job = Job::new(|d, s| {
        s.command = Some("true".into());
        s.stdout_file = d.join("a-directory");
    });
    std::fs::create_dir(job.path().join("a-directory")).unwrap();
    assert_eq!(job.run(), 127);
    let message = job.assert_failed(&format!(
        "cannot open output file {}",
        job.spec.stdout_file.display()
    ));
    assert!(message.contains("Is a directory"), "{message}");
}

/// (root) The job runs as another user: its uid and groups are theirs (no root group), HOME is
/// from passwd and the default working directory, its output file and TMPDIR belong to them,
/// and a TMPDIR it left hard to delete is still removed. The job directory is handed to them.
#[test]
fn runs_as_another_user() {
    require_root();
    let user = test_user();
    let mut job = Job::new(|d, s| {
        s.command = Some(
            "id -u; id -G; echo \"$HOME\"; pwd; stat -c '%u %a' \"$TMPDIR\"; \
             mkdir \"$TMPDIR/d\" && touch \"$TMPDIR/d/f\" && chmod 500 \"$TMPDIR/d\""
                .into(),
        );
        s.user = TEST_USER.into();
        s.switch_user = true;
        s.allow_root = false;
        s.working_directory = None;
        // As the plugin does: the job's user cannot reach into `jobs/`; their output goes to
        // `output/<user>/`, which the plugin creates owned by them.
        let output = scratch_of(d).join("output").join(TEST_USER);
        s.stdout_file = output.join("job.stdout");
        s.stderr_file = output.join("job.stderr");
    });
    let output = job.scratch().join("output").join(TEST_USER);
    std::fs::create_dir(&output).unwrap();
    nix::unistd::chown(&output, Some(user.uid), Some(user.gid)).unwrap();
    std::fs::set_permissions(&output, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(job.run(), 0, "{}", job.log());
    // started.json and exit.json made it into the job directory below the root-only `jobs/`.
    job.assert_exited(0, None);
    let out = std::fs::read_to_string(output.join("job.stdout")).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.len(),
        5,
        "{out}\n{}",
        std::fs::read_to_string(output.join("job.stderr")).unwrap()
    );
    assert_eq!(lines[0], user.uid.to_string());
    assert!(
        lines[1].split(' ').all(|g| g != "0"),
        "no root group: {}",
        lines[1]
    );
    assert!(
        lines[1].split(' ').any(|g| g == user.gid.to_string()),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2], user.dir.to_string_lossy());
    assert_eq!(lines[3], user.dir.to_string_lossy());
    assert_eq!(lines[4], format!("{} 700", user.uid));
    assert_eq!(
        std::fs::metadata(output.join("job.stdout")).unwrap().uid(),
        user.uid.as_raw()
    );
    let dir = std::fs::metadata(job.path()).unwrap();
    assert_eq!((dir.uid(), dir.mode() & 0o777), (user.uid.as_raw(), 0o700));
    assert_tmpdir_cleaned_as_user(&job);
}

/// (root) A failure after privileges were dropped (an output file the user may not create) is
/// still reported in failed.json, with 126 for the permission problem.
#[test]
fn failure_as_the_user_is_reported() {
    require_root();
    test_user();
    let root_only = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root_only.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let target = root_only.path().join("out");
    let mut job = Job::new(|_, s| {
        s.command = Some("touch ran".into());
        s.user = TEST_USER.into();
        s.switch_user = true;
        s.working_directory = None;
        s.stdout_file = target.clone();
    });
    assert_eq!(job.run(), 126);
    let message = job.assert_failed(&format!("cannot open output file {}", target.display()));
    assert!(message.contains("Permission denied"), "{message}");
    assert!(!target.exists());
    assert_tmpdir_cleaned_as_user(&job);
}

/// The job inherits no file descriptor but its stdin, stdout and stderr.
#[test]
fn job_inherits_only_its_stdio() {
    let mut job = Job::new(|_, s| {
        s.exe = Some("ls".into());
        s.args = vec!["-1".into(), "/proc/self/fd".into()];
        s.stdin = Some(String::new());
    });
    assert_eq!(job.run(), 0);
    // ls's own directory handle on /proc/self/fd is the one extra entry.
    let fds: Vec<String> = job.read("out").lines().map(str::to_string).collect();
    assert_eq!(fds, ["0", "1", "2", "3"], "{fds:?}");
}

/// (root) In the job's mount namespace a masked directory is empty and a read-only bind mount
/// shows its source and refuses writes; a masked path missing here is skipped with a log line;
/// nothing leaks into the host's namespace.
#[test]
fn namespace_masks_paths_and_binds_mounts() {
    require_root();
    let mut job = Job::new(|d, s| {
        s.command = Some(
            "ls -A secret | wc -l; cat mnt/hello; cat rw/hello; \
             if touch mnt/new 2>/dev/null; then echo writable; else echo read-only; fi; \
             touch rw/new && echo rw-writable"
                .into(),
        );
        s.namespace = true;
        s.masked_paths = vec![
            d.join("secret"),
            d.join("secret-file"),
            PathBuf::from("/nonexistent/masked"),
        ];
        s.mounts = vec![
            BindMount {
                source: d.join("src"),
                target: d.join("mnt"),
                read_only: true,
            },
            BindMount {
                source: d.join("src"),
                target: d.join("rw"),
                read_only: false,
            },
        ];
        s.stderr_file = d.join("out");
    });
    let d = job.path().to_path_buf();
    std::fs::create_dir(d.join("secret")).unwrap();
    std::fs::write(d.join("secret/key"), "hidden").unwrap();
    std::fs::write(d.join("secret-file"), "hidden").unwrap();
    std::fs::create_dir(d.join("src")).unwrap();
    std::fs::write(d.join("src/hello"), "hello from src\n").unwrap();
    std::fs::create_dir(d.join("mnt")).unwrap();
    std::fs::create_dir(d.join("rw")).unwrap();
    assert_eq!(job.run(), 0, "{}", job.log());
    assert_eq!(
        job.read("out"),
        "0\nhello from src\nhello from src\nread-only\nrw-writable\n"
    );
    assert!(
        job.log().contains("masked path does not exist on this host"),
        "{}",
        job.log()
    );
    // The host never saw any of it, but what the job wrote through the read-write bind.
    assert_eq!(std::fs::read_to_string(d.join("secret/key")).unwrap(), "hidden");
    assert_eq!(std::fs::read_to_string(d.join("secret-file")).unwrap(), "hidden");
    assert_eq!(std::fs::read_dir(d.join("mnt")).unwrap().count(), 0);
    assert!(d.join("src/new").exists());
}

/// (root) Masking the plugin's `jobs/` (so a job cannot see other jobs' specs) hides it from
/// the job, yet the supervisor still writes its state files into the job directory below it.
#[test]
fn masking_the_jobs_directory_keeps_the_state_files_flowing() {
    require_root();
    let mut job = Job::new(|d, s| {
        let scratch = scratch_of(d);
        s.command = Some(format!("ls -A {} | wc -l", scratch.join("jobs").display()));
        s.namespace = true;
        s.masked_paths = vec![scratch.join("jobs")];
        s.working_directory = None;
        s.stdout_file = scratch.join("output/job.out");
        s.stderr_file = scratch.join("output/job.out");
    });
    assert_eq!(job.run(), 0, "{}", job.log());
    job.assert_exited(0, None);
    let out = std::fs::read_to_string(job.scratch().join("output/job.out")).unwrap();
    assert_eq!(out, "0\n", "the job sees an empty jobs/");
}

/// (root) A mount whose source is missing fails the job, naming the source.
#[test]
fn missing_mount_source_fails_the_job() {
    require_root();
    let mut job = Job::new(|d, s| {
        s.command = Some("touch ran".into());
        s.namespace = true;
        s.mounts = vec![BindMount {
            source: d.join("no-such-src"),
            target: d.join("mnt"),
            read_only: false,
        }];
    });
    assert_eq!(job.run(), 127);
    job.assert_failed(&not_accessible(&job.path().join("no-such-src")));
    assert!(!job.path().join("ran").exists());
}

/// What a job whose mount source cannot be used by its user is told.
fn not_accessible(source: &Path) -> String {
    format!(
        "mount source {}: no such file or directory, or not accessible to user",
        source.display()
    )
}

/// A directory every user may search, whatever the umask; removed when dropped.
fn open_tempdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// A directory `parent/name` owned by the test user, mode 0755.
fn user_dir(parent: &Path, name: &str) -> PathBuf {
    let user = test_user();
    let dir = parent.join(name);
    std::fs::create_dir(&dir).unwrap();
    nix::unistd::chown(&dir, Some(user.uid), Some(user.gid)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A symbolic link `at` → `to` owned by the test user (as if the user had made it).
fn user_symlink(to: &str, at: &Path) {
    let user = test_user();
    std::os::unix::fs::symlink(to, at).unwrap();
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        at,
        Some(user.uid),
        Some(user.gid),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// A name no test run before has used.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// (root) A job run as the test user, in a mount namespace, with stdout and stderr in
/// `output/<user>/job.out` (where the plugin puts them; the user cannot reach `jobs/`).
fn user_job(edit: impl FnOnce(&Path, &mut LaunchSpec)) -> Job {
    require_root();
    let user = test_user();
    Job::new(|d, s| {
        let output = scratch_of(d).join("output").join(TEST_USER);
        std::fs::create_dir(&output).unwrap();
        nix::unistd::chown(&output, Some(user.uid), Some(user.gid)).unwrap();
        std::fs::set_permissions(&output, std::fs::Permissions::from_mode(0o700)).unwrap();
        s.user = TEST_USER.into();
        s.switch_user = true;
        s.allow_root = false;
        s.working_directory = None;
        s.namespace = true;
        s.stdout_file = output.join("job.out");
        s.stderr_file = output.join("job.out");
        edit(d, s);
    })
}

impl Job {
    /// The output of a [`user_job`].
    fn user_output(&self) -> String {
        std::fs::read_to_string(self.scratch().join("output").join(TEST_USER).join("job.out"))
            .unwrap_or_default()
    }
}

/// The mount options of the mount at `point` in a `/proc/self/mountinfo` text (the last one, the
/// one on top).
fn mount_options(mountinfo: &str, point: &Path) -> Vec<String> {
    let point = point.to_str().unwrap();
    let line = mountinfo
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some(point))
        .unwrap_or_else(|| panic!("no mount at {point} in\n{mountinfo}"));
    line.split(' ')
        .nth(5)
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect()
}

/// (root) The attack that gave root: a user binds a directory of their own over /etc, where a
/// setuid program (su) would read a config of their choosing. Inside the job the bind is
/// nosuid,nodev and the job has no_new_privs, so a setuid-root program the user's directory holds
/// runs as the user, and the job's groups are those of the host's /etc/group. With
/// allow-new-privileges the bind's nosuid alone still holds.
#[test]
fn a_user_directory_over_etc_gives_no_privileges() {
    let base = open_tempdir();
    let fake = user_dir(base.path(), "fake-etc");
    std::fs::write(fake.join("passwd"), "root::0:0:root:/root:/bin/sh\n").unwrap();
    // Read after the bind, this would make the job's user a member of root's group.
    std::fs::write(fake.join("group"), format!("root:x:0:{TEST_USER}\n")).unwrap();
    // A setuid-root program in the user's directory, as one left there by root would be. Run
    // by the user outside a job, it runs as root.
    let suid = fake.join("id-suid");
    std::fs::copy("/usr/bin/id", &suid).unwrap();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    assert_eq!(std::fs::metadata(&suid).unwrap().uid(), 0);
    for allow_new_privileges in [false, true] {
        let mut job = user_job(|_, s| {
            s.command = Some(
                "grep NoNewPrivs /proc/self/status; /etc/id-suid -u; id -G; cat /etc/passwd; cat /proc/self/mountinfo"
                    .into(),
            );
            s.mounts = vec![BindMount {
                source: fake.clone(),
                target: "/etc".into(),
                read_only: false,
            }];
            s.allow_new_privileges = allow_new_privileges;
        });
        assert_eq!(job.run(), 0, "{}\n{}", job.log(), job.user_output());
        let out = job.user_output();
        let mut lines = out.lines();
        let nnp = if allow_new_privileges { 0 } else { 1 };
        assert_eq!(
            lines.next(),
            Some(format!("NoNewPrivs:\t{nnp}").as_str()),
            "{out}"
        );
        assert_eq!(
            lines.next(),
            Some(test_user().uid.to_string().as_str()),
            "the setuid-root copy must run as the user\n{out}"
        );
        let groups = lines.next().unwrap_or_default();
        assert!(
            groups.split(' ').all(|g| g != "0"),
            "groups come from the host's /etc/group: {groups}"
        );
        assert_eq!(lines.next(), Some("root::0:0:root:/root:/bin/sh"), "{out}");
        let options = mount_options(&out, Path::new("/etc"));
        for flag in ["nosuid", "nodev"] {
            assert!(
                options.iter().any(|o| o == flag),
                "/etc lacks {flag}: {options:?}"
            );
        }
    }
    assert!(
        !Path::new("/etc/id-suid").exists(),
        "the bind stayed in the job's namespace"
    );
}

/// (root) A missing target is made inside the job's namespace only: under a missing directory of
/// /opt, in /etc/cron.d (where cron would run a file found on the host), and right under /. The
/// job sees each, and everything that was in the directories they were made in; the host sees
/// none of them. The directories made to hold them are read-only to the job.
#[test]
fn missing_targets_are_made_in_the_namespace_only() {
    let base = open_tempdir();
    let data = user_dir(base.path(), "data");
    std::fs::write(data.join("hello"), "hello\n").unwrap();
    let note = base.path().join("note");
    std::fs::write(&note, "* * * * * root sh /tmp/x\n").unwrap();
    nix::unistd::chown(&note, Some(test_user().uid), None).unwrap();
    let top = PathBuf::from("/").join(unique("launcher-test-top"));
    let opt = PathBuf::from("/opt").join(unique("launcher-test"));
    let deep = opt.join("deep/dir");
    let cron = PathBuf::from("/etc/cron.d").join(unique("launcher-test"));
    let listing = |p: &str| {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let (host_root, host_opt, host_cron) = (listing("/"), listing("/opt"), listing("/etc/cron.d"));
    let mut job = user_job(|_, s| {
        s.command = Some(format!(
            "cat {deep}/hello {cron} {top}/hello; \
             echo ---; ls -A / | sort; echo ---; ls -A /opt | sort; echo ---; ls -A /etc/cron.d | sort; echo ---; \
             stat -c '%a %u' /opt {opt}; \
             if touch /opt/new 2>/dev/null || mkdir {opt}/new 2>/dev/null; then echo writable; else echo read-only; fi; \
             touch \"$TMPDIR/scratch\" && echo tmpdir-ok",
            deep = deep.display(),
            cron = cron.display(),
            top = top.display(),
            opt = opt.display(),
        ));
        s.mounts = vec![
            BindMount {
                source: data.clone(),
                target: deep.clone(),
                read_only: true,
            },
            BindMount {
                source: note.clone(),
                target: cron.clone(),
                read_only: true,
            },
            BindMount {
                source: data.clone(),
                target: top.clone(),
                read_only: false,
            },
        ];
    });
    let code = job.run();
    let out = job.user_output();
    assert_eq!(code, 0, "{}\n{out}", job.log());
    for p in [&opt, &cron, &top] {
        assert!(
            std::fs::symlink_metadata(p).is_err(),
            "{} was made on the host",
            p.display()
        );
    }
    let parts: Vec<&str> = out.split("---\n").collect();
    assert_eq!(parts.len(), 5, "{out}");
    assert_eq!(parts[0], "hello\n* * * * * root sh /tmp/x\nhello\n");
    let with = |mut host: Vec<String>, added: &Path| {
        host.push(added.file_name().unwrap().to_string_lossy().into_owned());
        host.sort();
        host.join("\n") + "\n"
    };
    assert_eq!(
        parts[1],
        with(host_root, &top),
        "the job's / holds the host's entries and the target"
    );
    assert_eq!(parts[2], with(host_opt, &opt));
    assert_eq!(parts[3], with(host_cron, &cron));
    let opt_mode = std::fs::metadata("/opt").unwrap().mode() & 0o7777;
    assert_eq!(
        parts[4],
        format!("{opt_mode:o} 0\n755 0\nread-only\ntmpdir-ok\n"),
        "the scaffold keeps /opt's mode and owner; what is made on it is root's and read-only"
    );
    assert!(
        !job.path().join(".scaffold").exists(),
        "the staging directory is removed"
    );
}

/// (root) Sources are reached as the job's user: a link the user made to /root is not followed,
/// and a source inside a directory only root may search fails exactly like a missing one, so a
/// mount cannot be used to learn what such a directory holds.
#[test]
fn mount_sources_are_resolved_as_the_user() {
    let base = open_tempdir();
    let mine = user_dir(base.path(), "mine");
    let target = user_dir(base.path(), "target");
    user_symlink("/root", &mine.join("to-root"));
    let private = base.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::create_dir(private.join("data")).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let fail = |source: PathBuf| {
        let mut job = user_job(|_, s| {
            s.command = Some("echo ran".into());
            s.mounts = vec![BindMount {
                source,
                target: target.clone(),
                read_only: true,
            }];
        });
        let code = job.run();
        assert!(job.user_output().is_empty(), "the job ran: {}", job.log());
        (code, job.failed().expect("failed.json").message)
    };
    let (code, message) = fail(mine.join("to-root"));
    assert_eq!(
        (code, message.as_str()),
        (
            127,
            format!(
                "mount source {}: a symbolic link (not followed)",
                mine.join("to-root").display()
            )
            .as_str()
        )
    );
    // Through a link in the middle, too.
    let (_, message) = fail(mine.join("to-root/.bashrc"));
    assert!(message.ends_with("a symbolic link (not followed)"), "{message}");
    let existing = private.join("data");
    let missing = private.join("nothing");
    let (code_existing, said_existing) = fail(existing.clone());
    let (code_missing, said_missing) = fail(missing.clone());
    assert_eq!(said_existing, not_accessible(&existing));
    assert_eq!(said_missing, not_accessible(&missing));
    assert_eq!(code_existing, code_missing);
}

/// (root) A target reached through a symbolic link is refused, wherever the link is: a user's
/// link to /etc never puts the mount (or a made-up target) on /etc.
#[test]
fn mount_targets_are_not_followed_through_links() {
    let base = open_tempdir();
    let mine = user_dir(base.path(), "mine");
    let data = user_dir(base.path(), "data");
    user_symlink("/etc", &mine.join("link"));
    let name = unique("launcher-test");
    for target in [mine.join("link").join(&name), mine.join("link")] {
        let mut job = user_job(|_, s| {
            s.command = Some("echo ran".into());
            s.mounts = vec![BindMount {
                source: data.clone(),
                target: target.clone(),
                read_only: false,
            }];
        });
        assert_eq!(job.run(), 127, "{}", job.log());
        job.assert_failed(&format!(
            "mount target {}: a symbolic link (not followed)",
            mine.join("link").display()
        ));
        assert!(job.user_output().is_empty());
    }
    assert!(!Path::new("/etc").join(&name).exists());
}

/// (root) A missing target is not made in a directory the user may enter but not list: each of
/// its entries would show up, by name, in the job's /proc/self/mountinfo.
#[test]
fn no_scaffold_over_a_directory_the_user_cannot_list() {
    let base = open_tempdir();
    let data = user_dir(base.path(), "data");
    let unlisted = base.path().join("unlisted");
    std::fs::create_dir(&unlisted).unwrap();
    std::fs::create_dir(unlisted.join("hidden-name")).unwrap();
    std::fs::set_permissions(&unlisted, std::fs::Permissions::from_mode(0o711)).unwrap();
    let target = unlisted.join("new");
    let mut job = user_job(|_, s| {
        s.command = Some("cat /proc/self/mountinfo".into());
        s.mounts = vec![BindMount {
            source: data.clone(),
            target: target.clone(),
            read_only: false,
        }];
    });
    assert_eq!(job.run(), 127, "{}", job.log());
    job.assert_failed(&format!(
        "mount target {}: missing, and the directory it would be made in may not be listed by the user",
        target.display()
    ));
    assert!(!job.user_output().contains("hidden-name"));
    assert!(!target.exists());
}

/// (root) Nothing is mounted on or below /proc, through which the supervisor reaches what it
/// binds (a user's directory there would choose it), nor over the root directory.
#[test]
fn proc_and_the_root_cannot_be_mounted_over() {
    let base = open_tempdir();
    let mine = user_dir(base.path(), "mine");
    std::fs::create_dir_all(mine.join("self/fd")).unwrap();
    for (target, why) in [
        ("/proc", "nothing may be mounted on or below /proc"),
        ("/proc/self", "nothing may be mounted on or below /proc"),
        (
            "/proc/sys/launcher-test",
            "nothing may be mounted on or below /proc",
        ),
        ("/", "the root directory cannot be mounted over"),
    ] {
        let mut job = user_job(|_, s| {
            s.command = Some("echo ran".into());
            s.mounts = vec![BindMount {
                source: mine.clone(),
                target: target.into(),
                read_only: false,
            }];
        });
        assert_eq!(job.run(), 127, "{}", job.log());
        job.assert_failed(&format!("mount target {target}: {why}"));
    }
}

/// Unmounts a mount the test made in the host's namespace, however the test ends.
struct HostMount(PathBuf);

impl Drop for HostMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// (root) A bind brings nothing mounted below its source along (their flags would escape the
/// bind's nosuid, nodev and ro): the job sees the directory under such a mount instead.
#[test]
fn submounts_of_a_source_are_not_carried_in() {
    require_root();
    let base = open_tempdir();
    let src = user_dir(base.path(), "src");
    let sub = user_dir(&src, "sub");
    let target = user_dir(base.path(), "target");
    nix::mount::mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("mode=0755"),
    )
    .unwrap();
    let _unmount = HostMount(sub.clone());
    std::fs::write(sub.join("on-the-submount"), "x").unwrap();
    let mut job = user_job(|_, s| {
        s.command = Some(format!("ls -A {}/sub | wc -l", target.display()));
        s.mounts = vec![BindMount {
            source: src.clone(),
            target: target.clone(),
            read_only: false,
        }];
    });
    assert_eq!(job.run(), 0, "{}", job.log());
    assert_eq!(job.user_output(), "0\n");
}

/// (root) The supervisor makes an output file's missing directories as the job's user, after
/// it gave up root: they and the file belong to the user.
#[test]
fn output_directories_are_made_as_the_user() {
    let mut job = user_job(|d, s| {
        let output = scratch_of(d).join("output").join(TEST_USER);
        s.command = Some("echo made".into());
        s.stdout_file = output.join("nested/deeper/job.out");
        s.stderr_file = output.join("nested/deeper/job.out");
    });
    assert_eq!(job.run(), 0, "{}", job.log());
    let output = job.scratch().join("output").join(TEST_USER);
    let uid = test_user().uid.as_raw();
    for p in ["nested", "nested/deeper", "nested/deeper/job.out"] {
        let meta = std::fs::metadata(output.join(p)).unwrap();
        assert_eq!(meta.uid(), uid, "{p} was made by root");
    }
    assert_eq!(
        std::fs::read_to_string(output.join("nested/deeper/job.out")).unwrap(),
        "made\n"
    );
}

/// A job runs with no_new_privs unless allow_new_privileges is set.
#[test]
fn no_new_privs_unless_allowed() {
    for (allow, expected) in [(false, 1), (true, 0)] {
        let mut job = Job::new(|_, s| {
            s.command = Some("grep NoNewPrivs /proc/self/status".into());
            s.allow_new_privileges = allow;
        });
        assert_eq!(job.run(), 0, "{}", job.log());
        assert_eq!(job.read("out"), format!("NoNewPrivs:\t{expected}\n"));
    }
}

/// The supervisor does not write output through a symbolic link planted at the output path, nor
/// into a FIFO (nor does it wait for a reader): the job fails, naming the reason.
#[test]
fn output_files_must_be_regular_files() {
    let mut job = Job::new(|d, s| {
        s.command = Some("echo written".into());
        s.stdout_file = d.join("link");
    });
    std::fs::write(job.path().join("elsewhere"), "kept\n").unwrap();
    std::os::unix::fs::symlink(job.path().join("elsewhere"), job.path().join("link")).unwrap();
    assert_eq!(job.run(), 127);
    job.assert_failed("link: it is a symbolic link (not followed)");
    assert_eq!(job.read("elsewhere"), "kept\n");

    let mut job = Job::new(|d, s| {
        s.command = Some("echo written".into());
        s.stdout_file = d.join("fifo");
    });
    nix::unistd::mkfifo(
        &job.path().join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o666),
    )
    .unwrap();
    assert_eq!(job.run(), 127);
    job.assert_failed("fifo: it is not a regular file");
}

/// Without switching users (unprivileged) a requested namespace is skipped, and the log says so
/// rather than pretending.
#[test]
fn unprivileged_run_skips_the_namespace_and_says_so() {
    let mut job = Job::new(|d, s| {
        s.command = Some("cat secret/key".into());
        s.switch_user = false;
        s.namespace = true;
        s.masked_paths = vec![d.join("secret")];
    });
    std::fs::create_dir(job.path().join("secret")).unwrap();
    std::fs::write(job.path().join("secret/key"), "visible").unwrap();
    assert_eq!(job.run(), 0);
    assert_eq!(job.read("out"), "visible");
    assert!(
        job.log().contains("running without a mount namespace"),
        "{}",
        job.log()
    );
}

/// While the job runs: started.json names it (pid and start ticks match a live process),
/// it leads its own process group (pid == pgid), and the supervisor leads its own session,
/// apart from both the test (the "plugin") and the job. After it ends it is no longer alive.
#[test]
fn started_job_leads_its_own_group_while_running() {
    let mut job = Job::new(|d, s| {
        s.command = Some(format!(
            "read -r pid comm state ppid pgrp rest < /proc/$$/stat; echo \"$pid $pgrp\"; read go < {}",
            d.join("fifo").display()
        ));
    });
    nix::unistd::mkfifo(
        &job.path().join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o666),
    )
    .unwrap();
    job.start();
    let started = job.await_started();
    let sup = job.supervisor_pid();
    assert_eq!(started.supervisor_pid, sup);
    assert_eq!(
        Some(started.supervisor_start_ticks),
        spec::process_start_ticks(sup)
    );
    assert!(spec::process_alive(started.pid, started.pid_start_ticks));
    assert!(started.started_at.ends_with('Z'), "{}", started.started_at);
    let fields = stat_fields(started.pid);
    assert_eq!(fields[1], sup.to_string(), "the supervisor is the job's parent");
    assert_eq!(fields[2], started.pid.to_string(), "pgid == pid");
    let sup_fields = stat_fields(sup);
    assert_eq!(
        sup_fields[3],
        sup.to_string(),
        "the supervisor leads its own session"
    );
    assert_ne!(
        sup_fields[2],
        stat_fields(std::process::id() as i32)[2],
        "not in the plugin's group"
    );

    // Release the job: the fifo has a reader once the job reached its `read`.
    let mut fifo = wait_until("the job to open its fifo", || {
        OpenOptions::new()
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(job.path().join("fifo"))
            .ok()
    });
    fifo.write_all(b"go\n").unwrap();
    drop(fifo);
    assert_eq!(job.wait().code(), Some(0), "{}", job.log());
    job.assert_exited(0, None);
    assert_eq!(job.read("out"), format!("{} {}\n", started.pid, started.pid));
    assert!(!spec::process_alive(started.pid, started.pid_start_ticks));
}

/// SIGTERM sent to the supervisor is forwarded to the job's group: the job ends with 143 and
/// the supervisor passes that through.
#[test]
fn sigterm_to_the_supervisor_is_forwarded_to_the_job() {
    let mut job = Job::new(|_, s| {
        s.exe = Some("sleep".into());
        s.args = vec!["60".into()];
    });
    job.start();
    let started = job.await_started();
    kill(Pid::from_raw(job.supervisor_pid()), Signal::SIGTERM).unwrap();
    let status = job.wait();
    assert_eq!(status.code(), Some(143), "{}", job.log());
    job.assert_exited(143, Some(15));
    assert!(!spec::process_alive(started.pid, started.pid_start_ticks));
    assert!(
        job.log().contains("forwarded SIGTERM to the job's process group"),
        "{}",
        job.log()
    );
}

/// A SIGTERM that reaches the supervisor before the job exists neither kills the supervisor
/// nor is lost: it is held and forwarded once the job starts (143).
#[test]
fn sigterm_during_setup_is_held_for_the_job() {
    let mut job = Job::new(|_, s| {
        s.exe = Some("sleep".into());
        s.args = vec!["60".into()];
    });
    // The supervisor blocks reading its spec from a fifo until the test has signalled it.
    let spec_json = serde_json::to_vec(&job.spec).unwrap();
    let spec_path = job.path().join(spec::SPEC_FILE);
    std::fs::remove_file(&spec_path).unwrap();
    nix::unistd::mkfifo(&spec_path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    job.start();
    let sup = job.supervisor_pid();
    // Wait until SIGTERM is caught (bit 14 of SigCgt), i.e. the handlers are installed.
    wait_until("the supervisor to catch SIGTERM", || {
        let status = std::fs::read_to_string(format!("/proc/{sup}/status")).ok()?;
        let caught = status.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
        (u64::from_str_radix(caught.trim(), 16).ok()? & (1 << 14) != 0).then_some(())
    });
    kill(Pid::from_raw(sup), Signal::SIGTERM).unwrap();
    // Non-blocking, so a supervisor that died of the signal fails the test instead of hanging it.
    let mut fifo = wait_until("the supervisor to open its spec", || {
        OpenOptions::new()
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(&spec_path)
            .ok()
    });
    fifo.write_all(&spec_json).unwrap();
    drop(fifo);
    let status = job.wait();
    assert_eq!(status.code(), Some(143), "{}", job.log());
    job.assert_exited(143, Some(15));
}

/// A spec that cannot be read fails the job with failed.json naming the file.
#[test]
fn unreadable_spec_fails_the_job() {
    let mut job = Job::shell("true");
    std::fs::write(job.path().join(spec::SPEC_FILE), "{ not json").unwrap();
    assert_eq!(job.run(), 127);
    job.assert_failed("cannot read the job's spec");
}
