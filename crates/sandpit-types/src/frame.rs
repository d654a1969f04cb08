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
        out.push(channel.byte());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(data);
        out
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
