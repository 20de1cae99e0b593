//! Output of a job as text for JobOutput messages (shared by our plugins): bytes decoded to
//! UTF-8 without splitting a character, text cut into chunks at character boundaries, and which
//! file(s) an output type names.

use crate::messages::OutputType;

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
        assert_eq!(sources(&"/o", &"/o", OutputType::Both), vec![("/o", "mixed")]);
        assert_eq!(
            sources(&"/o", &"/e", OutputType::Both),
            vec![("/o", "stdout"), ("/e", "stderr")]
        );
        assert_eq!(sources(&"/o", &"/e", OutputType::Stderr), vec![("/e", "stderr")]);
        assert_eq!(sources(&"/o", &"/e", OutputType::Stdout), vec![("/o", "stdout")]);
    }
}
