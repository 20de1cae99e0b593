//! GetJobOutput: the job's output files from the start, in chunks, followed while the job runs,
//! then `complete: true`. Output must be UTF-8 text in JSON: invalid bytes become U+FFFD, and a
//! character is never split across two messages.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use launcher_plugin_api::envelope::ResponseType;
use launcher_plugin_api::messages::{JobOutputRequest, JobOutputResponse, OutputType};
use launcher_plugin_api::output::{split_at_chars, Utf8Decoder};

use launcher_plugin_api::userfs::Creds;

use crate::error::RequestError;
use crate::files::OutputFileError;
use crate::record::JobRecord;
use crate::state::LocalPlugin;

/// How often files of a running job are looked at again.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// One file being streamed.
struct Source {
    path: PathBuf,
    label: &'static str,
    offset: u64,
    decoder: Utf8Decoder,
    seen: bool,
}

/// Reads up to `max` new bytes from `offset` of a file of the job's user, whose credentials are
/// `creds`. `None` when the file does not exist or that user could not read it.
fn read_from(
    path: &std::path::Path,
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

/// Sends everything new in one file of the job's user (`creds`). Returns whether the file
/// exists.
async fn drain(
    p: &Arc<LocalPlugin>,
    request_id: u64,
    s: &mut Source,
    chunk: usize,
    creds: &Creds,
) -> Result<bool, RequestError> {
    loop {
        let (path, offset, creds) = (s.path.clone(), s.offset, creds.clone());
        let got = tokio::task::spawn_blocking(move || read_from(&path, offset, chunk, &creds))
            .await
            .map_err(|e| RequestError::Internal(e.to_string()))?
            .map_err(|e| match e {
                OutputFileError::Io(e) => RequestError::io(format!("cannot read {}", s.path.display()), e),
                refused => RequestError::OutputNotFound(format!("the output cannot be given: {refused}")),
            })?;
        let Some(bytes) = got else { return Ok(false) };
        s.seen = true;
        if bytes.is_empty() {
            return Ok(true);
        }
        s.offset += bytes.len() as u64;
        let text = s.decoder.push(&bytes);
        send_text(p, request_id, s.label, &text, chunk).await;
        if bytes.len() < chunk {
            return Ok(true);
        }
    }
}

async fn send_text(p: &Arc<LocalPlugin>, request_id: u64, label: &str, text: &str, chunk: usize) {
    for piece in split_at_chars(text, chunk) {
        let msg = JobOutputResponse {
            output: piece.to_string(),
            output_type: label.to_string(),
            complete: false,
        };
        p.out.send(ResponseType::JobOutput, request_id, &msg).await;
    }
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

/// Streams a job's output until it is complete (the job ended and all was sent).
pub async fn stream(p: Arc<LocalPlugin>, request_id: u64, req: JobOutputRequest) -> Result<(), RequestError> {
    let t = OutputType::from_number(req.output_type)
        .ok_or_else(|| RequestError::Invalid(format!("unknown outputType {}", req.output_type)))?;
    let rec = p.get_visible(&req.job_id, &req.username).await?;
    let creds = job_creds(&p, &rec).await?;
    let mut watch = p
        .subscribe(&req.job_id)
        .await
        .ok_or_else(|| RequestError::JobNotFound(req.job_id.clone()))?;
    let label_all = if t == OutputType::Both {
        "mixed"
    } else {
        sources(&rec, t)[0].1
    };
    let mut srcs: Vec<Source> = sources(&rec, t)
        .into_iter()
        .map(|(path, label)| Source {
            path,
            label,
            offset: 0,
            decoder: Utf8Decoder::default(),
            seen: false,
        })
        .collect();
    let chunk = p.cfg.output_chunk_bytes;
    // The job left the table (expired) while streaming: what the files hold is all there is.
    let mut gone = false;
    loop {
        // Look at the status before reading: output written before the job ended is then read.
        let ended = gone || watch.borrow_and_update().status().is_terminal();
        for s in srcs.iter_mut() {
            drain(&p, request_id, s, chunk, &creds).await?;
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
                send_text(&p, request_id, s.label, &rest, chunk).await;
            }
            let end = JobOutputResponse {
                output: String::new(),
                output_type: label_all.into(),
                complete: true,
            };
            p.out.send(ResponseType::JobOutput, request_id, &end).await;
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
