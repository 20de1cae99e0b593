//! Output of a job as text for JobOutput messages (shared by our plugins): bytes decoded to
//! UTF-8 without splitting a character, text cut into chunks at character boundaries, which
//! file(s) an output type names, and [`follow`]: a GetJobOutput stream from the files' start
//! until the job ended and all was sent. A plugin gives only how it reads a file of the job's
//! user (its own check of who may read it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

use crate::envelope::ResponseType;
use crate::error::RequestError;
use crate::messages::{JobOutputResponse, OutputType};
use crate::outbox::Outbox;

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

/// The files a request of output type `t` wants, as `(path, label)`: one `mixed` stream when
/// stdout and stderr are the same file.
pub fn sources<P: Clone + PartialEq>(stdout: &P, stderr: &P, t: OutputType) -> Vec<(P, &'static str)> {
    match t {
        OutputType::Stdout => vec![(stdout.clone(), "stdout")],
        OutputType::Stderr => vec![(stderr.clone(), "stderr")],
        OutputType::Both if stdout == stderr => vec![(stdout.clone(), "mixed")],
        OutputType::Both => vec![(stdout.clone(), "stdout"), (stderr.clone(), "stderr")],
    }
}

/// Where a GetJobOutput stream goes and how it reads.
pub struct Following<'a> {
    pub out: &'a Outbox,
    pub request_id: u64,
    /// The job (for the error when it left no output).
    pub job_id: &'a str,
    /// The most bytes read, and sent, at once.
    pub chunk: usize,
    /// How often the files of a running job are looked at again.
    pub poll: Duration,
}

/// One file being streamed.
struct Source {
    path: PathBuf,
    label: &'static str,
    offset: u64,
    decoder: Utf8Decoder,
    seen: bool,
}

