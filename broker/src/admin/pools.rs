//! Pools: list, create, describe, change and remove.
//!
//! A pool's JSON mirrors the engine's `PoolConfig`. Its prefix is the rest of the
//! path (`/v1/pools/sensors/raw` is the pool `/sensors/raw`; the root pool `/` is
//! `/v1/pools/%2F`). Pools under `/cms` belong to the Kafka face: topics are made
//! and removed through `/v1/topics`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kascade_core::{FsyncPolicy, PoolConfig, Prefix, Retention, Storage, UpcallOrdering};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{blocking, ApiError, ErrorBody, JsonBody, Shared};
use crate::kafka::topics::{GROUPS_PREFIX, META_PREFIX, TOPICS_PREFIX};

/// Where a pool's objects live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// Nothing is stored: every put is an upcall only.
    Trigger,
    /// In memory; lost on restart.
    Volatile,
    /// On disk; survives restart.
    Persistent,
}

/// How a pool's upcalls are ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Ordering {
    /// A key's upcalls run one at a time, in seq order.
    PerKey,
    /// Upcalls may run in parallel, even for one key.
    Concurrent,
}

/// When a persistent pool's writes reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Fsync {
    /// Every durable write waits for an fsync (shared by concurrent writes).
    Always,
    /// A background fsync at most every `ms` milliseconds.
    Interval {
        /// Milliseconds between fsyncs (at least 1).
        ms: u64,
    },
}

/// How much history a pool keeps per key; the newest version is always kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionBody {
    /// Keep at most this many bytes of versions per key.
    pub max_bytes: Option<u64>,
    /// Drop versions older than this many milliseconds.
    pub max_age_ms: Option<u64>,
    /// Keep at most this many versions per key (at least 1).
    pub max_versions: Option<u64>,
}

fn default_shards() -> u32 {
    4
}
fn default_replication() -> u32 {
    1
}
fn default_fsync() -> Fsync {
    Fsync::Always
}
fn default_ordering() -> Ordering {
    Ordering::PerKey
}
fn defaults() -> PoolConfig {
    PoolConfig::new("/", Storage::Volatile)
}
fn default_max_value() -> usize {
    defaults().max_value_bytes
}
fn default_segment_bytes() -> u64 {
    defaults().segment_bytes
}

/// A pool's whole policy (the engine's `PoolConfig`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// The key prefix the pool owns; the longest matching prefix wins.
    #[schema(
        example = "/sensors",
        pattern = "^/([^/\\x00-\\x1f\\x7f]+(/[^/\\x00-\\x1f\\x7f]+)*)?$",
        max_length = 1024
    )]
    pub prefix: String,
    /// Where objects live.
    pub storage: StorageKind,
    /// Number of shards, 1 to 1024 (fixed once created).
    #[serde(default = "default_shards")]
    #[schema(minimum = 1, maximum = 1024)]
    pub shards: u32,
    /// Replicas per shard: 1 until clustering lands.
    #[serde(default = "default_replication")]
    pub replication: u32,
    /// History kept per key.
    #[serde(default)]
    pub retention: RetentionBody,
    /// Upcall ordering.
    #[serde(default = "default_ordering")]
    pub ordering: Ordering,
    /// When writes reach the disk (persistent pools).
    #[serde(default = "default_fsync")]
    pub fsync: Fsync,
    /// Largest value accepted, in bytes (1 to 1 GiB).
    #[serde(default = "default_max_value")]
    #[schema(minimum = 1, maximum = 1073741824)]
    pub max_value_bytes: usize,
    /// Size at which a shard's log rolls to a new segment (at least 4096).
    #[serde(default = "default_segment_bytes")]
    #[schema(minimum = 4096)]
    pub segment_bytes: u64,
    /// Keep each new version in GPU memory too (a broker with GPU support; otherwise
    /// accepted and reported inactive at `GET /v1/gpu`).
    #[serde(default)]
    pub gpu: bool,
}

