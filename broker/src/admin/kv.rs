//! K/V objects: put, get (latest, by version, by seq, at a time), list under a
//! prefix, remove and trigger.
//!
//! The key is the rest of the path: `PUT /v1/kv/sensors/t1` writes the key
//! `/sensors/t1`. Values travel as raw bytes: a put's body is the value, and a
//! get answers the value as its body (`application/octet-stream`) with the
//! version's metadata in `kascade-*` headers, or, with `?format=json`, a JSON
//! object holding the metadata and the value in standard base64. Keys under
//! `/kascade` (the engine's metadata) and `/cms` (the Kafka face) can be read
//! but not written here.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use kascade_core::{Get, Key, ObjectVersion, Prefix, Put, WriteResult};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::pools::prefix_from_path;
use super::{blocking, ApiError, ErrorBody, RawBody, Shared};

/// A raw value: the bytes as stored.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct RawValue(pub Vec<u8>);

/// Where a write landed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WriteResultBody {
    /// The key written.
    pub key: String,
    /// The shard version assigned (the consistent-cut handle).
    pub version: u64,
    /// The key's seq (dense position) of the write.
    pub seq: u64,
    /// The sequencer's timestamp, microseconds since the Unix epoch.
    pub timestamp_us: u64,
}

/// One version of an object, as `?format=json` answers it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ObjectJson {
    /// The key.
    pub key: String,
    /// The shard version.
    pub version: u64,
    /// The key's seq of this version's first element.
    pub seq: u64,
    /// Positions this version occupies.
    pub count: u32,
    /// Microseconds since the Unix epoch.
    pub timestamp_us: u64,
    /// The key's previous version, 0 for its first.
    pub prev_version: u64,
    /// The value in standard base64.
    pub value_base64: String,
}

/// How a get answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The value as the body, metadata in `kascade-*` headers.
    #[default]
    Raw,
    /// A JSON object with the metadata and the value in base64.
    Json,
}

/// Which version a get wants: at most one of `version`, `seq`, `at_us`; none for the latest.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetQuery {
    /// Exactly this shard version.
    pub version: Option<u64>,
    /// The version whose seq range holds this seq.
    pub seq: Option<u64>,
    /// The newest version at or before this time (µs since the Unix epoch): the state then.
    pub at_us: Option<u64>,
    /// `raw` (default) or `json`.
    #[param(inline)]
    pub format: Option<Format>,
}

/// Which keys a listing wants.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// List keys at or under this prefix (default `/`).
    #[param(
        pattern = "^/([^/\\x00-\\x1f\\x7f]+(/[^/\\x00-\\x1f\\x7f]+)*)?$",
        max_length = 1024
    )]
    pub prefix: Option<String>,
    /// At most this many keys (default 1000, at least 1).
    #[param(minimum = 1)]
    pub limit: Option<usize>,
}

/// A key in a listing.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyEntry {
    /// The key.
    pub key: String,
    /// First retained seq.
    pub start_seq: u64,
    /// Seq the next put will get.
    pub next_seq: u64,
    /// The newest version.
    pub latest_version: u64,
}

/// Keys under a prefix.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    /// The prefix listed.
    pub prefix: String,
    /// The keys, sorted.
    pub keys: Vec<KeyEntry>,
    /// True when `limit` cut the listing short.
    pub truncated: bool,
}

fn key_from_path(rest: &str) -> Result<Key, ApiError> {
    Ok(Key::new(&prefix_from_path(rest))?)
}

/// Refuses writes to the namespaces other faces own.
fn writable(key: &Key) -> Result<(), ApiError> {
    for (prefix, owner) in [
        (
            "/kascade",
            "the engine's own metadata (use /v1/pools, /v1/lambdas and /v1/pipelines)",
        ),
        (
            "/cms",
            "the Kafka face (produce with a Kafka client, manage topics with /v1/topics)",
        ),
    ] {
        if Prefix::new(prefix)?.covers(key.as_str()) {
            return Err(ApiError::bad_request(format!(
                "{key} is under {prefix}, which belongs to {owner}; it can be read here, not written"
            )));
        }
    }
    Ok(())
}

fn written(key: &Key, w: WriteResult) -> Json<WriteResultBody> {
    Json(WriteResultBody {
        key: key.to_string(),
        version: w.version,
        seq: w.seq,
        timestamp_us: w.timestamp_us,
    })
}

