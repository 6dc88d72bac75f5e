//! The `process` kind: an external program the broker starts when the
//! binding is made, which attaches through the native client
//! (`LambdaClient::attach_from_env` in kascade-wire) and is upcalled over its
//! connection. A supervisor restarts it (with a backoff) whenever it exits,
//! and stops it (SIGTERM, then SIGKILL after a grace period) when the binding
//! is removed or replaced, or the broker shuts down.
//!
//! A call sends an `Upcall` frame to the attached connection and waits for the
//! process's `UpcallDone`: per-key order and error counts are those of an
//! in-process lambda. With no process attached (starting, restarting), a call
//! waits up to `call_timeout_ms`, then fails (counted). On a Kafka partition
//! the process receives each stored record batch whole.

pub mod registry;

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kascade_core::{BindingSpec, Lambda, LambdaContext, LambdaError, LambdaKind, ObjectVersion};
use kascade_wire::native::frame::{Body, Frame, Object};
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

use super::LambdaHost;
use registry::{Registry, Slot};

/// How long a stopped process has after SIGTERM before SIGKILL.
pub(crate) const GRACE: Duration = Duration::from_secs(2);

/// A `process` binding's config (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    /// The program (absolute path) and its arguments.
    pub command: Vec<String>,
    /// Extra environment variables for it.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The pause before a process that exited is started again.
    #[serde(default = "default_backoff")]
    pub restart_backoff_ms: u64,
    /// How long a call waits for a process to attach and answer.
    #[serde(default = "default_call_timeout")]
    pub call_timeout_ms: u64,
}

fn default_backoff() -> u64 {
    500
}
fn default_call_timeout() -> u64 {
    5000
}

impl ProcessConfig {
    /// A config running `command` with the default backoff and timeout.
    pub fn new(command: Vec<String>) -> ProcessConfig {
        ProcessConfig {
            command,
            env: BTreeMap::new(),
            restart_backoff_ms: default_backoff(),
            call_timeout_ms: default_call_timeout(),
        }
    }
}

/// Builds `process` lambdas.
pub struct ProcessKind {
    host: Arc<LambdaHost>,
}

impl ProcessKind {
    /// The kind, starting processes that attach to `host`'s native listener.
    pub fn new(host: Arc<LambdaHost>) -> ProcessKind {
        ProcessKind { host }
    }
}

static INSTANCES: AtomicU64 = AtomicU64::new(1);

impl LambdaKind for ProcessKind {
    fn build(&self, _config: &serde_json::Value) -> Result<Arc<dyn Lambda>, LambdaError> {
        Err(LambdaError(
            "a process lambda is built from its whole binding".into(),
        ))
    }

    fn build_binding(&self, spec: &BindingSpec) -> Result<Arc<dyn Lambda>, LambdaError> {
        let config: ProcessConfig = serde_json::from_value(spec.config.clone())
            .map_err(|e| LambdaError(format!("process lambda config: {e}")))?;
        let Some(program) = config.command.first() else {
            return Err(LambdaError(
                "process lambda config: command is empty".into(),
            ));
        };
        if !std::path::Path::new(program).is_absolute() {
            return Err(LambdaError(format!(
                "process lambda config: the program {program:?} must be an absolute path"
            )));
        }
        let url = self.host.native_url().ok_or_else(|| {
            LambdaError(
                "process lambdas need the native listener (--native or --native-tcp), which is off"
                    .into(),
            )
        })?;
        let destinations = serde_json::to_string(&spec.destinations)
            .map_err(|e| LambdaError(format!("destinations: {e}")))?;
        let instance = INSTANCES.fetch_add(1, Ordering::Relaxed);
        let registry = self.host.processes().clone();
        let slot = registry.register(&spec.name, instance);
        let sup = Arc::new(Supervisor {
            name: spec.name.clone(),
            config: config.clone(),
            env: vec![
                ("KASCADE_NATIVE_URL".into(), url),
                ("KASCADE_LAMBDA_NAME".into(), spec.name.clone()),
                ("KASCADE_LAMBDA_PREFIX".into(), spec.prefix.clone()),
                ("KASCADE_LAMBDA_DESTINATIONS".into(), destinations),
            ],
            slot: slot.clone(),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            finished: Mutex::new(false),
            finished_cv: Condvar::new(),
            pid: AtomicU32::new(0),
            restarts: metrics::counter!("kascade_lambda_process_restarts_total", "lambda" => spec.name.clone()),
        });
        let run = sup.clone();
        let thread = std::thread::Builder::new()
            .name(format!("kascade-proc-{}", spec.name))
            .spawn(move || run.run())
            .map_err(|e| LambdaError(format!("starting the supervisor: {e}")))?;
        self.host.track(&sup);
        Ok(Arc::new(ProcessLambda {
            sup,
            slot,
            registry,
            instance,
            thread: Mutex::new(Some(thread)),
            timeout: Duration::from_millis(config.call_timeout_ms),
        }))
    }
}

