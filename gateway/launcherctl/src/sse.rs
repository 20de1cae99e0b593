//! An incremental reader of Server-Sent Events (`text/event-stream`), enough for the gateway's
//! `status` and `error` events: `event:` and `data:` fields, comments and blank-line dispatch.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field (`message` when absent, as the spec says).
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Bytes in, events out.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
}

impl Parser {
    /// Feeds a chunk; returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n' || b == b'\r') {
            // A lone '\r' at the end of the buffer may be the start of "\r\n": wait for more.
            if self.buf[nl] == b'\r' && nl + 1 == self.buf.len() {
                break;
            }
            let end = if self.buf[nl] == b'\r' && self.buf.get(nl + 1) == Some(&b'\n') {
                nl + 2
            } else {
                nl + 1
            };
            let line: Vec<u8> = self.buf.drain(..end).take(nl).collect();
            let line = String::from_utf8_lossy(&line);
            if let Some(ev) = self.line(&line) {
                out.push(ev);
            }
        }
        out
    }

    fn line(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            let data = self.data.take()?;
            let event = self.event.take().unwrap_or_else(|| "message".to_string());
            return Some(Event { event, data });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {} // id, retry and unknown fields do not matter here
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_across_chunks() {
        let mut p = Parser::default();
        assert!(p.push(b": keep-alive\n\nevent: sta").is_empty());
        assert!(p.push(b"tus\ndata: {\"a\":").is_empty());
        let evs = p.push(b"1}\n\nevent: error\r\ndata: x\r\ndata: y\r");
        assert_eq!(
            evs,
            vec![Event {
                event: "status".into(),
                data: "{\"a\":1}".into()
            }]
        );
        let evs = p.push(b"\n\r\n");
        assert_eq!(
            evs,
            vec![Event {
                event: "error".into(),
                data: "x\ny".into()
            }]
        );
        let evs = p.push(b"data:plain\n\n");
        assert_eq!(evs[0].event, "message");
        assert_eq!(evs[0].data, "plain");
    }
}
