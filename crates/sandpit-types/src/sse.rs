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
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    cur: RawEvent,
    has_data: bool,
}

impl SseParser {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<RawEvent> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=nl).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
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
        out
    }
}
