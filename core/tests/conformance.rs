//! The store conformance suite: random operation sequences run against the engine
//! and against a simple model (a `BTreeMap` of key -> versions), compared after
//! every step. The same suite runs over volatile and persistent storage; the
//! persistent runs also close and reopen the engine mid-sequence, so whatever
//! the model holds must survive a restart.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use kascade_core::{
    Engine, EngineConfig, Error, FsyncPolicy, Get, Key, KeyInfo, ObjectVersion, PoolConfig, Prefix,
    Put, RangeLimit, Storage, WriteResult,
};
use proptest::prelude::*;

const POOL: &str = "/c";
const KEYS: [&str; 5] = ["/c/a", "/c/b", "/c/sub/x", "/c/sub/y", "/c/deep/er/z"];
const AFFINITY: &str = "/c/group";

// ----- the model -----

#[derive(Clone, Debug, PartialEq, Eq)]
struct MVersion {
    version: u64,
    seq: u64,
    count: u32,
    timestamp_us: u64,
    prev_version: u64,
    affinity: Option<String>,
    tombstone: bool,
    value: Vec<u8>,
}

impl MVersion {
    fn next_seq(&self) -> u64 {
        self.seq + u64::from(self.count)
    }
}

#[derive(Clone, Debug, Default)]
struct MKey {
    /// Retained versions, oldest first.
    versions: Vec<MVersion>,
    start_seq: u64,
    next_seq: u64,
    /// The newest version ever written (what the next version names as `prev_version`).
    last_written: u64,
    /// Every version number and timestamp ever written, to aim reads at.
    ever: Vec<(u64, u64)>,
}

#[derive(Default)]
struct Model {
    keys: BTreeMap<String, MKey>,
    affinity_set: BTreeSet<String>,
    /// Highest version any put returned (checked only for one-shard pools).
    max_version: u64,
}

impl Model {
    fn info(&self, key: &str) -> KeyInfo {
        let k = Key::new(key).unwrap();
        match self.keys.get(key) {
            None => KeyInfo {
                key: k,
                start_seq: 0,
                next_seq: 0,
                latest_version: 0,
                removed: false,
            },
            Some(m) => KeyInfo {
                key: k,
                start_seq: m.start_seq,
                next_seq: m.next_seq,
                latest_version: m.versions.last().map_or(0, |v| v.version),
                removed: m.versions.last().is_some_and(|v| v.tombstone),
            },
        }
    }

    fn get(&self, key: &str, query: Get) -> Option<MVersion> {
        let m = self.keys.get(key)?;
        let v = &m.versions;
        match query {
            Get::Latest => v.last().filter(|v| !v.tombstone).cloned(),
            Get::Version(x) => v.iter().find(|o| o.version == x).cloned(),
            Get::Seq(s) => {
                if s < m.start_seq {
                    return None;
                }
                v.iter().find(|o| o.seq <= s && s < o.next_seq()).cloned()
            }
            Get::AtTime(t) => v.iter().rev().find(|o| o.timestamp_us <= t).cloned(),
            Get::FirstAtOrAfter(t) => v.iter().find(|o| o.timestamp_us >= t).cloned(),
        }
    }

