//! Looking at the file system on behalf of a user, from a process that is root.
//!
//! A root service that acts on paths a user named (a mount source, an output file) must not
//! lend the user its own reach: it must not follow a symbolic link the user planted, must not
//! reach through a directory the user cannot search, and must not tell the user, through the
//! difference between two error messages, what lies behind such a directory.
//!
//! Every path is therefore walked from `/` one component at a time with
//! `openat(O_PATH | O_NOFOLLOW)`. A component that is a symbolic link is refused; before each
//! step, the directory stepped from is checked, from `fstat` of its descriptor, against the
//! user's credentials ([`Creds`]) for search permission. What the caller gets is a descriptor of
//! the object that was checked, so whatever it does next (bind it, read it) acts on that object
//! and not on whatever the path names a moment later.
//!
//! Permission is judged from the mode bits, owner and group only, as the kernel does without
//! POSIX ACLs. An ACL entry that denies a user what the mode bits allow is not seen. The
//! errors ([`UserFsError`]) say only what the user could have found out by themselves: a path
//! that does not exist and a path the user may not reach read the same.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, openat, OFlag};
use nix::sys::stat::{fstat, FileStat, Mode, SFlag};
use nix::unistd::{Gid, User};

/// Who a path is looked at for: a user id, primary group and supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Permission bits, as in the "other" triplet of a mode, for [`Creds::permits`].
pub const READ: u32 = 0o4;
pub const SEARCH: u32 = 0o1;

impl Creds {
    /// The credentials of user `name` from the user database, with the supplementary groups
    /// `initgroups` would give them. `Ok(None)` when there is no such user. May block (NSS).
    pub fn of_user(name: &str) -> io::Result<Option<Creds>> {
        match User::from_name(name)? {
            Some(user) => Creds::of(&user).map(Some),
            None => Ok(None),
        }
    }

    /// The credentials of the user with uid `uid`; `Ok(None)` when the user database has no
    /// such user. May block (NSS).
    pub fn of_uid(uid: u32) -> io::Result<Option<Creds>> {
        match User::from_uid(uid.into())? {
            Some(user) => Creds::of(&user).map(Some),
            None => Ok(None),
        }
    }