/// Stores the body as a new version of the key.
#[utoipa::path(operation_id = "put_object", put, path = "/v1/kv/{key}", tag = "kv",
    params(("key" = String, Path, description = "The key without its leading `/` (slashes allowed)", pattern = "^[^/\\x00-\\x1f\\x7f]+(/[^/\\x00-\\x1f\\x7f]+)*$", max_length = 1023)),
    request_body(content = RawValue, content_type = "application/octet-stream", description = "The value"),
    responses(
        (status = 200, description = "Stored (durable as the pool promises)", body = WriteResultBody),
        (status = 400, description = "An invalid or reserved key", body = ErrorBody),
        (status = 404, description = "No pool covers the key", body = ErrorBody),
        (status = 413, description = "The value is over the pool's or the API's limit", body = ErrorBody)))]
pub async fn put(
    State(state): State<Shared>,
    Path(key): Path<String>,
    RawBody(value): RawBody,
) -> Result<Json<WriteResultBody>, ApiError> {
    let key = key_from_path(&key)?;
    writable(&key)?;
    let engine = state.engine.clone();
    let k = key.clone();
    let w = blocking(move || Ok(engine.put(Put::new(k, value))?)).await?;
    Ok(written(&key, w))
}

/// Upcalls the lambdas bound over the key with the body, storing nothing.
#[utoipa::path(operation_id = "trigger_key", post, path = "/v1/trigger/{key}", tag = "kv",
    params(("key" = String, Path, description = "The key without its leading `/` (slashes allowed)", pattern = "^[^/\\x00-\\x1f\\x7f]+(/[^/\\x00-\\x1f\\x7f]+)*$", max_length = 1023)),
    request_body(content = RawValue, content_type = "application/octet-stream", description = "The value the lambdas receive"),
    responses(
        (status = 200, description = "Handed to the lambdas (in a trigger pool, ordered like a put)", body = WriteResultBody),
        (status = 400, description = "An invalid or reserved key", body = ErrorBody),
        (status = 404, description = "No pool covers the key", body = ErrorBody),
        (status = 413, description = "The value is over the API's limit", body = ErrorBody)))]
pub async fn trigger(
    State(state): State<Shared>,
    Path(key): Path<String>,
    RawBody(value): RawBody,
) -> Result<Json<WriteResultBody>, ApiError> {
    let key = key_from_path(&key)?;
    writable(&key)?;
    let engine = state.engine.clone();
    let k = key.clone();
    let w = blocking(move || Ok(engine.trigger(&k, value)?)).await?;
    Ok(written(&key, w))
}

/// Reads a version of the key: the latest, or the one `version`, `seq` or `at_us` names.
#[utoipa::path(operation_id = "get_object", get, path = "/v1/kv/{key}", tag = "kv",
    params(("key" = String, Path, description = "The key without its leading `/` (slashes allowed)", pattern = "^[^/\\x00-\\x1f\\x7f]+(/[^/\\x00-\\x1f\\x7f]+)*$", max_length = 1023), GetQuery),
    responses(
        (status = 200, description = "The version: raw bytes with `kascade-*` headers, or JSON with `format=json`",
            content((RawValue = "application/octet-stream"), (ObjectJson = "application/json")),
            headers(
                ("kascade-version" = u64, description = "The shard version (raw format)"),
                ("kascade-seq" = u64, description = "The key's seq of the version (raw format)"),
                ("kascade-count" = u32, description = "Positions the version occupies (raw format)"),
                ("kascade-timestamp-us" = u64, description = "Microseconds since the Unix epoch (raw format)"),
                ("kascade-prev-version" = u64, description = "The key's previous version (raw format)"))),
        (status = 400, description = "An invalid key, or more than one of version, seq and at_us", body = ErrorBody),
        (status = 404, description = "No pool covers the key, or no such version", body = ErrorBody)))]
