//! Crash safety with real processes and real files.
//!
//! The crash test re-executes this test binary as a child writer (selected by an
//! environment variable), reads its acknowledgements from a pipe, SIGKILLs it at
//! random moments and then recovers the data dir in-process: every acknowledged
//! put must be there, unchanged, and nothing corrupt may be served. The other
//! tests damage segment files by hand: a torn tail is truncated away, a flipped
//! byte before the tail stops the shard instead of being served.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kascade_core::{
    Engine, EngineConfig, Error, Get, IdempotenceToken, Key, ObjectVersion, PoolConfig, Put,
    RangeLimit, Storage,
};

const CHILD_ENV: &str = "KASCADE_CRASH_WRITER_DIR";
const ROUND_ENV: &str = "KASCADE_CRASH_ROUND";
const BIG_ENV: &str = "KASCADE_CRASH_BIG";
const POOL: &str = "/crash";
const KEYS: usize = 6;

// ----- deterministic values and a tiny RNG -----

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The value stored at `seq` of `key` with `len` bytes: a pure function, so any reader can check it.
fn value_for(key: &str, seq: u64, len: usize) -> Vec<u8> {
    let seed = mix(crc32c::crc32c(key.as_bytes()) as u64 ^ mix(seq));
    let block: Vec<u8> = (0..256u64).map(|i| mix(seed ^ i) as u8).collect();
    let mut out = Vec::with_capacity(len);
    let mut chunk = 0u8;
    while out.len() < len {
        let take = (len - out.len()).min(256);
        out.extend(block[..take].iter().map(|b| b ^ chunk));
        chunk = chunk.wrapping_add(1);
    }
    out
}

fn key_name(i: usize) -> String {
    format!("{POOL}/k{i}")
}

/// Opens the engine on `dir`. The crash test spawns children from this process,
/// and a child holds copies of our descriptors (the data dir's LOCK among them)
/// until its exec closes them, a moment after `spawn` returns: so an engine
/// closed and reopened meanwhile may find its own data dir locked for a while.
fn open(dir: &Path) -> Engine {
    let config = EngineConfig {
        data_dir: Some(dir.to_path_buf()),
        ..EngineConfig::default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Engine::open(config.clone()) {
            Err(Error::Io { op, .. })
                if op.starts_with("lock data dir") && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5))
            }
            other => return other.expect("open the engine"),
        }
    }
}

fn close(engine: Engine) {
    engine.shutdown();
    drop(engine);
}

// ----- the child writer -----

