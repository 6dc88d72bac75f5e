//! DescribeConfigs: every topic config with its value and where it comes
//! from (set on the topic, or the default), and the broker's settings, which
//! are static: they come from flags and env vars and change only by restart.

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::config::Config;
use crate::kafka::topics::{validate_name, TOPIC_CONFIGS};
use crate::kafka::State;

/// Resource type of a topic.
pub(super) const TOPIC: i8 = 2;
/// Resource type of a broker.
pub(super) const BROKER: i8 = 4;

/// Config source: set on the topic.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
/// Config source: set in the broker's static configuration (a flag or env var).
const STATIC_BROKER_CONFIG: i8 = 4;
/// Config source: the built-in default.
const DEFAULT_CONFIG: i8 = 5;

/// Config types (DescribeConfigs v3+).
const BOOLEAN: i8 = 1;
const STRING: i8 = 2;
const INT: i8 = 3;
const SHORT: i8 = 4;
const LONG: i8 = 5;
const DOUBLE: i8 = 6;
const LIST: i8 = 7;

/// Why broker configs cannot be altered, for AlterConfigs and IncrementalAlterConfigs.
pub(super) const BROKER_CONFIGS_ARE_STATIC: &str = "broker configs are static in kascade: set them with `kascade serve` flags or KASCADE_* env vars and restart";

/// Names the resource types a request may carry, for error messages.
pub(super) fn unsupported_resource(resource_type: i8) -> String {
    format!("resource type {resource_type} is not supported: kascade has topic (2) and broker (4) configs")
}

/// Checks a broker resource name: this node's id, or empty for the cluster default.
pub(super) fn check_broker_name(state: &State, name: &str) -> Result<(), String> {
    if name.is_empty() || name.parse::<i32>().ok() == Some(state.node_id) {
        Ok(())
    } else {
        Err(format!(
            "unexpected broker id {name:?}: this broker is {}, or use an empty name",
            state.node_id
        ))
    }
}

