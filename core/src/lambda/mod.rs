//! Lambdas: code upcalled with each new version under the prefix it is bound to.
//!
//! A lambda may put or trigger other keys (that is how pipelines are built).
//! Kinds are registered by name so that bindings stored under
//! `/kascade/lambdas` are restored on restart; an in-process lambda can also be
//! bound directly without being stored.

pub mod upcall;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::engine::{Engine, EngineInner};
use crate::error::{Error, Result};
use crate::key::{Key, Prefix};
use crate::object::{ObjectVersion, Put, WriteResult};

/// What a lambda call can fail with; counted and logged, never fatal to the engine.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LambdaError(pub String);

impl From<Error> for LambdaError {
    fn from(e: Error) -> Self {
        LambdaError(e.to_string())
    }
}

/// Code run after each new version under a prefix.
pub trait Lambda: Send + Sync + 'static {
    /// Handles one version; the object is shared with the store, not copied.
    fn call(&self, ctx: &LambdaContext<'_>, object: &Arc<ObjectVersion>)
        -> Result<(), LambdaError>;

    /// Its binding was removed or replaced: release what it holds outside the
    /// engine (an external process). Calls still queued may follow and may fail.
    fn removed(&self) {}
}

impl<F> Lambda for F
where
    F: Fn(&LambdaContext<'_>, &Arc<ObjectVersion>) -> Result<(), LambdaError>
        + Send
        + Sync
        + 'static,
{
    fn call(
        &self,
        ctx: &LambdaContext<'_>,
        object: &Arc<ObjectVersion>,
    ) -> Result<(), LambdaError> {
        self(ctx, object)
    }
}

/// Builds lambdas of one kind from a binding's JSON config (for restore on restart).
pub trait LambdaKind: Send + Sync + 'static {
    /// Makes a lambda from its config; an error is returned to whoever binds it.
    fn build(&self, config: &serde_json::Value) -> Result<Arc<dyn Lambda>, LambdaError>;

    /// Makes a lambda for the whole binding (name, prefix, destinations); by
    /// default from its config alone. A kind that acts at bind time (starting
    /// an external process) needs the rest.
    fn build_binding(&self, spec: &BindingSpec) -> Result<Arc<dyn Lambda>, LambdaError> {
        self.build(&spec.config)
    }
}

impl<F> LambdaKind for F
where
    F: Fn(&serde_json::Value) -> Result<Arc<dyn Lambda>, LambdaError> + Send + Sync + 'static,
{
    fn build(&self, config: &serde_json::Value) -> Result<Arc<dyn Lambda>, LambdaError> {
        self(config)
    }
}

/// How a destination of a pipeline vertex is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmitMode {
    /// Stored as a new version, then upcalled.
    Put,
    /// Upcalled only, never stored.
    Trigger,
}

/// Where `LambdaContext::emit` sends a lambda's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    /// The prefix the output key is formed under.
    pub prefix: String,
    /// Put or trigger.
    #[serde(default = "default_mode")]
    pub mode: EmitMode,
}

fn default_mode() -> EmitMode {
    EmitMode::Put
}

/// A stored binding: which kind of lambda, with what config, on which prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingSpec {
    /// Unique name of the binding.
    pub name: String,
    /// The prefix whose versions it receives.
    pub prefix: String,
    /// The registered kind that builds it.
    pub kind: String,
    /// The kind's config.
    #[serde(default)]
    pub config: serde_json::Value,
    /// Where `emit` sends output.
    #[serde(default)]
    pub destinations: Vec<Destination>,
}

/// Counters of one binding, readable in-process (the `metrics` crate gets the same figures).
///
/// Aligned to its own cache lines: the upcall worker writes them after every call,
/// while producers read the binding's prefix on every dispatch.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct LambdaStats {
    /// Upcalls made.
    pub calls: AtomicU64,
    /// Upcalls that returned an error or panicked.
    pub errors: AtomicU64,
    /// Total time spent in the lambda, nanoseconds.
    pub busy_ns: AtomicU64,
    /// Total queue lag, nanoseconds: for each upcall, its start minus the input
    /// version's `timestamp_us` (when the sequencer placed it).
    pub lag_ns: AtomicU64,
}

/// A snapshot of a binding's counters: where its time goes.
///
/// An upcall's time splits in two: the queue lag, from the moment the
/// sequencer placed the input version (`timestamp_us`) to the start of the
/// call (hand-off to the upcall stage, waiting behind earlier upcalls, waking a
/// worker), and the call itself (the lambda's code and the writes it makes).
/// In a pipeline, one stage's call includes the put that feeds the next stage,
/// and the next stage's lag starts when that put was placed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LambdaStatsSnapshot {
    /// The binding's name.
    pub name: String,
    /// Its prefix.
    pub prefix: String,
    /// Upcalls made.
    pub calls: u64,
    /// Upcalls that failed.
    pub errors: u64,
    /// Mean time in the lambda, nanoseconds.
    pub mean_ns: u64,
    /// Mean queue lag (call start minus the input's `timestamp_us`), nanoseconds;
    /// microsecond resolution, as the timestamp has.
    pub mean_lag_ns: u64,
    /// Total time in the lambda, nanoseconds.
    pub busy_ns: u64,
    /// Total queue lag, nanoseconds.
    pub lag_ns: u64,
}

