//! GetJobOutput: the job's stdout/stderr files (as Slurm names them) from the start, in
//! chunks, followed until the job ends, then `complete: true`. A file is served only when the
//! job's user owns it: the path comes from the user, the plugin reads as root.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Duration;

use launcher_plugin_api::envelope::ResponseType;
use launcher_plugin_api::messages::{JobOutputRequest, JobOutputResponse, OutputType};
use launcher_plugin_api::output::{sources, split_at_chars, Utf8Decoder};

use crate::error::RequestError;
use crate::state::SlurmPlugin;

/// How often the files of a running job are looked at again.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// Reads up to `max` bytes from `offset` of a file owned by `uid`; `None` if it does not exist.
fn read_from(path: &str, offset: u64, max: usize, uid: Option<u32>) -> Result<Option<Vec<u8>>, RequestError> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RequestError::Internal(format!("cannot open {path}: {e}"))),
    };
    let meta = f
        .metadata()
        .map_err(|e| RequestError::Internal(format!("cannot read {path}: {e}")))?;
    if let Some(uid) = uid {
        if meta.uid() != uid {
            return Err(RequestError::OutputNotFound(format!(
                "{path} does not belong to the job's user; not serving it"
            )));
        }
    }
    if !meta.is_file() {
        return Err(RequestError::OutputNotFound(format!(
            "{path} is not a regular file"
        )));
    }
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| RequestError::Internal(format!("cannot read {path}: {e}")))?;
    let mut buf = Vec::new();
    f.take(max as u64)
        .read_to_end(&mut buf)
        .map_err(|e| RequestError::Internal(format!("cannot read {path}: {e}")))?;
    Ok(Some(buf))
}

struct Source {
    path: String,
    label: &'static str,
    offset: u64,
    decoder: Utf8Decoder,
    seen: bool,
}

async fn send_text(p: &Arc<SlurmPlugin>, rid: u64, label: &str, text: &str, chunk: usize) {
    for piece in split_at_chars(text, chunk) {
        let msg = JobOutputResponse {
            output: piece.to_string(),
            output_type: label.to_string(),
            complete: false,
        };
        p.out.send(ResponseType::JobOutput, rid, &msg).await;
    }
}

/// Sends everything new in one file.
async fn drain(
    p: &Arc<SlurmPlugin>,
    rid: u64,
    s: &mut Source,
    chunk: usize,
    uid: Option<u32>,
) -> Result<(), RequestError> {
    loop {
        let (path, offset) = (s.path.clone(), s.offset);
        let got = tokio::task::spawn_blocking(move || read_from(&path, offset, chunk, uid))
            .await
            .map_err(|e| RequestError::Internal(e.to_string()))??;
        let Some(bytes) = got else { return Ok(()) };
        s.seen = true;
        if bytes.is_empty() {
            return Ok(());
        }
        s.offset += bytes.len() as u64;
        let text = s.decoder.push(&bytes);
        send_text(p, rid, s.label, &text, chunk).await;
        if bytes.len() < chunk {
            return Ok(());
        }
    }
}

/// Streams a job's output until it is complete.
pub async fn stream(p: Arc<SlurmPlugin>, rid: u64, req: JobOutputRequest) -> Result<(), RequestError> {
    let t = OutputType::from_number(req.output_type)
        .ok_or_else(|| RequestError::Invalid(format!("unknown outputType {}", req.output_type)))?;
    let e = p.find_visible(&req.job_id, &req.username).await?;
    let mut watch = p
        .subscribe(&e.sj.id)
        .await
        .ok_or_else(|| RequestError::JobNotFound(req.job_id.clone()))?;
    let (out, err) = e.output_paths();
    let files = sources(&out, &err, t);
    let label_all = if t == OutputType::Both {
        "mixed"
    } else {
        files[0].1
    };
    let mut srcs: Vec<Source> = files
        .into_iter()
        .filter(|(path, _)| !path.is_empty())
        .map(|(path, label)| Source {
            path,
            label,
            offset: 0,
            decoder: Utf8Decoder::default(),
            seen: false,
        })
        .collect();
    let chunk = p.cfg.output_chunk_bytes;
    let uid = e.sj.uid;
    let mut gone = false;
    loop {
        let ended = gone || watch.borrow_and_update().is_terminal();
        for s in srcs.iter_mut() {
            drain(&p, rid, s, chunk, uid).await?;
        }
        if ended {
            if srcs.iter().all(|s| !s.seen) {
                return Err(RequestError::OutputNotFound(format!(
                    "job {} left no output files",
                    req.job_id
                )));
            }
            for s in srcs.iter_mut() {
                let rest = s.decoder.finish();
                send_text(&p, rid, s.label, &rest, chunk).await;
            }
            let end = JobOutputResponse {
                output: String::new(),
                output_type: label_all.into(),
                complete: true,
            };
            p.out.send(ResponseType::JobOutput, rid, &end).await;
            return Ok(());
        }
        tokio::select! {
            r = watch.changed() => gone = r.is_err(),
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_of_another_user_are_not_served() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("o");
        std::fs::write(&f, "hello").unwrap();
        let path = f.to_str().unwrap();
        let mine = nix::unistd::getuid().as_raw();
        assert_eq!(read_from(path, 1, 3, Some(mine)).unwrap(), Some(b"ell".to_vec()));
        assert!(matches!(
            read_from(path, 0, 3, Some(mine + 1)),
            Err(RequestError::OutputNotFound(_))
        ));
        assert_eq!(read_from("/nonexistent/x", 0, 3, None).unwrap(), None);
    }
}
