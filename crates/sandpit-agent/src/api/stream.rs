//! Live and replayed output: Server-Sent Events and the WebSocket session.
//!
//! Both transports read the same [`follow`] feed, which starts at any `seq`, reports dropped output as
//! `lost`, and ends with `exited` once every chunk was delivered. A client slower than its process holds
//! the process back while it keeps reading (`crate::flow`; and so every feed of that process), for at
//! most `flow::STALL` once it stops reading.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use sandpit_types::{
    ClientMessage, LostEvent, ProcessInfo, ServerControl, StreamQuery, output_event_json,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::error::{ApiError, PathParam, Query};
use crate::agent::Agent;
use crate::output::{Chunk, Stream};
use crate::process::Process;

/// One item of a process's feed.
#[derive(Debug)]
pub enum Item {
    Started(ProcessInfo),
    Chunk(Chunk),
    Lost(LostEvent),
    Exited(ProcessInfo),
}

/// Streams `proc`'s events from seq `from` on, through a small channel (the consumer's pace).
pub fn follow(proc: Arc<Process>, from: u64) -> mpsc::Receiver<Item> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        if tx.send(Item::Started(proc.info())).await.is_err() {
            return;
        }
        let mut tick = proc.log.subscribe();
        let mut done = proc.done();
        let mut at = from;
        // The output offset at which `at` starts, once known: it makes `lost` sizes exact.
        let mut at_offset = (from == 1).then_some(0);
        // While this feed lags, the process's writer waits for it (`crate::flow`): a follower that
        // keeps reading loses nothing to the cap.
        let cursor = proc.log.follow(at_offset);
        loop {
            tick.borrow_and_update();
            let finished = *done.borrow_and_update();
            let batch = proc.log.read(at, at_offset, 256 * 1024);
            at = batch.next;
            at_offset = batch
                .chunks
                .last()
                .map_or(at_offset, |c| Some(c.offset + c.data.len() as u64));
            if let Some(lost) = batch.lost {
                if tx.send(Item::Lost(lost)).await.is_err() {
                    return;
                }
            }
            let empty = batch.chunks.is_empty();
            for c in batch.chunks {
                let end = c.offset + c.data.len() as u64;
                if tx.send(Item::Chunk(c)).await.is_err() {
                    return;
                }
                cursor.advance(end);
            }
            if empty {
                if finished {
                    let _ = tx.send(Item::Exited(proc.info())).await;
                    return;
                }
                tokio::select! {
                    _ = tick.changed() => {}
                    _ = done.changed() => {}
                    () = tx.closed() => return,
                }
            }
        }
    });
    rx
}

/// Where a stream starts: `from_seq`, else one past `Last-Event-ID`, else the beginning.
fn start_seq(q: &StreamQuery, headers: &HeaderMap) -> Result<u64, ApiError> {
    q.start_seq(
        headers
            .get("last-event-id")
            .map(axum::http::HeaderValue::as_bytes),
    )
    .map_err(ApiError::invalid)
}

pub async fn events(
    State(agent): State<Arc<Agent>>,
    PathParam(pid): PathParam<String>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let proc = agent.get(&pid)?;
    let from = start_seq(&q, &headers)?;
    let feed =
        ReceiverStream::new(follow(proc, from)).map(|item| Ok::<_, Infallible>(sse_event(item)));
    let keepalive = KeepAlive::new()
        .interval(Duration::from_secs(15))
        .event(Event::default().event("keepalive"));
    Ok(Sse::new(feed).keep_alive(keepalive).into_response())
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("wire types serialize")
}

fn sse_event(item: Item) -> Event {
    match item {
        Item::Started(info) => Event::default().event("started").data(json(&info)),
        Item::Exited(info) => Event::default().event("exited").data(json(&info)),
        Item::Lost(l) => Event::default().event("lost").data(json(&l)),
        Item::Chunk(c) => {
            let name = match c.stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            };
            Event::default()
                .id(c.seq.to_string())
                .event(name)
                // Serialized into one string: `Event::json_data` writes each escaped piece through
                // its own newline filter, which costs more than it saves.
                .data(output_event_json(c.seq, &c.data))
        }
    }
}

