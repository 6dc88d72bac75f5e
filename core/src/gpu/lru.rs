//! The GPU cache's bookkeeping, apart from the device: which `(key, version)`
//! entries are resident, the bytes they hold, and which to evict next.
//!
//! - An entry is one version of one object, keyed by `(key, version)` and
//!   checked against the version's timestamp and length, so a lookup never
//!   answers with another version's bytes (nor, after a pool is removed and made
//!   again, with an old object's).
//! - Entries are grouped: the objects of one affinity set form one group, an
//!   object without an affinity key a group of its own. A hit on any member
//!   makes the whole group the most recently used, and groups are evicted
//!   whole, least recently used first: an affinity set is kept or dropped
//!   together.
//! - Before any group is evicted, superseded versions go (an entry whose key
//!   has a newer version resident), oldest first: a lambda still queued for an
//!   old version may use it, but it is the first thing to give up.
//!
//! The buffer type is generic, so the logic is tested here without a device.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

use super::GpuCacheReport;
use crate::key::{Key, Prefix};
use crate::object::ObjectVersion;

/// What an entry's bytes are grouped by for eviction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Group {
    /// The objects placed by one affinity key.
    Affinity(Key),
    /// One object without an affinity key.
    Object(Key),
}

/// One resident version: filled once (by whoever reserved it first), then shared.
#[derive(Debug)]
pub struct Entry<B> {
    /// The object's key.
    pub key: Key,
    /// The version.
    pub version: u64,
    /// The version's timestamp: with `len`, tells it from a namesake.
    pub timestamp_us: u64,
    /// Bytes of the value.
    pub len: usize,
    pub(crate) group: Group,
    /// The device copy, or why it could not be made.
    pub(crate) buf: OnceLock<Result<B, String>>,
}

impl<B> Entry<B> {
    /// The device copy once it has been made (`None` while it is being made or failed).
    pub fn buffer(&self) -> Option<&B> {
        self.buf.get().and_then(|r| r.as_ref().ok())
    }

    fn matches(&self, object: &ObjectVersion) -> bool {
        self.timestamp_us == object.timestamp_us && self.len == object.value.len()
    }
}

/// What a lookup found.
pub(crate) enum Lookup<B> {
    /// The version is resident (or being copied by someone else: wait on its `buf`).
    Hit(Arc<Entry<B>>),
    /// Room was made and the entry reserved: the caller copies the bytes into `buf`.
    Reserved(Arc<Entry<B>>),
    /// The version is larger than the whole cache: not cached.
    TooBig,
}

struct GroupState {
    /// Its position in `order`.
    tick: u64,
    members: Vec<(Key, u64)>,
}

/// The bookkeeping; the caller holds it under a lock.
pub(crate) struct Lru<B> {
    capacity: u64,
    used: u64,
    tick: u64,
    entries: HashMap<(Key, u64), Arc<Entry<B>>>,
    /// The newest version resident per key.
    latest: HashMap<Key, u64>,
    groups: HashMap<Group, GroupState>,
    /// Groups by last use, oldest first.
    order: BTreeMap<u64, Group>,
    /// Versions that have a newer version of their key resident, oldest first
    /// (entries evicted since are skipped).
    superseded: VecDeque<(Key, u64)>,
    counters: GpuCacheReport,
}

impl<B> Lru<B> {
    /// An empty cache of `capacity` bytes.
    pub(crate) fn new(capacity: u64) -> Lru<B> {
        Lru {
            capacity,
            used: 0,
            tick: 0,
            entries: HashMap::new(),
            latest: HashMap::new(),
            groups: HashMap::new(),
            order: BTreeMap::new(),
            superseded: VecDeque::new(),
            counters: GpuCacheReport {
                capacity_bytes: capacity,
                ..GpuCacheReport::default()
            },
        }
    }

    /// Finds `object`'s version, or reserves room for it (evicting as needed).
    pub(crate) fn lookup(&mut self, object: &ObjectVersion) -> Lookup<B> {
        let id = (object.key.clone(), object.version);
        if let Some(entry) = self.entries.get(&id) {
            if entry.matches(object) && !matches!(entry.buf.get(), Some(Err(_))) {
                let entry = entry.clone();
                self.touch(&entry.group);
                self.counters.hits += 1;
                return Lookup::Hit(entry);
            }
            // A namesake from before the pool was made again, or a failed copy: replace it.
            self.evict_entry(&id);
        }
        let len = object.value.len();
        if len as u64 > self.capacity {
            self.counters.too_big += 1;
            return Lookup::TooBig;
        }
        self.counters.misses += 1;
        let group = match &object.affinity {
            Some(a) => Group::Affinity(a.clone()),
            None => Group::Object(object.key.clone()),
        };
        let entry = Arc::new(Entry {
            key: object.key.clone(),
            version: object.version,
            timestamp_us: object.timestamp_us,
            len,
            group: group.clone(),
            buf: OnceLock::new(),
        });
        self.make_room(len as u64, &id, &group);
        self.entries.insert(id.clone(), entry.clone());
        self.used += len as u64;
        match self.latest.get(&object.key).copied() {
            Some(newest) if newest > object.version => self.superseded.push_back(id.clone()),
            Some(older) => {
                self.superseded.push_back((object.key.clone(), older));
                self.latest.insert(object.key.clone(), object.version);
            }
            None => {
                self.latest.insert(object.key.clone(), object.version);
            }
        }
        if !self.groups.contains_key(&group) {
            self.groups.insert(
                group.clone(),
                GroupState {
                    tick: 0,
                    members: Vec::new(),
                },
            );
        }
        if let Some(g) = self.groups.get_mut(&group) {
            g.members.push(id);
        }
        self.touch(&group);
        self.sync_counters();
        Lookup::Reserved(entry)
    }

