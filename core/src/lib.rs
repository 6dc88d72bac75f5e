//! # kascade-core: the engine
//!
//! A Cascade-style sharded, versioned key/value store whose updates are
//! delivered in order to the lambdas watching their keys. This crate owns
//! keys and pools, shards and their sequencers, versioned objects, the
//! persistent segmented log, idempotence, lambdas and their upcall stage,
//! waiters and pipelines. It knows nothing of Kafka or sockets: the broker maps
//! Kafka onto it, and every other face of Kascade (native client, K/V API,
//! pipelines) uses it directly.
//!
//! ```
//! use kascade_core::{Engine, EngineConfig, Get, Key, PoolConfig, Put, Storage};
//!
//! let engine = Engine::open(EngineConfig::default())?;
//! engine.create_pool(PoolConfig::new("/sensors", Storage::Volatile))?;
//! let key = Key::new("/sensors/t1")?;
//! let first = engine.put(Put::new(key.clone(), "21.5"))?;
//! let second = engine.put(Put::new(key.clone(), "21.7"))?;
//! assert_eq!((first.seq, second.seq), (0, 1));
//! let latest = engine.get(&key, Get::Latest)?.expect("stored");
//! assert_eq!(&latest.value[..], b"21.7");
//! assert_eq!(engine.get(&key, Get::Seq(0))?.expect("kept").value, "21.5");
//! # Ok::<(), kascade_core::Error>(())
//! ```

pub mod engine;
pub mod error;
pub mod gpu;
pub mod idempotence;
pub mod key;
pub mod lambda;
pub mod log;
pub mod object;
pub mod pipeline;
pub mod pool;
pub mod sequencer;
mod shard;
pub mod spin;
pub mod waiter;

pub use engine::{Engine, EngineBuilder, EngineConfig, SYSTEM_PREFIX};
pub use error::{Error, Result};
pub use gpu::GpuReport;
pub use key::{Key, Prefix};
pub use lambda::{
    BindingSpec, Destination, EmitMode, Lambda, LambdaContext, LambdaError, LambdaKind,
};
pub use object::{
    Ack, Get, IdempotenceToken, KeyInfo, ObjectVersion, Put, RangeLimit, Seal, WriteResult,
};
pub use pipeline::{PipelineSpec, Vertex};
pub use pool::{FsyncPolicy, PoolConfig, Retention, Storage, UpcallOrdering};
pub use spin::WaitPolicy;
pub use waiter::Waiter;