/// A live binding of a lambda to a prefix.
pub struct Binding {
    /// Unique name.
    pub name: String,
    /// The prefix bound.
    pub prefix: Prefix,
    /// The code.
    pub lambda: Arc<dyn Lambda>,
    /// Where `emit` sends output.
    pub destinations: Vec<(Prefix, EmitMode)>,
    /// Counters.
    pub stats: LambdaStats,
    pub(crate) calls_metric: metrics::Counter,
    pub(crate) errors_metric: metrics::Counter,
    pub(crate) duration_metric: metrics::Histogram,
    pub(crate) lag_metric: metrics::Histogram,
}

impl Binding {
    pub(crate) fn new(
        name: String,
        prefix: Prefix,
        lambda: Arc<dyn Lambda>,
        destinations: Vec<(Prefix, EmitMode)>,
    ) -> Binding {
        let labels = [("lambda", name.clone())];
        Binding {
            calls_metric: metrics::counter!("kascade_lambda_calls_total", &labels),
            errors_metric: metrics::counter!("kascade_lambda_errors_total", &labels),
            duration_metric: metrics::histogram!("kascade_lambda_duration_seconds", &labels),
            lag_metric: metrics::histogram!("kascade_lambda_queue_lag_seconds", &labels),
            name,
            prefix,
            lambda,
            destinations,
            stats: LambdaStats::default(),
        }
    }

    /// A snapshot of the counters.
    pub fn snapshot(&self) -> LambdaStatsSnapshot {
        let calls = self.stats.calls.load(Ordering::Relaxed);
        let busy_ns = self.stats.busy_ns.load(Ordering::Relaxed);
        let lag_ns = self.stats.lag_ns.load(Ordering::Relaxed);
        LambdaStatsSnapshot {
            name: self.name.clone(),
            prefix: self.prefix.to_string(),
            calls,
            errors: self.stats.errors.load(Ordering::Relaxed),
            mean_ns: busy_ns.checked_div(calls).unwrap_or(0),
            mean_lag_ns: lag_ns.checked_div(calls).unwrap_or(0),
            busy_ns,
            lag_ns,
        }
    }
}

/// What a lambda sees of the engine during a call: reads, writes and `emit`.
pub struct LambdaContext<'a> {
    pub(crate) engine: &'a Weak<EngineInner>,
    pub(crate) binding: &'a Binding,
}

impl LambdaContext<'_> {
    /// The engine, for any read or write; `None` while it shuts down.
    pub fn engine(&self) -> Option<Engine> {
        self.engine.upgrade().map(Engine::from_inner)
    }

    /// The name of the binding being called.
    pub fn binding_name(&self) -> &str {
        &self.binding.name
    }

    /// The prefix the binding being called is bound to.
    pub fn prefix(&self) -> &Prefix {
        &self.binding.prefix
    }

    /// Where `emit` sends output, in the binding's order.
    pub fn destinations(&self) -> &[(Prefix, EmitMode)] {
        &self.binding.destinations
    }

    /// The key `emit` writes under `destination` for `input`: the input key's path
    /// relative to the bound prefix, joined to the destination prefix (`/in/a/b`
    /// bound at `/in` goes to `/out/a/b`; the bound key itself goes to `/out`).
    pub fn destination_key(&self, input: &Key, destination: &Prefix) -> Result<Key, LambdaError> {
        let relative = input.relative_to(&self.binding.prefix).unwrap_or("");
        Ok(if relative.is_empty() {
            Key::new(destination.as_str())?
        } else {
            destination.join(relative)?
        })
    }

    /// Sends `value` to every destination of this binding, under the input key's path
    /// relative to the bound prefix (`/in/a/b` bound at `/in` emits to `/out/a/b`).
    pub fn emit(
        &self,
        input: &ObjectVersion,
        value: Bytes,
    ) -> Result<Vec<WriteResult>, LambdaError> {
        let engine = self
            .engine()
            .ok_or_else(|| LambdaError(Error::ShuttingDown.to_string()))?;
        let mut out = Vec::with_capacity(self.binding.destinations.len());
        for (prefix, mode) in &self.binding.destinations {
            let key = self.destination_key(&input.key, prefix)?;
            out.push(match mode {
                EmitMode::Put => {
                    engine.put_with(Put::new(key, value.clone()), crate::object::Ack::Applied)?
                }
                EmitMode::Trigger => engine.trigger(&key, value.clone())?,
            });
        }
        Ok(out)
    }
}

/// The built-in `forward` kind: emits each input unchanged (the no-op pipeline stage).
pub fn forward_kind() -> impl LambdaKind {
    |_config: &serde_json::Value| -> Result<Arc<dyn Lambda>, LambdaError> {
        Ok(Arc::new(
            |ctx: &LambdaContext<'_>, obj: &Arc<ObjectVersion>| {
                ctx.emit(obj, obj.value.clone()).map(|_| ())
            },
        ))
    }
}
