//! GetJobOutput: the job's output files from the start, in chunks, followed while the job runs,
//! then `complete: true`. Output must be UTF-8 text in JSON: invalid bytes become U+FFFD, and a
//! character is never split across two messages.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use launcher_plugin_api::messages::{JobOutputRequest, OutputType};
use launcher_plugin_api::output::{follow, Following};
use launcher_plugin_api::userfs::Creds;

use crate::error::RequestError;
use crate::files::OutputFileError;
use crate::record::JobRecord;
use crate::state::LocalPlugin;

/// How often files of a running job are looked at again.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Reads up to `max` new bytes from `offset` of a file of the job's user, whose credentials are
/// `creds`. `None` when the file does not exist or that user could not read it.
fn read_from(
    path: &Path,
    offset: u64,
    max: usize,
    creds: &Creds,
) -> Result<Option<Vec<u8>>, OutputFileError> {
    let Some(mut f) = crate::files::open_output(path, creds)? else {
        return Ok(None);
    };
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(max.min(1 << 16));
    f.take(max as u64).read_to_end(&mut buf)?;
    Ok(Some(buf))
}

/// The files a request wants: `(path, label)`.
pub fn sources(rec: &JobRecord, t: OutputType) -> Vec<(PathBuf, &'static str)> {
    launcher_plugin_api::output::sources(&rec.stdout_path, &rec.stderr_path, t)
}

/// The credentials the plugin reads a job's output with: its user's (the plugin's own for a
/// record without a uid written by a plugin that does not switch users).
async fn job_creds(p: &Arc<LocalPlugin>, rec: &JobRecord) -> Result<Creds, RequestError> {
    let uid = rec
        .uid
        .or((!p.ident.switch_user).then_some(p.ident.uid))
        .ok_or_else(|| RequestError::OutputNotFound("the job's user is not recorded".into()))?;
    tokio::task::spawn_blocking(move || Creds::of_uid(uid))
        .await
        .map_err(|e| RequestError::Internal(e.to_string()))?
        .map_err(|e| RequestError::Internal(format!("cannot look up uid {uid}: {e}")))?
        .ok_or_else(|| RequestError::OutputNotFound(format!("the job's user (uid {uid}) no longer exists")))
}

/// Streams a job's output until it is complete (the job ended, or expired from the table, and
/// all was sent), reading its files as the job's user.
pub async fn stream(p: Arc<LocalPlugin>, request_id: u64, req: JobOutputRequest) -> Result<(), RequestError> {
    let t = OutputType::from_number(req.output_type)
        .ok_or_else(|| RequestError::Invalid(format!("unknown outputType {}", req.output_type)))?;
    let rec = p.get_visible(&req.job_id, &req.username).await?;
    let creds = job_creds(&p, &rec).await?;
    let watch = p
        .subscribe(&req.job_id)
        .await
        .ok_or_else(|| RequestError::JobNotFound(req.job_id.clone()))?;
    let read = move |path: &Path, offset: u64, max: usize| {
        read_from(path, offset, max, &creds).map_err(|e| match e {
            OutputFileError::Io(e) => RequestError::io(format!("cannot read {}", path.display()), e),
            refused => RequestError::OutputNotFound(format!("the output cannot be given: {refused}")),
        })
    };
    let how = Following {
        out: &p.out,
        request_id,
        job_id: &req.job_id,
        chunk: p.cfg.output_chunk_bytes,
        poll: FOLLOW_POLL,
    };
    let ended = |rec: &JobRecord| rec.status().is_terminal();
    follow(how, sources(&rec, t), t, watch, ended, read).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_streams_are_one_mixed_stream_when_they_share_a_file() {
        let mut rec: JobRecord = serde_json::from_value(serde_json::json!({
            "job": {"id": "a"}, "stdoutPath": "/o", "stderrPath": "/o"
        }))
        .unwrap();
        assert_eq!(
            sources(&rec, OutputType::Both),
            vec![(PathBuf::from("/o"), "mixed")]
        );
        rec.stderr_path = "/e".into();
        assert_eq!(
            sources(&rec, OutputType::Both),
            vec![(PathBuf::from("/o"), "stdout"), (PathBuf::from("/e"), "stderr")]
        );
        assert_eq!(
            sources(&rec, OutputType::Stderr),
            vec![(PathBuf::from("/e"), "stderr")]
        );
    }
}
