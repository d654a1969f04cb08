//! The WebSocket session of one process (`GET /processes/{pid}/ws`): a background task that owns the
//! socket, decodes binary output frames and JSON control frames into events, writes stdin and control
//! messages, and reconnects with `from_seq` after a cut so no chunk is lost or repeated. Interactive
//! sessions ([`CommandSession`](crate::CommandSession)) and terminal attach use it; closing it never
//! affects the process.

use futures_util::{SinkExt, StreamExt};
use sandpit_types::{Channel, ClientControl, Frame, ProcessEvent, ServerControl};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::api::SandboxRef;
use crate::error::{Error, Result};
use crate::sse::{MAX_RETRIES, backoff};

/// Something the session task reports.
#[derive(Debug)]
pub(crate) enum Incoming {
    Event(ProcessEvent),
}

/// Something to send to the process.
#[derive(Debug, Clone)]
pub(crate) enum Outgoing {
    Stdin(Vec<u8>),
    StdinEof,
    Resize { cols: u16, rows: u16 },
}

impl Outgoing {
    fn message(&self, counter: u64) -> Message {
        let ctl = match self {
            Self::Stdin(b) => {
                return Message::Binary(Frame::encode(Channel::Stdin, counter, b).into());
            }
            Self::StdinEof => ClientControl::StdinEof,
            Self::Resize { cols, rows } => ClientControl::Resize {
                cols: *cols,
                rows: *rows,
            },
        };
        Message::Text(
            serde_json::to_string(&ctl)
                .expect("control messages serialize")
                .into(),
        )
    }
}

