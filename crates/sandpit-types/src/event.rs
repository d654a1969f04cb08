//! Process events as they travel over SSE (`GET /processes/{pid}/events`).
//!
//! SSE framing: output chunks are `id: <seq>`, `event: stdout|stderr`, `data: {"seq": 7, "data": "text"}`
//! (or `"data_b64"` for bytes that are not UTF-8, or that JSON would escape to more than base64's size:
//! see [`OutputEvent::new`]). `event: started` and `event: exited` carry a
//! [`ProcessInfo`](crate::ProcessInfo); `event: lost` a [`LostEvent`]. `started` opens every stream, `exited`
//! closes it once every chunk at or after the requested seq was sent. Resume with `?from_seq=N` (chunks with
//! seq ≥ N) or the `Last-Event-ID` header (chunks after that id).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::ProcessInfo;

/// Data of an SSE `stdout` or `stderr` event: exactly one of `data` (text) and `data_b64` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutputEvent {
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_b64: Option<String>,
}

impl OutputEvent {
    /// The event [`output_event_json`] writes for this chunk: text or base64, whichever JSON carries
    /// in fewer bytes.
    pub fn new(seq: u64, bytes: &[u8]) -> Self {
        serde_json::from_str(&output_event_json(seq, bytes)).expect("an event we wrote parses")
    }

    /// The chunk's bytes, taking the text's buffer rather than copying it. Bad base64 decodes to nothing.
    pub fn into_bytes(self) -> Vec<u8> {
        match (self.data, self.data_b64) {
            (Some(s), _) => s.into_bytes(),
            (None, Some(b)) => B64.decode(b).unwrap_or_default(),
            (None, None) => Vec::new(),
        }
    }

    /// The chunk's bytes. Bad base64 decodes to nothing.
    pub fn bytes(&self) -> Vec<u8> {
        match (&self.data, &self.data_b64) {
            (Some(s), _) => s.as_bytes().to_vec(),
            (None, Some(b)) => B64.decode(b).unwrap_or_default(),
            (None, None) => Vec::new(),
        }
    }
}

/// The JSON of an SSE output event for `bytes`: `{"seq":N,"data":"text"}` when the bytes are UTF-8 and
/// JSON escapes them to no more than base64 would take, else `{"seq":N,"data_b64":"..."}`. Control
/// characters cost six bytes each as `\u00XX`: a chunk of NULs (or of other terminal bytes) would grow
/// sixfold as text, so it travels as base64 (4/3) instead. Clients read whichever field is set, so the
/// choice is per chunk. Text is escaped once, straight from the chunk (no scan or copy beforehand): a
/// chunk that comes out too long is written again as base64. So that binary output does not pay for both,
/// a chunk whose first 256 bytes alone would escape to more than twice their base64 goes straight to
/// base64 (such a chunk is binary for all practical purposes).
pub fn output_event_json(seq: u64, bytes: &[u8]) -> String {
    #[derive(Serialize)]
    struct Text<'a> {
        seq: u64,
        data: &'a str,
    }
    #[derive(Serialize)]
    struct Binary {
        seq: u64,
        data_b64: String,
    }
    if !looks_binary(bytes)
        && let Ok(data) = std::str::from_utf8(bytes)
    {
        let json = serde_json::to_string(&Text { seq, data }).expect("plain data serializes");
        // `{"seq":N,"data":"` + escaped + `"}`
        let envelope = r#"{"seq":,"data":""}"#.len() + seq.to_string().len();
        if json.len() - envelope <= base64_len(bytes.len()) {
            return json;
        }
    }
    serde_json::to_string(&Binary {
        seq,
        data_b64: B64.encode(bytes),
    })
    .expect("plain data serializes")
}

/// Whether the first 256 bytes of `bytes` escape to more than twice their base64 size in JSON.
fn looks_binary(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(256)];
    let escaped: usize = head
        .iter()
        .map(|&b| match b {
            b'\n' | b'\t' | b'\r' | b'"' | b'\\' | 0x08 | 0x0c => 2,
            0..0x20 => 6,
            _ => 1,
        })
        .sum();
    escaped > 2 * base64_len(head.len())
}

/// The length of `n` bytes in padded base64.
fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// Output that was dropped by the per-process cap before this client read it: chunks
/// `from_seq..=to_seq`, `bytes` bytes in all. Sent instead of those chunks, never silently skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LostEvent {
    pub from_seq: u64,
    pub to_seq: u64,
    pub bytes: u64,
}

/// One decoded event of a process's stream, whichever transport carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEvent {
    Started(ProcessInfo),
    Stdout { seq: u64, data: Vec<u8> },
    Stderr { seq: u64, data: Vec<u8> },
    Lost(LostEvent),
    Exited(ProcessInfo),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_choice_is_at_the_size_where_base64_wins() {
        // Base64 takes 4 bytes per 3 and `\n` escapes to 2: 9 bytes with 3 newlines escape to 12,
        // as many as base64's: text.
        assert!(OutputEvent::new(1, b"ab\ncd\nef\n").data.is_some());
        // One more escape byte and base64 is shorter.
        assert!(OutputEvent::new(1, b"ab\ncd\ne\"\n").data.is_none());
        // The envelope is not counted against the text, whatever the seq's width.
        assert!(OutputEvent::new(u64::MAX, b"ab\ncd\nef\n").data.is_some());
        assert_eq!(output_event_json(7, b"hi"), r#"{"seq":7,"data":"hi"}"#);
    }

    /// Regression: a chunk of NULs travelled as `\u0000` text, six bytes per byte, and SSE clients
    /// spent their time unescaping it.
    #[test]
    fn nul_heavy_output_travels_as_base64() {
        assert!(looks_binary(&[0u8; 4096]));
        assert!(!looks_binary(b"plain text\n"));
        // Text that only turns binary after its first 256 bytes is caught by the size comparison.
        let mut late = b"x".repeat(256);
        late.extend_from_slice(&[0u8; 4096]);
        assert!(output_event_json(2, &late).contains("data_b64"));
        let e = OutputEvent::new(1, &[0u8; 4096]);
        assert!(output_event_json(1, &[0u8; 4096]).contains("data_b64"));
        assert!(e.data.is_none());
        assert_eq!(e.bytes(), vec![0u8; 4096]);
    }

    #[test]
    fn text_and_a_few_escapes_stay_text() {
        let text = "   Compiling serde v1.0.228 (\"quoted\" ✓)\n\ttest it ... \x1b[32mok\x1b[0m\n"
            .repeat(10);
        let e = OutputEvent::new(3, text.as_bytes());
        assert_eq!(e.data.as_deref(), Some(text.as_str()));
        assert_eq!(e.bytes(), text.as_bytes());
        assert!(OutputEvent::new(4, &[0xff, 0xfe]).data.is_none());
        // Empty output is text (nothing to escape either way).
        assert_eq!(OutputEvent::new(5, b"").data.as_deref(), Some(""));
    }
}
