//! Producer ids for idempotent producers, and the cluster id.
//!
//! Ids are handed out from blocks reserved in the engine (`/cms/meta/producer-ids`
//! holds the first id of the next block), so a restart never reuses one.

use std::sync::atomic::{AtomicI64, Ordering};

use kascade_core::{Engine, Get, Key, Put};
use parking_lot::Mutex;
use uuid::Uuid;

use super::topics::{TopicError, META_PREFIX};

const BLOCK: i64 = 1000;

/// Allocates producer ids and keeps the cluster id.
pub struct ProducerIds {
    engine: Engine,
    key: Key,
    next: AtomicI64,
    /// End (exclusive) of the reserved block; guarded so only one thread reserves.
    block_end: Mutex<i64>,
    cluster_id: String,
}

fn read_i64(engine: &Engine, key: &Key) -> Result<Option<i64>, TopicError> {
    Ok(engine.get(key, Get::Latest)?.and_then(|o| {
        std::str::from_utf8(&o.value)
            .ok()
            .and_then(|s| s.parse().ok())
    }))
}

impl ProducerIds {
    /// Loads the state, creating the cluster id on a first start.
    pub fn open(engine: Engine) -> Result<ProducerIds, TopicError> {
        let key = Key::new(&format!("{META_PREFIX}/producer-ids"))?;
        let cluster_key = Key::new(&format!("{META_PREFIX}/cluster-id"))?;
        let cluster_id = match engine.get(&cluster_key, Get::Latest)? {
            Some(o) => String::from_utf8_lossy(&o.value).into_owned(),
            None => {
                // Kafka cluster ids are 22-character URL-safe base64 of a UUID; a
                // simple hex form is accepted by every client.
                let id = Uuid::new_v4().simple().to_string()[..22].to_string();
                engine.put(Put::new(cluster_key, id.clone()))?;
                id
            }
        };
        let start = read_i64(&engine, &key)?.unwrap_or(0);
        Ok(ProducerIds {
            engine,
            key,
            next: AtomicI64::new(start),
            block_end: Mutex::new(start),
            cluster_id,
        })
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// A fresh producer id, never handed out before.
    pub fn allocate(&self) -> Result<i64, TopicError> {
        let mut end = self.block_end.lock();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if id >= *end {
            let new_end = id + BLOCK;
            self.engine
                .put(Put::new(self.key.clone(), new_end.to_string()))?;
            *end = new_end;
        }
        Ok(id)
    }
}