/// Streams the output files `files` (see [`sources`]) of a job of output type `t` until it is
/// complete: everything the files hold, then whatever they gain while `watch` does not show the
/// job `ended`, then `complete: true`. The job leaving the plugin's table (the watch closes)
/// counts as ended. `read` reads up to `max` bytes from `offset` of a file, `None` when it does
/// not exist (yet); it runs on a blocking thread and refuses what the job's user may not read.
/// A job that ended without any of the files is answered `OutputNotFound`.
pub async fn follow<T, R>(
    how: Following<'_>,
    files: Vec<(PathBuf, &'static str)>,
    t: OutputType,
    mut watch: watch::Receiver<T>,
    ended: impl Fn(&T) -> bool,
    read: R,
) -> Result<(), RequestError>
where
    R: Fn(&Path, u64, usize) -> Result<Option<Vec<u8>>, RequestError> + Clone + Send + 'static,
{
    let label_all = match t {
        OutputType::Stdout => "stdout",
        OutputType::Stderr => "stderr",
        OutputType::Both => "mixed",
    };
    let mut srcs: Vec<Source> = files
        .into_iter()
        .map(|(path, label)| Source {
            path,
            label,
            offset: 0,
            decoder: Utf8Decoder::default(),
            seen: false,
        })
        .collect();
    let mut gone = false;
    loop {
        // Look at the status before reading: output written before the job ended is then read.
        let done = gone || ended(&watch.borrow_and_update());
        for s in srcs.iter_mut() {
            drain(&how, s, &read).await?;
        }
        if done {
            if srcs.iter().all(|s| !s.seen) {
                return Err(RequestError::OutputNotFound(format!(
                    "job {} left no output files",
                    how.job_id
                )));
            }
            for s in srcs.iter_mut() {
                let rest = s.decoder.finish();
                send_text(&how, s.label, &rest).await;
            }
            let end = JobOutputResponse {
                output: String::new(),
                output_type: label_all.into(),
                complete: true,
            };
            how.out.send(ResponseType::JobOutput, how.request_id, &end).await;
            return Ok(());
        }
        tokio::select! {
            r = watch.changed() => gone = r.is_err(),
            _ = tokio::time::sleep(how.poll) => {}
        }
    }
}

/// Sends everything new in one file.
async fn drain<R>(how: &Following<'_>, s: &mut Source, read: &R) -> Result<(), RequestError>
where
    R: Fn(&Path, u64, usize) -> Result<Option<Vec<u8>>, RequestError> + Clone + Send + 'static,
{
    let chunk = how.chunk;
    loop {
        let (path, offset, read) = (s.path.clone(), s.offset, read.clone());
        let got = tokio::task::spawn_blocking(move || read(&path, offset, chunk))
            .await
            .map_err(|e| RequestError::Internal(e.to_string()))??;
        let Some(bytes) = got else { return Ok(()) };
        s.seen = true;
        if bytes.is_empty() {
            return Ok(());
        }
        s.offset += bytes.len() as u64;
        let text = s.decoder.push(&bytes);
        send_text(how, s.label, &text).await;
        if bytes.len() < chunk {
            return Ok(());
        }
    }
}

async fn send_text(how: &Following<'_>, label: &str, text: &str) {
    for piece in split_at_chars(text, how.chunk) {
        let msg = JobOutputResponse {
            output: piece.to_string(),
            output_type: label.to_string(),
            complete: false,
        };
        how.out.send(ResponseType::JobOutput, how.request_id, &msg).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a file as [`follow`] asks, without any check of who owns it.
    fn plain(path: &Path, offset: u64, max: usize) -> Result<Option<Vec<u8>>, RequestError> {
        match std::fs::read(path) {
            Ok(b) => Ok(Some(b.into_iter().skip(offset as usize).take(max).collect())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RequestError::io("read", e)),
        }
    }

    /// Request 7 of job `j`, in chunks of 4 bytes, files looked at every 10 ms.
    fn following(out: &Outbox) -> Following<'_> {
        Following {
            out,
            request_id: 7,
            job_id: "j",
            chunk: 4,
            poll: Duration::from_millis(10),
        }
    }

    /// The JobOutput payloads queued for request 7: (output, outputType, complete).
    async fn next_output(
        rx: &mut tokio::sync::mpsc::Receiver<crate::outbox::Outgoing>,
    ) -> (String, String, bool) {
        match rx.recv().await.expect("a message") {
            crate::outbox::Outgoing::Message {
                request_id: 7,
                payload,
                ..
            } => {
                let m: JobOutputResponse = serde_json::from_value(payload).unwrap();
                (m.output, m.output_type, m.complete)
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_followed_file_is_sent_whole_in_chunks_until_the_job_ends() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("out");
        std::fs::write(&f, "héllo ").unwrap();
        let (out, mut rx) = Outbox::new(64);
        let (ended_tx, watch) = watch::channel(false);
        let how = following(&out);
        let following = follow(
            how,
            vec![(f.clone(), "stdout")],
            OutputType::Stdout,
            watch,
            |e: &bool| *e,
            plain,
        );
        let driver = async {
            let mut text = String::new();
            // What the file held, in pieces of at most 4 bytes, no character split.
            while text != "héllo " {
                let (piece, label, complete) = next_output(&mut rx).await;
                assert!(piece.len() <= 4 && !complete && label == "stdout", "{piece:?}");
                text.push_str(&piece);
            }
            // What it gains while the job runs, then the end.
            std::fs::write(&f, "héllo wörld").unwrap();
            ended_tx.send(true).unwrap();
            loop {
                let (piece, label, complete) = next_output(&mut rx).await;
                assert_eq!(label, "stdout");
                if complete {
                    assert!(piece.is_empty());
                    break;
                }
                text.push_str(&piece);
            }
            text
        };
        let (r, text) = tokio::join!(following, driver);
        r.unwrap();
        assert_eq!(text, "héllo wörld");
    }

    #[tokio::test]
    async fn a_job_that_ended_without_its_files_has_no_output() {
        let d = tempfile::tempdir().unwrap();
        let (out, _rx) = Outbox::new(8);
        let (_tx, watch) = watch::channel(true);
        let how = following(&out);
        let files = vec![(d.path().join("o"), "stdout"), (d.path().join("e"), "stderr")];
        let r = follow(how, files, OutputType::Both, watch, |e: &bool| *e, plain).await;
        assert!(
            matches!(r, Err(RequestError::OutputNotFound(m)) if m.contains("job j left no output files"))
        );
    }

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
        assert_eq!(sources(&"/o", &"/o", OutputType::Both), vec![("/o", "mixed")]);
        assert_eq!(
            sources(&"/o", &"/e", OutputType::Both),
            vec![("/o", "stdout"), ("/e", "stderr")]
        );
        assert_eq!(sources(&"/o", &"/e", OutputType::Stderr), vec![("/e", "stderr")]);
        assert_eq!(sources(&"/o", &"/e", OutputType::Stdout), vec![("/o", "stdout")]);
    }
}