    /// `Ok(versions)` or `Err((start, end))` for `SeqOutOfRange`.
    fn range(&self, key: &str, from: u64, limit: RangeLimit) -> Result<Vec<MVersion>, (u64, u64)> {
        let Some(m) = self.keys.get(key) else {
            return if from == 0 {
                Ok(Vec::new())
            } else {
                Err((0, 0))
            };
        };
        if from < m.start_seq || from > m.next_seq {
            return Err((m.start_seq, m.next_seq));
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for v in m.versions.iter().filter(|v| v.next_seq() > from) {
            if out.len() >= limit.max_versions
                || (!out.is_empty() && bytes + v.value.len() > limit.max_bytes)
            {
                break;
            }
            bytes += v.value.len();
            out.push(v.clone());
        }
        Ok(out)
    }

    fn list(&self, prefix: &str) -> Vec<KeyInfo> {
        let p = Prefix::new(prefix).unwrap();
        self.keys
            .iter()
            .filter(|(k, m)| p.covers(k) && m.versions.last().is_some_and(|v| !v.tombstone))
            .map(|(k, _)| self.info(k))
            .collect()
    }

    /// Records a stored version the engine reported; checks its seq and version first.
    fn record(&mut self, put: &Put, tombstone: bool, result: WriteResult, one_shard: bool) {
        let m = self.keys.entry(put.key.to_string()).or_default();
        assert_eq!(
            result.seq, m.next_seq,
            "{}: a put lands at the key's next seq",
            put.key
        );
        assert!(
            result.version > m.last_written,
            "{}: versions of a key strictly increase ({} after {})",
            put.key,
            result.version,
            m.last_written
        );
        if one_shard {
            assert!(
                result.version > self.max_version,
                "a shard's versions strictly increase"
            );
        }
        self.max_version = self.max_version.max(result.version);
        m.versions.push(MVersion {
            version: result.version,
            seq: result.seq,
            count: put.count,
            timestamp_us: result.timestamp_us,
            prev_version: m.last_written,
            affinity: put.affinity.as_ref().map(|a| a.to_string()),
            tombstone,
            value: put.value.to_vec(),
        });
        m.next_seq = result.seq + u64::from(put.count);
        m.last_written = result.version;
        m.ever.push((result.version, result.timestamp_us));
        if put.affinity.is_some() {
            self.affinity_set.insert(put.key.to_string());
        }
    }
}

fn same(got: &ObjectVersion, want: &MVersion, what: &str) {
    let got_m = MVersion {
        version: got.version,
        seq: got.seq,
        count: got.count,
        timestamp_us: got.timestamp_us,
        prev_version: got.prev_version,
        affinity: got.affinity.as_ref().map(|a| a.to_string()),
        tombstone: got.tombstone,
        value: got.value.to_vec(),
    };
    assert_eq!(&got_m, want, "{what}");
}

fn same_opt(got: Option<std::sync::Arc<ObjectVersion>>, want: Option<MVersion>, what: &str) {
    match (got, want) {
        (None, None) => {}
        (Some(g), Some(w)) => same(&g, &w, what),
        (g, w) => panic!("{what}: engine gave {g:?}, model says {w:?}"),
    }
}

fn same_range(
    got: Result<Vec<std::sync::Arc<ObjectVersion>>, Error>,
    want: Result<Vec<MVersion>, (u64, u64)>,
    what: &str,
) {
    match (got, want) {
        (Ok(g), Ok(w)) => {
            assert_eq!(g.len(), w.len(), "{what}: number of versions");
            for (g, w) in g.iter().zip(&w) {
                same(g, w, what);
            }
        }
        (Err(Error::SeqOutOfRange { start, end, .. }), Err((ws, we))) => {
            assert_eq!(
                (start, end),
                (ws, we),
                "{what}: the retained range the error reports"
            );
        }
        (g, w) => panic!("{what}: engine gave {g:?}, model says {w:?}"),
    }
}

// ----- operations -----

#[derive(Clone, Debug)]
enum GetPick {
    Latest,
    Version(u16),
    Seq(u16),
    AtTime(u16, i8),
    FirstAtOrAfter(u16, i8),
}

#[derive(Clone, Debug)]
enum Op {
    Put {
        key: usize,
        len: usize,
        count: u32,
        affine: bool,
    },
    PutMany {
        items: Vec<(usize, usize, u32)>,
    },
    Trigger {
        key: usize,
        len: usize,
    },
    Remove {
        key: usize,
    },
    Trim {
        key: usize,
        at: u16,
    },
    Get {
        key: usize,
        pick: GetPick,
    },
    Range {
        key: usize,
        from: u16,
        max_bytes: usize,
        max_versions: usize,
    },
    List {
        sub: bool,
    },
    Reopen,
}

fn value_len() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 0usize..16, 4 => 16usize..400, 1 => 3000usize..6000]
}

