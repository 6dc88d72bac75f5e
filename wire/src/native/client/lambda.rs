//! The client side of an external-process lambda: a process the broker
//! started attaches to its binding, takes upcalls, writes its output with the
//! ordinary client calls and reports each call done.

use std::time::{Duration, Instant};

use super::{Client, RecvWait};
use crate::native::frame::{self, Body, Frame};
use crate::native::wait::wait_until;
use crate::native::NativeError;

/// One version for the lambda to handle, copied out of the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upcall {
    /// The call id, to answer with [`LambdaClient::done`].
    pub id: u64,
    /// The key written (under the bound prefix).
    pub key: String,
    /// The shard version number.
    pub version: u64,
    /// The key's position.
    pub seq: u64,
    /// Positions it takes (records, for a Kafka partition's batch).
    pub count: u32,
    /// When it was written, microseconds since the epoch.
    pub timestamp_us: u64,
    /// The value (for a Kafka partition: the stored record batch).
    pub value: Vec<u8>,
}

/// Where [`LambdaClient::emit`] writes: a prefix and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LambdaDestination {
    /// The prefix the output key is formed under.
    pub prefix: String,
    /// Trigger (upcall only) instead of put.
    pub trigger: bool,
}

/// A lambda process attached to its binding.
pub struct LambdaClient {
    client: Client,
    name: String,
    prefix: String,
    destinations: Vec<LambdaDestination>,
}

impl Client {
    /// Attaches this connection to the lambda binding `name` with the `token`
    /// the broker gave the process; from then on the broker sends it upcalls.
    pub fn attach(&mut self, name: &str, token: &str) -> Result<(), NativeError> {
        let id = self.take_id();
        self.send(&Frame::new(id, Body::Attach(frame::Attach { name, token })))?;
        match self.answer(id)? {
            super::Answer::Ack(_) => Ok(()),
            other => Err(other.into_error("attach")),
        }
    }

    /// The next upcall, waiting up to `timeout` (`None`: forever); `Ok(None)` when it passes.
    pub fn next_upcall(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<Upcall>, NativeError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(bytes) = self.upcalls.pop_front() {
                let f = frame::decode(&bytes)?;
                if let Body::Upcall(o) = f.body {
                    return Ok(Some(Upcall {
                        id: f.id,
                        key: o.key.to_owned(),
                        version: o.version,
                        seq: o.seq,
                        count: o.count,
                        timestamp_us: o.timestamp_us,
                        value: o.value.to_vec(),
                    }));
                }
                continue;
            }
            self.tx.flush()?;
            if self.rx.peek()?.is_none() {
                let mut w = RecvWait { c: self };
                if !wait_until(w.c.wait, &mut w, deadline)? {
                    return Ok(None);
                }
                continue;
            }
            self.drain_arrived()?;
        }
    }

    /// Reports upcall `id` done: `Ok(())`, or an error with its message (the
    /// broker counts it as the lambda's error). Nothing is waited for.
    pub fn upcall_done(&mut self, id: u64, result: Result<(), &str>) -> Result<(), NativeError> {
        let (status, message) = match result {
            Ok(()) => (0, ""),
            Err(m) => (1, m),
        };
        self.send(&Frame::new(
            id,
            Body::UpcallDone(frame::UpcallDone { status, message }),
        ))?;
        self.tx.flush()
    }
}

/// Reads an environment variable the broker sets.
fn env(name: &str) -> Result<String, NativeError> {
    std::env::var(name).map_err(|_| {
        NativeError::Connect(format!(
            "{name} is not set: this process was not started by a kascade `process` lambda"
        ))
    })
}

impl LambdaClient {
    /// Connects to the broker and attaches, from the environment the broker
    /// gives the processes it starts (`KASCADE_NATIVE_URL`, `KASCADE_LAMBDA_NAME`,
    /// `KASCADE_LAMBDA_TOKEN`, `KASCADE_LAMBDA_PREFIX`, `KASCADE_LAMBDA_DESTINATIONS`).
    pub fn attach_from_env() -> Result<LambdaClient, NativeError> {
        let url = env("KASCADE_NATIVE_URL")?;
        let name = env("KASCADE_LAMBDA_NAME")?;
        let token = env("KASCADE_LAMBDA_TOKEN")?;
        let prefix = env("KASCADE_LAMBDA_PREFIX")?;
        let destinations = parse_destinations(&env("KASCADE_LAMBDA_DESTINATIONS")?)?;
        let mut client = Client::connect(&url)?;
        client.attach(&name, &token)?;
        Ok(LambdaClient {
            client,
            name,
            prefix,
            destinations,
        })
    }

