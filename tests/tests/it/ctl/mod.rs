//! `launcherctl`, the real binary, against a real gateway in front of real node processes.

mod commands;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use launcher_tests::DEADLINE;

/// The `launcherctl` binary of the caller's cargo profile, built once per test process (as
/// `launcher_tests::process::node_binary` builds `launcher-node`); `LAUNCHERCTL_BIN` overrides it.
pub fn launcherctl_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("LAUNCHERCTL_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("own binary path");
        let mut profile_dir = exe.parent().expect("binary dir").to_path_buf();
        if profile_dir.file_name().is_some_and(|n| n == "deps") {
            profile_dir.pop();
        }
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        // The same build as tests/run-all.sh runs first, so that it is already fresh there: with
        // `-p launcherctl` alone, features unify differently and dependencies would be rebuilt.
        cmd.args(["build", "--quiet", "--workspace", "--bins", "--manifest-path"]);
        cmd.arg(&manifest);
        // Cargo gives the test process its package's variables; ring's build script tracks
        // CARGO_MANIFEST_DIR, so passing them on would rebuild ring (and relink) every time.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            let per_package = [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
                "CARGO_CFG_",
            ]
            .iter()
            .any(|p| name.starts_with(p));
            if per_package || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&&*name) {
                cmd.env_remove(&*name);
            }
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "building launcherctl failed");
        let bin = profile_dir.join("launcherctl");
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
    .clone()
}

/// What one run of `launcherctl` did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn of(out: Output) -> Run {
        Run {
            // Killed by a signal: no code; never mistaken for success.
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts the exit code, showing everything the run printed when it differs.
    #[track_caller]
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(self.code, code, "exit code; the run printed: {self:#?}");
        self
    }

    /// Asserts that an error went to stderr the way users see it: the message, no Rust dump.
    #[track_caller]
    pub fn expect_error(self, code: i32, needles: &[&str]) -> Run {
        let r = self.expect(code);
        assert!(r.stderr.starts_with("launcherctl: error: "), "{r:#?}");
        for n in needles {
            assert!(r.stderr.contains(n), "stderr lacks {n:?}: {r:#?}");
        }
        for dump in ["Api {", "Connect {", "panicked", "RUST_BACKTRACE"] {
            assert!(!r.stderr.contains(dump), "a debug dump on stderr: {r:#?}");
        }
        r
    }
}

/// `launcherctl` with its own HOME and XDG_CONFIG_HOME (so `login` writes there, never into the
/// real user's config) and none of the caller's `LAUNCHER_*` variables.
pub struct Ctl {
    pub home: tempfile::TempDir,
    /// Sent as `LAUNCHER_URL`.
    pub url: String,
}

impl Ctl {
    pub fn new(url: &str) -> anyhow::Result<Ctl> {
        Ok(Ctl {
            home: tempfile::Builder::new().prefix("launcherctl-home-").tempdir()?,
            url: url.to_string(),
        })
    }

    /// Where `login` stores its token.
    pub fn config_file(&self) -> PathBuf {
        self.home.path().join("xdg/launcherctl/config.toml")
    }

    /// The command, not started.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(launcherctl_binary());
        for var in ["LAUNCHER_TOKEN", "LAUNCHER_CA_FILE", "LAUNCHERCTL_CONFIG"] {
            cmd.env_remove(var);
        }
        cmd.env("LAUNCHER_URL", &self.url)
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("xdg"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `launcherctl ARGS` to its end (bounded by the test deadline).
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<Run> {
        let out = tokio::time::timeout(DEADLINE, self.command(args).output())
            .await
            .map_err(|_| anyhow::anyhow!("launcherctl {args:?} did not end within {DEADLINE:?}"))??;
        Ok(Run::of(out))
    }
}