/// Describes each resource independently.
pub(super) fn handle(
    state: &State,
    version: i16,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let shape = Shape {
        version,
        synonyms: request.include_synonyms,
        documentation: version >= 3 && request.include_documentation,
    };
    let results = request
        .resources
        .into_iter()
        .map(|r| {
            let wanted = |name: &str| {
                r.configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let outcome = match r.resource_type {
                TOPIC => topic_configs(state, r.resource_name.as_str(), &shape, &wanted),
                BROKER => check_broker_name(state, r.resource_name.as_str())
                    .map(|()| broker_configs(state, &shape, &wanted))
                    .map_err(|m| (ResponseError::InvalidRequest, m)),
                other => Err((ResponseError::InvalidRequest, unsupported_resource(other))),
            };
            match outcome {
                Ok(configs) => result.with_error_message(None).with_configs(configs),
                Err((code, message)) => result
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(&message))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// What the request asked to be included.
struct Shape {
    version: i16,
    synonyms: bool,
    documentation: bool,
}

impl Shape {
    /// One config entry in the shape the request's version and flags ask for.
    fn entry(
        &self,
        name: &str,
        value: &str,
        source: i8,
        read_only: bool,
        synonyms: Vec<DescribeConfigsSynonym>,
    ) -> DescribeConfigsResourceResult {
        let mut entry = DescribeConfigsResourceResult::default()
            .with_name(str_bytes(name))
            .with_value(Some(str_bytes(value)))
            .with_read_only(read_only)
            .with_config_source(source)
            .with_is_sensitive(false);
        if self.synonyms {
            entry.synonyms = synonyms;
        }
        if self.version >= 3 {
            entry.config_type = config_type(name);
            entry.documentation = if self.documentation {
                documentation(name).map(str_bytes)
            } else {
                None
            };
        }
        entry
    }
}

fn synonym(name: &str, value: &str, source: i8) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(str_bytes(name))
        .with_value(Some(str_bytes(value)))
        .with_source(source)
}

type Refusal = (ResponseError, String);

/// Every (wanted) config of a topic.
fn topic_configs(
    state: &State,
    name: &str,
    shape: &Shape,
    wanted: &dyn Fn(&str) -> bool,
) -> Result<Vec<DescribeConfigsResourceResult>, Refusal> {
    if let Err(e) = validate_name(name) {
        return Err((ResponseError::InvalidTopicException, e.to_string()));
    }
    let topic = state.topics.get(name).ok_or_else(|| {
        (
            ResponseError::UnknownTopicOrPartition,
            format!("topic {name:?} does not exist"),
        )
    })?;
    Ok(TOPIC_CONFIGS
        .iter()
        .filter(|d| wanted(d.name))
        .map(|d| {
            let default = synonym(d.name, d.default, DEFAULT_CONFIG);
            match topic.configs.get(d.name) {
                Some(set) => shape.entry(
                    d.name,
                    set,
                    DYNAMIC_TOPIC_CONFIG,
                    false,
                    vec![synonym(d.name, set, DYNAMIC_TOPIC_CONFIG), default],
                ),
                None => shape.entry(d.name, d.default, DEFAULT_CONFIG, false, vec![default]),
            }
        })
        .collect())
}

/// The broker's settings: the value it runs with, static when it differs
/// from the built-in default (so it was set by a flag or env var).
fn broker_configs(
    state: &State,
    shape: &Shape,
    wanted: &dyn Fn(&str) -> bool,
) -> Vec<DescribeConfigsResourceResult> {
    let config = &state.config;
    let defaults = Config::default();
    let advertised = format!(
        "PLAINTEXT://{}:{}",
        state.advertised_host, state.advertised_port
    );
    let static_if = |changed: bool| {
        if changed {
            STATIC_BROKER_CONFIG
        } else {
            DEFAULT_CONFIG
        }
    };
    // (name, value, source): static where a flag or env var changed the default.
    let table: Vec<(&str, String, i8)> = vec![
        (
            "advertised.listeners",
            advertised,
            static_if(config.advertised.is_some()),
        ),
        (
            "auto.create.topics.enable",
            config.auto_create_topics.to_string(),
            static_if(config.auto_create_topics != defaults.auto_create_topics),
        ),
        (
            "broker.id",
            config.node_id.to_string(),
            static_if(config.node_id != defaults.node_id),
        ),
        ("compression.type", "producer".into(), DEFAULT_CONFIG),
        ("default.replication.factor", "1".into(), DEFAULT_CONFIG),
        (
            "listeners",
            format!("PLAINTEXT://{}", config.listen),
            static_if(config.listen != defaults.listen),
        ),
        (
            "log.dirs",
            super::describe_log_dirs::log_dir(&config.data_dir),
            static_if(config.data_dir != defaults.data_dir),
        ),
        ("log.retention.bytes", "-1".into(), DEFAULT_CONFIG),
        ("log.retention.ms", "604800000".into(), DEFAULT_CONFIG),
        ("log.segment.bytes", "1073741824".into(), DEFAULT_CONFIG),
        ("message.max.bytes", "1048588".into(), DEFAULT_CONFIG),
        ("min.insync.replicas", "1".into(), DEFAULT_CONFIG),
        (
            "node.id",
            config.node_id.to_string(),
            static_if(config.node_id != defaults.node_id),
        ),
        (
            "num.partitions",
            config.num_partitions.to_string(),
            static_if(config.num_partitions != defaults.num_partitions),
        ),
        (
            "offsets.topic.replication.factor",
            "1".into(),
            DEFAULT_CONFIG,
        ),
        (
            "socket.request.max.bytes",
            config.max_frame_bytes.to_string(),
            static_if(config.max_frame_bytes != defaults.max_frame_bytes),
        ),
        (
            "transaction.state.log.replication.factor",
            "1".into(),
            DEFAULT_CONFIG,
        ),
    ];
    table
        .into_iter()
        .filter(|(name, _, _)| wanted(name))
        .map(|(name, value, source)| {
            let synonyms = vec![synonym(name, &value, source)];
            shape.entry(name, &value, source, true, synonyms)
        })
        .collect()
}

/// A config's type, as DescribeConfigs v3+ reports it.
fn config_type(name: &str) -> i8 {
    match name {
        "cleanup.policy" | "advertised.listeners" | "listeners" | "log.dirs" => LIST,
        "compression.type" | "kascade.storage" | "message.timestamp.type" => STRING,
        "preallocate" | "unclean.leader.election.enable" | "auto.create.topics.enable" => BOOLEAN,
        "min.cleanable.dirty.ratio" => DOUBLE,
        "index.interval.bytes"
        | "max.message.bytes"
        | "min.insync.replicas"
        | "segment.bytes"
        | "segment.index.bytes"
        | "broker.id"
        | "node.id"
        | "num.partitions"
        | "message.max.bytes"
        | "socket.request.max.bytes"
        | "log.segment.bytes"
        | "default.replication.factor" => INT,
        "offsets.topic.replication.factor" | "transaction.state.log.replication.factor" => SHORT,
        _ => LONG,
    }
}

/// A line of documentation for a config, where Kascade has something to say.
fn documentation(name: &str) -> Option<&'static str> {
    Some(match name {
        "cleanup.policy" => "How old records are removed: delete (by retention.ms and retention.bytes). Compaction is not implemented yet.",
        "kascade.storage" => "Where the topic's partitions live: persistent (on disk) or volatile (in memory). Fixed when the topic is created.",
        "max.message.bytes" => "Largest record batch a producer may append to the topic; larger ones get MESSAGE_TOO_LARGE.",
        "message.timestamp.type" => "CreateTime keeps the producer's timestamps; LogAppendTime stamps each batch with the broker's time when it is appended.",
        "retention.bytes" => "Bytes a partition keeps before its oldest batches are deleted; -1 for no limit.",
        "retention.ms" => "Age after which a batch is deleted; -1 for no limit.",
        "segment.bytes" => "Size at which the log file holding the topic's partitions rolls to a new segment.",
        "advertised.listeners" => "The address clients are told to connect to (--advertised, KASCADE_ADVERTISED).",
        "listeners" => "The address the Kafka listener binds (--listen, KASCADE_LISTEN).",
        "log.dirs" => "The data directory (--data-dir, KASCADE_DATA_DIR).",
        "auto.create.topics.enable" => "Whether an unknown topic is created when a client asks for it (--auto-create-topics).",
        "broker.id" | "node.id" => "This broker's node id (--node-id, KASCADE_NODE_ID).",
        "num.partitions" => "Partitions of a topic created without a count (--num-partitions).",
        "socket.request.max.bytes" => "Largest request frame accepted (--max-frame-bytes); a larger one closes the connection.",
        _ if TOPIC_CONFIGS.iter().any(|d| d.name == name && !d.honoured) => {
            "Accepted and reported for compatibility; kascade does not act on it."
        }
        _ => return None,
    })
}
