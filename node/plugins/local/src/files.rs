//! File access of a privileged plugin in directories a job's user may control.
//!
//! The supervisor hands each job directory to the job's user, so the reports in it are that
//! user's claims, and output files are wherever the job said. The plugin (often root) therefore
//! never follows a symbolic link when it writes or reads its state files, never blocks on a FIFO
//! planted in their place, reads at most a small amount, and reads output only from regular files
//! owned by the job's user, reached and read as that user ([`userfs`]): a job whose output path
//! names `/etc/shadow` gets error 7, not the file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use launcher_plugin_api::userfs::{self, Creds, UserFsError};

/// Largest state file read (records hold the job's environment, so allow some room).
pub const MAX_STATE_BYTES: u64 = 8 * 1024 * 1024;

/// Opens a file for reading without following a final symlink or blocking on a FIFO;
/// `Ok(None)` when it does not exist. Anything but a regular file is an error.
fn open_state(path: &Path) -> std::io::Result<Option<File>> {
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(Some(f))
}

/// Reads `dir/name` as JSON if it exists (see the module doc for the precautions).
pub fn read_state<T: for<'de> serde::Deserialize<'de>>(dir: &Path, name: &str) -> std::io::Result<Option<T>> {
    let path = dir.join(name);
    let Some(f) = open_state(&path)? else {
        return Ok(None);
    };
    let mut buf = Vec::new();
    f.take(MAX_STATE_BYTES + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_STATE_BYTES {
        return Err(std::io::Error::other(format!(
            "{} is larger than {MAX_STATE_BYTES} bytes",
            path.display()
        )));
    }
    serde_json::from_slice(&buf)
        .map(Some)
        .map_err(std::io::Error::other)
}

/// Writes `value` as JSON to `dir/name` atomically: a fresh temporary file (created exclusively,
/// so a planted symlink is never written through; mode 0600: records hold secrets), then a
/// rename, which replaces a planted link rather than following it.
pub fn write_state<T: serde::Serialize>(dir: &Path, name: &str, value: &T) -> std::io::Result<()> {
    static N: AtomicU64 = AtomicU64::new(0);
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)?;
    if let Err(e) = f.write_all(&bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    drop(f);
    std::fs::rename(&tmp, dir.join(name)).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Why an output file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum OutputFileError {
    /// A symbolic link, not a regular file, not an absolute path: said as the user could see it.
    #[error(transparent)]
    Refused(UserFsError),
    #[error("{0} is not owned by the job's user")]
    NotOwned(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Opens an output file of a job run with `creds` for reading, as that user could: no symbolic
/// link anywhere on the way, every directory searchable and the file readable by them, and only
/// a regular file owned by them. `Ok(None)` when it does not exist *or* the user could not reach
/// it: the two answer alike, so output paths cannot probe what only root may see.
pub fn open_output(path: &Path, creds: &Creds) -> Result<Option<File>, OutputFileError> {
    let f = match userfs::open_read(path, creds) {
        Ok(f) => f,
        Err(UserFsError::NotFound(_)) => return Ok(None),
        Err(UserFsError::Io { source, .. }) => return Err(source.into()),
        Err(refused) => return Err(OutputFileError::Refused(refused)),
    };
    if f.metadata()?.uid() != creds.uid {
        return Err(OutputFileError::NotOwned(path.display().to_string()));
    }
    Ok(Some(f))
}

/// The real uid of process `pid`, from `/proc/<pid>/status`.
pub fn process_uid(pid: i32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Uid:")?.split_whitespace().next()?.parse().ok())
}

/// The owner of a path (not following a final link).
pub fn owner(path: &Path) -> std::io::Result<u32> {
    Ok(std::fs::symlink_metadata(path)?.uid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_files_round_trip_and_links_are_neither_followed_nor_written_through() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_state::<u32>(d.path(), "x.json").unwrap(), None);
        write_state(d.path(), "x.json", &7u32).unwrap();
        assert_eq!(read_state::<u32>(d.path(), "x.json").unwrap(), Some(7));
        let mode = std::fs::metadata(d.path().join("x.json")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A link planted as the file is not read through ...
        let target = d.path().join("secret");
        std::fs::write(&target, "41").unwrap();
        std::os::unix::fs::symlink(&target, d.path().join("y.json")).unwrap();
        assert!(read_state::<u32>(d.path(), "y.json").is_err());
        // ... and writing replaces the link, leaving its target alone.
        write_state(d.path(), "y.json", &8u32).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "41");
        assert!(!std::fs::symlink_metadata(d.path().join("y.json"))
            .unwrap()
            .file_type()
            .is_symlink());
        // A FIFO does not block the reader.
        nix::unistd::mkfifo(
            &d.path().join("f.json"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        assert!(read_state::<u32>(d.path(), "f.json").is_err());
        // No temporary files are left.
        let names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn output_is_read_only_from_regular_files_of_the_job_user() {
        use std::os::unix::fs::PermissionsExt;
        let chmod =
            |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        let d = tempfile::tempdir().unwrap();
        chmod(d.path(), 0o755);
        let p = d.path().join("out");
        let me = nix::unistd::getuid().as_raw();
        let mine = Creds {
            uid: me,
            gid: nix::unistd::getgid().as_raw(),
            groups: vec![],
        };
        assert!(open_output(&p, &mine).unwrap().is_none());
        std::fs::write(&p, "x").unwrap();
        chmod(&p, 0o644);
        assert!(open_output(&p, &mine).unwrap().is_some());
        let other = Creds {
            uid: me + 1,
            gid: 65534,
            groups: vec![],
        };
        assert!(matches!(
            open_output(&p, &other),
            Err(OutputFileError::NotOwned(_))
        ));
        assert!(matches!(
            open_output(d.path(), &mine),
            Err(OutputFileError::Refused(UserFsError::NotRegular(_)))
        ));
        // A link is not followed, even to a file of the user's own.
        std::os::unix::fs::symlink(&p, d.path().join("link")).unwrap();
        assert!(matches!(
            open_output(&d.path().join("link"), &mine),
            Err(OutputFileError::Refused(UserFsError::Symlink(_)))
        ));
        // A file the user cannot reach answers like a missing one.
        if me == 0 {
            let nobody = Creds {
                uid: 65534,
                gid: 65534,
                groups: vec![],
            };
            chmod(d.path(), 0o700);
            assert!(open_output(&p, &nobody).unwrap().is_none());
        }
        assert_eq!(process_uid(std::process::id() as i32), Some(me));
        assert_eq!(owner(&p).unwrap(), me);
    }
}