    /// The credentials of `user`, with the supplementary groups `initgroups` would give them.
    pub fn of(user: &User) -> io::Result<Creds> {
        let name = CString::new(user.name.as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a user name holds a NUL byte"))?;
        let groups = nix::unistd::getgrouplist(&name, user.gid)?
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        Ok(Creds {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
        })
    }

    /// Whether the mode bits of `st` grant these credentials every bit of `want` ([`READ`],
    /// [`SEARCH`]). Root may read and search anything, as `CAP_DAC_OVERRIDE` lets it.
    pub fn permits(&self, st: &FileStat, want: u32) -> bool {
        if self.uid == 0 {
            return true;
        }
        // Only one class applies, even when a later one would grant more: an owner denied by
        // the owner bits is denied, as the kernel does.
        let shift = if st.st_uid == self.uid {
            6
        } else if st.st_gid == self.gid || self.groups.contains(&st.st_gid) {
            3
        } else {
            0
        };
        (st.st_mode >> shift) & want == want
    }
}

/// Why a path cannot be used for a user. Each message names the path as the user gave it and
/// says nothing the user could not have learnt themselves.
#[derive(Debug, thiserror::Error)]
pub enum UserFsError {
    #[error("{}: not an absolute path without '..'", .0.display())]
    BadPath(PathBuf),
    /// Missing, or behind a directory the user cannot search, or a file the user may not read:
    /// one message for all, so it cannot be used to probe what the user may not see.
    #[error("{}: no such file or directory, or not accessible to user", .0.display())]
    NotFound(PathBuf),
    /// The path up to and including the link.
    #[error("{}: a symbolic link (not followed)", .0.display())]
    Symlink(PathBuf),
    #[error("{}: not a regular file", .0.display())]
    NotRegular(PathBuf),
    /// The path up to and including the component that is not a directory.
    #[error("{}: not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

impl UserFsError {
    fn io(path: &Path, e: Errno) -> UserFsError {
        UserFsError::Io {
            path: path.to_path_buf(),
            source: e.into(),
        }
    }
}

/// How far a walk got: the object at the end of the longest existing prefix of the path, and
/// the components below it that do not exist.
#[derive(Debug)]
pub struct Walked {
    /// `O_PATH` descriptor of the last existing component (a directory if `missing` is not
    /// empty, and then one the user may search).
    pub fd: OwnedFd,
    /// Its path.
    pub existing: PathBuf,
    /// `O_PATH` descriptor of the directory `fd` was opened from (`None` for `/`). Opening
    /// the last component from it again reaches whatever is mounted there now.
    pub parent: Option<OwnedFd>,
    /// The components below `existing` that do not exist, in order; empty when all do.
    pub missing: Vec<OsString>,
}

/// The normal components of `path`, which must be absolute and hold no `..`.
fn components(path: &Path) -> Result<Vec<&OsStr>, UserFsError> {
    let mut names = Vec::new();
    for (i, c) in path.components().enumerate() {
        match c {
            Component::RootDir if i == 0 => {}
            Component::Normal(name) if i > 0 => names.push(name),
            Component::CurDir => {}
            _ => return Err(UserFsError::BadPath(path.to_path_buf())),
        }
    }
    if !path.has_root() {
        return Err(UserFsError::BadPath(path.to_path_buf()));
    }
    Ok(names)
}

fn stat(fd: impl AsFd, path: &Path) -> Result<FileStat, UserFsError> {
    fstat(fd).map_err(|e| UserFsError::io(path, e))
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

fn is_dir(st: &FileStat) -> bool {
    kind(st) == SFlag::S_IFDIR
}

/// Walks `path` from `/` as described in the module doc. With `allow_missing`, a component that
/// does not exist ends the walk successfully (see [`Walked`]); without, it is an error.
fn walk(path: &Path, creds: &Creds, allow_missing: bool) -> Result<Walked, UserFsError> {
    let names = components(path)?;
    let not_found = || UserFsError::NotFound(path.to_path_buf());
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut here = PathBuf::from("/");
    let mut fd =
        open("/", flags | OFlag::O_DIRECTORY, Mode::empty()).map_err(|e| UserFsError::io(&here, e))?;
    let mut parent = None;
    for (i, name) in names.iter().enumerate() {
        let st = stat(&fd, &here)?;
        if !is_dir(&st) {
            return Err(UserFsError::NotADirectory(here));
        }
        if !creds.permits(&st, SEARCH) {
            return Err(not_found());
        }
        match openat(&fd, *name, flags, Mode::empty()) {
            Ok(next) => {
                here.push(name);
                if kind(&stat(&next, &here)?) == SFlag::S_IFLNK {
                    return Err(UserFsError::Symlink(here));
                }
                parent = Some(std::mem::replace(&mut fd, next));
            }
            Err(Errno::ENOENT) if allow_missing => {
                return Ok(Walked {
                    fd,
                    existing: here,
                    parent,
                    missing: names[i..].iter().map(|n| n.to_os_string()).collect(),
                });
            }
            // Root is refused only where root squashing (NFS) makes it an ordinary user.
            Err(Errno::ENOENT | Errno::EACCES | Errno::EPERM) => return Err(not_found()),
            Err(e) => return Err(UserFsError::io(&here.join(name), e)),
        }
    }
    Ok(Walked {
        fd,
        existing: here,
        parent,
        missing: Vec::new(),
    })
}

/// An `O_PATH` descriptor of the object at `path`, reached as described in the module doc: no
/// symbolic link in any component, every directory on the way searchable by `creds`. The object
/// itself is not checked (a caller wanting to read or enter it checks that on the descriptor).
pub fn resolve(path: &Path, creds: &Creds) -> Result<OwnedFd, UserFsError> {
    walk(path, creds, false).map(|w| w.fd)
}

/// Like [`resolve`], but a path whose tail does not exist is no error: the walk stops at the
/// deepest existing directory, which `creds` may search, and says which components are missing.
pub fn resolve_existing(path: &Path, creds: &Creds) -> Result<Walked, UserFsError> {
    walk(path, creds, true)
}

/// Checks that `path` is a directory `creds` may enter (search), reached without symbolic links.
pub fn check_dir_enterable(path: &Path, creds: &Creds) -> Result<(), UserFsError> {
    let fd = resolve(path, creds)?;
    let st = stat(&fd, path)?;
    if !is_dir(&st) {
        return Err(UserFsError::NotADirectory(path.to_path_buf()));
    }
    if !creds.permits(&st, SEARCH) {
        return Err(UserFsError::NotFound(path.to_path_buf()));
    }
    Ok(())
}

/// Opens the regular file at `path` for reading, if `creds` may read it and reach it without
/// symbolic links. A FIFO or device is refused before it is opened, so nothing blocks and no
/// device sees an open.
pub fn open_read(path: &Path, creds: &Creds) -> Result<File, UserFsError> {
    let fd = resolve(path, creds)?;
    let st = stat(&fd, path)?;
    if kind(&st) != SFlag::S_IFREG {
        return Err(UserFsError::NotRegular(path.to_path_buf()));
    }
    if !creds.permits(&st, READ) {
        return Err(UserFsError::NotFound(path.to_path_buf()));
    }
    // Reopening the checked descriptor through its /proc link opens that very file, whatever
    // the path names by now. O_NONBLOCK only in case the kernel disagrees about its kind.
    let file = open(
        format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(),
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UserFsError::io(path, e))?;
    let opened = stat(&file, path)?;
    if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino) || kind(&opened) != SFlag::S_IFREG {
        return Err(UserFsError::NotRegular(path.to_path_buf()));
    }
    Ok(File::from(file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    const NOBODY: u32 = 65534;

    fn nobody() -> Creds {
        Creds {
            uid: NOBODY,
            gid: NOBODY,
            groups: vec![NOBODY],
        }
    }

    fn root() -> Creds {
        Creds {
            uid: 0,
            gid: 0,
            groups: vec![0],
        }
    }

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A directory every user may search, whatever the umask.
    fn open_tempdir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        chmod(d.path(), 0o755);
        d
    }

    fn not_found_text(p: &Path) -> String {
        format!(
            "{}: no such file or directory, or not accessible to user",
            p.display()
        )
    }

    #[test]
    fn resolves_to_the_object_itself() {
        let d = open_tempdir();
        let f = d.path().join("f");
        std::fs::write(&f, "x").unwrap();
        let fd = resolve(&f, &nobody()).unwrap();
        let st = fstat(&fd).unwrap();
        let m = std::fs::metadata(&f).unwrap();
        assert_eq!((st.st_dev, st.st_ino), (m.dev(), m.ino()));
        // `.` and doubled slashes are harmless.
        let dotted = PathBuf::from(format!("/{}/./f", d.path().display()));
        assert!(resolve(&dotted, &nobody()).is_ok());
        resolve(Path::new("/"), &nobody()).unwrap();
    }

    #[test]
    fn relative_paths_and_dotdot_are_refused() {
        for p in ["relative/x", "/tmp/../etc/shadow", "/..", ""] {
            let e = resolve(Path::new(p), &root()).unwrap_err();
            assert!(matches!(e, UserFsError::BadPath(_)), "{p}: {e}");
            assert_eq!(e.to_string(), format!("{p}: not an absolute path without '..'"));
        }
    }

    #[test]
    fn symlinks_are_refused_in_every_component() {
        let d = open_tempdir();
        let real = d.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("f"), "x").unwrap();
        symlink(&real, d.path().join("dirlink")).unwrap();
        symlink(real.join("f"), d.path().join("filelink")).unwrap();
        symlink("/root", d.path().join("to-root")).unwrap();
        for (path, link) in [
            (d.path().join("dirlink/f"), d.path().join("dirlink")),
            (d.path().join("filelink"), d.path().join("filelink")),
            (d.path().join("to-root"), d.path().join("to-root")),
        ] {
            // Even root's own credentials do not make a link acceptable.
            let e = resolve(&path, &root()).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("{}: a symbolic link (not followed)", link.display())
            );
        }
        assert!(matches!(
            open_read(&d.path().join("filelink"), &root()),
            Err(UserFsError::Symlink(_))
        ));
    }