fn op() -> impl Strategy<Value = Op> {
    let key = || 0..KEYS.len();
    let pick = prop_oneof![
        2 => Just(GetPick::Latest),
        2 => any::<u16>().prop_map(GetPick::Version),
        3 => any::<u16>().prop_map(GetPick::Seq),
        1 => (any::<u16>(), -1i8..=1).prop_map(|(a, b)| GetPick::AtTime(a, b)),
        1 => (any::<u16>(), -1i8..=1).prop_map(|(a, b)| GetPick::FirstAtOrAfter(a, b)),
    ];
    prop_oneof![
        8 => (key(), value_len(), 1u32..4, any::<bool>())
            .prop_map(|(key, len, count, affine)| Op::Put { key, len, count, affine }),
        2 => proptest::collection::vec((key(), value_len(), 1u32..3), 1..4).prop_map(|items| Op::PutMany { items }),
        1 => (key(), 0usize..32).prop_map(|(key, len)| Op::Trigger { key, len }),
        1 => key().prop_map(|key| Op::Remove { key }),
        2 => (key(), any::<u16>()).prop_map(|(key, at)| Op::Trim { key, at }),
        5 => (key(), pick).prop_map(|(key, pick)| Op::Get { key, pick }),
        3 => (key(), any::<u16>(), 0usize..8000, 0usize..6).prop_map(|(key, from, max_bytes, mv)| Op::Range {
            key,
            from,
            max_bytes,
            max_versions: if mv == 5 { usize::MAX } else { mv },
        }),
        1 => any::<bool>().prop_map(|sub| Op::List { sub }),
        1 => Just(Op::Reopen),
    ]
}

// ----- the backend under test -----

#[derive(Clone, Copy, Debug)]
struct Backend {
    storage: Storage,
    shards: u32,
    fsync: FsyncPolicy,
}

struct Harness {
    backend: Backend,
    dir: Option<tempfile::TempDir>,
    engine: Option<Engine>,
    pool: PoolConfig,
    counter: u64,
}

impl Harness {
    fn new(backend: Backend) -> Harness {
        let dir =
            (backend.storage == Storage::Persistent).then(|| tempfile::tempdir().expect("tempdir"));
        let pool = PoolConfig::new(POOL, backend.storage)
            .shards(backend.shards)
            .fsync(backend.fsync);
        let mut h = Harness {
            backend,
            dir,
            engine: None,
            pool: pool.clone(),
            counter: 0,
        };
        h.open();
        h.engine()
            .create_pool(pool)
            .expect("create the pool under test");
        h
    }

    fn open(&mut self) {
        let config = EngineConfig {
            data_dir: self.dir.as_ref().map(|d| d.path().to_path_buf()),
            ..EngineConfig::default()
        };
        self.engine = Some(Engine::open(config).expect("open the engine"));
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine open")
    }

    /// Closes the engine (dropping every handle, releasing the data dir lock) and opens it again.
    fn reopen(&mut self) {
        let engine = self.engine.take().expect("engine open");
        engine.shutdown();
        drop(engine);
        self.open();
        let pools = self.engine().pools();
        assert!(
            pools.contains(&self.pool),
            "the pool's config survives a restart: {pools:?}"
        );
    }

    fn one_shard(&self) -> bool {
        self.backend.shards == 1
    }

    fn value(&mut self, len: usize) -> Bytes {
        self.counter += 1;
        let c = self.counter;
        (0..len)
            .map(|i| (c.wrapping_mul(31).wrapping_add(i as u64 * 7)) as u8)
            .collect::<Vec<u8>>()
            .into()
    }

