//! A job's host mounts, bound by the root supervisor inside the job's mount namespace.
//!
//! A policy on the node decides who may mount what; this is the mechanism, and it must stay safe
//! for every mount the policy lets through. A mount must give the job nothing its user could not
//! reach anyway, and must change nothing on the host:
//!
//! * **Source**: resolved as the job's user ([`userfs::resolve`]: no symbolic link in any
//!   component, every directory on the way searchable by the user) and bound from the descriptor
//!   that walk returned (`/proc/self/fd/N`), so what was checked is what is bound.
//! * **Target**: walked the same way (a target the user could not reach would be useless to the
//!   job, and refusing it like a missing path keeps the errors from telling what lies behind a
//!   directory the user cannot search), and mounted onto through its descriptor. `/` itself is
//!   refused, and so is `/proc` and anything below it, through which the supervisor reaches
//!   its descriptors.
//! * **A missing target** is created on a *scaffold*, never on the host: a tmpfs laid over the
//!   deepest existing directory, holding a bind mount of each of its entries (a copy of each
//!   symbolic link), on which the missing directories are made. The scaffold keeps the mode and
//!   owner of the directory it covers and is made read-only, so the job cannot write into it.
//! * **Every bind** is non-recursive (see [`attach`]) and remounted `nosuid,nodev` (and `ro` when
//!   asked), keeping `ro` and `noexec` when the source's mount has them, so a setuid binary or a
//!   device node the user placed in the source gains nothing.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use launcher_plugin_api::userfs::{self, Creds};
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{open, openat, readlinkat, AtFlags, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{fchmodat, fstat, fstatat, mkdirat, FchmodatFlags, FileStat, Mode, SFlag};
use nix::sys::statfs::{statfs, PROC_SUPER_MAGIC};
use nix::sys::statvfs::{fstatvfs, FsFlags};
use nix::unistd::{chroot, fchdir, fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use tracing::{info, warn};

use super::SetupError;
use crate::spec::BindMount;

/// The directory, in the job directory, where a scaffold is put together before it is moved
/// over the directory it covers.
const STAGE: &str = ".scaffold";

/// The path through which the kernel reaches exactly the object `fd` refers to.
fn proc_fd(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn open_path(dir: impl AsFd, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

fn is_dir(st: &FileStat) -> bool {
    kind(st) == SFlag::S_IFDIR
}

/// Turns a failed system call into a namespace error saying what was being done.
fn failed(what: impl Into<String>) -> impl FnOnce(Errno) -> SetupError {
    let what = what.into();
    move |e| SetupError::Namespace {
        what,
        source: e.into(),
    }
}

/// Binds `m` into the current mount namespace for a job run with `creds`. `job_dir` is the job
/// directory (the current directory, given relatively), where a scaffold is staged.
pub(super) fn bind(job_dir: &Path, m: &BindMount, creds: &Creds) -> Result<(), SetupError> {
    // Every mount below goes through /proc/self/fd: a mount there would let whoever made it
    // choose what the supervisor binds, and where.
    if m.target.starts_with("/proc") {
        return Err(SetupError::MountTargetRefused {
            target: m.target.clone(),
            why: "nothing may be mounted on or below /proc",
        });
    }
    match statfs("/proc/self/fd") {
        Ok(fs) if fs.filesystem_type() == PROC_SUPER_MAGIC => {}
        _ => {
            return Err(SetupError::Namespace {
                what: "/proc/self/fd is not the kernel's procfs in the job's namespace".into(),
                source: Errno::ENOTSUP.into(),
            })
        }
    }
    let source = userfs::resolve(&m.source, creds).map_err(SetupError::MountSource)?;
    let src = fstat(&source).map_err(failed(format!(
        "cannot inspect mount source {}",
        m.source.display()
    )))?;
    let walked = userfs::resolve_existing(&m.target, creds).map_err(SetupError::MountTarget)?;
    let refuse = |why: &'static str| SetupError::MountTargetRefused {
        target: m.target.clone(),
        why,
    };
    let (parent, name, target, created) = if walked.missing.is_empty() {
        let (Some(parent), Some(name)) = (walked.parent, walked.existing.file_name()) else {
            return Err(refuse("the root directory cannot be mounted over"));
        };
        let st = fstat(&walked.fd).map_err(failed(format!(
            "cannot inspect mount target {}",
            m.target.display()
        )))?;
        match (is_dir(&src), is_dir(&st)) {
            (true, false) => return Err(refuse("not a directory, but the source is one")),
            (false, true) => return Err(refuse("a directory, but the source is not")),
            _ => {}
        }
        (parent, name.to_os_string(), walked.fd, false)
    } else {
        let (parent, name, target) = scaffold(job_dir, &walked, is_dir(&src), m, creds)?;
        (parent, name, target, true)
    };
    attach(&source, &src, &parent, &name, &target, m)?;
    info!(
        source = %m.source.display(),
        target = %m.target.display(),
        read_only = m.read_only,
        created_in_namespace = created,
        "bind-mounted (nosuid, nodev)"
    );
    Ok(())
}

/// Binds `source` onto `target` (reached again as `name` in `parent`), then sets its flags.
///
/// Non-recursive: a recursive bind would bring along whatever is mounted below the source (a
/// FUSE mount of the user's, an automounted share), and the remount below sets nosuid, nodev and
/// ro on the top mount only, so a setuid binary on such a submount would still run with its
/// owner's privileges. Unbound, its mount point shows the directory underneath instead.
fn attach(
    source: &OwnedFd,
    src: &FileStat,
    parent: &OwnedFd,
    name: &OsStr,
    target: &OwnedFd,
    m: &BindMount,
) -> Result<(), SetupError> {
    let what = || format!("cannot bind {} onto {}", m.source.display(), m.target.display());
    mount(
        Some(proc_fd(source).as_str()),
        proc_fd(target).as_str(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(failed(what()))?;
    // The target's descriptor still names the directory under the new mount (a /proc fd link
    // never crosses mounts), and remounting through it would change whatever mount that is.
    // Looked up again from its parent, the name leads to the top: the bind just made.
    let top = open_path(parent, name).map_err(failed(what()))?;
    let st = fstat(&top).map_err(failed(what()))?;
    if (st.st_dev, st.st_ino) != (src.st_dev, src.st_ino) {
        return Err(SetupError::MountTargetRefused {
            target: m.target.clone(),
            why: "it changed while it was being mounted",
        });
    }
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if m.read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    // A bind starts with the flags of the source's mount; the remount replaces them, so those
    // that restrict the job must be given again (a noexec source stays noexec). Atime flags are
    // kept by the kernel when none is given.
    let had = fstatvfs(&top).map_err(failed(what()))?.flags();
    for (fs, ms) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if had.contains(fs) {
            flags |= ms;
        }
    }
    mount(
        None::<&str>,
        proc_fd(&top).as_str(),
        None::<&str>,
        flags,
        None::<&str>,
    )
    .map_err(failed(format!(
        "cannot make the bind of {} nosuid and nodev",
        m.target.display()
    )))?;
    let now = fstatvfs(&top).map_err(failed(what()))?.flags();
    let mut must = FsFlags::ST_NOSUID | FsFlags::ST_NODEV;
    if m.read_only {
        must |= FsFlags::ST_RDONLY;
    }
    if !now.contains(must) {
        return Err(SetupError::Namespace {
            what: format!("the bind of {} did not take its flags", m.target.display()),
            source: Errno::EINVAL.into(),
        });
    }
    Ok(())
}

/// Creates the missing part of a mount target in the namespace only: a scaffold over the deepest
/// existing directory `walked.existing` (see the module doc), on which the missing directories
/// and the target itself (a directory when `dir`, else an empty file) are made. Returns the
/// target's parent, its name and the target.
fn scaffold(
    job_dir: &Path,
    walked: &userfs::Walked,
    dir: bool,
    m: &BindMount,
    creds: &Creds,
) -> Result<(OwnedFd, OsString, OwnedFd), SetupError> {
    let covered = &walked.fd;
    let at = walked.existing.display().to_string();
    let what = |step: &str| {
        format!(
            "cannot create mount target {}: a scaffold over {at} failed at {step}",
            m.target.display()
        )
    };
    let st = fstat(covered).map_err(failed(what("inspecting the directory")))?;
    // Every entry gets a bind of its own, and /proc/self/mountinfo shows the job each one's
    // name: names the user could not have listed.
    if !creds.permits(&st, userfs::READ) {
        return Err(SetupError::MountTargetRefused {
            target: m.target.clone(),
            why: "missing, and the directory it would be made in may not be listed by the user (create it first)",
        });
    }
    let job = open(
        job_dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(failed(what("opening the job directory")))?;
    match mkdirat(&job, STAGE, Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(failed(what("making the staging directory"))(e)),
    }
    let point = open_path(&job, OsStr::new(STAGE)).map_err(failed(what("opening the staging directory")))?;
    let options = format!(
        "mode={:o},uid={},gid={}",
        st.st_mode & 0o7777,
        st.st_uid,
        st.st_gid
    );
    mount(
        Some("tmpfs"),
        proc_fd(&point).as_str(),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(options.as_str()),
    )
    .map_err(failed(what("mounting a tmpfs")))?;
    // The staging mount lies below the job directory, which may lie below the directory being
    // covered: unbindable, it is left out of the recursive binds of that directory's entries.
    let stage = open_path(&job, OsStr::new(STAGE)).map_err(failed(what("opening the tmpfs")))?;
    let remount = |flags: MsFlags, step: &str| {
        mount(
            None::<&str>,
            proc_fd(&stage).as_str(),
            None::<&str>,
            flags,
            None::<&str>,
        )
        .map_err(failed(what(step)))
    };
    remount(MsFlags::MS_UNBINDABLE, "marking the tmpfs unbindable")?;
    populate(covered, &stage).map_err(|(step, e)| failed(what(&step))(e))?;

    let (last, dirs) = walked
        .missing
        .split_last()
        .expect("a scaffold is made for a missing path");
    let mut parent = stage.try_clone().map_err(|e| SetupError::Namespace {
        what: what("duplicating a descriptor"),
        source: e,
    })?;
    for name in dirs {
        mkdirat(&parent, name.as_os_str(), Mode::from_bits_truncate(0o755))
            .and_then(|()| {
                fchmodat(
                    &parent,
                    name.as_os_str(),
                    Mode::from_bits_truncate(0o755),
                    FchmodatFlags::FollowSymlink,
                )
            })
            .map_err(failed(what("making a directory")))?;
        parent = openat(
            &parent,
            name.as_os_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(failed(what("opening a directory")))?;
    }
    if dir {
        mkdirat(&parent, last.as_os_str(), Mode::from_bits_truncate(0o755))
            .and_then(|()| {
                fchmodat(
                    &parent,
                    last.as_os_str(),
                    Mode::from_bits_truncate(0o755),
                    FchmodatFlags::FollowSymlink,
                )
            })
            .map_err(failed(what("making the target directory")))?;
    } else {
        openat(
            &parent,
            last.as_os_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map_err(failed(what("making the target file")))?;
    }
    let target = open_path(&parent, last.as_os_str()).map_err(failed(what("opening the target")))?;

    remount(
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC,
        "making the tmpfs read-only",
    )?;
    // Bindable again, so a later scaffold over a directory above this one carries it along.
    remount(MsFlags::MS_PRIVATE, "making the tmpfs private")?;
    mount(
        Some(proc_fd(&stage).as_str()),
        proc_fd(covered).as_str(),
        None::<&str>,
        MsFlags::MS_MOVE,
        None::<&str>,
    )
    .map_err(failed(what("moving the tmpfs into place")))?;
    if walked.parent.is_none() {
        // A mount over the root directory is not seen from a root below it: enter it. The
        // supervisor keeps working in the job directory (its current directory, reached
        // through `job` from outside the new root) and never leaves it by path.
        fchdir(&stage)
            .and_then(|()| chroot("."))
            .and_then(|()| fchdir(&job))
            .map_err(failed(what("entering the new root")))?;
    }
    if let Err(e) = unlinkat(&job, STAGE, UnlinkatFlags::RemoveDir) {
        warn!("cannot remove the staging directory {STAGE} from the job directory: {e}");
    }
    info!(path = %at, "laid a read-only scaffold over a directory to create a mount target in the namespace only");
    Ok((parent, last.clone(), target))
}

/// Fills the scaffold `stage` with a stand-in for each entry of `covered`: a recursive bind of
/// each directory and file (its submounts and flags are the host's, unchanged), and a copy of
/// each symbolic link with its owner. The stage itself, when it lies in `covered`, is skipped.
fn populate(covered: &OwnedFd, stage: &OwnedFd) -> Result<(), (String, Errno)> {
    // The user may search the directory without being allowed to list it: the error names the
    // step, the supervisor's own log (which the user cannot reach) the entry.
    let at = |step: &str, name: &OsStr| {
        warn!(entry = %name.to_string_lossy(), "scaffold: {step} failed");
        step.to_string()
    };
    let own = fstat(stage).map_err(|e| ("inspecting the tmpfs".to_string(), e))?;
    // Listed through the descriptor that was walked, not the path, which names the tmpfs now.
    let listing = open(
        proc_fd(covered).as_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ("listing the directory".to_string(), e))?;
    let mut entries = Dir::from_fd(listing).map_err(|e| ("listing the directory".to_string(), e))?;
    for entry in entries.iter() {
        let entry = entry.map_err(|e| ("listing the directory".to_string(), e))?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let st = match fstatat(covered, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Removed on the host since it was listed.
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err((at("inspecting an entry", name), e)),
        };
        if (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino) {
            continue;
        }
        match kind(&st) {
            SFlag::S_IFLNK => {
                let to = readlinkat(covered, name).map_err(|e| (at("reading a link", name), e))?;
                symlinkat(to.as_os_str(), stage, name)
                    .and_then(|()| {
                        fchownat(
                            stage,
                            name,
                            Some(Uid::from_raw(st.st_uid)),
                            Some(Gid::from_raw(st.st_gid)),
                            AtFlags::AT_SYMLINK_NOFOLLOW,
                        )
                    })
                    .map_err(|e| (at("copying a link", name), e))?;
                continue;
            }
            SFlag::S_IFDIR => mkdirat(stage, name, Mode::from_bits_truncate(0o755))
                .map_err(|e| (at("making a stand-in", name), e))?,
            _ => drop(
                openat(
                    stage,
                    name,
                    OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o644),
                )
                .map_err(|e| (at("making a stand-in", name), e))?,
            ),
        }
        let from = open_path(covered, name).map_err(|e| (at("opening an entry", name), e))?;
        // Replaced on the host since it was looked at (the directory may be the user's): what is
        // bound must be what the stand-in was made for.
        let now = fstat(&from).map_err(|e| (at("inspecting an entry", name), e))?;
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
            return Err((at("binding an entry that changed meanwhile", name), Errno::EAGAIN));
        }
        let onto = open_path(stage, name).map_err(|e| (at("opening a stand-in", name), e))?;
        mount(
            Some(proc_fd(&from).as_str()),
            proc_fd(&onto).as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| (at("binding an entry", name), e))?;
    }
    Ok(())
}