/// Runs only when re-executed by `acknowledged_puts_survive_sigkill_at_random_moments`.
#[test]
fn crash_writer_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let round: u32 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let big = std::env::var(BIG_ENV).is_ok();
    let engine = open(Path::new(&dir));
    if !engine.pools().iter().any(|p| p.prefix == POOL) {
        let config = PoolConfig {
            segment_bytes: 1 << 20,
            ..PoolConfig::new(POOL, Storage::Persistent).shards(2)
        };
        engine.create_pool(config).expect("create the crash pool");
    }
    let out = std::sync::Arc::new(Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let (engine, out) = (engine.clone(), out.clone());
            std::thread::spawn(move || {
                if big && t == 1 {
                    // One writer alone, so the parent can watch its big write grow the log.
                    return;
                }
                let mut rng = Rng(mix(u64::from(round) * 1000 + t));
                let keys: Vec<usize> = (0..KEYS).filter(|k| *k as u64 % 2 == t).collect();
                let mut token_seq = [0i64; KEYS];
                // Bounded, in case the parent is gone without killing us.
                let mut budget: usize = 128 << 20;
                for n in 0..20_000u64 {
                    let i = keys[n as usize % keys.len()];
                    let key = Key::new(&key_name(i)).unwrap();
                    let seq = engine.bounds(&key).unwrap().next_seq;
                    let count = 1 + rng.below(3) as u32;
                    let len = match rng.below(100) {
                        r if big && r < 25 => 256 * 1024 + rng.below(2 << 20) as usize,
                        r if r < 10 => 4097 + rng.below(60_000) as usize,
                        _ => rng.below(300) as usize,
                    };
                    let Some(left) = budget.checked_sub(len) else {
                        break;
                    };
                    budget = left;
                    let mut put =
                        Put::new(key.clone(), value_for(key.as_str(), seq, len)).count(count);
                    // Keys 0 and 1 write with idempotence tokens: a new epoch each round.
                    if i < 2 {
                        put = put.token(IdempotenceToken {
                            writer: 100 + i as u64,
                            epoch: round,
                            sequence: token_seq[i],
                        });
                    }
                    if len > 256 * 1024 {
                        let mut o = out.lock().unwrap();
                        writeln!(o, "BIG {key} {seq} {len}").unwrap();
                        o.flush().unwrap();
                    }
                    let r = engine.put(put).expect("put");
                    assert_eq!(
                        r.seq, seq,
                        "a single writer per key knows where its put lands"
                    );
                    token_seq[i] += i64::from(count);
                    let mut o = out.lock().unwrap();
                    writeln!(o, "ACK {key} {} {} {count} {len}", r.version, r.seq).unwrap();
                    o.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

// ----- the parent -----

#[derive(Debug, Clone)]
struct Acked {
    round: u32,
    key: String,
    version: u64,
    seq: u64,
    count: u32,
    len: usize,
}

enum Line {
    Ack(Acked),
    /// A put of this many bytes is about to start.
    Big(usize),
}

fn parse(line: &str, round: u32) -> Option<Line> {
    // libtest may print its own text before ours on the same line.
    if let Some(at) = line.find("BIG ") {
        return line[at..]
            .split_whitespace()
            .nth(3)?
            .parse()
            .ok()
            .map(Line::Big);
    }
    let rest = &line[line.find("ACK ")? + 4..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(Line::Ack(Acked {
        round,
        key: f[0].to_string(),
        version: f[1].parse().ok()?,
        seq: f[2].parse().ok()?,
        count: f[3].parse().ok()?,
        len: f[4].parse().ok()?,
    }))
}

/// Runs one child round and kills it; returns what it acknowledged.
fn crash_round(dir: &Path, round: u32, rng: &mut Rng) -> Vec<Acked> {
    let mode = round % 4;
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "crash_writer_child",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, dir)
    .env(ROUND_ENV, round.to_string())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    if mode == 3 {
        cmd.env(BIG_ENV, "1");
    }
    let mut child = cmd.spawn().expect("spawn the writer");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(l) = parse(&line, round) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        }
    });
    let mut acks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    match mode {
        // Early: while it opens and recovers, or just after.
        0 => std::thread::sleep(Duration::from_millis(rng.below(40))),
        // After a given number of acknowledgements.
        1 => {
            let want = 1 + rng.below(60) as usize;
            while acks.len() < want && Instant::now() < deadline {
                if let Ok(Line::Ack(a)) = rx.recv_timeout(Duration::from_millis(100)) {
                    acks.push(a);
                }
            }
        }
        // Late: after a random while.
        2 => std::thread::sleep(Duration::from_millis(50 + rng.below(150))),
        // While a big value is being written: watch the log grow and kill mid-write.
        _ => {
            let mut attempts = 0;
            'watch: while Instant::now() < deadline && attempts < 8 {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(Line::Ack(a)) => acks.push(a),
                    Ok(Line::Big(len)) => {
                        attempts += 1;
                        let base = pool_log_bytes(dir);
                        let until = Instant::now() + Duration::from_millis(50);
                        while Instant::now() < until {
                            let grown = pool_log_bytes(dir).saturating_sub(base);
                            if grown > 0 && grown < len as u64 {
                                break 'watch;
                            }
                            if grown >= len as u64 {
                                break;
                            }
                        }
                    }
                    Err(_) => {}
                }
            }
            if attempts >= 8 {
                std::thread::sleep(Duration::from_micros(rng.below(3000)));
            }
        }
    }
    let pid = child.id() as libc::pid_t;
    // SAFETY: `pid` is our own child, not yet waited for, so the id cannot have been reused.
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill the writer");
    let status = child.wait().expect("wait for the writer");
    assert!(
        !status.success(),
        "the writer was killed, not finished: {status:?}"
    );
    reader.join().unwrap();
    acks.extend(rx.try_iter().filter_map(|l| match l {
        Line::Ack(a) => Some(a),
        Line::Big(_) => None,
    }));
    acks
}

/// Bytes in every segment file of the crash pool.
fn pool_log_bytes(dir: &Path) -> u64 {
    let pool = dir.join("pools").join("%2Fcrash");
    let mut total = 0;
    for i in 0..2 {
        let Ok(entries) = std::fs::read_dir(pool.join(format!("shard-{i}"))) else {
            continue;
        };
        for e in entries.flatten() {
            total += e.metadata().map_or(0, |m| m.len());
        }
    }
    total
}