    fn check_everything(&self, model: &Model, when: &str) {
        let e = self.engine();
        for key in KEYS {
            let k = Key::new(key).unwrap();
            assert_eq!(
                e.bounds(&k).unwrap(),
                model.info(key),
                "{when}: bounds of {key}"
            );
            let from = model.keys.get(key).map_or(0, |m| m.start_seq);
            let all = RangeLimit {
                max_bytes: usize::MAX,
                max_versions: usize::MAX,
            };
            same_range(
                e.range(&k, from, all),
                model.range(key, from, all),
                &format!("{when}: history of {key}"),
            );
            same_opt(
                e.get(&k, Get::Latest).unwrap(),
                model.get(key, Get::Latest),
                &format!("{when}: latest of {key}"),
            );
        }
        let listed = e.list(&Prefix::new(POOL).unwrap()).unwrap();
        assert_eq!(listed, model.list(POOL), "{when}: list");
        if self.one_shard() {
            let set: Vec<String> = e
                .affinity_set(&Key::new(KEYS[0]).unwrap(), &Key::new(AFFINITY).unwrap())
                .unwrap()
                .iter()
                .map(|k| k.to_string())
                .collect();
            assert_eq!(
                set,
                model.affinity_set.iter().cloned().collect::<Vec<_>>(),
                "{when}: affinity set"
            );
        }
    }

