//! The Connect protocol (connectrpc.com/docs/protocol) as E2B's envd serves it and both stock E2B SDKs call
//! it: POST `/{service}/{method}`, the JSON codec (`application/json` for unary calls,
//! `application/connect+json` for streams), no compression.
//!
//! Owns the wire details: the error codes and the HTTP statuses they travel with, the 5-byte envelope
//! (`flags u8`, `length u32` big-endian, then the message) of streamed messages, the end-of-stream
//! message that carries a stream's error, and the mapping from sandpit's error codes to Connect's.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Content type of a unary JSON request and response.
pub const UNARY_JSON: &str = "application/json";
/// Content type of a streamed JSON request and response.
pub const STREAM_JSON: &str = "application/connect+json";
/// Flag of the envelope that ends a response stream.
const END_STREAM: u8 = 0x02;
/// Flag of a compressed envelope (never sent by the SDKs: compression is off).
const COMPRESSED: u8 = 0x01;
/// Largest message the surface accepts in one envelope or unary body (stdin chunks, paths).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// A Connect error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Unimplemented,
    Internal,
    Unavailable,
    Unauthenticated,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Canceled => "canceled",
            Self::Unknown => "unknown",
            Self::InvalidArgument => "invalid_argument",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::PermissionDenied => "permission_denied",
            Self::ResourceExhausted => "resource_exhausted",
            Self::FailedPrecondition => "failed_precondition",
            Self::Unimplemented => "unimplemented",
            Self::Internal => "internal",
            Self::Unavailable => "unavailable",
            Self::Unauthenticated => "unauthenticated",
        }
    }

    /// The HTTP status a unary error travels with (the protocol's table).
    pub fn http_status(self) -> StatusCode {
        match self {
            Self::Canceled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Self::Unknown | Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::InvalidArgument | Self::FailedPrecondition => StatusCode::BAD_REQUEST,
            Self::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::AlreadyExists => StatusCode::CONFLICT,
            Self::PermissionDenied => StatusCode::FORBIDDEN,
            Self::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Self::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }

    /// The Connect code for a sandpit error code.
    pub fn from_sandpit(code: sandpit_types::ErrorCode) -> Self {
        use sandpit_types::ErrorCode as E;
        match code {
            E::InvalidArgument | E::IsADirectory | E::NotADirectory | E::RangeNotSatisfiable => {
                Self::InvalidArgument
            }
            E::Unauthenticated => Self::Unauthenticated,
            E::NotFound => Self::NotFound,
            E::Conflict | E::NotEmpty => Self::FailedPrecondition,
            E::Timeout => Self::DeadlineExceeded,
            E::PayloadTooLarge
            | E::ResourceExhausted
            | E::InsufficientStorage
            | E::QuotaExceeded
            | E::RateLimited => Self::ResourceExhausted,
            E::Unavailable | E::BadGateway => Self::Unavailable,
            E::PermissionDenied => Self::PermissionDenied,
            E::AlreadyExists => Self::AlreadyExists,
            E::Internal => Self::Internal,
            E::Unknown => Self::Unknown,
        }
    }
}

/// A failed call: its code and a sentence for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: Code,
    pub message: String,
}

impl RpcError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({"code": self.code.as_str(), "message": self.message})
    }
}

impl From<super::Upstream> for RpcError {
    fn from(u: super::Upstream) -> Self {
        Self::new(Code::from_sandpit(u.code), u.message)
    }
}

/// A unary error: its status and `{"code", "message"}`.
impl IntoResponse for RpcError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.json()).unwrap_or_default();
        (
            self.code.http_status(),
            [(header::CONTENT_TYPE, HeaderValue::from_static(UNARY_JSON))],
            body,
        )
            .into_response()
    }
}

/// A unary answer.
pub fn unary_ok<T: Serialize>(msg: &T) -> Response {
    match serde_json::to_vec(msg) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static(UNARY_JSON))],
            body,
        )
            .into_response(),
        Err(e) => {
            RpcError::new(Code::Internal, format!("cannot encode the answer: {e}")).into_response()
        }
    }
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Refuses a codec other than JSON, naming what is supported.
fn check_codec(headers: &HeaderMap, want: &str) -> Result<(), RpcError> {
    let got = media_type(headers);
    if got == want {
        return Ok(());
    }
    if got.ends_with("proto") {
        return Err(RpcError::new(
            Code::Unimplemented,
            format!(
                "the protobuf codec ({got}) is not supported: sandpit's E2B surface speaks Connect with the \
                 JSON codec ({want}), as the stock E2B SDKs send it"
            ),
        ));
    }
    Err(RpcError::invalid(format!(
        "content type {got:?}: expected {want:?} (Connect, JSON codec)"
    )))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RpcError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        if at == "." {
            RpcError::invalid(format!("bad request message: {}", e.inner()))
        } else {
            RpcError::invalid(format!("bad request message: {at}: {}", e.inner()))
        }
    })
}

/// The message of a unary request.
pub fn parse_unary<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, RpcError> {
    check_codec(headers, UNARY_JSON)?;
    decode(body)
}