pub async fn get(
    State(state): State<Shared>,
    Path(key): Path<String>,
    Query(query): Query<GetQuery>,
) -> Result<Response, ApiError> {
    let key = key_from_path(&key)?;
    let (what, selector) = match (query.version, query.seq, query.at_us) {
        (None, None, None) => ("latest version".to_string(), Get::Latest),
        (Some(v), None, None) => (format!("version {v}"), Get::Version(v)),
        (None, Some(s), None) => (format!("version holding seq {s}"), Get::Seq(s)),
        (None, None, Some(t)) => (format!("version at or before {t} µs"), Get::AtTime(t)),
        _ => {
            return Err(ApiError::bad_request(
                "give at most one of version, seq and at_us",
            ))
        }
    };
    let object = state
        .engine
        .get(&key, selector)?
        .filter(|o| !o.tombstone)
        .ok_or_else(|| ApiError::not_found(format!("{key} has no {what}")))?;
    Ok(match query.format.unwrap_or_default() {
        Format::Json => Json(object_json(&object)).into_response(),
        Format::Raw => raw(&object),
    })
}

fn object_json(o: &ObjectVersion) -> ObjectJson {
    ObjectJson {
        key: o.key.to_string(),
        version: o.version,
        seq: o.seq,
        count: o.count,
        timestamp_us: o.timestamp_us,
        prev_version: o.prev_version,
        value_base64: base64::engine::general_purpose::STANDARD.encode(&o.value),
    }
}

fn raw(o: &ObjectVersion) -> Response {
    let mut response = o.value.clone().into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    for (name, value) in [
        ("kascade-version", o.version),
        ("kascade-seq", o.seq),
        ("kascade-count", u64::from(o.count)),
        ("kascade-timestamp-us", o.timestamp_us),
        ("kascade-prev-version", o.prev_version),
    ] {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    }
    response
}

/// Removes the object: a tombstone version; its history stays readable by version and seq.
#[utoipa::path(operation_id = "remove_object", delete, path = "/v1/kv/{key}", tag = "kv",
    params(("key" = String, Path, description = "The key without its leading `/` (slashes allowed)", pattern = "^[^/\\x00-\\x1f\\x7f]+(/[^/\\x00-\\x1f\\x7f]+)*$", max_length = 1023)),
    responses(
        (status = 200, description = "Removed: where the tombstone landed", body = WriteResultBody),
        (status = 400, description = "An invalid or reserved key", body = ErrorBody),
        (status = 404, description = "No pool covers the key, or it holds no object", body = ErrorBody)))]
pub async fn remove(
    State(state): State<Shared>,
    Path(key): Path<String>,
) -> Result<Json<WriteResultBody>, ApiError> {
    let key = key_from_path(&key)?;
    writable(&key)?;
    if state.engine.get(&key, Get::Latest)?.is_none() {
        return Err(ApiError::not_found(format!("{key} holds no object")));
    }
    let engine = state.engine.clone();
    let k = key.clone();
    let w = blocking(move || Ok(engine.remove(&k)?)).await?;
    Ok(written(&key, w))
}

/// Lists the keys at or under a prefix that hold an object.
#[utoipa::path(operation_id = "list_keys", get, path = "/v1/kv", tag = "kv", params(ListQuery),
    responses(
        (status = 200, description = "The keys, sorted", body = KeyList),
        (status = 400, description = "An invalid prefix or limit", body = ErrorBody)))]
pub async fn list(
    State(state): State<Shared>,
    Query(query): Query<ListQuery>,
) -> Result<Json<KeyList>, ApiError> {
    let prefix = Prefix::new(query.prefix.as_deref().unwrap_or("/"))?;
    let limit = query.limit.unwrap_or(1000);
    if limit == 0 {
        return Err(ApiError::bad_request("limit must be at least 1"));
    }
    let engine = state.engine.clone();
    let p = prefix.clone();
    let all = blocking(move || Ok(engine.list(&p)?)).await?;
    let mut keys: Vec<KeyEntry> = all
        .into_iter()
        .filter(|i| !i.removed)
        .take(limit.saturating_add(1))
        .map(|i| KeyEntry {
            key: i.key.to_string(),
            start_seq: i.start_seq,
            next_seq: i.next_seq,
            latest_version: i.latest_version,
        })
        .collect();
    let truncated = keys.len() > limit;
    keys.truncate(limit);
    Ok(Json(KeyList {
        prefix: prefix.to_string(),
        keys,
        truncated,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_and_kafka_namespaces_are_read_only_here() {
        assert!(writable(&Key::new("/kascade/pools/x").unwrap()).is_err());
        assert!(writable(&Key::new("/cms/topics/t/0").unwrap()).is_err());
        assert!(writable(&Key::new("/cmsx/a").unwrap()).is_ok());
        assert!(writable(&Key::new("/sensors/a").unwrap()).is_ok());
    }
}