    /// The binding's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The prefix the binding is bound to.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The binding's destinations.
    pub fn destinations(&self) -> &[LambdaDestination] {
        &self.destinations
    }

    /// The connection, for reads and writes of its own.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The next upcall (see [`Client::next_upcall`]).
    pub fn next_upcall(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<Upcall>, NativeError> {
        self.client.next_upcall(timeout)
    }

    /// Reports `upcall` done (see [`Client::upcall_done`]).
    pub fn done(&mut self, upcall: &Upcall, result: Result<(), &str>) -> Result<(), NativeError> {
        self.client.upcall_done(upcall.id, result)
    }

    /// The key `upcall`'s output takes under `destination`: the input key's path
    /// relative to the bound prefix (`/in/a/b` bound at `/in` goes to `/out/a/b`).
    pub fn destination_key(&self, upcall: &Upcall, destination: &str) -> String {
        let relative = upcall
            .key
            .strip_prefix(self.prefix.trim_end_matches('/'))
            .unwrap_or("")
            .trim_start_matches('/');
        let base = destination.trim_end_matches('/');
        if relative.is_empty() {
            base.to_owned()
        } else {
            format!("{base}/{relative}")
        }
    }

    /// Writes `value` to every destination, as an in-process lambda's emit
    /// does; a destination under `/cms/topics/T` publishes to topic `T`, to
    /// the input's partition index when the input is a partition.
    pub fn emit(&mut self, upcall: &Upcall, value: &[u8]) -> Result<(), NativeError> {
        for i in 0..self.destinations.len() {
            let d = &self.destinations[i];
            let (trigger, prefix) = (d.trigger, d.prefix.clone());
            if let Some(topic) = prefix
                .trim_end_matches('/')
                .strip_prefix("/cms/topics/")
                .filter(|t| !t.is_empty() && !t.contains('/'))
            {
                let partition = partition_of(&upcall.key);
                self.client.publish(topic, partition, None, value, &[])?;
                continue;
            }
            let key = self.destination_key(upcall, &prefix);
            if trigger {
                self.client.trigger(&key, value)?;
            } else {
                self.client.put(&key, value)?;
            }
        }
        Ok(())
    }
}

/// The partition index of a key `/cms/topics/T/p`.
fn partition_of(key: &str) -> Option<i32> {
    let rest = key.strip_prefix("/cms/topics/")?;
    let (_, p) = rest.split_once('/')?;
    p.parse().ok()
}

/// `[{"prefix": "/out", "mode": "put"|"trigger"}, ...]`.
fn parse_destinations(json: &str) -> Result<Vec<LambdaDestination>, NativeError> {
    let bad = |why: &str| NativeError::Protocol(format!("KASCADE_LAMBDA_DESTINATIONS: {why}"));
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(&e.to_string()))?;
    let list = v.as_array().ok_or_else(|| bad("not a JSON array"))?;
    list.iter()
        .map(|d| {
            let prefix = d
                .get("prefix")
                .and_then(|p| p.as_str())
                .ok_or_else(|| bad("a destination has no prefix"))?;
            let trigger = d.get("mode").and_then(|m| m.as_str()) == Some("trigger");
            Ok(LambdaDestination {
                prefix: prefix.to_owned(),
                trigger,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_and_partitions_are_read() {
        let d = parse_destinations(
            r#"[{"prefix":"/out","mode":"put"},{"prefix":"/t","mode":"trigger"}]"#,
        )
        .unwrap();
        assert_eq!(d.len(), 2);
        assert!(!d[0].trigger && d[1].trigger);
        assert!(parse_destinations("{}").is_err());
        assert_eq!(partition_of("/cms/topics/x/3"), Some(3));
        assert_eq!(partition_of("/in/x"), None);
    }
}
