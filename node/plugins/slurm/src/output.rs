//! GetJobOutput: the job's stdout/stderr files (as Slurm names them) from the start, in
//! chunks, followed until the job ends, then `complete: true`. A file is served only when the
//! job's user owns it: the path comes from the user, the plugin reads as root.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use launcher_plugin_api::messages::{JobOutputRequest, OutputType};
use launcher_plugin_api::output::{follow, sources, Following};

use crate::error::RequestError;
use crate::parse::Status;
use crate::state::SlurmPlugin;

/// How often the files of a running job are looked at again.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// Reads up to `max` bytes from `offset` of a file owned by `uid`; `None` if it does not exist.
fn read_from(
    path: &Path,
    offset: u64,
    max: usize,
    uid: Option<u32>,
) -> Result<Option<Vec<u8>>, RequestError> {
    let shown = path.display();
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RequestError::Internal(format!("cannot open {shown}: {e}"))),
    };
    let meta = f
        .metadata()
        .map_err(|e| RequestError::Internal(format!("cannot read {shown}: {e}")))?;
    if let Some(uid) = uid {
        if meta.uid() != uid {
            return Err(RequestError::OutputNotFound(format!(
                "{shown} does not belong to the job's user; not serving it"
            )));
        }
    }
    if !meta.is_file() {
        return Err(RequestError::OutputNotFound(format!(
            "{shown} is not a regular file"
        )));
    }
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| RequestError::Internal(format!("cannot read {shown}: {e}")))?;
    let mut buf = Vec::new();
    f.take(max as u64)
        .read_to_end(&mut buf)
        .map_err(|e| RequestError::Internal(format!("cannot read {shown}: {e}")))?;
    Ok(Some(buf))
}

/// Streams a job's output until it is complete (the job ended and all was sent).
pub async fn stream(p: Arc<SlurmPlugin>, rid: u64, req: JobOutputRequest) -> Result<(), RequestError> {
    let t = OutputType::from_number(req.output_type)
        .ok_or_else(|| RequestError::Invalid(format!("unknown outputType {}", req.output_type)))?;
    let e = p.find_visible(&req.job_id, &req.username).await?;
    let watch = p
        .subscribe(&e.sj.id)
        .await
        .ok_or_else(|| RequestError::JobNotFound(req.job_id.clone()))?;
    let (out, err) = e.output_paths();
    // A job without a path for a stream (Slurm names none) has no file for it.
    let files: Vec<(PathBuf, &'static str)> = sources(&out, &err, t)
        .into_iter()
        .filter(|(path, _)| !path.is_empty())
        .map(|(path, label)| (PathBuf::from(path), label))
        .collect();
    let uid = e.sj.uid;
    let how = Following {
        out: &p.out,
        request_id: rid,
        job_id: &req.job_id,
        chunk: p.cfg.output_chunk_bytes,
        poll: FOLLOW_POLL,
    };
    let read = move |path: &Path, offset: u64, max: usize| read_from(path, offset, max, uid);
    let ended = |s: &Status| s.is_terminal();
    follow(how, files, t, watch, ended, read).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_of_another_user_are_not_served() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("o");
        std::fs::write(&f, "hello").unwrap();
        let path = f.as_path();
        let mine = nix::unistd::getuid().as_raw();
        assert_eq!(read_from(path, 1, 3, Some(mine)).unwrap(), Some(b"ell".to_vec()));
        assert!(matches!(
            read_from(path, 0, 3, Some(mine + 1)),
            Err(RequestError::OutputNotFound(_))
        ));
        assert_eq!(read_from(Path::new("/nonexistent/x"), 0, 3, None).unwrap(), None);
    }
}