    fn apply(&mut self, model: &mut Model, op: &Op) {
        let what = format!("{op:?}");
        match op {
            Op::Put {
                key,
                len,
                count,
                affine,
            } => {
                let mut put =
                    Put::new(Key::new(KEYS[*key]).unwrap(), self.value(*len)).count(*count);
                if *affine && self.one_shard() {
                    put = put.affinity(Key::new(AFFINITY).unwrap());
                }
                let result = self.engine().put(put.clone()).expect("put");
                model.record(&put, false, result, self.one_shard());
            }
            Op::PutMany { items } => {
                let mut puts = Vec::new();
                for (key, len, count) in items {
                    // Many keys share a shard only through an affinity key, and with one shard
                    // reads find them by their own key too; otherwise write one key many times.
                    let key = if self.one_shard() {
                        KEYS[*key]
                    } else {
                        KEYS[items[0].0]
                    };
                    let mut put = Put::new(Key::new(key).unwrap(), self.value(*len)).count(*count);
                    if self.one_shard() {
                        put = put.affinity(Key::new(AFFINITY).unwrap());
                    }
                    puts.push(put);
                }
                let results = self
                    .engine()
                    .put_many(puts.clone(), kascade_core::Ack::Durable)
                    .expect("put_many");
                assert_eq!(results.len(), puts.len(), "{what}: one result per put");
                for (i, r) in results.iter().enumerate() {
                    assert_eq!(
                        r.version,
                        results[0].version + i as u64,
                        "{what}: one atomic update, consecutive versions"
                    );
                    assert_eq!(
                        r.timestamp_us, results[0].timestamp_us,
                        "{what}: one timestamp"
                    );
                }
                for (put, result) in puts.iter().zip(results) {
                    model.record(put, false, result, self.one_shard());
                }
            }
            Op::Trigger { key, len } => {
                let k = Key::new(KEYS[*key]).unwrap();
                let value = self.value(*len);
                let r = self.engine().trigger(&k, value).expect("trigger");
                assert_eq!(
                    r.seq,
                    model.info(KEYS[*key]).next_seq,
                    "{what}: a trigger reports the key's next seq"
                );
                assert_eq!(
                    self.engine().bounds(&k).unwrap(),
                    model.info(KEYS[*key]),
                    "{what}: a trigger stores nothing"
                );
            }
            Op::Remove { key } => {
                let k = Key::new(KEYS[*key]).unwrap();
                let r = self.engine().remove(&k).expect("remove");
                model.record(
                    &Put::new(k.clone(), Bytes::new()),
                    true,
                    r,
                    self.one_shard(),
                );
                assert_eq!(
                    self.engine().get(&k, Get::Latest).unwrap(),
                    None,
                    "{what}: a removed key reads as absent"
                );
            }
            Op::Trim { key, at } => {
                let k = Key::new(KEYS[*key]).unwrap();
                let info = model.info(KEYS[*key]);
                let s = u64::from(*at) % (info.next_seq + 3);
                let got = self.engine().trim(&k, s);
                match model.keys.get_mut(KEYS[*key]) {
                    None if s == 0 => assert_eq!(got.unwrap(), 0, "{what}"),
                    None => assert!(
                        matches!(
                            got,
                            Err(Error::SeqOutOfRange {
                                start: 0,
                                end: 0,
                                ..
                            })
                        ),
                        "{what}: trimming an unwritten key past 0: {got:?}"
                    ),
                    Some(m) if s > m.next_seq => match got {
                        Err(Error::SeqOutOfRange {
                            seq, start, end, ..
                        }) => {
                            assert_eq!((seq, start, end), (s, m.start_seq, m.next_seq), "{what}")
                        }
                        other => panic!("{what}: trimming past the end must fail, got {other:?}"),
                    },
                    Some(m) if s <= m.start_seq => assert_eq!(got.unwrap(), m.start_seq, "{what}"),
                    Some(m) => {
                        assert_eq!(got.unwrap(), s, "{what}");
                        m.start_seq = s;
                        m.versions.retain(|v| v.next_seq() > s);
                    }
                }
            }
            Op::Get { key, pick } => {
                let name = KEYS[*key];
                let k = Key::new(name).unwrap();
                let ever = model
                    .keys
                    .get(name)
                    .map(|m| m.ever.clone())
                    .unwrap_or_default();
                let next = model.info(name).next_seq;
                let time = |i: u16, d: i8| {
                    if ever.is_empty() {
                        u64::from(i)
                    } else {
                        ever[usize::from(i) % ever.len()]
                            .1
                            .saturating_add_signed(i64::from(d))
                    }
                };
                let query = match *pick {
                    GetPick::Latest => Get::Latest,
                    GetPick::Version(i) => {
                        let n = ever.len() + 2;
                        match usize::from(i) % n {
                            j if j < ever.len() => Get::Version(ever[j].0),
                            j if j == ever.len() => Get::Version(0),
                            _ => Get::Version(u64::MAX),
                        }
                    }
                    GetPick::Seq(i) => {
                        Get::Seq(near(u64::from(i), model.info(name).start_seq, next))
                    }
                    GetPick::AtTime(i, d) => Get::AtTime(time(i, d)),
                    GetPick::FirstAtOrAfter(i, d) => Get::FirstAtOrAfter(time(i, d)),
                };
                same_opt(
                    self.engine().get(&k, query).unwrap(),
                    model.get(name, query),
                    &format!("{what} = {query:?}"),
                );
            }
            Op::Range {
                key,
                from,
                max_bytes,
                max_versions,
            } => {
                let name = KEYS[*key];
                let k = Key::new(name).unwrap();
                let info = model.info(name);
                let from = near(u64::from(*from), info.start_seq, info.next_seq);
                let limit = RangeLimit {
                    max_bytes: *max_bytes,
                    max_versions: *max_versions,
                };
                let got = self.engine().range(&k, from, limit);
                if let Ok(versions) = &got {
                    if *max_versions > 0 && from < model.info(name).next_seq {
                        assert!(
                            !versions.is_empty(),
                            "{what}: a range returns at least one version, whatever its size"
                        );
                    }
                }
                same_range(
                    got,
                    model.range(name, from, limit),
                    &format!("{what} from {from}"),
                );
            }
            Op::List { sub } => {
                let prefix = if *sub { "/c/sub" } else { POOL };
                let got = self.engine().list(&Prefix::new(prefix).unwrap()).unwrap();
                assert_eq!(got, model.list(prefix), "{what}");
            }
            Op::Reopen => {
                if self.dir.is_some() {
                    self.reopen();
                    self.check_everything(model, "after reopening");
                }
            }
        }
    }
}

/// A seq to aim a read at: often just around the log start or end, where the edge cases are.
fn near(raw: u64, start: u64, end: u64) -> u64 {
    match raw % 8 {
        0 => start.saturating_sub(1 + raw / 8 % 2),
        1 => start + raw / 8 % 2,
        2 => end + raw / 8 % 2,
        _ => raw % (end + 2),
    }
}