    #[test]
    fn a_root_only_directory_reads_like_a_missing_path() {
        let d = open_tempdir();
        let private = d.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::write(private.join("secret"), "s").unwrap();
        chmod(&private.join("secret"), 0o644);
        chmod(&private, 0o700);
        let secret = private.join("secret");
        let absent = private.join("absent");
        let missing = d.path().join("missing/deeper");
        for p in [&secret, &absent, &missing] {
            let e = resolve(p, &nobody()).unwrap_err();
            assert!(matches!(e, UserFsError::NotFound(_)), "{e}");
            assert_eq!(e.to_string(), not_found_text(p));
            let e = open_read(p, &nobody()).unwrap_err();
            assert_eq!(e.to_string(), not_found_text(p));
        }
        // The same paths for root: the secret exists.
        assert!(resolve(&secret, &root()).is_ok());
        assert!(matches!(resolve(&absent, &root()), Err(UserFsError::NotFound(_))));
        // A directory one cannot search cannot be entered either.
        let e = check_dir_enterable(&private, &nobody()).unwrap_err();
        assert_eq!(e.to_string(), not_found_text(&private));
        check_dir_enterable(&private, &root()).unwrap();
    }

    #[test]
    fn groups_and_owner_classes_decide_as_the_kernel_does() {
        let d = open_tempdir();
        let g = d.path().join("group-only");
        std::fs::create_dir(&g).unwrap();
        std::fs::write(g.join("f"), "x").unwrap();
        chmod(&g.join("f"), 0o644);
        let gid = 4242;
        nix::unistd::chown(&g, None, Some(Gid::from_raw(gid))).unwrap();
        chmod(&g, 0o710);
        let member = Creds {
            groups: vec![NOBODY, gid],
            ..nobody()
        };
        assert!(resolve(&g.join("f"), &member).is_ok());
        assert!(resolve(&g.join("f"), &nobody()).is_err());
        let primary = Creds {
            uid: NOBODY,
            gid,
            groups: vec![],
        };
        assert!(resolve(&g.join("f"), &primary).is_ok());
        // The owner is judged by the owner bits alone.
        let owner = Creds {
            uid: std::fs::metadata(&g).unwrap().uid(),
            gid,
            groups: vec![gid],
        };
        if owner.uid != 0 {
            chmod(&g, 0o070);
            assert!(resolve(&g.join("f"), &owner).is_err());
            chmod(&g, 0o710);
        }
    }

