//! Topics on the engine: each topic is a pool at `/cms/topics/T`, each
//! partition the key `/cms/topics/T/p`, and the topic's metadata and configs
//! an object at `/cms/meta/topics/T`.
//!
//! A pool per topic gives every topic its own storage kind, retention and
//! segment size, exactly as Kafka's per-topic configs ask, and deleting a
//! topic is removing its pool. Leader epochs are real: each broker start is a
//! new leadership term, so every partition's epoch goes up by one and the
//! offset where each epoch began is kept for OffsetForLeaderEpoch.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kascade_core::{Engine, Get, Key, PoolConfig, Prefix, Put, Retention, Storage, UpcallOrdering};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Prefix of the pools holding partitions.
pub const TOPICS_PREFIX: &str = "/cms/topics";
/// Prefix of the pool holding topic metadata, group offsets and broker state.
pub const META_PREFIX: &str = "/cms/meta";
/// Prefix of the pool holding consumer groups' offsets.
pub const GROUPS_PREFIX: &str = "/cms/groups";

/// A Kafka topic config this broker knows: its name and default value.
pub struct ConfigDef {
    /// The config's name.
    pub name: &'static str,
    /// The value when the topic does not set it.
    pub default: &'static str,
    /// Whether Kascade acts on it (others are accepted and reported only).
    pub honoured: bool,
}

/// Every topic config DescribeConfigs reports, in name order.
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        default: "delete",
        honoured: true,
    },
    ConfigDef {
        name: "compression.type",
        default: "producer",
        honoured: false,
    },
    ConfigDef {
        name: "delete.retention.ms",
        default: "86400000",
        honoured: false,
    },
    ConfigDef {
        name: "file.delete.delay.ms",
        default: "60000",
        honoured: false,
    },
    ConfigDef {
        name: "flush.messages",
        default: "9223372036854775807",
        honoured: false,
    },
    ConfigDef {
        name: "flush.ms",
        default: "9223372036854775807",
        honoured: false,
    },
    ConfigDef {
        name: "index.interval.bytes",
        default: "4096",
        honoured: false,
    },
    ConfigDef {
        name: "kascade.gpu",
        default: "false",
        honoured: true,
    },
    ConfigDef {
        name: "kascade.storage",
        default: "persistent",
        honoured: true,
    },
    ConfigDef {
        name: "max.compaction.lag.ms",
        default: "9223372036854775807",
        honoured: false,
    },
    ConfigDef {
        name: "max.message.bytes",
        default: "1048588",
        honoured: true,
    },
    ConfigDef {
        name: "message.timestamp.type",
        default: "CreateTime",
        honoured: true,
    },
    ConfigDef {
        name: "min.cleanable.dirty.ratio",
        default: "0.5",
        honoured: false,
    },
    ConfigDef {
        name: "min.compaction.lag.ms",
        default: "0",
        honoured: false,
    },
    ConfigDef {
        name: "min.insync.replicas",
        default: "1",
        honoured: false,
    },
    ConfigDef {
        name: "preallocate",
        default: "false",
        honoured: false,
    },
    ConfigDef {
        name: "retention.bytes",
        default: "-1",
        honoured: true,
    },
    ConfigDef {
        name: "retention.ms",
        default: "604800000",
        honoured: true,
    },
    ConfigDef {
        name: "segment.bytes",
        default: "1073741824",
        honoured: true,
    },
    ConfigDef {
        name: "segment.index.bytes",
        default: "10485760",
        honoured: false,
    },
    ConfigDef {
        name: "segment.jitter.ms",
        default: "0",
        honoured: false,
    },
    ConfigDef {
        name: "segment.ms",
        default: "604800000",
        honoured: false,
    },
    ConfigDef {
        name: "unclean.leader.election.enable",
        default: "false",
        honoured: false,
    },
];

