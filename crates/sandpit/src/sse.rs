//! Server-Sent Events of one process (`GET /processes/{pid}/events`), decoded into [`ProcessEvent`]s
//! and made resilient: when the connection is cut before the `exited` event, the stream reconnects with
//! `from_seq` = the next chunk it has not delivered, so a caller sees every chunk exactly once. Only when
//! reconnecting keeps failing does it yield [`Error::Sandbox`].

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use reqwest::Method;
use sandpit_types::{LostEvent, OutputEvent, ProcessEvent, ProcessInfo};
use tokio::sync::mpsc;

use crate::api::SandboxRef;
use crate::error::{Error, Result};

/// How many consecutive failed reconnections end a stream with [`Error::Sandbox`].
pub(crate) const MAX_RETRIES: u32 = 5;

/// With no byte for this long (the server sends a keepalive every 15 s) the connection is taken as
/// dead and resumed.
pub(crate) const SILENCE: Duration = Duration::from_secs(45);

/// Delay before reconnection attempt `n` (0-based): 100 ms, doubling, at most 2 s.
pub(crate) fn backoff(n: u32) -> Duration {
    Duration::from_millis((100u64 << n.min(5)).min(2000))
}

/// A resumable stream of one process's events, ending after `Exited` (or one error).
///
/// Produced by [`ExecHandle`](crate::ExecHandle), [`Process::stream`](crate::Process::stream) and the
/// streaming commands; dropping it closes the connection.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::Receiver<Result<ProcessEvent>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stream for EventStream {
    type Item = Result<ProcessEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl EventStream {
    pub(crate) fn open(target: SandboxRef, pid: String, from_seq: u64) -> Self {
        let (tx, rx) = mpsc::channel(256);
        let task = tokio::spawn(pump(target, pid, from_seq.max(1), tx));
        Self { rx, task }
    }
}