/// A change to a pool: the fields given replace the pool's; storage and shards are fixed.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PoolChange {
    /// Must equal the pool's storage if given (it cannot change).
    pub storage: Option<StorageKind>,
    /// Must equal the pool's shard count if given (it cannot change).
    pub shards: Option<u32>,
    /// New retention (replaces the whole retention).
    pub retention: Option<RetentionBody>,
    /// New upcall ordering.
    pub ordering: Option<Ordering>,
    /// New fsync policy.
    pub fsync: Option<Fsync>,
    /// New value size limit.
    pub max_value_bytes: Option<usize>,
    /// New segment size.
    pub segment_bytes: Option<u64>,
    /// Keep new versions in GPU memory too, or stop (for a topic, set its config `kascade.gpu`).
    pub gpu: Option<bool>,
}

impl From<StorageKind> for Storage {
    fn from(s: StorageKind) -> Storage {
        match s {
            StorageKind::Trigger => Storage::Trigger,
            StorageKind::Volatile => Storage::Volatile,
            StorageKind::Persistent => Storage::Persistent,
        }
    }
}

impl From<Storage> for StorageKind {
    fn from(s: Storage) -> StorageKind {
        match s {
            Storage::Trigger => StorageKind::Trigger,
            Storage::Volatile => StorageKind::Volatile,
            Storage::Persistent => StorageKind::Persistent,
        }
    }
}

impl From<Ordering> for UpcallOrdering {
    fn from(o: Ordering) -> UpcallOrdering {
        match o {
            Ordering::PerKey => UpcallOrdering::PerKey,
            Ordering::Concurrent => UpcallOrdering::Concurrent,
        }
    }
}

impl From<UpcallOrdering> for Ordering {
    fn from(o: UpcallOrdering) -> Ordering {
        match o {
            UpcallOrdering::PerKey => Ordering::PerKey,
            UpcallOrdering::Concurrent => Ordering::Concurrent,
        }
    }
}

impl From<Fsync> for FsyncPolicy {
    fn from(f: Fsync) -> FsyncPolicy {
        match f {
            Fsync::Always => FsyncPolicy::Always,
            Fsync::Interval { ms } => FsyncPolicy::Interval { ms },
        }
    }
}

impl From<FsyncPolicy> for Fsync {
    fn from(f: FsyncPolicy) -> Fsync {
        match f {
            FsyncPolicy::Always => Fsync::Always,
            FsyncPolicy::Interval { ms } => Fsync::Interval { ms },
        }
    }
}

impl From<RetentionBody> for Retention {
    fn from(r: RetentionBody) -> Retention {
        Retention {
            max_bytes: r.max_bytes,
            max_age_ms: r.max_age_ms,
            max_versions: r.max_versions,
        }
    }
}

impl From<Retention> for RetentionBody {
    fn from(r: Retention) -> RetentionBody {
        RetentionBody {
            max_bytes: r.max_bytes,
            max_age_ms: r.max_age_ms,
            max_versions: r.max_versions,
        }
    }
}

impl From<Pool> for PoolConfig {
    fn from(p: Pool) -> PoolConfig {
        let mut config = PoolConfig::new(&p.prefix, p.storage.into())
            .shards(p.shards)
            .retention(p.retention.into())
            .ordering(p.ordering.into())
            .fsync(p.fsync.into());
        config.replication = p.replication;
        config.max_value_bytes = p.max_value_bytes;
        config.segment_bytes = p.segment_bytes;
        config.gpu = p.gpu;
        config
    }
}

impl From<PoolConfig> for Pool {
    fn from(c: PoolConfig) -> Pool {
        Pool {
            prefix: c.prefix,
            storage: c.storage.into(),
            shards: c.shards,
            replication: c.replication,
            retention: c.retention.into(),
            ordering: c.ordering.into(),
            fsync: c.fsync.into(),
            max_value_bytes: c.max_value_bytes,
            segment_bytes: c.segment_bytes,
            gpu: c.gpu,
        }
    }
}