pub async fn websocket(
    State(agent): State<Arc<Agent>>,
    PathParam(pid): PathParam<String>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let proc = agent.get(&pid)?;
    let ws = ws.map_err(|r| {
        ApiError::invalid(format!(
            "this endpoint needs a WebSocket upgrade: {}",
            r.body_text()
        ))
    })?;
    let from = start_seq(&q, &headers)?;
    Ok(ws
        .max_message_size(4 << 20)
        .max_frame_size(4 << 20)
        .on_upgrade(move |socket| session(socket, proc, from))
        .into_response())
}

async fn session(mut socket: WebSocket, proc: Arc<Process>, from: u64) {
    let mut feed = follow(proc.clone(), from);
    loop {
        tokio::select! {
            item = feed.recv() => {
                let Some(item) = item else { break };
                let last = matches!(item, Item::Exited(_));
                let msg = match item {
                    Item::Started(process) => control(&ServerControl::Started { process }),
                    Item::Exited(process) => control(&ServerControl::Exited { process }),
                    Item::Lost(l) => control(&ServerControl::Lost(l)),
                    // Made in place when the chunk was read (`output::Chunk::frame`): no copy here.
                    Item::Chunk(c) => Message::Binary(c.frame),
                };
                if socket.send(msg).await.is_err() {
                    return;
                }
                if last {
                    let close = CloseFrame {
                        code: close_code::NORMAL,
                        reason: "process exited".into(),
                    };
                    let _ = socket.send(Message::Close(Some(close))).await;
                    break;
                }
            }
            msg = socket.recv() => {
                let msg = match msg {
                    None => return,
                    Some(Ok(msg)) => msg,
                    // A frame the WebSocket layer refused (too big, text that is not UTF-8, a protocol
                    // violation) ends the session; the client learns why from the close frame instead
                    // of seeing the connection drop. No drain: after such an error the layer must not
                    // read again (it would go on buffering the refused frame).
                    Some(Err(e)) => {
                        let _ = socket.send(Message::Close(Some(close_frame_for(e)))).await;
                        return;
                    }
                };
                let decoded = match msg {
                    Message::Binary(b) => ClientMessage::from_binary(&b),
                    Message::Text(t) => ClientMessage::from_text(&t),
                    // The close reply is queued by the WebSocket layer; the drain below sends it.
                    Message::Close(_) => break,
                    Message::Ping(_) | Message::Pong(_) => continue,
                };
                let reply = match decoded {
                    Ok(m) => apply(&proc, m).await.err(),
                    Err(e) => Some(ApiError::invalid(e)),
                };
                if let Some(e) = reply {
                    let m = control(&ServerControl::Error { code: e.code, message: e.message });
                    if socket.send(m).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
    // Drain the close handshake briefly so the client sees a clean close.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(m)) = socket.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

fn control(c: &ServerControl) -> Message {
    Message::Text(json(c).into())
}

/// Applies a decoded client message (decoding and its checks are `ClientMessage`'s, in sandpit-types).
async fn apply(proc: &Process, m: ClientMessage) -> Result<(), ApiError> {
    match m {
        ClientMessage::Stdin(data) => proc.write_stdin(&data).await?,
        ClientMessage::StdinEof => proc.close_stdin().await?,
        ClientMessage::Signal(n) => proc.signal(n)?,
        ClientMessage::Resize(size) => proc.resize(size)?,
    }
    Ok(())
}

/// The close frame that tells a client why its frame ended the session (RFC 6455 7.4.1 codes). The
/// reason is the WebSocket layer's message, cut to the 123 bytes a close frame can carry.
fn close_frame_for(e: axum::Error) -> CloseFrame {
    use tungstenite::Error as WsError;
    let (code, what) = match e.into_inner().downcast::<WsError>() {
        Ok(e) => {
            let code = match *e {
                WsError::Capacity(_) => close_code::SIZE,
                WsError::Utf8(_) => close_code::INVALID,
                _ => close_code::PROTOCOL,
            };
            (code, e.to_string())
        }
        Err(other) => (close_code::PROTOCOL, other.to_string()),
    };
    let mut reason = what;
    if reason.len() > 123 {
        let mut end = 123;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    CloseFrame {
        code,
        reason: reason.into(),
    }
}
