//! A node's data dir on a small tmpfs of its own, so a test can fill the disk under a running
//! node and give the space back (mounting needs root; without it the test fails saying so).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// A tmpfs mounted over a directory; unmounted (lazily) when dropped, even if the test fails.
pub struct Tmpfs {
    dir: PathBuf,
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()?;
    anyhow::ensure!(st.success(), "cp -a {} {} failed", from.display(), to.display());
    Ok(())
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` bytes at `dir` and moves what `dir` held onto it (whoever uses
    /// `dir` must be stopped meanwhile).
    pub fn mount_over(dir: &Path, size: u64) -> anyhow::Result<Tmpfs> {
        let saved = dir.with_extension("before-tmpfs");
        std::fs::rename(dir, &saved).with_context(|| format!("cannot move {} aside", dir.display()))?;
        std::fs::create_dir_all(dir)?;
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::empty(),
            Some(format!("size={size},mode=0700").as_str()),
        )
        .with_context(|| format!("cannot mount a tmpfs at {} (this test needs root)", dir.display()))?;
        let fs = Tmpfs {
            dir: dir.to_path_buf(),
        };
        copy_tree(&saved, dir)?;
        std::fs::remove_dir_all(&saved)?;
        Ok(fs)
    }

    /// Bytes in use on the tmpfs.
    pub fn used(&self) -> anyhow::Result<u64> {
        let st = nix::sys::statvfs::statvfs(&self.dir)?;
        Ok((st.blocks() - st.blocks_free()) * st.fragment_size())
    }

    /// Bytes still free.
    pub fn free(&self) -> anyhow::Result<u64> {
        let st = nix::sys::statvfs::statvfs(&self.dir)?;
        Ok(st.blocks_available() * st.fragment_size())
    }

    /// Changes the size (a tmpfs grows and shrinks in place; files stay).
    pub fn resize(&self, size: u64) -> anyhow::Result<()> {
        mount(
            None::<&str>,
            &self.dir,
            None::<&str>,
            MsFlags::MS_REMOUNT,
            Some(format!("size={size},mode=0700").as_str()),
        )
        .with_context(|| format!("cannot resize the tmpfs at {}", self.dir.display()))?;
        Ok(())
    }

    /// Writes a file named `name` until at most `leave` bytes remain free; returns its path.
    pub fn fill(&self, name: &str, leave: u64) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(name);
        let mut f = std::fs::File::create(&path)?;
        let chunk = vec![0xa5u8; 64 * 1024];
        loop {
            let free = self.free()?;
            if free <= leave {
                break;
            }
            let n = (free - leave).min(chunk.len() as u64) as usize;
            match f.write_all(&chunk[..n]) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                Err(e) => return Err(e.into()),
            }
        }
        f.sync_all()?;
        Ok(path)
    }
}

/// Bytes the files under `dir` hold.
pub fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = umount2(&self.dir, MntFlags::MNT_DETACH);
    }
}