/// The prefix a catch-all path names: `sensors/raw` is `/sensors/raw`, `/` stays `/`.
pub(crate) fn prefix_from_path(rest: &str) -> String {
    if rest.starts_with('/') {
        rest.to_string()
    } else {
        format!("/{rest}")
    }
}

/// Who owns a pool the broker made, when it is not the user's to change.
fn owner(prefix: &str) -> Option<String> {
    if prefix == META_PREFIX || prefix == GROUPS_PREFIX {
        return Some("the Kafka face's metadata".into());
    }
    prefix
        .strip_prefix(TOPICS_PREFIX)
        .and_then(|rest| rest.strip_prefix('/'))
        .map(|topic| format!("topic {topic:?} (change it through /v1/topics)"))
}

fn find(state: &Shared, prefix: &str) -> Result<PoolConfig, ApiError> {
    let normal = Prefix::new(prefix)?;
    state
        .engine
        .pools()
        .into_iter()
        .find(|p| p.prefix == normal.as_str())
        .ok_or_else(|| ApiError::not_found(format!("no pool has prefix {prefix:?}")))
}

/// Lists every pool, the system pool and the Kafka face's included.
#[utoipa::path(operation_id = "list_pools", get, path = "/v1/pools", tag = "pools",
    responses((status = 200, description = "Every pool, by prefix", body = Vec<Pool>)))]
pub async fn list(State(state): State<Shared>) -> Json<Vec<Pool>> {
    Json(state.engine.pools().into_iter().map(Pool::from).collect())
}

/// Creates a pool; it survives restart.
#[utoipa::path(operation_id = "create_pool", post, path = "/v1/pools", tag = "pools", request_body = Pool,
    responses(
        (status = 201, description = "Created", body = Pool),
        (status = 400, description = "An invalid or reserved prefix or setting", body = ErrorBody),
        (status = 409, description = "A pool with this prefix exists", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody)))]
pub async fn create(
    State(state): State<Shared>,
    JsonBody(pool): JsonBody<Pool>,
) -> Result<(StatusCode, Json<Pool>), ApiError> {
    let config = PoolConfig::from(pool);
    let prefix = config.validate()?;
    if Prefix::new("/cms")?.covers(prefix.as_str()) {
        return Err(ApiError::bad_request(format!(
            "prefixes under /cms belong to the Kafka face ({prefix} is one): create topics with POST /v1/topics"
        )));
    }
    let engine = state.engine.clone();
    blocking(move || Ok(engine.create_pool(config)?)).await?;
    Ok((
        StatusCode::CREATED,
        Json(find(&state, prefix.as_str())?.into()),
    ))
}

/// One pool's config.
#[utoipa::path(operation_id = "describe_pool", get, path = "/v1/pools/{prefix}", tag = "pools",
    params(("prefix" = String, Path, description = "The pool's prefix without its leading `/` (slashes allowed; `%2F` for the root pool)", pattern = "^[^/\\x00-\\x1f\\x7f]+(/[^/\\x00-\\x1f\\x7f]+)*$", max_length = 1023)),
    responses(
        (status = 200, description = "The pool", body = Pool),
        (status = 400, description = "Not a valid prefix", body = ErrorBody),
        (status = 404, description = "No such pool", body = ErrorBody)))]
pub async fn describe(
    State(state): State<Shared>,
    Path(prefix): Path<String>,
) -> Result<Json<Pool>, ApiError> {
    Ok(Json(find(&state, &prefix_from_path(&prefix))?.into()))
}