/// The one message of a server-streaming request (a single envelope).
pub fn parse_stream_request<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, RpcError> {
    check_codec(headers, STREAM_JSON)?;
    let mut reader = EnvelopeReader::default();
    reader.push(body);
    match reader.next_envelope()? {
        Some(Envelope::Message(m)) => decode(&m),
        Some(Envelope::End(_)) | None => Err(RpcError::invalid(
            "the request stream holds no message (expected one enveloped message)",
        )),
    }
}

/// Checks the content type of a client stream.
pub fn check_stream_codec(headers: &HeaderMap) -> Result<(), RpcError> {
    check_codec(headers, STREAM_JSON)
}

/// One decoded envelope.
#[derive(Debug, PartialEq, Eq)]
pub enum Envelope {
    Message(Bytes),
    End(Bytes),
}

/// Splits a byte stream into envelopes as bytes arrive.
#[derive(Debug, Default)]
pub struct EnvelopeReader {
    buf: BytesMut,
}

impl EnvelopeReader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete envelope, if one has arrived.
    pub fn next_envelope(&mut self) -> Result<Option<Envelope>, RpcError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let flags = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_MESSAGE_BYTES {
            return Err(RpcError::new(
                Code::ResourceExhausted,
                format!("message of {len} bytes is over the {MAX_MESSAGE_BYTES}-byte limit"),
            ));
        }
        if flags & COMPRESSED != 0 {
            return Err(RpcError::new(
                Code::Unimplemented,
                "compressed messages are not supported (send them uncompressed)",
            ));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let _ = self.buf.split_to(5);
        let msg = self.buf.split_to(len).freeze();
        Ok(Some(if flags & END_STREAM != 0 {
            Envelope::End(msg)
        } else {
            Envelope::Message(msg)
        }))
    }

    /// Bytes left that do not make a whole envelope.
    pub fn leftover(&self) -> usize {
        self.buf.len()
    }
}

fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(flags);
    b.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    b.put_slice(payload);
    b.freeze()
}

/// One streamed message.
pub fn message<T: Serialize>(msg: &T) -> Bytes {
    envelope(
        0,
        &serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec()),
    )
}

/// The end of a stream: `{}` when it succeeded, `{"error": …}` when not.
pub fn end(error: Option<&RpcError>) -> Bytes {
    let body = match error {
        Some(e) => serde_json::json!({"error": e.json()}),
        None => serde_json::json!({}),
    };
    envelope(END_STREAM, &serde_json::to_vec(&body).unwrap_or_default())
}

/// A streamed answer: status 200 whatever happens (errors travel in the end message).
pub fn stream_response(body: Body) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(STREAM_JSON))],
        body,
    )
        .into_response()
}

/// A stream that failed before its first message: just the end message.
pub fn stream_error(e: &RpcError) -> Response {
    stream_response(Body::from(end(Some(e))))
}

/// The deadline a client set (`Connect-Timeout-Ms`), if any.
pub fn timeout(headers: &HeaderMap) -> Option<std::time::Duration> {
    headers
        .get("connect-timeout-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(std::time::Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_in_pieces() {
        let a = message(&serde_json::json!({"a": 1}));
        let e = end(None);
        let mut all = a.to_vec();
        all.extend_from_slice(&e);
        let mut r = EnvelopeReader::default();
        for b in &all[..7] {
            r.push(&[*b]);
            assert_eq!(r.next_envelope().unwrap(), None);
        }
        r.push(&all[7..]);
        assert_eq!(
            r.next_envelope().unwrap(),
            Some(Envelope::Message(Bytes::from_static(br#"{"a":1}"#)))
        );
        assert_eq!(
            r.next_envelope().unwrap(),
            Some(Envelope::End(Bytes::from_static(b"{}")))
        );
        assert_eq!(r.next_envelope().unwrap(), None);
        assert_eq!(r.leftover(), 0);
    }

    #[test]
    fn oversized_and_compressed_envelopes_are_refused() {
        let mut r = EnvelopeReader::default();
        r.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(r.next_envelope().unwrap_err().code, Code::ResourceExhausted);
        let mut r = EnvelopeReader::default();
        r.push(&envelope(COMPRESSED, b"{}"));
        assert_eq!(r.next_envelope().unwrap_err().code, Code::Unimplemented);
    }

    #[test]
    fn the_protobuf_codec_is_refused_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/proto"),
        );
        let e = parse_unary::<serde_json::Value>(&h, b"").unwrap_err();
        assert_eq!(e.code, Code::Unimplemented);
        assert!(e.message.contains("JSON codec"), "{}", e.message);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert_eq!(
            parse_unary::<serde_json::Value>(&h, b"").unwrap(),
            serde_json::json!({})
        );
    }

    #[test]
    fn error_statuses_follow_the_protocol_table() {
        assert_eq!(Code::NotFound.http_status(), StatusCode::NOT_FOUND);
        assert_eq!(
            Code::Unimplemented.http_status(),
            StatusCode::NOT_IMPLEMENTED
        );
        assert_eq!(Code::Canceled.http_status().as_u16(), 499);
        assert_eq!(
            Code::from_sandpit(sandpit_types::ErrorCode::QuotaExceeded),
            Code::ResourceExhausted
        );
    }
}