fn run(backend: Backend, ops: &[Op]) {
    let mut h = Harness::new(backend);
    let mut model = Model::default();
    for op in ops {
        h.apply(&mut model, op);
    }
    h.check_everything(&model, "at the end");
    if h.dir.is_some() {
        h.reopen();
        h.check_everything(&model, "after the final reopen");
    }
}

const VOLATILE: Backend = Backend {
    storage: Storage::Volatile,
    shards: 1,
    fsync: FsyncPolicy::Always,
};
const PERSISTENT: Backend = Backend {
    storage: Storage::Persistent,
    shards: 1,
    fsync: FsyncPolicy::Always,
};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn volatile_store_matches_the_model(ops in proptest::collection::vec(op(), 1..48)) {
        run(VOLATILE, &ops);
    }

    #[test]
    fn volatile_store_with_several_shards_matches_the_model(ops in proptest::collection::vec(op(), 1..48)) {
        run(Backend { shards: 3, ..VOLATILE }, &ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn persistent_store_matches_the_model_across_restarts(ops in proptest::collection::vec(op(), 1..48)) {
        run(PERSISTENT, &ops);
    }

    #[test]
    fn persistent_store_with_several_shards_matches_the_model_across_restarts(ops in proptest::collection::vec(op(), 1..48)) {
        run(Backend { shards: 3, ..PERSISTENT }, &ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn persistent_store_with_interval_fsync_matches_the_model_across_restarts(ops in proptest::collection::vec(op(), 1..48)) {
        run(Backend { fsync: FsyncPolicy::Interval { ms: 5 }, ..PERSISTENT }, &ops);
    }
}

/// The suite's own model agrees with the engine on a fixed, hand-checked sequence,
/// so a bug shared by model and engine cannot hide every failure.
#[test]
fn a_fixed_sequence_reads_back_as_written() {
    for backend in [VOLATILE, PERSISTENT] {
        let h = Harness::new(backend);
        let e = h.engine();
        let k = Key::new("/c/a").unwrap();
        assert_eq!(e.put(Put::new(k.clone(), "one").count(3)).unwrap().seq, 0);
        assert_eq!(e.put(Put::new(k.clone(), "two")).unwrap().seq, 3);
        assert_eq!(e.trigger(&k, "t").unwrap().seq, 4);
        assert_eq!(e.remove(&k).unwrap().seq, 4);
        assert_eq!(e.get(&k, Get::Latest).unwrap(), None);
        assert_eq!(&e.get(&k, Get::Seq(2)).unwrap().unwrap().value[..], b"one");
        assert!(e.get(&k, Get::Seq(4)).unwrap().unwrap().tombstone);
        assert_eq!(e.trim(&k, 2).unwrap(), 2);
        assert_eq!(e.get(&k, Get::Seq(1)).unwrap(), None, "below the log start");
        assert_eq!(
            &e.get(&k, Get::Seq(2)).unwrap().unwrap().value[..],
            b"one",
            "a version straddling the start stays"
        );
        assert!(matches!(
            e.range(&k, 1, RangeLimit::default()),
            Err(Error::SeqOutOfRange {
                start: 2,
                end: 5,
                ..
            })
        ));
        assert!(matches!(e.trim(&k, 6), Err(Error::SeqOutOfRange { .. })));
        let tiny = RangeLimit {
            max_bytes: 1,
            max_versions: usize::MAX,
        };
        assert_eq!(
            e.range(&k, 2, tiny).unwrap().len(),
            1,
            "one version even over max_bytes"
        );
        assert_eq!(
            e.range(&k, 5, RangeLimit::default()).unwrap().len(),
            0,
            "reading at the end is empty, not an error"
        );
        assert_eq!(e.trim(&k, 5).unwrap(), 5);
        assert_eq!(e.put(Put::new(k.clone(), "three")).unwrap().seq, 5);
        assert_eq!(
            e.list(&Prefix::new("/c").unwrap())
                .unwrap()
                .iter()
                .map(|i| (i.start_seq, i.next_seq))
                .collect::<Vec<_>>(),
            vec![(5, 6)]
        );
    }
}