/// Why a topic operation failed, with the Kafka error it answers with.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// No such topic.
    #[error("topic {0:?} does not exist")]
    Unknown(String),
    /// The topic exists already.
    #[error("topic {0:?} already exists")]
    Exists(String),
    /// A name Kafka does not allow.
    #[error("invalid topic name {0:?}: use 1-249 of [a-zA-Z0-9._-], not \".\" or \"..\"")]
    InvalidName(String),
    /// Bad partition count.
    #[error("{0}")]
    InvalidPartitions(String),
    /// Bad replication factor.
    #[error("replication factor {0} is not possible on a single node: use 1 or -1")]
    InvalidReplication(i16),
    /// A config this broker refuses.
    #[error("{0}")]
    InvalidConfig(String),
    /// The engine failed.
    #[error("storage: {0}")]
    Engine(#[from] kascade_core::Error),
}

impl TopicError {
    /// The Kafka error code for this failure.
    pub fn kafka(&self) -> ResponseError {
        match self {
            TopicError::Unknown(_) => ResponseError::UnknownTopicOrPartition,
            TopicError::Exists(_) => ResponseError::TopicAlreadyExists,
            TopicError::InvalidName(_) => ResponseError::InvalidTopicException,
            TopicError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
            TopicError::InvalidReplication(_) => ResponseError::InvalidReplicationFactor,
            TopicError::InvalidConfig(_) => ResponseError::InvalidConfig,
            TopicError::Engine(_) => ResponseError::KafkaStorageError,
        }
    }
}

/// Where a leader epoch began on each partition.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EpochStart {
    /// The leader epoch.
    pub epoch: i32,
    /// The first offset of that epoch, per partition.
    pub start_offsets: Vec<i64>,
}

/// A topic's persisted description.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct TopicMeta {
    name: String,
    id: Uuid,
    partitions: i32,
    configs: BTreeMap<String, String>,
    epochs: Vec<EpochStart>,
}

/// A topic as the handlers see it: immutable; a change swaps in a new one.
#[derive(Debug)]
pub struct Topic {
    /// The topic's name.
    pub name: String,
    /// Its id (Metadata v10+, Fetch v13+).
    pub id: Uuid,
    /// Number of partitions.
    pub partitions: i32,
    /// Configs set on the topic (defaults are not stored).
    pub configs: BTreeMap<String, String>,
    /// Leader epochs, oldest first; the last is the current one.
    pub epochs: Vec<EpochStart>,
    /// The partitions' keys.
    keys: Vec<Key>,
    /// Settings the produce path acts on.
    pub max_message_bytes: usize,
    /// True for `message.timestamp.type=LogAppendTime`.
    pub log_append_time: bool,
}

impl Topic {
    /// The current leader epoch.
    pub fn leader_epoch(&self) -> i32 {
        self.epochs.last().map_or(0, |e| e.epoch)
    }

    /// The key of partition `p`, if it exists.
    pub fn key(&self, p: i32) -> Option<&Key> {
        usize::try_from(p).ok().and_then(|p| self.keys.get(p))
    }

    /// A config's effective value and whether it is the default.
    pub fn config(&self, name: &str) -> Option<(String, bool)> {
        if let Some(v) = self.configs.get(name) {
            return Some((v.clone(), false));
        }
        TOPIC_CONFIGS
            .iter()
            .find(|d| d.name == name)
            .map(|d| (d.default.to_string(), true))
    }

    /// Where `epoch` ended on partition `p`: the start of the next newer
    /// epoch, or `None` when `epoch` is the current one (then it is the log end).
    pub fn epoch_end(&self, p: usize, epoch: i32) -> Option<(i32, Option<i64>)> {
        let idx = self.epochs.iter().rposition(|e| e.epoch <= epoch)?;
        let found = self.epochs[idx].epoch;
        let end = self
            .epochs
            .get(idx + 1)
            .map(|next| next.start_offsets.get(p).copied().unwrap_or(0));
        Some((found, end))
    }
}