/// How many shard logs of the crash pool end inside a record (a write cut by the kill).
fn torn_tails(dir: &Path) -> usize {
    let pool = dir.join("pools").join("%2Fcrash");
    (0..2)
        .filter(|i| {
            let shard = pool.join(format!("shard-{i}"));
            let Ok(entries) = std::fs::read_dir(&shard) else {
                return false;
            };
            let Some(last) = entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .max()
            else {
                return false;
            };
            let data = std::fs::read(last).unwrap();
            let mut at = 0;
            while at + 8 <= data.len() {
                at += 8 + u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
            }
            at != data.len()
        })
        .count()
}

/// Recovers the data dir and checks every key's whole history and every acknowledged put.
fn check_recovered(dir: &Path, acked: &[Acked], when: &str) -> usize {
    let engine = open(dir);
    if !engine.pools().iter().any(|p| p.prefix == POOL) {
        assert!(
            acked.is_empty(),
            "{when}: the pool is gone but puts were acknowledged"
        );
        close(engine);
        return 0;
    }
    let mut stored = 0;
    for i in 0..KEYS {
        let key = Key::new(&key_name(i)).unwrap();
        assert_eq!(
            engine.shard_failure(&key).unwrap(),
            None,
            "{when}: a crash is not corruption"
        );
        let info = engine.bounds(&key).unwrap();
        assert_eq!(info.start_seq, 0, "{when}: nothing was trimmed");
        let all = engine
            .range(
                &key,
                0,
                RangeLimit {
                    max_bytes: usize::MAX,
                    max_versions: usize::MAX,
                },
            )
            .unwrap();
        let mut next_seq = 0;
        let mut last_version = 0;
        for v in &all {
            assert_eq!(v.seq, next_seq, "{when}: {key}'s seqs are dense");
            assert!(
                v.version > last_version,
                "{when}: {key}'s versions strictly increase"
            );
            assert_eq!(
                v.prev_version, last_version,
                "{when}: {key}'s versions chain"
            );
            assert_eq!(
                &v.value[..],
                &value_for(key.as_str(), v.seq, v.value.len())[..],
                "{when}: {key}@{} is intact",
                v.seq
            );
            next_seq = v.next_seq();
            last_version = v.version;
        }
        assert_eq!(
            info.next_seq, next_seq,
            "{when}: {key}'s bounds match its history"
        );
        stored += all.len();
        // Keys 0 and 1 wrote with tokens: their dedup state was recovered too.
        let last_acked = all.last().and_then(|v| {
            acked
                .iter()
                .find(|a| a.key == key.as_str() && a.seq == v.seq)
        });
        if let (true, Some(last)) = (i < 2, last_acked) {
            let earlier: i64 = acked
                .iter()
                .filter(|a| a.key == last.key && a.round == last.round && a.seq < last.seq)
                .map(|a| i64::from(a.count))
                .sum();
            let writer = 100 + i as u64;
            let next = earlier + i64::from(last.count);
            assert_eq!(
                engine.writers_of(&key).unwrap(),
                vec![(writer, last.round, next)],
                "{when}: {key}'s writer state"
            );
            let retry = Put::new(key.clone(), value_for(key.as_str(), last.seq, last.len))
                .count(last.count)
                .token(IdempotenceToken {
                    writer,
                    epoch: last.round,
                    sequence: earlier,
                });
            let r = engine.put(retry).unwrap();
            assert_eq!(
                (r.version, r.seq),
                (last.version, last.seq),
                "{when}: a retry after the crash is answered, not rewritten"
            );
            assert_eq!(engine.bounds(&key).unwrap().next_seq, next_seq);
        }
    }
    for a in acked {
        let key = Key::new(&a.key).unwrap();
        let got: std::sync::Arc<ObjectVersion> = engine
            .get(&key, Get::Seq(a.seq))
            .unwrap()
            .unwrap_or_else(|| panic!("{when}: acknowledged put {a:?} was lost"));
        assert_eq!(
            (got.version, got.seq, got.count, got.value.len()),
            (a.version, a.seq, a.count, a.len),
            "{when}: acknowledged put {a:?}"
        );
    }
    close(engine);
    stored
}

#[test]
fn acknowledged_puts_survive_sigkill_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x5eed);
    let mut acked: Vec<Acked> = Vec::new();
    let rounds = 24;
    let mut torn = 0;
    for round in 1..=rounds {
        let new = crash_round(dir.path(), round, &mut rng);
        acked.extend(new);
        torn += torn_tails(dir.path());
        check_recovered(dir.path(), &acked, &format!("after round {round}"));
    }
    eprintln!(
        "{} acknowledged puts over {rounds} kills; {torn} shard logs left with a torn tail",
        acked.len()
    );
    assert!(
        torn > 0,
        "some kills landed inside a write, so recovery had torn tails to cut"
    );
    assert!(
        acked.len() > 100,
        "the writers made progress: {} acknowledged puts",
        acked.len()
    );
    // Recovery changed nothing that a second recovery would see differently.
    let stored = check_recovered(dir.path(), &acked, "after a clean reopen");
    assert!(stored >= acked.len());
}