/// The two ends a session's owner holds. Dropping both ends the task and closes the socket.
#[derive(Debug)]
pub(crate) struct WsSession {
    pub(crate) events: mpsc::Receiver<Result<Incoming>>,
    pub(crate) out: mpsc::UnboundedSender<Outgoing>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WsSession {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(target: &SandboxRef, pid: &str, from_seq: u64) -> Result<Socket> {
    let (url, auth) = target.client.ws_target(&target.ws_path(pid, from_seq));
    let mut req = url.into_client_request()?;
    if let Some(a) = auth {
        req.headers_mut().insert(
            "authorization",
            a.parse()
                .map_err(|_| Error::invalid("the API key is not a valid HTTP header value"))?,
        );
    }
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(|e| target.client.refine(e.into()))?;
    Ok(ws)
}

impl WsSession {
    /// Connects (the first connection's failure is returned here, not through the events).
    pub(crate) async fn open(target: SandboxRef, pid: String, from_seq: u64) -> Result<Self> {
        let ws = connect(&target, &pid, from_seq.max(1)).await?;
        let (tx, events) = mpsc::channel(256);
        let (out, out_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(target, pid, from_seq.max(1), ws, tx, out_rx));
        Ok(Self { events, out, task })
    }
}

enum Step {
    Done,
    Cut(Error),
}

async fn run(
    target: SandboxRef,
    pid: String,
    mut next_seq: u64,
    ws: Socket,
    tx: mpsc::Sender<Result<Incoming>>,
    mut out_rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    let mut ws = Some(ws);
    let mut started_sent = false;
    let mut pending: Option<Outgoing> = None;
    let mut counter = 0u64;
    let mut failures = 0u32;
    let mut out_open = true;
    let mut last_err: Option<Error> = None;
    loop {
        let sock =
            if let Some(s) = ws.take() {
                s
            } else {
                if failures > MAX_RETRIES {
                    let _ = tx
                    .send(Err(Error::cut(format!(
                        "the session with process {pid} was cut before it exited and could not be \
                         resumed from seq {next_seq} after {MAX_RETRIES} attempts{}",
                        last_err.as_ref().map_or_else(String::new, |e| format!(": {e}"))
                    ))))
                    .await;
                    return;
                }
                tokio::time::sleep(backoff(failures.saturating_sub(1))).await;
                match connect(&target, &pid, next_seq).await {
                    Ok(s) => s,
                    Err(e) if e.is_transient() => {
                        failures += 1;
                        last_err = Some(e);
                        continue;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            };
        let step = session(
            sock,
            &tx,
            &mut out_rx,
            &mut out_open,
            &mut pending,
            &mut counter,
            &mut next_seq,
            &mut started_sent,
            &mut failures,
        )
        .await;
        match step {
            Step::Done => return,
            Step::Cut(e) => {
                failures += 1;
                last_err = Some(e);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn session(
    mut sock: Socket,
    tx: &mpsc::Sender<Result<Incoming>>,
    out_rx: &mut mpsc::UnboundedReceiver<Outgoing>,
    out_open: &mut bool,
    pending: &mut Option<Outgoing>,
    counter: &mut u64,
    next_seq: &mut u64,
    started_sent: &mut bool,
    failures: &mut u32,
) -> Step {
    if let Some(p) = pending.take() {
        *counter += 1;
        if let Err(e) = sock.send(p.message(*counter)).await {
            *pending = Some(p);
            return Step::Cut(e.into());
        }
    }
    loop {
        tokio::select! {
            msg = sock.next() => {
                let msg = match msg {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => return Step::Cut(e.into()),
                    None => return Step::Cut(Error::cut("socket closed before the exited message")),
                };
                let inc = match msg {
                    Message::Binary(b) => match Frame::decode(&b) {
                        Ok(f) => {
                            if f.seq < *next_seq {
                                continue;
                            }
                            *next_seq = f.seq + 1;
                            let (seq, data) = (f.seq, f.data);
                            match f.channel {
                                Channel::Stdout => Incoming::Event(ProcessEvent::Stdout { seq, data }),
                                Channel::Stderr => Incoming::Event(ProcessEvent::Stderr { seq, data }),
                                Channel::Stdin => continue,
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(Error::Protocol(e.to_string()))).await;
                            return Step::Done;
                        }
                    },
                    Message::Text(t) => match serde_json::from_str::<ServerControl>(&t) {
                        Ok(ServerControl::Started { process }) => {
                            if std::mem::replace(started_sent, true) {
                                continue;
                            }
                            Incoming::Event(ProcessEvent::Started(process))
                        }
                        Ok(ServerControl::Lost(l)) => {
                            if l.to_seq < *next_seq {
                                continue;
                            }
                            *next_seq = l.to_seq + 1;
                            Incoming::Event(ProcessEvent::Lost(l))
                        }
                        Ok(ServerControl::Exited { process }) => {
                            let _ = tx.send(Ok(Incoming::Event(ProcessEvent::Exited(process)))).await;
                            let _ = sock.close(None).await;
                            return Step::Done;
                        }
                        // A control message could not be applied (e.g. stdin already closed); the
                        // session goes on, as the protocol says.
                        // ...and a message kind this client does not know yet is ignored.
                        Ok(ServerControl::Error { .. }) | Err(_) => continue,
                    },
                    Message::Close(_) => return Step::Cut(Error::cut("socket closed before the exited message")),
                    _ => continue,
                };
                *failures = 0;
                if tx.send(Ok(inc)).await.is_err() && !*out_open {
                    let _ = sock.close(None).await;
                    return Step::Done;
                }
            }
            o = out_rx.recv(), if *out_open => {
                if let Some(o) = o {
                    *counter += 1;
                    if let Err(e) = sock.send(o.message(*counter)).await {
                        *pending = Some(o);
                        return Step::Cut(e.into());
                    }
                } else {
                    *out_open = false;
                    if tx.is_closed() {
                        let _ = sock.close(None).await;
                        return Step::Done;
                    }
                }
            }
            () = tx.closed(), if !*out_open => {
                let _ = sock.close(None).await;
                return Step::Done;
            }
        }
    }
}

/// Where [`follow`] reads from.
enum Source {
    Unopened(SandboxRef, String, u64),
    Socket(WsSession),
    Sse(crate::sse::EventStream),
}

/// A process's events from `from_seq` until `exited`, for [`Process::stream`](crate::Process::stream):
/// over the WebSocket session (binary frames: no JSON or base64 to decode; a bounded queue, so a slow
/// consumer holds the socket, and through it the process, back). When no socket can be opened (a proxy
/// that drops `Upgrade`, an API error) the events come over SSE instead, which reports any API error
/// itself. Either resumes a cut connection from the last seq.
pub(crate) fn follow(
    target: SandboxRef,
    pid: String,
    from_seq: u64,
) -> impl futures_util::Stream<Item = Result<ProcessEvent>> + Send + 'static {
    futures_util::stream::unfold(Source::Unopened(target, pid, from_seq), |src| async move {
        let mut src = match src {
            Source::Unopened(target, pid, from_seq) => {
                match WsSession::open(target.clone(), pid.clone(), from_seq).await {
                    Ok(s) => Source::Socket(s),
                    Err(_) => Source::Sse(target.events(&pid, from_seq)),
                }
            }
            open => open,
        };
        let item = match &mut src {
            Source::Socket(s) => s
                .events
                .recv()
                .await
                .map(|r| r.map(|Incoming::Event(ev)| ev)),
            Source::Sse(s) => s.next().await,
            Source::Unopened(..) => None,
        };
        item.map(|i| (i, src))
    })
}
