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
use kascade_wire::kafka::codec::{self, DecodeError};
use kascade_wire::kafka::frame::split_frame;
use kascade_wire::kafka::ApiKey;
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
}

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
/// buffer can become the stored batch as is.
async fn read_own_buffer(
    stream: &mut TcpStream,
    inbuf: &mut BytesMut,
    len: usize,
) -> std::io::Result<Option<Bytes>> {
    use bytes::BufMut;
    let mut own = BytesMut::with_capacity(len);
    own.extend_from_slice(inbuf.get(4..).unwrap_or_default());
    inbuf.clear();
    while own.len() < len {
        let room = len - own.len();
        if stream.read_buf(&mut (&mut own).limit(room)).await? == 0 {
            return Ok(None);
        }
    }
    Ok(Some(own.freeze()))
}

/// Serves one client connection until it closes or breaks the protocol.
async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut inbuf = BytesMut::with_capacity(64 << 10);
    let mut outbuf = BytesMut::with_capacity(64 << 10);
    let supported = |key: ApiKey| api::served_range(key);
    loop {
        let frame = loop {
            if let Some(len) = large_frame_len(&inbuf, state.max_frame_bytes) {
                match read_own_buffer(&mut stream, &mut inbuf, len).await? {
                    Some(frame) => break frame,
                    None => return Ok(()),
                }
            }
            match split_frame(&mut inbuf, state.max_frame_bytes) {
                Ok(Some(frame)) => break frame,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%peer, "closing connection: {e}");
                    return Ok(());
                }
            }
            if stream.read_buf(&mut inbuf).await? == 0 {
                return Ok(());
            }
        };
        match codec::decode_request(frame, &supported) {
            Ok(mut request) => {
                let api_key = request.api_key;
                let version = request.version;
                let correlation_id = request.header.correlation_id;
                // A produce request's client id is a slice of the frame: release
                // it, so that a produced batch can own the frame's buffer (see
                // produce.rs). Other APIs (JoinGroup) read the client id.
                if api_key == ApiKey::Produce {
                    request.header = RequestHeader::default();
                }
                let Some(mut response) = api::handle(&state, request, peer).await else {
                    continue; // acks=0 produce: Kafka sends no response.
                };
                if let Err(e) = codec::encode_response(
                    &mut outbuf,
                    api_key,
                    version,
                    correlation_id,
                    &mut response,
                ) {
                    tracing::error!(%peer, "closing connection: {e}");
                    return Ok(());
                }
            }
            Err(DecodeError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                correlation_id,
                ..
            }) => {
                if let Err(e) =
                    codec::encode_api_versions_fallback(&mut outbuf, correlation_id, api::SERVED)
                {
                    tracing::error!(%peer, "closing connection: {e}");
                    return Ok(());
                }
            }
            Err(e) => {
                tracing::warn!(%peer, "closing connection: {e}");
                return Ok(());
            }
        }
        if !outbuf.is_empty() {
            stream.write_all(&outbuf).await?;
            outbuf.clear();
        }
    }
}