    #[test]
    fn entering_directories() {
        let d = open_tempdir();
        let f = d.path().join("file");
        std::fs::write(&f, "x").unwrap();
        check_dir_enterable(d.path(), &nobody()).unwrap();
        let e = check_dir_enterable(&f, &nobody()).unwrap_err();
        assert_eq!(e.to_string(), format!("{}: not a directory", f.display()));
        let e = resolve(&f.join("below"), &nobody()).unwrap_err();
        assert_eq!(e.to_string(), format!("{}: not a directory", f.display()));
        let e = check_dir_enterable(&d.path().join("nope"), &nobody()).unwrap_err();
        assert_eq!(e.to_string(), not_found_text(&d.path().join("nope")));
    }

    #[test]
    fn reading_only_regular_files_the_user_may_read() {
        let d = open_tempdir();
        let f = d.path().join("f");
        std::fs::write(&f, "content").unwrap();
        chmod(&f, 0o644);
        let mut s = String::new();
        open_read(&f, &nobody()).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "content");
        chmod(&f, 0o600);
        assert_eq!(
            open_read(&f, &nobody()).unwrap_err().to_string(),
            not_found_text(&f)
        );
        open_read(&f, &root()).unwrap();
        // Neither a FIFO (which would block) nor a directory nor a device is opened.
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o666)).unwrap();
        for p in [fifo.as_path(), d.path(), Path::new("/dev/null")] {
            let e = open_read(p, &root()).unwrap_err();
            assert_eq!(e.to_string(), format!("{}: not a regular file", p.display()));
        }
    }

    #[test]
    fn a_walk_stops_at_the_deepest_existing_directory() {
        let d = open_tempdir();
        std::fs::create_dir(d.path().join("a")).unwrap();
        let w = resolve_existing(&d.path().join("a/b/c"), &nobody()).unwrap();
        assert_eq!(w.existing, d.path().join("a"));
        assert_eq!(w.missing, [OsString::from("b"), OsString::from("c")]);
        let m = std::fs::metadata(d.path().join("a")).unwrap();
        let st = fstat(&w.fd).unwrap();
        assert_eq!((st.st_dev, st.st_ino), (m.dev(), m.ino()));
        let w = resolve_existing(&d.path().join("a"), &nobody()).unwrap();
        assert!(w.missing.is_empty());
        let st = fstat(w.parent.unwrap()).unwrap();
        let m = std::fs::metadata(d.path()).unwrap();
        assert_eq!((st.st_dev, st.st_ino), (m.dev(), m.ino()));
        assert!(resolve_existing(Path::new("/"), &nobody())
            .unwrap()
            .parent
            .is_none());
        // A directory the user cannot search ends the walk with an error, not a "missing" tail.
        chmod(&d.path().join("a"), 0o700);
        assert!(matches!(
            resolve_existing(&d.path().join("a/b/c"), &nobody()),
            Err(UserFsError::NotFound(_))
        ));
    }

    #[test]
    fn credentials_come_from_the_user_database() {
        let r = Creds::of_user("root").unwrap().unwrap();
        assert_eq!((r.uid, r.gid), (0, 0));
        assert!(r.groups.contains(&0), "{r:?}");
        assert_eq!(Creds::of_uid(0).unwrap(), Some(r));
        assert_eq!(Creds::of_user("no-such-user-xyz-42").unwrap(), None);
    }
}
