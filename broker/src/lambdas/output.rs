//! Making a call's writes: emits go to the binding's destinations (a put or a
//! trigger of the destination key, or, under `/cms/topics`, a record appended
//! to a topic partition), puts and triggers to the keys the lambda named.
//!
//! Records emitted to one topic partition while handling one input (one
//! version, or every record of one stored batch) are appended as one record
//! batch, sealed with its base offset and leader epoch by the produce path, so
//! Kafka consumers read them like any produced batch.

use bytes::{Bytes, BytesMut};
use kascade_core::{
    Ack, EmitMode, Engine, Error, Key, LambdaContext, LambdaError, ObjectVersion, Prefix, Put,
};
use kascade_wire::kafka::records::{encode_batch, NewRecord};

use super::{LambdaHost, Output};
use crate::kafka::topics::TOPICS_PREFIX;

/// The Kafka record an emit to a topic becomes: the input's key and timestamp.
pub(crate) struct RecordMeta<'a> {
    /// The record key: the input record's key, or the input key of a K/V input.
    pub key: Option<&'a [u8]>,
    /// Create time, ms since the epoch.
    pub timestamp_ms: i64,
}

/// Where an emit goes.
enum Target {
    /// A put or trigger of this key.
    Key(Key, EmitMode),
    /// Records appended to a topic partition, collected until `finish`.
    Topic {
        topic: String,
        partition: i32,
        records: Vec<(Option<Bytes>, Bytes, i64)>,
    },
}

/// Makes one input's writes, in order; topic records are appended by `finish`.
pub(crate) struct Writer<'w> {
    host: &'w LambdaHost,
    engine: Engine,
    targets: Vec<Target>,
}

impl<'w> Writer<'w> {
    /// A writer for the outputs of `input`; `input_partition` is its partition when
    /// it is a Kafka partition (a topic destination then gets the same index).
    pub(crate) fn new(
        ctx: &LambdaContext<'_>,
        host: &'w LambdaHost,
        input: &ObjectVersion,
        input_partition: Option<i32>,
    ) -> Result<Writer<'w>, LambdaError> {
        let engine = ctx
            .engine()
            .ok_or_else(|| LambdaError(Error::ShuttingDown.to_string()))?;
        let relative = input.key.relative_to(ctx.prefix()).unwrap_or("");
        let mut targets = Vec::with_capacity(ctx.destinations().len());
        for (prefix, mode) in ctx.destinations() {
            targets.push(
                match topic_destination(prefix, input_partition, relative)? {
                    Some((topic, partition)) => Target::Topic {
                        topic,
                        partition,
                        records: Vec::new(),
                    },
                    None => Target::Key(ctx.destination_key(&input.key, prefix)?, *mode),
                },
            );
        }
        Ok(Writer {
            host,
            engine,
            targets,
        })
    }

    /// Makes one write; emits to topics are collected for `finish`.
    pub(crate) fn write(
        &mut self,
        output: Output,
        record: &RecordMeta<'_>,
    ) -> Result<(), LambdaError> {
        match output {
            Output::Emit(value) => {
                for target in &mut self.targets {
                    match target {
                        Target::Key(key, EmitMode::Put) => {
                            self.engine
                                .put_with(Put::new(key.clone(), value.clone()), Ack::Applied)?;
                        }
                        Target::Key(key, EmitMode::Trigger) => {
                            self.engine.trigger(key, value.clone())?;
                        }
                        Target::Topic { records, .. } => records.push((
                            record.key.map(Bytes::copy_from_slice),
                            value.clone(),
                            record.timestamp_ms,
                        )),
                    }
                }
            }
            Output::Put(key, value) => {
                self.engine.put_with(Put::new(key, value), Ack::Applied)?;
            }
            Output::Trigger(key, value) => {
                self.engine.trigger(&key, value)?;
            }
        }
        Ok(())
    }

    /// Appends the records collected for each topic destination, one batch each.
    pub(crate) fn finish(self) -> Result<(), LambdaError> {
        for target in self.targets {
            let Target::Topic {
                topic,
                partition,
                records,
            } = target
            else {
                continue;
            };
            if records.is_empty() {
                continue;
            }
            append(self.host, &topic, partition, &records)?;
        }
        Ok(())
    }
}

/// Appends `records` to partition `partition` of `topic` as one batch, through the produce path.
fn append(
    host: &LambdaHost,
    topic: &str,
    partition: i32,
    records: &[(Option<Bytes>, Bytes, i64)],
) -> Result<(), LambdaError> {
    let state = host.kafka().ok_or_else(|| {
        LambdaError(format!(
            "cannot append to topic {topic}: the Kafka face is not running"
        ))
    })?;
    let found = state.topics.get(topic).ok_or_else(|| {
        LambdaError(format!(
            "destination topic {topic} does not exist: create it first"
        ))
    })?;
    let new: Vec<NewRecord<'_>> = records
        .iter()
        .map(|(key, value, timestamp_ms)| NewRecord {
            key: key.as_deref(),
            value: Some(value),
            headers: &[],
            timestamp_ms: *timestamp_ms,
        })
        .collect();
    let mut buf = BytesMut::new();
    encode_batch(&new, &mut buf);
    crate::kafka::api::produce::append_batches(&state, &found, partition, buf.freeze(), true)
        .map(|_| ())
        .map_err(|(code, message)| {
            LambdaError(format!(
                "appending to topic {topic} partition {partition}: {}",
                message.unwrap_or_else(|| format!("{code:?}"))
            ))
        })
}

/// The topic and partition a destination under `/cms/topics` names: `/cms/topics/T/p`
/// names both; `/cms/topics/T` takes the input's partition (or, for a K/V input,
/// its key's path below the bound prefix when that is a partition number).
/// `None` for a destination outside `/cms/topics`.
fn topic_destination(
    prefix: &Prefix,
    input_partition: Option<i32>,
    relative: &str,
) -> Result<Option<(String, i32)>, LambdaError> {
    let Some(rest) = prefix
        .as_str()
        .strip_prefix(TOPICS_PREFIX)
        .and_then(|r| r.strip_prefix('/'))
    else {
        return Ok(None);
    };
    let bad = |why: &str| {
        LambdaError(format!(
            "destination {prefix} {why}: use /cms/topics/<topic> or /cms/topics/<topic>/<partition>"
        ))
    };
    let mut parts = rest.split('/');
    let topic = parts.next().unwrap_or_default();
    let partition = match (parts.next(), parts.next()) {
        (None, _) => match input_partition {
            Some(p) => p,
            None => super::topics::parse_partition(relative).ok_or_else(|| {
                bad("names no partition, and the input is neither a partition nor keyed by a partition number")
            })?,
        },
        (Some(p), None) => {
            super::topics::parse_partition(p).ok_or_else(|| bad("has a bad partition"))?
        }
        (Some(_), Some(_)) => return Err(bad("is below a partition")),
    };
    Ok(Some((topic.to_string(), partition)))
}
