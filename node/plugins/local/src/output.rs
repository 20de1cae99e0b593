//! GetJobOutput: the job's output files from the start, in chunks, followed while the job runs,
//! then `complete: true`. Output must be UTF-8 text in JSON: invalid bytes become U+FFFD, and a
//! character is never split across two messages.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use launcher_plugin_api::envelope::ResponseType;
use launcher_plugin_api::messages::{JobOutputRequest, JobOutputResponse, OutputType};

use crate::error::RequestError;
use crate::files::OutputFileError;
use crate::record::JobRecord;
use crate::state::Shared;

/// How often files of a running job are looked at again.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Turns a byte stream into text: complete characters come out, an incomplete one at the end
/// waits for its remaining bytes, invalid bytes become U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Decoder {
    pending: Vec<u8>,
}

impl Utf8Decoder {
    /// Decodes `bytes` after what was held back.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).expect("checked valid"));
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                        // An incomplete character at the end: keep it for the next bytes.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }

    /// Ends the stream: bytes still held back can never complete.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

/// Splits text into pieces of at most `max` bytes (at least one character each), at character
/// boundaries.
pub fn split_at_chars(s: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let mut end = max.min(rest.len());
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        if end == 0 {
            end = rest.chars().next().map(char::len_utf8).unwrap_or(rest.len());
        }
        let (a, b) = rest.split_at(end);
        out.push(a);
        rest = b;
    }
    out
}

/// One file being streamed.
struct Source {
    path: PathBuf,
    label: &'static str,
    offset: u64,
    decoder: Utf8Decoder,
    seen: bool,
}

/// Reads up to `max` new bytes of a file of the job's user `uid` from `offset`. `None` when
/// the file does not exist.
fn read_from(
    path: &std::path::Path,
    offset: u64,
    max: usize,
    uid: Option<u32>,
) -> Result<Option<Vec<u8>>, OutputFileError> {
    let Some(mut f) = crate::files::open_output(path, uid)? else {
        return Ok(None);
    };
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(max.min(1 << 16));
    f.take(max as u64).read_to_end(&mut buf)?;
    Ok(Some(buf))
}

/// The files a request wants: `(path, label)`.
pub fn sources(rec: &JobRecord, t: OutputType) -> Vec<(PathBuf, &'static str)> {
    match t {
        OutputType::Stdout => vec![(rec.stdout_path.clone(), "stdout")],
        OutputType::Stderr => vec![(rec.stderr_path.clone(), "stderr")],
        OutputType::Both if rec.stdout_path == rec.stderr_path => vec![(rec.stdout_path.clone(), "mixed")],
        OutputType::Both => vec![
            (rec.stdout_path.clone(), "stdout"),
            (rec.stderr_path.clone(), "stderr"),
        ],
    }
}

/// Sends everything new in one file of the job's user `uid`. Returns whether the file exists.
async fn drain(
    p: &Shared,
    request_id: u64,
    s: &mut Source,
    chunk: usize,
    uid: Option<u32>,
) -> Result<bool, RequestError> {
    loop {
        let (path, offset) = (s.path.clone(), s.offset);
        let got = tokio::task::spawn_blocking(move || read_from(&path, offset, chunk, uid))
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

async fn send_text(p: &Shared, request_id: u64, label: &str, text: &str, chunk: usize) {
    for piece in split_at_chars(text, chunk) {
        let msg = JobOutputResponse {
            output: piece.to_string(),
            output_type: label.to_string(),
            complete: false,
        };
        p.out.send(ResponseType::JobOutput, request_id, &msg).await;
    }
}

/// Streams a job's output until it is complete (the job ended and all was sent).
pub async fn stream(p: Shared, request_id: u64, req: JobOutputRequest) -> Result<(), RequestError> {
    let t = OutputType::from_number(req.output_type)
        .ok_or_else(|| RequestError::Invalid(format!("unknown outputType {}", req.output_type)))?;
    let rec = p.get_visible(&req.job_id, &req.username).await?;
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
            drain(&p, request_id, s, chunk, rec.uid).await?;
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
    fn characters_split_across_reads_are_held_back() {
        let text = "aé€😀z";
        let bytes = text.as_bytes();
        // Feed one byte at a time: the output is always whole characters and adds up.
        let mut d = Utf8Decoder::default();
        let mut out = String::new();
        for b in bytes {
            let piece = d.push(&[*b]);
            assert!(piece.chars().all(|c| c != char::REPLACEMENT_CHARACTER));
            out.push_str(&piece);
        }
        out.push_str(&d.finish());
        assert_eq!(out, text);
        // Every split point of the bytes gives the same text.
        for cut in 0..=bytes.len() {
            let mut d = Utf8Decoder::default();
            let s = d.push(&bytes[..cut]) + &d.push(&bytes[cut..]) + &d.finish();
            assert_eq!(s, text, "cut at {cut}");
        }
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut d = Utf8Decoder::default();
        assert_eq!(d.push(b"a\xffb\xc3"), "a\u{fffd}b");
        assert_eq!(d.push(b"("), "\u{fffd}(");
        assert_eq!(d.push(b"\xe2\x82"), "");
        assert_eq!(d.finish(), "\u{fffd}");
        assert_eq!(d.finish(), "");
    }

    #[test]
    fn chunks_respect_the_byte_limit_and_character_boundaries() {
        let s = "ab€€😀x";
        let parts = split_at_chars(s, 4);
        assert_eq!(parts, vec!["ab", "€", "€", "😀", "x"]);
        assert!(parts.iter().all(|p| p.len() <= 4));
        assert_eq!(parts.concat(), s);
        assert_eq!(split_at_chars("", 4), Vec::<&str>::new());
        // A limit below a character's size still makes progress.
        assert_eq!(split_at_chars("😀😀", 2), vec!["😀", "😀"]);
        let long = "x".repeat(10);
        assert_eq!(split_at_chars(&long, 3).len(), 4);
    }

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