// ----- damaged segment files -----

fn single_shard_pool(dir: &Path, prefix: &str, segment_bytes: u64) -> Engine {
    let engine = open(dir);
    let config = PoolConfig {
        segment_bytes,
        ..PoolConfig::new(prefix, Storage::Persistent).shards(1)
    };
    engine.create_pool(config).unwrap();
    engine
}

/// `<data_dir>/pools/<encoded prefix>/shard-0/*.log`, oldest first.
fn segments(dir: &Path, encoded_prefix: &str) -> Vec<PathBuf> {
    let shard = dir.join("pools").join(encoded_prefix).join("shard-0");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&shard)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

/// Byte ranges of the frames in a segment: `[len u32][crc u32][payload]`.
fn frames(path: &Path) -> Vec<(usize, usize)> {
    let data = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= data.len() {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        out.push((at, at + 8 + len));
        at += 8 + len;
    }
    assert_eq!(at, data.len(), "whole frames only");
    out
}

/// Writes `n` puts alternating over two keys; returns `(key, seq, len)` of each, in log order.
fn write_some(engine: &Engine, prefix: &str, n: usize, rng: &mut Rng) -> Vec<(String, u64, usize)> {
    let mut out = Vec::new();
    for i in 0..n {
        let key = Key::new(&format!("{prefix}/k{}", i % 2)).unwrap();
        let seq = engine.bounds(&key).unwrap().next_seq;
        let len = if rng.below(4) == 0 {
            4097 + rng.below(8000) as usize
        } else {
            rng.below(200) as usize
        };
        let r = engine
            .put(Put::new(key.clone(), value_for(key.as_str(), seq, len)))
            .unwrap();
        assert_eq!(r.seq, seq);
        out.push((key.to_string(), seq, len));
    }
    out
}

fn served(engine: &Engine, key: &str, seq: u64, len: usize) -> bool {
    match engine.get(&Key::new(key).unwrap(), Get::Seq(seq)).unwrap() {
        None => false,
        Some(v) => {
            assert_eq!(
                &v.value[..],
                &value_for(key, seq, len)[..],
                "{key}@{seq} is served intact"
            );
            true
        }
    }
}

#[test]
fn a_torn_tail_is_truncated_and_writing_goes_on() {
    let mut rng = Rng(7);
    for trial in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let engine = single_shard_pool(dir.path(), "/t", 128 << 20);
        let written = write_some(&engine, "/t", 24, &mut rng);
        close(engine);

        let seg = segments(dir.path(), "%2Ft").pop().unwrap();
        let frames = frames(&seg);
        assert_eq!(frames.len(), written.len(), "one record per put");
        let total = frames.last().unwrap().1;
        // Cut anywhere: at 0, at a frame boundary, inside a header, inside a payload.
        let cut = match trial {
            0 => 0,
            1 => frames[10].0,
            2 => frames[12].0 + 3,
            _ => 1 + rng.below(total as u64 - 1) as usize,
        };
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(cut as u64).unwrap();
        drop(f);

        let engine = open(dir.path());
        let intact = frames.iter().take_while(|(_, end)| *end <= cut).count();
        for (i, (key, seq, len)) in written.iter().enumerate() {
            assert_eq!(
                served(&engine, key, *seq, *len),
                i < intact,
                "trial {trial}: cut at {cut}, put {i}"
            );
        }
        for k in ["/t/k0", "/t/k1"] {
            let key = Key::new(k).unwrap();
            assert_eq!(
                engine.shard_failure(&key).unwrap(),
                None,
                "a torn tail is not corruption"
            );
            let expect_next = written[..intact].iter().filter(|w| w.0 == k).count() as u64;
            assert_eq!(
                engine.bounds(&key).unwrap().next_seq,
                expect_next,
                "trial {trial}: {k} ends at its last whole put"
            );
        }
        let boundary = frames.get(intact).map_or(total, |f| f.0);
        assert_eq!(
            std::fs::metadata(&seg).unwrap().len(),
            boundary as u64,
            "the torn bytes are gone from the file"
        );

        // New writes continue right after the last whole record, and survive another restart.
        let more = write_some(&engine, "/t", 4, &mut rng);
        close(engine);
        let engine = open(dir.path());
        for (key, seq, len) in written[..intact].iter().chain(&more) {
            assert!(
                served(&engine, key, *seq, *len),
                "trial {trial}: {key}@{seq} after the second reopen"
            );
        }
        close(engine);
    }
}

