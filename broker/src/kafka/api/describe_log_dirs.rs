//! DescribeLogDirs: the one log directory (the data dir) and the size of
//! each partition in it.
//!
//! A partition's size is the sum of its retained batches' bytes, read from
//! the engine's in-memory index with `range` (no disk reads; the engine has
//! no cheaper size query). Log-record framing and segments that hold other
//! keys' records too are not counted.

use std::path::Path;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};
use kascade_core::{Key, RangeLimit};

use super::{str_bytes, topic_name};
use crate::kafka::topics::Topic;
use crate::kafka::State;

/// The data dir as an absolute path, as Kafka names its log dirs.
pub(super) fn log_dir(data_dir: &Path) -> String {
    std::path::absolute(data_dir)
        .unwrap_or_else(|_| data_dir.to_path_buf())
        .display()
        .to_string()
}

/// Describes the requested partitions (every partition when none are named).
pub(super) fn handle(
    state: &State,
    version: i16,
    request: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let wanted: Vec<(std::sync::Arc<Topic>, Vec<i32>)> = match request.topics {
        None => state
            .topics
            .all()
            .into_iter()
            .map(|t| {
                let all = (0..t.partitions).collect();
                (t, all)
            })
            .collect(),
        // Kafka leaves out partitions it does not hold.
        Some(topics) => topics
            .into_iter()
            .filter_map(|t| {
                let topic = state.topics.get(&t.topic)?;
                let held = t
                    .partitions
                    .into_iter()
                    .filter(|p| topic.key(*p).is_some())
                    .collect();
                Some((topic, held))
            })
            .collect(),
    };
    let topics = wanted
        .into_iter()
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .filter_map(|p| {
                    let key = topic.key(p)?;
                    Some(
                        DescribeLogDirsPartition::default()
                            .with_partition_index(p)
                            .with_partition_size(partition_size(state, key))
                            .with_offset_lag(0)
                            .with_is_future_key(false),
                    )
                })
                .collect();
            DescribeLogDirsTopic::default()
                .with_name(topic_name(&topic.name))
                .with_partitions(partitions)
        })
        .collect();
    let mut dir = DescribeLogDirsResult::default()
        .with_log_dir(str_bytes(&log_dir(&state.config.data_dir)))
        .with_topics(topics);
    if version >= 4 {
        // -1 (the defaults) says "unknown" when the volume cannot be asked.
        if let Some((total, usable)) = volume_bytes(&state.config.data_dir) {
            dir.total_bytes = total;
            dir.usable_bytes = usable;
        }
    }
    DescribeLogDirsResponse::default().with_results(vec![dir])
}

/// Bytes of a partition's retained batches.
fn partition_size(state: &State, key: &Key) -> i64 {
    let Ok(bounds) = state.engine.bounds(key) else {
        return 0;
    };
    let mut from = bounds.start_seq;
    let mut total = 0u64;
    while from < bounds.next_seq {
        let limit = RangeLimit {
            max_bytes: usize::MAX,
            max_versions: 4096,
        };
        let versions = match state.engine.range(key, from, limit) {
            Ok(v) => v,
            // Trimmed by retention meanwhile: start again from the new log start.
            Err(kascade_core::Error::SeqOutOfRange { start, .. }) if start > from => {
                total = 0;
                from = start;
                continue;
            }
            Err(_) => break,
        };
        let Some(last) = versions.last() else {
            break;
        };
        from = last.next_seq();
        total += versions.iter().map(|v| v.value.len() as u64).sum::<u64>();
    }
    i64::try_from(total).unwrap_or(i64::MAX)
}

/// The size and the space left to unprivileged users of the volume holding `dir`.
#[cfg(unix)]
fn volume_bytes(dir: &Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `stat` points to writable
    // memory of the right type; statvfs only writes to it.
    let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    // The field types are u64 on 64-bit Linux but narrower elsewhere.
    #[allow(clippy::useless_conversion)]
    let bytes = |blocks: libc::fsblkcnt_t| {
        i64::try_from(u64::from(blocks).saturating_mul(u64::from(stat.f_frsize))).ok()
    };
    Some((bytes(stat.f_blocks)?, bytes(stat.f_bavail)?))
}

/// Volume sizes are not asked for off Unix: reported as unknown.
#[cfg(not(unix))]
fn volume_bytes(_dir: &Path) -> Option<(i64, i64)> {
    None
}