/// Reads, decodes and forwards; reconnects from `next_seq` after a cut.
#[allow(clippy::too_many_lines)] // one reconnect loop; splitting it scatters the retry state
async fn pump(
    target: SandboxRef,
    pid: String,
    mut next_seq: u64,
    tx: mpsc::Sender<Result<ProcessEvent>>,
) {
    let mut started_sent = false;
    let mut failures = 0u32;
    let mut last_err: Option<Error> = None;
    loop {
        if failures > 0 {
            if failures > MAX_RETRIES {
                let why = last_err.map_or_else(String::new, |e| format!(": {e}"));
                let _ = tx
                    .send(Err(Error::cut(format!(
                        "the output stream of process {pid} was cut before it exited and could not be \
                         resumed from seq {next_seq} after {MAX_RETRIES} attempts{why}"
                    ))))
                    .await;
                return;
            }
            tokio::time::sleep(backoff(failures - 1)).await;
        }
        let rb = target
            .client
            .request(Method::GET, &target.events_path(&pid, next_seq))
            .header("accept", "text/event-stream");
        let resp = match target.client.send(rb).await {
            Ok(r) => r,
            Err(e) if e.is_transient() => {
                failures += 1;
                last_err = Some(e);
                continue;
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let mut body = resp.bytes_stream();
        let mut parser = SseParser::default();
        'read: loop {
            let chunk = tokio::select! {
                c = tokio::time::timeout(SILENCE, body.next()) => c,
                () = tx.closed() => return,
            };
            let Ok(chunk) = chunk else {
                last_err = Some(Error::cut(format!(
                    "no data (not even a keepalive) for {} s",
                    SILENCE.as_secs()
                )));
                break;
            };
            let chunk = match chunk {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    last_err = Some(e.into());
                    break;
                }
                None => {
                    last_err = Some(Error::cut("the connection closed before the exited event"));
                    break;
                }
            };
            for raw in parser.push(&chunk) {
                let ev = match decode(&raw) {
                    Ok(Some(ev)) => ev,
                    Ok(None) => continue,
                    // An unhealthy agent: a cut like any other, resumed once it answers again.
                    Err(e) if e.is_transient() => {
                        last_err = Some(e);
                        break 'read;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                let forward = match &ev {
                    ProcessEvent::Started(_) => !std::mem::replace(&mut started_sent, true),
                    ProcessEvent::Stdout { seq, .. } | ProcessEvent::Stderr { seq, .. } => {
                        let new = *seq >= next_seq;
                        next_seq = next_seq.max(seq + 1);
                        new
                    }
                    ProcessEvent::Lost(l) => {
                        let new = l.to_seq >= next_seq;
                        next_seq = next_seq.max(l.to_seq + 1);
                        new
                    }
                    ProcessEvent::Exited(_) => true,
                };
                let done = matches!(ev, ProcessEvent::Exited(_));
                if forward {
                    failures = 0;
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
                if done {
                    return;
                }
            }
        }
        failures += 1;
    }
}

pub(crate) use sandpit_types::sse::{RawEvent, SseParser};

/// Decodes a known event; `None` for keepalives and kinds this client does not know.
pub(crate) fn decode(raw: &RawEvent) -> Result<Option<ProcessEvent>> {
    let bad = |e: serde_json::Error| {
        Error::Protocol(format!("bad SSE {:?} event: {e}: {}", raw.event, raw.data))
    };
    Ok(Some(match raw.event.as_str() {
        "started" => {
            ProcessEvent::Started(serde_json::from_str::<ProcessInfo>(&raw.data).map_err(bad)?)
        }
        "exited" => {
            ProcessEvent::Exited(serde_json::from_str::<ProcessInfo>(&raw.data).map_err(bad)?)
        }
        "stdout" | "stderr" => {
            let o: OutputEvent = serde_json::from_str(&raw.data).map_err(bad)?;
            let seq = o.seq;
            let data = o.into_bytes();
            if raw.event == "stdout" {
                ProcessEvent::Stdout { seq, data }
            } else {
                ProcessEvent::Stderr { seq, data }
            }
        }
        "lost" => ProcessEvent::Lost(serde_json::from_str::<LostEvent>(&raw.data).map_err(bad)?),
        // The daemon ended the stream on purpose (the sandbox's agent stopped answering): its error.
        "error" => {
            let d: sandpit_types::ErrorDetail = serde_json::from_str(&raw.data).map_err(bad)?;
            return Err(Error::from_api(d.code.http_status(), d.code, d.message));
        }
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandpit_types::ErrorCode;

    #[test]
    fn parses_split_events_and_skips_keepalives() {
        let mut p = SseParser::default();
        assert!(p.push(b"id: 7\nevent: std").is_empty());
        let evs =
            p.push(b"out\ndata: {\"seq\":7,\"data\":\"hi\\n\"}\r\n\r\nevent: keepalive\n\n: c\n");
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].id.as_deref(), Some("7"));
        let ev = decode(&evs[0]).unwrap().unwrap();
        assert_eq!(
            ev,
            ProcessEvent::Stdout {
                seq: 7,
                data: b"hi\n".to_vec()
            }
        );
        assert_eq!(decode(&evs[1]).unwrap(), None);
        let evs = p.push(b"event: lost\ndata: {\"from_seq\":1,\"to_seq\":3,\"bytes\":9}\n\n");
        assert!(matches!(
            decode(&evs[0]).unwrap(),
            Some(ProcessEvent::Lost(LostEvent { to_seq: 3, .. }))
        ));
    }

    #[test]
    fn an_error_event_is_the_daemons_error_and_a_transient_one() {
        let mut p = SseParser::default();
        let evs = p.push(
            b"event: error\ndata: {\"code\":\"unavailable\",\"message\":\"agent stopped\"}\n\n",
        );
        let e = decode(&evs[0]).unwrap_err();
        assert!(e.is_transient(), "{e:?}");
        assert!(
            matches!(&e, Error::Api(a) if a.code == ErrorCode::Unavailable && a.message == "agent stopped")
        );
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(9), Duration::from_secs(2));
    }
}