/// Changes a pool's retention, ordering, fsync policy, value limit or segment size.
#[utoipa::path(operation_id = "alter_pool", patch, path = "/v1/pools/{prefix}", tag = "pools", request_body = PoolChange,
    params(("prefix" = String, Path, description = "The pool's prefix without its leading `/`", pattern = "^[^/\\x00-\\x1f\\x7f]+(/[^/\\x00-\\x1f\\x7f]+)*$", max_length = 1023)),
    responses(
        (status = 200, description = "The changed pool", body = Pool),
        (status = 400, description = "An invalid setting, or a change of storage or shards", body = ErrorBody),
        (status = 404, description = "No such pool", body = ErrorBody),
        (status = 409, description = "The pool belongs to a topic or the Kafka face", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody)))]
pub async fn alter(
    State(state): State<Shared>,
    Path(prefix): Path<String>,
    JsonBody(change): JsonBody<PoolChange>,
) -> Result<Json<Pool>, ApiError> {
    let prefix = prefix_from_path(&prefix);
    let mut config = find(&state, &prefix)?;
    if let Some(owner) = owner(&config.prefix) {
        return Err(ApiError::conflict(format!(
            "pool {} belongs to {owner}",
            config.prefix
        )));
    }
    if let Some(g) = change.gpu {
        config.gpu = g;
    }
    if let Some(s) = change.storage {
        config.storage = s.into();
    }
    if let Some(n) = change.shards {
        config.shards = n;
    }
    if let Some(r) = change.retention {
        config.retention = r.into();
    }
    if let Some(o) = change.ordering {
        config.ordering = o.into();
    }
    if let Some(f) = change.fsync {
        config.fsync = f.into();
    }
    if let Some(m) = change.max_value_bytes {
        config.max_value_bytes = m;
    }
    if let Some(s) = change.segment_bytes {
        config.segment_bytes = s;
    }
    let engine = state.engine.clone();
    blocking(move || Ok(engine.alter_pool(config)?)).await?;
    Ok(Json(find(&state, &prefix)?.into()))
}

/// Removes a pool and every object in it.
#[utoipa::path(operation_id = "remove_pool", delete, path = "/v1/pools/{prefix}", tag = "pools",
    params(("prefix" = String, Path, description = "The pool's prefix without its leading `/`", pattern = "^[^/\\x00-\\x1f\\x7f]+(/[^/\\x00-\\x1f\\x7f]+)*$", max_length = 1023)),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Not a valid prefix, or the system pool", body = ErrorBody),
        (status = 404, description = "No such pool", body = ErrorBody),
        (status = 409, description = "The pool belongs to a topic or the Kafka face", body = ErrorBody)))]
pub async fn remove(
    State(state): State<Shared>,
    Path(prefix): Path<String>,
) -> Result<StatusCode, ApiError> {
    let prefix = prefix_from_path(&prefix);
    let normal = Prefix::new(&prefix)?;
    if let Some(owner) = owner(normal.as_str()) {
        return Err(ApiError::conflict(format!(
            "pool {normal} belongs to {owner}"
        )));
    }
    let engine = state.engine.clone();
    blocking(move || Ok(engine.remove_pool(normal.as_str())?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_round_trips_through_the_engine_config() {
        let body: Pool = serde_json::from_str(
            r#"{"prefix":"/a","storage":"persistent","fsync":{"mode":"interval","ms":5},
                "retention":{"max_versions":3},"ordering":"concurrent"}"#,
        )
        .unwrap();
        let config = PoolConfig::from(body.clone());
        assert_eq!(config.fsync, FsyncPolicy::Interval { ms: 5 });
        assert_eq!(config.retention.max_versions, Some(3));
        assert_eq!(config.shards, 4);
        assert_eq!(Pool::from(config), body);
    }

    #[test]
    fn the_kafka_faces_pools_have_owners() {
        assert!(owner("/cms/topics/orders").is_some());
        assert!(owner("/cms/meta").is_some());
        assert!(owner("/sensors").is_none());
        assert_eq!(prefix_from_path("a/b"), "/a/b");
        assert_eq!(prefix_from_path("/"), "/");
    }
}
