//! The Kafka face: a listener speaking Kafka's protocol, mapped onto the engine.
//!
//! One task per connection reads frames, decodes them with `kascade-wire`,
//! runs the handler of the request's API (one file per API under [`api`]) and
//! writes the response. Requests of one connection are answered in order, as
//! Kafka clients require.

pub mod api;
pub mod fetch_sessions;
pub mod groups;
pub mod producers;
pub mod topics;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::RequestHeader;
use kascade_core::Engine;
use kascade_wire::kafka::codec::{self, DecodeError, Request};
use kascade_wire::kafka::frame::split_frame;
use kascade_wire::kafka::{ApiKey, RequestKind, ResponseKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config::Config;

/// What every Kafka handler shares: the engine, the topics, the broker's identity.
pub struct State {
    /// The engine.
    pub engine: Engine,
    /// Topics and their metadata.
    pub topics: topics::Topics,
    /// Idempotent producer ids.
    pub producers: producers::ProducerIds,
    /// Incremental fetch sessions.
    pub fetch_sessions: fetch_sessions::FetchSessions,
    /// The group coordinator: consumer groups and their committed offsets.
    pub groups: groups::Groups,
    /// This broker's node id.
    pub node_id: i32,
    /// The host clients are told to connect to.
    pub advertised_host: String,
    /// The port clients are told to connect to.
    pub advertised_port: i32,
    /// The cluster id, fixed at the data dir's first start.
    pub cluster_id: String,
    /// Whether Metadata and Produce create unknown topics.
    pub auto_create_topics: bool,
    /// Partitions of a topic created without a count.
    pub num_partitions: i32,
    /// Largest request frame accepted.
    pub max_frame_bytes: usize,
    /// The settings the broker started with (DescribeConfigs reports them).
    pub config: Config,
    /// Called after every append to a partition (see [`AppendHook`]).
    pub append_hook: std::sync::OnceLock<AppendHook>,
}

/// Told of every batch appended to a partition, right after the put, on the
/// appending thread: the native subscriptions push a volatile topic's new
/// batches from there, with no upcall and no thread hop.
pub type AppendHook =
    Arc<dyn Fn(&topics::Topic, &kascade_core::Key, &[kascade_core::WriteResult]) + Send + Sync>;

/// Why the Kafka listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The listen or advertised address is unusable.
    #[error("Kafka listener on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The advertised address does not parse.
    #[error("advertised address {0:?} must be host:port")]
    Advertised(String),
    /// Loading topics failed.
    #[error("loading topics: {0}")]
    Topics(#[from] topics::TopicError),
    /// Loading consumer groups failed.
    #[error("loading consumer groups: {0}")]
    Groups(#[from] groups::GroupError),
}

impl State {
    /// Loads topics and producer state from the engine.
    pub fn open(engine: Engine, config: &Config, bound: SocketAddr) -> Result<State, ListenError> {
        let topics = topics::Topics::open(engine.clone())?;
        let producers = producers::ProducerIds::open(engine.clone())?;
        let groups = groups::Groups::open(engine.clone())?;
        let cluster_id = producers.cluster_id().to_string();
        let (advertised_host, advertised_port) = match &config.advertised {
            Some(a) => {
                let (h, p) = a
                    .rsplit_once(':')
                    .ok_or_else(|| ListenError::Advertised(a.clone()))?;
                let port = p
                    .parse::<u16>()
                    .map_err(|_| ListenError::Advertised(a.clone()))?;
                (h.trim_matches(['[', ']']).to_string(), i32::from(port))
            }
            None => (bound.ip().to_string(), i32::from(bound.port())),
        };
        Ok(State {
            engine,
            topics,
            producers,
            fetch_sessions: fetch_sessions::FetchSessions::default(),
            groups,
            node_id: config.node_id,
            advertised_host,
            advertised_port,
            cluster_id,
            auto_create_topics: config.auto_create_topics,
            num_partitions: config.num_partitions.max(1),
            max_frame_bytes: config.max_frame_bytes,
            config: config.clone(),
            append_hook: std::sync::OnceLock::new(),
        })
    }
}

/// Binds the Kafka listener.
pub async fn bind(config: &Config) -> Result<TcpListener, ListenError> {
    TcpListener::bind(&config.listen)
        .await
        .map_err(|source| ListenError::Bind {
            addr: config.listen.clone(),
            source,
        })
}

/// Accepts connections until the task is dropped.
pub async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let state = state.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_connection(stream, peer, state).await {
                        tracing::debug!(%peer, "connection closed: {e}");
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accepting a Kafka connection failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Requests at least this large are read into a buffer of their own.
const OWN_BUFFER_BYTES: usize = 64 << 10;

/// The length of the incomplete frame at the head of `inbuf`, when it is large
/// enough to get a buffer of its own and within `limit` (`split_frame` refuses
/// the others).
fn large_frame_len(inbuf: &BytesMut, limit: usize) -> Option<usize> {
    let head: [u8; 4] = inbuf.get(..4)?.try_into().ok()?;
    let len = usize::try_from(i32::from_be_bytes(head)).ok()?;
    (len >= OWN_BUFFER_BYTES && len <= limit && inbuf.len() < 4 + len).then_some(len)
}

/// Reads the rest of a `len`-byte frame whose start is in `inbuf` into a buffer
/// holding that frame alone, and empties `inbuf`; `None` when the peer closed.
///
/// A frame sharing the connection's buffer can never be owned by one batch, so
/// produce would have to copy each batch it stores; a large request's own
/// buffer can become the stored batch as is. The buffer grows as bytes arrive
/// (at most doubling), so a peer that announces a large frame and sends
/// nothing makes the broker reserve little.
async fn read_own_buffer<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
    inbuf: &mut BytesMut,
    len: usize,
) -> std::io::Result<Option<Bytes>> {
    use bytes::BufMut;
    let mut own = BytesMut::with_capacity(len.min(1 << 20));
    own.extend_from_slice(inbuf.get(4..).unwrap_or_default());
    inbuf.clear();
    while own.len() < len {
        let room = len - own.len();
        if own.capacity() == own.len() {
            own.reserve(room.min(own.len().max(1 << 20)));
        }
        if stream.read_buf(&mut (&mut own).limit(room)).await? == 0 {
            return Ok(None);
        }
    }
    Ok(Some(own.freeze()))
}

/// Requests of one connection read ahead of the response being written.
const MAX_IN_FLIGHT: usize = 64;

/// A request on its way to the writer, which answers in request order.
enum Queued {
    /// A produce whose batches are already appended; its response waits only
    /// for them to become readable (durable), so several pipelined produces
    /// share one group-committed fsync.
    Produce {
        version: i16,
        correlation_id: i32,
        started: api::ProduceStarted,
    },
    /// Any other request, handled when the writer reaches it; `done` tells the
    /// reader it was handled, so a later produce cannot overtake it.
    Handle {
        request: Box<Request>,
        done: tokio::sync::oneshot::Sender<()>,
    },
    /// A response encoded already (the ApiVersions fallback).
    Encoded(BytesMut),
}

/// Serves one client connection until it closes or breaks the protocol.
///
/// The reader decodes requests as they arrive and appends produced batches in
/// request order; the writer answers in request order. A produce's response
/// waits for its batches to be durable without holding up the reading and
/// appending of the produces pipelined behind it (librdkafka keeps up to five
/// in flight per connection), so their fsyncs are shared. Every other request
/// is handled in turn, as Kafka does.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (mut reader, writer) = stream.into_split();
    let (tx, rx) = tokio::sync::mpsc::channel::<Queued>(MAX_IN_FLIGHT);
    let write_task = tokio::spawn(write_loop(writer, rx, state.clone(), peer));
    let mut inbuf = BytesMut::with_capacity(64 << 10);
    let supported = |key: ApiKey| api::served_range(key);
    let mut last_handled: Option<tokio::sync::oneshot::Receiver<()>> = None;
    let result = loop {
        let frame = loop {
            if let Some(len) = large_frame_len(&inbuf, state.max_frame_bytes) {
                match read_own_buffer(&mut reader, &mut inbuf, len).await {
                    Ok(Some(frame)) => break Some(frame),
                    Ok(None) => break None,
                    Err(e) => return finish(tx, write_task, Err(e)).await,
                }
            }
            match split_frame(&mut inbuf, state.max_frame_bytes) {
                Ok(Some(frame)) => break Some(frame),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%peer, "closing connection: {e}");
                    break None;
                }
            }
            match reader.read_buf(&mut inbuf).await {
                Ok(0) => break None,
                Ok(_) => {}
                Err(e) => return finish(tx, write_task, Err(e)).await,
            }
        };
        let Some(frame) = frame else {
            break Ok(());
        };
        let queued = match codec::decode_request(frame, &supported) {
            Ok(mut request) if request.api_key == ApiKey::Produce => {
                // Everything before this produce is handled before it appends.
                if let Some(done) = last_handled.take() {
                    let _ = done.await;
                }
                let version = request.version;
                let correlation_id = request.header.correlation_id;
                // The client id is a slice of the frame: release it, so that a
                // produced batch can own the frame's buffer (see produce.rs).
                request.header = RequestHeader::default();
                let RequestKind::Produce(body) = request.body else {
                    break Ok(());
                };
                let started = api::start_produce(&state, version, body);
                Queued::Produce {
                    version,
                    correlation_id,
                    started,
                }
            }
            Ok(request) => {
                let (done, handled) = tokio::sync::oneshot::channel();
                last_handled = Some(handled);
                Queued::Handle {
                    request: Box::new(request),
                    done,
                }
            }
            Err(DecodeError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                correlation_id,
                ..
            }) => {
                let mut out = BytesMut::new();
                if let Err(e) =
                    codec::encode_api_versions_fallback(&mut out, correlation_id, api::SERVED)
                {
                    tracing::error!(%peer, "closing connection: {e}");
                    break Ok(());
                }
                Queued::Encoded(out)
            }
            Err(e) => {
                tracing::warn!(%peer, "closing connection: {e}");
                break Ok(());
            }
        };
        if tx.send(queued).await.is_err() {
            break Ok(()); // The writer stopped: the peer is gone.
        }
    };
    finish(tx, write_task, result).await
}

