//! WebSocket framing for `GET /processes/{pid}/ws`.
//!
//! Binary frames carry bytes: `[channel u8][seq u64 big-endian][payload]`. From the agent, channel 1 is
//! stdout and 2 stderr, `seq` the chunk's place in the process's output sequence. From the client, channel 0
//! is stdin; the client's `seq` is its own counter and is not interpreted. Text frames carry JSON control
//! messages: [`ClientControl`] from the client, [`ServerControl`] from the agent.

use serde::{Deserialize, Serialize};

use crate::{LostEvent, ProcessInfo, SignalSpec};

/// Which byte stream a binary frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Stdin,
    Stdout,
    Stderr,
}

impl Channel {
    pub fn byte(self) -> u8 {
        match self {
            Self::Stdin => 0,
            Self::Stdout => 1,
            Self::Stderr => 2,
        }
    }
}

/// A decoded binary frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub channel: Channel,
    pub seq: u64,
    pub data: Vec<u8>,
}

/// Why a binary frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    TooShort(usize),
    UnknownChannel(u8),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooShort(n) => write!(
                f,
                "binary frame of {n} bytes is shorter than its 9-byte header"
            ),
            Self::UnknownChannel(c) => {
                write!(f, "unknown channel {c} (0 stdin, 1 stdout, 2 stderr)")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Length of the binary frame header.
pub const HEADER_LEN: usize = 9;

impl Frame {
    pub fn encode(channel: Channel, seq: u64, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + data.len());
        out.resize(HEADER_LEN, 0);
        Self::write_header(channel, seq, (&mut out[..]).try_into().expect("9 bytes"));
        out.extend_from_slice(data);
        out
    }

    /// Writes a frame's header: a sender that keeps [`HEADER_LEN`] bytes free before its data makes the
    /// whole frame in place, with no copy of the data.
    pub fn write_header(channel: Channel, seq: u64, out: &mut [u8; HEADER_LEN]) {
        out[0] = channel.byte();
        out[1..].copy_from_slice(&seq.to_be_bytes());
    }

    pub fn decode(buf: &[u8]) -> Result<Self, FrameError> {
        if buf.len() < HEADER_LEN {
            return Err(FrameError::TooShort(buf.len()));
        }
        let channel = match buf[0] {
            0 => Channel::Stdin,
            1 => Channel::Stdout,
            2 => Channel::Stderr,
            c => return Err(FrameError::UnknownChannel(c)),
        };
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&buf[1..HEADER_LEN]);
        Ok(Self {
            channel,
            seq: u64::from_be_bytes(seq),
            data: buf[HEADER_LEN..].to_vec(),
        })
    }
}

/// JSON text frames a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientControl {
    /// Write UTF-8 text to stdin (binary channel-0 frames carry arbitrary bytes).
    Stdin {
        data: String,
    },
    /// Close stdin: the process reads EOF.
    StdinEof,
    Signal {
        signal: SignalSpec,
    },
    Resize {
        cols: u16,
        rows: u16,
    },
}

/// A client frame as the agent acts on it: decoded, checked, the signal resolved to its number.
///
/// [`ClientMessage::from_binary`] and [`ClientMessage::from_text`] are the whole decoding of what a
/// client sends on the WebSocket; the agent's session only applies the result, so the fuzz targets
/// exercise exactly what the agent accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// Bytes for the process's stdin.
    Stdin(Vec<u8>),
    StdinEof,
    /// A signal number in `1..=64`.
    Signal(i32),
    Resize(crate::TtySize),
}

impl ClientMessage {
    /// A binary frame: only channel 0 (stdin) may come from a client.
    pub fn from_binary(buf: &[u8]) -> Result<Self, String> {
        match Frame::decode(buf) {
            Ok(Frame {
                channel: Channel::Stdin,
                data,
                ..
            }) => Ok(Self::Stdin(data)),
            Ok(_) => Err("clients may only send channel 0 (stdin)".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// A text frame: one JSON [`ClientControl`].
    pub fn from_text(text: &str) -> Result<Self, String> {
        let control = serde_json::from_str::<ClientControl>(text)
            .map_err(|e| format!("bad control message: {e}"))?;
        Ok(match control {
            ClientControl::Stdin { data } => Self::Stdin(data.into_bytes()),
            ClientControl::StdinEof => Self::StdinEof,
            ClientControl::Signal { signal } => Self::Signal(signal.number()?),
            ClientControl::Resize { cols, rows } => {
                let size = crate::TtySize { cols, rows };
                size.validate()?;
                Self::Resize(size)
            }
        })
    }
}

/// JSON text frames the agent sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerControl {
    Started {
        process: ProcessInfo,
    },
    Lost(LostEvent),
    Exited {
        process: ProcessInfo,
    },
    /// A control message could not be applied; the connection stays open.
    Error {
        code: crate::ErrorCode,
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let b = Frame::encode(Channel::Stderr, 42, b"oops");
        let f = Frame::decode(&b).unwrap();
        assert_eq!(
            f,
            Frame {
                channel: Channel::Stderr,
                seq: 42,
                data: b"oops".to_vec()
            }
        );
    }

    #[test]
    fn short_and_unknown_frames_are_errors() {
        assert_eq!(Frame::decode(&[1, 2]), Err(FrameError::TooShort(2)));
        assert_eq!(Frame::decode(&[9; 9]), Err(FrameError::UnknownChannel(9)));
    }

    #[test]
    fn client_messages_are_decoded_and_checked() {
        assert_eq!(
            ClientMessage::from_binary(&Frame::encode(Channel::Stdin, 7, b"hi")),
            Ok(ClientMessage::Stdin(b"hi".to_vec()))
        );
        assert!(ClientMessage::from_binary(&Frame::encode(Channel::Stdout, 1, b"x")).is_err());
        assert!(ClientMessage::from_binary(&[0; 3]).is_err());
        assert_eq!(
            ClientMessage::from_text(r#"{"type":"signal","signal":"SIGUSR1"}"#),
            Ok(ClientMessage::Signal(10))
        );
        for bad in [
            r#"{"type":"signal","signal":"RTMIN+2147483647"}"#,
            r#"{"type":"signal","signal":0}"#,
            r#"{"type":"resize","cols":0,"rows":1}"#,
            r#"{"type":"stdin","data":"\udc80"}"#,
            r#"{"type":"stdin","data":"x","extra":1}"#,
            r#"{"type":"explode"}"#,
            "[1,2]",
            "",
        ] {
            assert!(ClientMessage::from_text(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn control_frames_parse() {
        let c: ClientControl =
            serde_json::from_str(r#"{"type":"signal","signal":"TERM"}"#).unwrap();
        assert_eq!(
            c,
            ClientControl::Signal {
                signal: SignalSpec::Name("TERM".into())
            }
        );
        let c: ClientControl = serde_json::from_str(r#"{"type":"stdin_eof"}"#).unwrap();
        assert_eq!(c, ClientControl::StdinEof);
        assert!(
            serde_json::from_str::<ClientControl>(r#"{"type":"resize","cols":-1,"rows":1}"#)
                .is_err()
        );
    }
}
