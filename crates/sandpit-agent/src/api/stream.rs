//! Live and replayed output: Server-Sent Events and the WebSocket session.
//!
//! Both transports read the same [`follow`] feed, which starts at any `seq`, reports dropped output as
//! `lost`, and ends with `exited` once every chunk was delivered. A slow client only slows its own feed;
//! the process writes into its log regardless.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use sandpit_types::{
    Channel, ClientControl, ErrorCode, Frame, LostEvent, OutputEvent, ProcessInfo, ServerControl,
    StreamQuery,
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
                if tx.send(Item::Chunk(c)).await.is_err() {
                    return;
                }
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
    if let Some(s) = q.from_seq {
        return Ok(s.max(1));
    }
    match headers.get("last-event-id") {
        None => Ok(1),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(|id| id + 1)
            .ok_or_else(|| ApiError::invalid("Last-Event-ID must be a seq number")),
    }
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
                .data(json(&OutputEvent::new(c.seq, &c.data)))
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
                    Item::Chunk(c) => {
                        let ch = if c.stream == Stream::Stderr { Channel::Stderr } else { Channel::Stdout };
                        Message::Binary(Frame::encode(ch, c.seq, &c.data).into())
                    }
                };
                if socket.send(msg).await.is_err() {
                    return;
                }
                if last {
                    let close = axum::extract::ws::CloseFrame {
                        code: axum::extract::ws::close_code::NORMAL,
                        reason: "process exited".into(),
                    };
                    let _ = socket.send(Message::Close(Some(close))).await;
                    break;
                }
            }
            msg = socket.recv() => {
                let Some(Ok(msg)) = msg else { return };
                let reply = match msg {
                    Message::Binary(b) => match Frame::decode(&b) {
                        Ok(Frame { channel: Channel::Stdin, data, .. }) => {
                            proc.write_stdin(&data).await.err().map(ApiError::from)
                        }
                        Ok(_) => Some(ApiError::invalid("clients may only send channel 0 (stdin)")),
                        Err(e) => Some(ApiError::invalid(e.to_string())),
                    },
                    Message::Text(t) => match serde_json::from_str::<ClientControl>(&t) {
                        Ok(c) => apply(&proc, c).await.err(),
                        Err(e) => Some(ApiError::invalid(format!("bad control message: {e}"))),
                    },
                    Message::Close(_) => return,
                    Message::Ping(_) | Message::Pong(_) => None,
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

async fn apply(proc: &Process, c: ClientControl) -> Result<(), ApiError> {
    match c {
        ClientControl::Stdin { data } => proc.write_stdin(data.as_bytes()).await?,
        ClientControl::StdinEof => proc.close_stdin().await?,
        ClientControl::Signal { signal } => {
            proc.signal(signal.number().map_err(ApiError::invalid)?)?;
        }
        ClientControl::Resize { cols, rows } => {
            if cols == 0 || rows == 0 {
                return Err(ApiError::new(
                    ErrorCode::InvalidArgument,
                    "size must be at least 1x1",
                ));
            }
            proc.resize(sandpit_types::TtySize { cols, rows })?;
        }
    }
    Ok(())
}