/// Checks a topic name the way Kafka does.
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(TopicError::InvalidName(name.to_string()))
    }
}

/// Checks one config name and value; returns an error a person can act on.
pub fn validate_config(name: &str, value: &str) -> Result<(), TopicError> {
    let bad = |why: &str| Err(TopicError::InvalidConfig(format!("{name}={value}: {why}")));
    let int = |min: i64| match value.parse::<i64>() {
        Ok(v) if v >= min => Ok(()),
        _ => bad(&format!("expected an integer >= {min}")),
    };
    match name {
        "cleanup.policy" => match value {
            "delete" => Ok(()),
            _ if value.contains("compact") => {
                bad("compaction is not implemented yet; use cleanup.policy=delete")
            }
            _ => bad("expected delete"),
        },
        "kascade.storage" => match value {
            "persistent" | "volatile" => Ok(()),
            _ => bad("expected persistent or volatile"),
        },
        "kascade.gpu" => match value {
            "true" | "false" => Ok(()),
            _ => bad("expected true or false"),
        },
        "message.timestamp.type" => match value {
            "CreateTime" | "LogAppendTime" => Ok(()),
            _ => bad("expected CreateTime or LogAppendTime"),
        },
        "max.message.bytes" => int(0),
        "retention.ms" | "retention.bytes" => int(-1),
        "segment.bytes" => int(14),
        _ => match TOPIC_CONFIGS.iter().find(|d| d.name == name) {
            Some(_) => Ok(()),
            None => bad("unknown topic config"),
        },
    }
}

fn parse_or<T: std::str::FromStr>(configs: &BTreeMap<String, String>, name: &str, or: T) -> T {
    configs.get(name).and_then(|v| v.parse().ok()).unwrap_or(or)
}

/// The pool a topic's configs describe.
fn pool_config(name: &str, configs: &BTreeMap<String, String>, partitions: i32) -> PoolConfig {
    let storage = match configs.get("kascade.storage").map(String::as_str) {
        Some("volatile") => Storage::Volatile,
        _ => Storage::Persistent,
    };
    let positive = |v: i64| u64::try_from(v).ok();
    let retention = Retention {
        max_bytes: positive(parse_or(configs, "retention.bytes", -1i64)),
        max_age_ms: positive(parse_or(configs, "retention.ms", 604_800_000i64)),
        max_versions: None,
    };
    let max_message = parse_or(configs, "max.message.bytes", 1_048_588usize);
    let mut pool = PoolConfig::new(&format!("{TOPICS_PREFIX}/{name}"), storage)
        .shards(partitions.clamp(1, 4) as u32)
        .retention(retention)
        .ordering(UpcallOrdering::PerKey);
    // The broker answers MESSAGE_TOO_LARGE itself; the engine's limit is a backstop.
    pool.max_value_bytes = max_message.max(1 << 10);
    pool.segment_bytes = parse_or(configs, "segment.bytes", 1_073_741_824u64).max(1 << 20);
    // Each batch is kept in GPU memory too (feature `cuda`): GPU lambdas read records in place.
    pool.gpu = configs.get("kascade.gpu").is_some_and(|v| v == "true");
    pool
}

fn meta_key(name: &str) -> Result<Key, TopicError> {
    Ok(Key::new(&format!("{META_PREFIX}/topics/{name}"))?)
}

/// The registry of topics, cached in memory, persisted in the engine.
pub struct Topics {
    engine: Engine,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Serialises create, delete and alter so their checks hold.
    admin: Mutex<()>,
}

