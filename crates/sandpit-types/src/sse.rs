//! The `text/event-stream` framing every sandpit event stream uses (process output, file watches): an
//! incremental parser shared by the SDK and the daemon (which reads the agent's streams for the E2B
//! surface).

/// One raw SSE event: its `event:` name, `id:` and joined `data:` lines.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RawEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// An incremental `text/event-stream` parser: feed bytes, get complete events.
///
/// Lines are found from where the last push stopped looking (a long `data:` line arriving in many network
/// chunks is scanned once, not once per chunk) and the consumed bytes are dropped once per push; a line
/// that is valid UTF-8 (all of ours) is read in place. Lines end at `\n`, with an optional `\r` before it.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    /// `buf[..scanned]` holds no line end.
    scanned: usize,
    cur: RawEvent,
    has_data: bool,
}

impl SseParser {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<RawEvent> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(rel) = memchr::memchr(b'\n', &self.buf[self.scanned..]) {
            let nl = self.scanned + rel;
            let mut end = nl;
            if end > start && self.buf[end - 1] == b'\r' {
                end -= 1;
            }
            let line = String::from_utf8_lossy(&self.buf[start..end]);
            start = nl + 1;
            self.scanned = start;
            if line.is_empty() {
                let ev = std::mem::take(&mut self.cur);
                if self.has_data || !ev.event.is_empty() {
                    out.push(ev);
                }
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (&*line, ""),
            };
            match field {
                "event" => value.clone_into(&mut self.cur.event),
                "id" => self.cur.id = Some(value.to_owned()),
                "data" => {
                    if self.has_data {
                        self.cur.data.push('\n');
                    }
                    self.cur.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = ": comment\r\nevent: started\ndata: {}\n\nid: 7\nevent: stdout\ndata: {\"seq\":7,\
                          \"data\":\"h\u{e9}\"}\r\n\r\nevent: keepalive\n\ndata: a\ndata: b\n\n";

    fn expected() -> Vec<RawEvent> {
        let ev = |event: &str, id: Option<&str>, data: &str| RawEvent {
            event: event.into(),
            id: id.map(Into::into),
            data: data.into(),
        };
        vec![
            ev("started", None, "{}"),
            ev("stdout", Some("7"), "{\"seq\":7,\"data\":\"h\u{e9}\"}"),
            ev("keepalive", None, ""),
            ev("", None, "a\nb"),
        ]
    }

    #[test]
    fn events_parse_alike_in_one_push_or_byte_by_byte() {
        assert_eq!(SseParser::default().push(STREAM.as_bytes()), expected());
        let mut p = SseParser::default();
        let mut got = Vec::new();
        for b in STREAM.as_bytes() {
            got.extend(p.push(std::slice::from_ref(b)));
        }
        assert_eq!(got, expected());
        // Any split point, including inside `\r\n` and inside a character.
        for cut in 0..STREAM.len() {
            let mut p = SseParser::default();
            let mut got = p.push(&STREAM.as_bytes()[..cut]);
            got.extend(p.push(&STREAM.as_bytes()[cut..]));
            assert_eq!(got, expected(), "split at {cut}");
        }
    }

    /// Regression: every push rescanned the whole pending line and each line moved the rest of the
    /// buffer, so a long `data:` line arriving in many chunks cost time quadratic in its length.
    #[test]
    fn a_long_line_in_many_chunks_is_scanned_once() {
        let data = "x".repeat(1 << 20);
        let text = format!("event: stdout\ndata: {data}\n\n");
        let mut p = SseParser::default();
        let mut got = Vec::new();
        for chunk in text.as_bytes().chunks(1024) {
            got.extend(p.push(chunk));
            // Nothing already scanned is scanned again.
            assert_eq!(p.scanned, p.buf.len());
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data.len(), 1 << 20);
    }
}