/// Lets the writer answer what was queued, then ends the connection.
async fn finish(
    tx: tokio::sync::mpsc::Sender<Queued>,
    write_task: tokio::task::JoinHandle<std::io::Result<()>>,
    result: std::io::Result<()>,
) -> std::io::Result<()> {
    drop(tx);
    let written = write_task
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    result.and(written)
}

/// Answers queued requests in order.
async fn write_loop(
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    mut rx: tokio::sync::mpsc::Receiver<Queued>,
    state: Arc<State>,
    peer: SocketAddr,
) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(64 << 10);
    while let Some(queued) = rx.recv().await {
        let encoded = match queued {
            Queued::Encoded(bytes) => {
                out.extend_from_slice(&bytes);
                Ok(())
            }
            Queued::Produce {
                version,
                correlation_id,
                started,
            } => match started.finish().await {
                Some(response) => codec::encode_response(
                    &mut out,
                    ApiKey::Produce,
                    version,
                    correlation_id,
                    &mut ResponseKind::Produce(response),
                ),
                None => Ok(()), // acks=0: Kafka sends no response.
            },
            Queued::Handle { request, done } => {
                let api_key = request.api_key;
                let version = request.version;
                let correlation_id = request.header.correlation_id;
                let response = api::handle(&state, *request, peer).await;
                let _ = done.send(());
                match response {
                    Some(mut response) => codec::encode_response(
                        &mut out,
                        api_key,
                        version,
                        correlation_id,
                        &mut response,
                    ),
                    None => {
                        tracing::error!(%peer, ?api_key, "closing connection: no handler");
                        return Ok(());
                    }
                }
            }
        };
        if let Err(e) = encoded {
            tracing::error!(%peer, "closing connection: {e}");
            return Ok(());
        }
        // Each response goes out at once: the next queued request may be a
        // long poll, and holding a finished answer behind it would add latency.
        if !out.is_empty() {
            writer.write_all(&out).await?;
            out.clear();
        }
    }
    Ok(())
}