    /// Drops `entry` if it is still the one cached under its id (its copy failed).
    pub(crate) fn forget(&mut self, entry: &Arc<Entry<B>>) {
        let id = (entry.key.clone(), entry.version);
        if self.entries.get(&id).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            self.evict_entry(&id);
            self.counters.evictions -= 1;
            self.sync_counters();
        }
    }

    /// Drops every entry whose key lies under `prefix` (its pool was removed).
    pub(crate) fn invalidate(&mut self, prefix: &Prefix) {
        let ids: Vec<(Key, u64)> = self
            .entries
            .keys()
            .filter(|(k, _)| k.is_under(prefix))
            .cloned()
            .collect();
        for id in ids {
            self.evict_entry(&id);
            self.counters.evictions -= 1;
        }
        self.sync_counters();
    }

    /// The counters now.
    pub(crate) fn counters(&self) -> GpuCacheReport {
        self.counters
    }

    fn sync_counters(&mut self) {
        self.counters.bytes = self.used;
        self.counters.entries = self.entries.len() as u64;
    }

    fn touch(&mut self, group: &Group) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(g) = self.groups.get_mut(group) {
            self.order.remove(&g.tick);
            g.tick = tick;
            self.order.insert(tick, group.clone());
        }
    }

    /// Evicts until `len` more bytes fit: superseded versions first, then whole
    /// groups by last use; the group `own` (the newcomer's) goes last.
    fn make_room(&mut self, len: u64, own_id: &(Key, u64), own: &Group) {
        while self.used + len > self.capacity {
            if let Some(id) = self.superseded.pop_front() {
                if &id != own_id {
                    self.evict_entry(&id);
                }
                continue;
            }
            let victim = self
                .order
                .values()
                .find(|g| *g != own)
                .or_else(|| self.order.values().next())
                .cloned();
            let Some(victim) = victim else {
                return;
            };
            let members = self
                .groups
                .get(&victim)
                .map(|g| g.members.clone())
                .unwrap_or_default();
            for id in members {
                self.evict_entry(&id);
            }
            // A group left with no entries (or never holding any) is gone.
            if let Some(g) = self.groups.remove(&victim) {
                self.order.remove(&g.tick);
            }
        }
    }

    fn evict_entry(&mut self, id: &(Key, u64)) {
        let Some(entry) = self.entries.remove(id) else {
            return;
        };
        self.used -= entry.len as u64;
        self.counters.evictions += 1;
        if self.latest.get(&id.0) == Some(&id.1) {
            let newest = self
                .entries
                .keys()
                .filter(|(k, _)| k == &id.0)
                .map(|(_, v)| *v)
                .max();
            match newest {
                Some(v) => self.latest.insert(id.0.clone(), v),
                None => self.latest.remove(&id.0),
            };
        }
        if let Some(g) = self.groups.get_mut(&entry.group) {
            g.members.retain(|m| m != id);
            if g.members.is_empty() {
                let tick = g.tick;
                self.groups.remove(&entry.group);
                self.order.remove(&tick);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn object(key: &str, version: u64, len: usize, affinity: Option<&str>) -> ObjectVersion {
        ObjectVersion {
            key: Key::new(key).unwrap(),
            version,
            seq: version,
            count: 1,
            timestamp_us: version * 10,
            prev_version: 0,
            affinity: affinity.map(|a| Key::new(a).unwrap()),
            tombstone: false,
            value: Bytes::from(vec![version as u8; len]),
        }
    }

    /// Looks `o` up and, when reserved, fills it with its value (as the device copy does).
    fn stage(lru: &mut Lru<Vec<u8>>, o: &ObjectVersion) -> bool {
        match lru.lookup(o) {
            Lookup::Hit(e) => {
                assert_eq!(
                    e.buffer().unwrap(),
                    &o.value[..],
                    "a hit is that version's bytes"
                );
                true
            }
            Lookup::Reserved(e) => {
                let _ = e.buf.set(Ok(o.value.to_vec()));
                false
            }
            Lookup::TooBig => false,
        }
    }

    fn resident(lru: &Lru<Vec<u8>>, key: &str, version: u64) -> bool {
        lru.entries.contains_key(&(Key::new(key).unwrap(), version))
    }

    #[test]
    fn a_full_cache_evicts_the_least_recently_used_and_stays_within_capacity() {
        let mut lru = Lru::new(300);
        for (i, k) in ["/g/a", "/g/b", "/g/c"].iter().enumerate() {
            assert!(!stage(&mut lru, &object(k, i as u64 + 1, 100, None)));
        }
        // Touch a, so b is the least recently used.
        assert!(stage(&mut lru, &object("/g/a", 1, 100, None)));
        stage(&mut lru, &object("/g/d", 4, 100, None));
        assert!(!resident(&lru, "/g/b", 2));
        assert!(
            resident(&lru, "/g/a", 1) && resident(&lru, "/g/c", 3) && resident(&lru, "/g/d", 4)
        );
        let c = lru.counters();
        assert_eq!((c.bytes, c.entries, c.evictions), (300, 3, 1));
        assert!(c.bytes <= c.capacity_bytes);
    }

    #[test]
    fn a_new_version_is_a_miss_and_never_the_old_bytes() {
        let mut lru = Lru::new(1000);
        assert!(!stage(&mut lru, &object("/g/a", 1, 10, None)));
        assert!(stage(&mut lru, &object("/g/a", 1, 10, None)));
        assert!(
            !stage(&mut lru, &object("/g/a", 2, 10, None)),
            "v2 is not served from v1"
        );
        assert!(stage(&mut lru, &object("/g/a", 2, 10, None)));
        // Same key and version but another object (the pool was made again): a miss.
        let mut again = object("/g/a", 2, 10, None);
        again.timestamp_us += 1;
        again.value = Bytes::from(vec![9u8; 10]);
        assert!(!stage(&mut lru, &again));
        assert!(stage(&mut lru, &again));
    }

    #[test]
    fn superseded_versions_go_before_any_current_one() {
        let mut lru = Lru::new(300);
        stage(&mut lru, &object("/g/a", 1, 100, None));
        stage(&mut lru, &object("/g/b", 2, 100, None));
        stage(&mut lru, &object("/g/a", 3, 100, None));
        // a@1 is superseded: it goes first, though b was used less recently.
        stage(&mut lru, &object("/g/c", 4, 100, None));
        assert!(!resident(&lru, "/g/a", 1));
        assert!(
            resident(&lru, "/g/b", 2) && resident(&lru, "/g/a", 3) && resident(&lru, "/g/c", 4)
        );
    }

    #[test]
    fn an_affinity_set_is_kept_and_evicted_together() {
        let mut lru = Lru::new(400);
        stage(&mut lru, &object("/g/x1", 1, 100, Some("/set/x")));
        stage(&mut lru, &object("/g/y", 2, 100, None));
        stage(&mut lru, &object("/g/x2", 3, 100, Some("/set/x")));
        // Using x1 keeps x2 too: y is the least recently used group.
        stage(&mut lru, &object("/g/x1", 1, 100, Some("/set/x")));
        stage(&mut lru, &object("/g/z", 4, 100, None));
        stage(&mut lru, &object("/g/w", 5, 100, None));
        assert!(!resident(&lru, "/g/y", 2));
        assert!(resident(&lru, "/g/x1", 1) && resident(&lru, "/g/x2", 3));
        // Now the set is the least recently used: it goes whole, both members at once.
        stage(&mut lru, &object("/g/z", 4, 100, None));
        stage(&mut lru, &object("/g/w", 5, 100, None));
        stage(&mut lru, &object("/g/v", 6, 100, None));
        assert!(!resident(&lru, "/g/x1", 1) && !resident(&lru, "/g/x2", 3));
        assert_eq!(lru.counters().bytes, 300);
    }

    #[test]
    fn too_big_versions_are_not_cached_and_removed_pools_are_forgotten() {
        let mut lru = Lru::new(100);
        assert!(matches!(
            lru.lookup(&object("/g/a", 1, 101, None)),
            Lookup::TooBig
        ));
        stage(&mut lru, &object("/g/a", 2, 50, None));
        stage(&mut lru, &object("/h/a", 3, 50, None));
        lru.invalidate(&Prefix::new("/g").unwrap());
        assert!(!resident(&lru, "/g/a", 2) && resident(&lru, "/h/a", 3));
        let c = lru.counters();
        assert_eq!((c.bytes, c.entries, c.too_big, c.evictions), (50, 1, 1, 0));
    }

    #[test]
    fn a_failed_copy_is_forgotten_and_tried_again() {
        let mut lru: Lru<Vec<u8>> = Lru::new(100);
        let o = object("/g/a", 1, 10, None);
        let Lookup::Reserved(e) = lru.lookup(&o) else {
            panic!("a first lookup reserves")
        };
        let _ = e.buf.set(Err("out of memory".into()));
        lru.forget(&e);
        assert!(matches!(lru.lookup(&o), Lookup::Reserved(_)));
        assert_eq!(lru.counters().bytes, 10);
    }
}