/// Flips one byte at `at` in a copy of a freshly written log, reopens, and checks
/// what is served. `segment_bytes` small makes several segments.
fn flip_and_check(what: &str, segment_bytes: u64, pick: impl Fn(&[PathBuf]) -> (usize, usize, u8)) {
    let mut rng = Rng(11);
    let dir = tempfile::tempdir().unwrap();
    let engine = single_shard_pool(dir.path(), "/f", segment_bytes);
    let other = PoolConfig::new("/other", Storage::Persistent).shards(1);
    engine.create_pool(other).unwrap();
    let written = write_some(&engine, "/f", 40, &mut rng);
    close(engine);

    let segs = segments(dir.path(), "%2Ff");
    let (seg, record, xor) = pick(&segs);
    // Which put is that record? Count the records of the segments before it.
    let before: usize = segs[..seg].iter().map(|s| frames(s).len()).sum();
    let bad = before + record;
    let (start, end) = frames(&segs[seg])[record];
    let offset = match what {
        "length" => start + 3,
        "checksum" => start + 5,
        _ => start + 8 + (end - start - 8) / 2,
    };
    let mut data = std::fs::read(&segs[seg]).unwrap();
    data[offset] ^= xor;
    std::fs::write(&segs[seg], &data).unwrap();

    let engine = open(dir.path());
    for (i, (key, seq, len)) in written.iter().enumerate() {
        assert_eq!(
            served(&engine, key, *seq, *len),
            i < bad,
            "{what}: record {bad} is corrupt; put {i}"
        );
    }
    let key = Key::new("/f/k0").unwrap();
    let failure = engine
        .shard_failure(&key)
        .unwrap()
        .expect("the shard reports its corruption");
    assert!(failure.contains("corrupt"), "{what}: {failure}");
    let err = engine.put(Put::new(key.clone(), "x")).unwrap_err();
    assert!(matches!(err, Error::ShardFailed(..)), "{err:?}");
    assert!(
        err.to_string().contains("corrupt"),
        "{what}: the write error names the corruption: {err}"
    );
    assert!(
        engine.trim(&key, 1).is_err(),
        "{what}: trims are refused too"
    );
    assert!(
        engine.remove(&key).is_err(),
        "{what}: removes are refused too"
    );
    // Other shards and pools are unaffected.
    let fine = Key::new("/other/k").unwrap();
    engine.put(Put::new(fine.clone(), "still fine")).unwrap();
    close(engine);
    // The corruption is still refused after another restart, not forgotten.
    let engine = open(dir.path());
    assert!(
        engine.shard_failure(&key).unwrap().is_some(),
        "{what}: still refused after restart"
    );
    assert_eq!(
        &engine.get(&fine, Get::Latest).unwrap().unwrap().value[..],
        b"still fine"
    );
    for (i, (key, seq, len)) in written.iter().enumerate() {
        assert_eq!(
            served(&engine, key, *seq, *len),
            i < bad,
            "{what}: after restart; put {i}"
        );
    }
    close(engine);
}

#[test]
fn a_flipped_payload_byte_is_refused_not_served() {
    flip_and_check("payload", 128 << 20, |_| (0, 20, 0x40));
}

#[test]
fn a_flipped_checksum_byte_is_refused_not_served() {
    flip_and_check("checksum", 128 << 20, |_| (0, 13, 0x01));
}

#[test]
fn a_flipped_length_byte_before_the_tail_is_refused_not_truncated_away() {
    // The length now points past the end of the file, as a torn write's would;
    // but whole records follow, so this is damage, not a torn tail.
    flip_and_check("length", 128 << 20, |_| (0, 20, 0x80));
}

#[test]
fn a_flipped_byte_in_an_older_segment_stops_recovery_there() {
    flip_and_check("payload", 4096, |segs| {
        assert!(segs.len() >= 3, "several segments: {segs:?}");
        (1, frames(&segs[1]).len() / 2, 0x01)
    });
}

#[test]
fn a_value_survives_a_clean_restart_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let engine = single_shard_pool(dir.path(), "/v", 128 << 20);
    let key = Key::new("/v/big").unwrap();
    let value = Bytes::from(value_for("/v/big", 0, 3 << 20));
    engine.put(Put::new(key.clone(), value.clone())).unwrap();
    close(engine);
    let engine = open(dir.path());
    assert_eq!(engine.get(&key, Get::Latest).unwrap().unwrap().value, value);
    close(engine);
}