impl Topics {
    /// Loads every topic, starting a new leader epoch for each.
    pub fn open(engine: Engine) -> Result<Topics, TopicError> {
        for (prefix, storage) in [
            (META_PREFIX, Storage::Persistent),
            (GROUPS_PREFIX, Storage::Persistent),
        ] {
            if !engine.pools().iter().any(|p| p.prefix == prefix) {
                engine.create_pool(PoolConfig::new(prefix, storage).shards(1))?;
            }
        }
        let registry = Topics {
            engine,
            topics: RwLock::new(HashMap::new()),
            admin: Mutex::new(()),
        };
        let listed = registry
            .engine
            .list(&Prefix::new(&format!("{META_PREFIX}/topics"))?)?;
        for info in listed.into_iter().filter(|i| !i.removed) {
            let Some(object) = registry.engine.get(&info.key, Get::Latest)? else {
                continue;
            };
            let mut meta: TopicMeta = match serde_json::from_slice(&object.value) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(key = %info.key, "unreadable topic metadata, topic skipped: {e}");
                    continue;
                }
            };
            let epoch = meta.epochs.last().map_or(0, |e| e.epoch + 1);
            let starts = (0..meta.partitions)
                .map(|p| registry.next_offset(&meta.name, p))
                .collect::<Result<Vec<_>, _>>()?;
            meta.epochs.push(EpochStart {
                epoch,
                start_offsets: starts,
            });
            registry.store(&meta)?;
        }
        Ok(registry)
    }

    fn next_offset(&self, topic: &str, p: i32) -> Result<i64, TopicError> {
        let key = Key::new(&format!("{TOPICS_PREFIX}/{topic}/{p}"))?;
        Ok(self
            .engine
            .bounds(&key)
            .map(|b| b.next_seq as i64)
            .unwrap_or(0))
    }

    /// Persists a topic's metadata and swaps the cached topic.
    fn store(&self, meta: &TopicMeta) -> Result<Arc<Topic>, TopicError> {
        let bytes =
            serde_json::to_vec(meta).map_err(|e| TopicError::InvalidConfig(e.to_string()))?;
        self.engine.put(Put::new(meta_key(&meta.name)?, bytes))?;
        let keys = (0..meta.partitions)
            .map(|p| Key::new(&format!("{TOPICS_PREFIX}/{}/{p}", meta.name)))
            .collect::<Result<Vec<_>, _>>()?;
        let topic = Arc::new(Topic {
            name: meta.name.clone(),
            id: meta.id,
            partitions: meta.partitions,
            configs: meta.configs.clone(),
            epochs: meta.epochs.clone(),
            keys,
            max_message_bytes: parse_or(&meta.configs, "max.message.bytes", 1_048_588usize),
            log_append_time: meta
                .configs
                .get("message.timestamp.type")
                .is_some_and(|v| v == "LogAppendTime"),
        });
        self.topics.write().insert(meta.name.clone(), topic.clone());
        Ok(topic)
    }

    fn meta_of(topic: &Topic) -> TopicMeta {
        TopicMeta {
            name: topic.name.clone(),
            id: topic.id,
            partitions: topic.partitions,
            configs: topic.configs.clone(),
            epochs: topic.epochs.clone(),
        }
    }

    /// The topic named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    /// The topic with id `id`.
    pub fn by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics.read().values().find(|t| t.id == id).cloned()
    }

    /// Every topic, by name.
    pub fn all(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self.topics.read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Checks a create request without doing it.
    pub fn check_create(
        &self,
        name: &str,
        partitions: i32,
        replication: i16,
        configs: &BTreeMap<String, String>,
    ) -> Result<(), TopicError> {
        validate_name(name)?;
        if self.get(name).is_some() {
            return Err(TopicError::Exists(name.to_string()));
        }
        if !(1..=100_000).contains(&partitions) {
            return Err(TopicError::InvalidPartitions(format!(
                "number of partitions must be between 1 and 100000, got {partitions}"
            )));
        }
        if replication != 1 && replication != -1 {
            return Err(TopicError::InvalidReplication(replication));
        }
        for (k, v) in configs {
            validate_config(k, v)?;
        }
        pool_config(name, configs, partitions)
            .validate()
            .map_err(|e| TopicError::InvalidConfig(e.to_string()))?;
        Ok(())
    }

    /// Creates a topic: its pool, then its metadata.
    pub fn create(
        &self,
        name: &str,
        partitions: i32,
        replication: i16,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, TopicError> {
        let _admin = self.admin.lock();
        self.check_create(name, partitions, replication, &configs)?;
        let pool = pool_config(name, &configs, partitions);
        if self.engine.pools().iter().any(|p| p.prefix == pool.prefix) {
            // Left behind by a delete that failed half way: start clean.
            self.engine.remove_pool(&pool.prefix)?;
        }
        self.engine.create_pool(pool)?;
        let meta = TopicMeta {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions,
            configs,
            epochs: vec![EpochStart {
                epoch: 0,
                start_offsets: vec![0; partitions as usize],
            }],
        };
        let topic = self.store(&meta)?;
        tracing::info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    /// Deletes a topic and all its data.
    pub fn delete(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        let _admin = self.admin.lock();
        let topic = self
            .get(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        self.engine.remove(&meta_key(name)?)?;
        self.topics.write().remove(name);
        if let Err(e) = self.engine.remove_pool(&format!("{TOPICS_PREFIX}/{name}")) {
            tracing::warn!(
                topic = name,
                "topic deleted, but its pool was not removed: {e}"
            );
        }
        tracing::info!(topic = name, "deleted topic");
        Ok(topic)
    }

    /// Grows a topic to `count` partitions.
    pub fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<Arc<Topic>, TopicError> {
        let _admin = self.admin.lock();
        let topic = self
            .get(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        if count <= topic.partitions {
            return Err(TopicError::InvalidPartitions(format!(
                "topic {name} has {} partitions; the new count {count} must be larger",
                topic.partitions
            )));
        }
        if count > 100_000 {
            return Err(TopicError::InvalidPartitions(format!(
                "{count} partitions is over the limit of 100000"
            )));
        }
        if validate_only {
            return Ok(topic);
        }
        let mut meta = Self::meta_of(&topic);
        meta.partitions = count;
        for e in &mut meta.epochs {
            e.start_offsets.resize(count as usize, 0);
        }
        self.store(&meta)
    }

    /// Replaces (`incremental = false`) or edits a topic's configs; `None` deletes a setting.
    pub fn alter_configs(
        &self,
        name: &str,
        changes: &[(String, Option<String>)],
        incremental: bool,
        validate_only: bool,
    ) -> Result<Arc<Topic>, TopicError> {
        let _admin = self.admin.lock();
        let topic = self
            .get(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let mut configs = if incremental {
            topic.configs.clone()
        } else {
            BTreeMap::new()
        };
        for (k, v) in changes {
            match v {
                Some(v) => {
                    validate_config(k, v)?;
                    configs.insert(k.clone(), v.clone());
                }
                None => {
                    configs.remove(k);
                }
            }
        }
        let old_storage = topic.config("kascade.storage").map(|c| c.0);
        let new_storage = configs
            .get("kascade.storage")
            .cloned()
            .unwrap_or_else(|| "persistent".into());
        if old_storage.as_deref() != Some(new_storage.as_str()) {
            return Err(TopicError::InvalidConfig(
                "kascade.storage cannot change after a topic is created".into(),
            ));
        }
        let pool = pool_config(name, &configs, topic.partitions);
        pool.validate()
            .map_err(|e| TopicError::InvalidConfig(e.to_string()))?;
        if validate_only {
            return Ok(topic);
        }
        let current = self
            .engine
            .pools()
            .into_iter()
            .find(|p| p.prefix == pool.prefix);
        let mut pool = pool;
        if let Some(current) = current {
            pool.shards = current.shards;
        }
        self.engine.alter_pool(pool)?;
        let mut meta = Self::meta_of(&topic);
        meta.configs = configs;
        self.store(&meta)
    }

    /// The engine underneath.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}