/// Starts, restarts and stops one binding's process.
pub(crate) struct Supervisor {
    name: String,
    config: ProcessConfig,
    env: Vec<(String, String)>,
    slot: Arc<Slot>,
    stop: Mutex<bool>,
    wake: Condvar,
    /// Set when `run` returned (its process is stopped).
    finished: Mutex<bool>,
    finished_cv: Condvar,
    pid: AtomicU32,
    restarts: metrics::Counter,
}

impl Supervisor {
    /// Asks the supervisor to stop its process and return.
    pub(crate) fn stop(&self) {
        *self.stop.lock() = true;
        self.wake.notify_all();
    }

    /// Waits until the supervisor has stopped its process, at most `timeout`.
    pub(crate) fn wait_finished(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut done = self.finished.lock();
        while !*done {
            if self.finished_cv.wait_until(&mut done, deadline).timed_out() {
                return;
            }
        }
    }

    fn stopped(&self) -> bool {
        *self.stop.lock()
    }

    /// Sleeps up to `d`; true when asked to stop.
    fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut stop = self.stop.lock();
        while !*stop {
            if self.wake.wait_until(&mut stop, deadline).timed_out() {
                break;
            }
        }
        *stop
    }

    fn spawn(&self, token: &str) -> std::io::Result<Child> {
        let mut cmd = Command::new(&self.config.command[0]);
        cmd.args(&self.config.command[1..])
            .envs(self.config.env.iter())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("KASCADE_LAMBDA_TOKEN", token)
            .stdin(Stdio::null());
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: the closure runs in the child between fork and exec and
            // calls only prctl, which is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    // The process dies with the thread that started it (a broker
                    // that is killed leaves no orphan behind).
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        cmd.spawn()
    }

    fn run(&self) {
        self.supervise();
        *self.finished.lock() = true;
        self.finished_cv.notify_all();
    }

    fn supervise(&self) {
        let backoff = Duration::from_millis(self.config.restart_backoff_ms);
        let mut first = true;
        while !self.stopped() {
            if !first {
                self.restarts.increment(1);
            }
            first = false;
            let token = new_token();
            self.slot.expect(token.clone());
            let mut child = match self.spawn(&token) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(lambda = %self.name, "starting {:?}: {e}", self.config.command[0]);
                    if self.sleep(backoff) {
                        return;
                    }
                    continue;
                }
            };
            self.pid.store(child.id(), Ordering::Relaxed);
            tracing::info!(lambda = %self.name, pid = child.id(), "process lambda started");
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        tracing::warn!(lambda = %self.name, pid = child.id(), %status, "process lambda exited; restarting");
                        break;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(lambda = %self.name, "waiting for the process: {e}");
                        break;
                    }
                }
                if self.sleep(Duration::from_millis(20)) {
                    terminate(&self.name, &mut child);
                    self.pid.store(0, Ordering::Relaxed);
                    return;
                }
            }
            self.pid.store(0, Ordering::Relaxed);
            if self.sleep(backoff) {
                return;
            }
        }
    }
}

/// SIGTERM, then SIGKILL after [`GRACE`].
fn terminate(name: &str, child: &mut Child) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) with our own child's pid; it is not yet reaped, so the pid is still ours.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            tracing::info!(lambda = name, pid, %status, "process lambda stopped");
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    tracing::info!(
        lambda = name,
        pid,
        "process lambda killed after the grace period"
    );
}

/// A token no other start of any process shares.
fn new_token() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut out = String::new();
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(N.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// The engine's side of a `process` binding.
struct ProcessLambda {
    sup: Arc<Supervisor>,
    slot: Arc<Slot>,
    registry: Arc<Registry>,
    instance: u64,
    thread: Mutex<Option<JoinHandle<()>>>,
    timeout: Duration,
}

impl Lambda for ProcessLambda {
    fn call(
        &self,
        _ctx: &LambdaContext<'_>,
        object: &Arc<ObjectVersion>,
    ) -> Result<(), LambdaError> {
        let deadline = Instant::now() + self.timeout;
        let (conn, id, rx) = self.slot.wait_attached(deadline).map_err(LambdaError)?;
        let sent = conn.send(&Frame::new(
            id,
            Body::Upcall(Object {
                version: object.version,
                seq: object.seq,
                count: object.count,
                timestamp_us: object.timestamp_us,
                key: object.key.as_str(),
                value: &object.value,
            }),
        ));
        if let Err(e) = sent {
            self.slot.forget(id);
            return Err(LambdaError(e));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(LambdaError(message)),
            Err(_) => {
                self.slot.forget(id);
                Err(LambdaError(format!(
                    "the lambda process did not answer within {} ms",
                    self.timeout.as_millis()
                )))
            }
        }
    }

    fn removed(&self) {
        self.sup.stop();
        self.registry.remove(&self.sup.name, self.instance);
    }
}

impl Drop for ProcessLambda {
    fn drop(&mut self) {
        self.sup.stop();
        self.registry.remove(&self.sup.name, self.instance);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}
