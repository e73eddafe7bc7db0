//! The in-memory side of sessions: `SessionCache` (identities by the SHA-256 of the cookie
//! token, so a signed-in request costs a hash and a lookup, never a database read) and
//! `Activity` (who was seen when, gathered on the hot path without locks and written to the
//! store in batches).
//!
//! Staleness is bounded three ways: invalidations remove entries (`remove`, `remove_user`,
//! driven by this process's own changes and by `Store::follow_invalidations`); every entry
//! expires `ttl` after it was read from the store, whatever happened; and a lookup whose
//! store read raced a removal does not cache what it read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::{Identity, Store, StoreError};

/// Per-user removal counter shared by all cached sessions of that user: removing a user is
/// one increment, and a hit compares one atomic, with no map lookup on the hot path.
#[derive(Debug, Default)]
struct UserEpoch(AtomicU64);

#[derive(Debug)]
struct Entry {
    identity: Arc<Identity>,
    user: Arc<UserEpoch>,
    epoch: u64,
    /// When this copy was read from the store (clock seconds).
    loaded_at: i64,
    /// Last time activity was noted for this session (see `Activity`).
    noted_at: AtomicI64,
}

pub struct SessionCache {
    entries: quick_cache::sync::Cache<[u8; 32], Arc<Entry>>,
    /// Session keys the store recently said it does not know (signed-out or expired cookies a
    /// browser keeps sending), with when: refused from memory for `MISSING_TTL`. A key can
    /// only become valid by being issued, and issued keys are fresh random values, so this
    /// never hides a new session.
    missing: quick_cache::sync::Cache<[u8; 32], i64>,
    users: Mutex<Users>,
    /// Bumped by every removal: a lookup that read the store before a removal must not
    /// insert what it read afterwards (it may be the very session just signed out).
    generation: AtomicU64,
    ttl: i64,
    /// Told of every removal, after it happened (what holds a session beyond one request,
    /// such as an open WebSocket, re-checks it).
    listeners: std::sync::RwLock<Vec<DropListener>>,
}

/// What a removal dropped: one session, every session of a user, or everything.
#[derive(Debug, Clone, Copy)]
pub enum Dropped<'a> {
    Session(&'a [u8; 32]),
    User(&'a str),
    Everything,
}

pub type DropListener = Box<dyn Fn(Dropped<'_>) + Send + Sync>;

#[derive(Default)]
struct Users {
    epochs: HashMap<String, Weak<UserEpoch>>,
    /// `epochs` is swept of users with no cached session when it grows past this.
    sweep_at: usize,
}

/// How long a session key the store did not know is refused without asking again.
const MISSING_TTL: i64 = 60;

/// What a hit tells the caller besides the identity.
pub struct Hit {
    pub identity: Arc<Identity>,
    /// True at most once a minute per session: the caller should note activity.
    pub note_activity: bool,
}

impl SessionCache {
    /// `capacity` entries at most (least valuable evicted first), each trusted for `ttl_secs`.
    pub fn new(capacity: usize, ttl_secs: i64) -> SessionCache {
        SessionCache {
            entries: quick_cache::sync::Cache::new(capacity.max(1)),
            missing: quick_cache::sync::Cache::new((capacity / 10).max(1000)),
            users: Mutex::new(Users {
                epochs: HashMap::new(),
                sweep_at: 1024,
            }),
            generation: AtomicU64::new(0),
            ttl: ttl_secs.max(1),
            listeners: std::sync::RwLock::new(Vec::new()),
        }
    }

    /// The cached identity for a session, if present, fresh and not removed since. An
    /// expired session is a miss like any other (the store will say it is gone).
    pub fn get(&self, key: &[u8; 32], now: i64) -> Option<Hit> {
        let e = self.entries.get(key)?;
        if e.user.0.load(Ordering::Acquire) != e.epoch
            || now >= e.loaded_at.saturating_add(self.ttl)
            || now >= e.identity.session_expires
        {
            return None;
        }
        let noted = e.noted_at.load(Ordering::Relaxed);
        let note_activity = now - noted >= 60
            && e.noted_at
                .compare_exchange(noted, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        Some(Hit {
            identity: e.identity.clone(),
            note_activity,
        })
    }

    /// Whether the store said recently that it does not know this session.
    pub fn known_missing(&self, key: &[u8; 32], now: i64) -> bool {
        self.missing.get(key).is_some_and(|at| now - at < MISSING_TTL)
    }

    /// Remembers that the store does not know this session.
    pub fn note_missing(&self, key: [u8; 32], now: i64) {
        self.missing.insert(key, now);
    }

    /// The value to hand back to `insert_if_unchanged` after reading the store.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Caches what a lookup read, unless a removal happened since `seen` (see `generation`).
    /// The lookup noted the session's activity itself.
    pub fn insert_if_unchanged(&self, key: [u8; 32], identity: Arc<Identity>, now: i64, seen: u64) {
        self.put(key, identity, now, seen, now);
    }

    /// Caches a session this process just created (no race with an older read possible).
    /// Signing in is not activity on the app: the first request that uses it will be.
    pub fn insert(&self, key: [u8; 32], identity: Arc<Identity>, now: i64) {
        let seen = self.generation();
        self.put(key, identity, now, seen, i64::MIN / 2);
    }

    fn put(&self, key: [u8; 32], identity: Arc<Identity>, now: i64, seen: u64, noted_at: i64) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        // Removals bump the generation while holding this lock, so the check is exact.
        if self.generation.load(Ordering::SeqCst) != seen {
            return;
        }
        let user = users.handle(&identity.user_id);
        let epoch = user.0.load(Ordering::Acquire);
        drop(users);
        self.entries.insert(
            key,
            Arc::new(Entry {
                identity,
                user,
                epoch,
                loaded_at: now,
                noted_at: AtomicI64::new(noted_at),
            }),
        );
    }

    pub fn remove(&self, key: &[u8; 32]) {
        {
            let _users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            self.generation.fetch_add(1, Ordering::SeqCst);
            self.entries.remove(key);
        }
        self.tell(Dropped::Session(key));
    }

    /// Drops every cached session of the user.
    pub fn remove_user(&self, user_id: &str) {
        {
            let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            self.generation.fetch_add(1, Ordering::SeqCst);
            if let Some(epoch) = users.epochs.get(user_id).and_then(Weak::upgrade) {
                epoch.0.fetch_add(1, Ordering::AcqRel);
            }
        }
        self.tell(Dropped::User(user_id));
    }

    /// Drops everything (key rotation: identities signed with an old key must be re-read).
    pub fn clear(&self) {
        {
            let _users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            self.generation.fetch_add(1, Ordering::SeqCst);
            self.entries.clear();
        }
        self.tell(Dropped::Everything);
    }

    /// Calls `f` after every removal, outside the cache's locks.
    pub fn on_drop(&self, f: DropListener) {
        self.listeners.write().unwrap_or_else(|p| p.into_inner()).push(f);
    }

    fn tell(&self, what: Dropped<'_>) {
        for f in self.listeners.read().unwrap_or_else(|p| p.into_inner()).iter() {
            f(what);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Users {
    fn handle(&mut self, user_id: &str) -> Arc<UserEpoch> {
        if let Some(h) = self.epochs.get(user_id).and_then(Weak::upgrade) {
            return h;
        }
        if self.epochs.len() >= self.sweep_at {
            // Users whose every cached session was evicted hold no strong reference.
            self.epochs.retain(|_, w| w.strong_count() > 0);
            self.sweep_at = (self.epochs.len() * 2).max(1024);
        }
        let h = Arc::new(UserEpoch::default());
        self.epochs.insert(user_id.to_string(), Arc::downgrade(&h));
        h
    }
}

/// Session and user activity, noted at most once a minute per session from the hot path
/// and taken in batches by the flusher (which writes `last_seen_at`); also the recently
/// active users the background sync looks at.
#[derive(Default)]
pub struct Activity {
    /// Session keys (hex only when written) and when they were seen: a busy minute holds one
    /// per active session, so they stay 40 bytes each and cost no allocation to note.
    pending: Mutex<Vec<([u8; 32], i64)>>,
    users: Mutex<HashMap<String, i64>>,
}

/// Users remembered as active; beyond this the oldest half is forgotten.
const MAX_ACTIVE_USERS: usize = 1_000_000;
/// Sessions written per transaction: a minute of a busy replica's activity in one transaction
/// (300,000 rows took about five seconds on SQLite) would hold the store's only writer that
/// long, and sign-ins and sign-outs would wait behind it; a chunk holds it about a tenth of a
/// second. Smaller chunks cost more per row (a table page touched by several chunks is
/// written once per chunk), so this is not smaller.
const WRITE_CHUNK: usize = 5_000;

impl Activity {
    /// A session (by key) of `user_id` was used at `now`.
    pub fn note(&self, key: [u8; 32], user_id: &str, now: i64) {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).push((key, now));
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if users.len() >= MAX_ACTIVE_USERS && !users.contains_key(user_id) {
            let mut times: Vec<i64> = users.values().copied().collect();
            times.sort_unstable();
            let cut = times[times.len() / 2];
            users.retain(|_, t| *t > cut);
        }
        match users.get_mut(user_id) {
            Some(at) => *at = now,
            None => {
                users.insert(user_id.to_string(), now);
            }
        }
    }

    /// Sessions noted since the last call (session key, time).
    fn take_sessions(&self) -> Vec<([u8; 32], i64)> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Writes the sessions noted since the last call to the store, in transactions of
    /// `WRITE_CHUNK` rows ordered by session hash (the index order: neighbouring rows share
    /// pages, and replicas writing at once lock rows in the same order). What could not be
    /// written is kept for the next call.
    pub async fn write_to(&self, store: &dyn Store) -> Result<(), StoreError> {
        let mut batch = self.take_sessions();
        batch.sort_unstable();
        let mut done = 0;
        while done < batch.len() {
            let end = (done + WRITE_CHUNK).min(batch.len());
            let chunk: Vec<(String, i64)> = batch[done..end]
                .iter()
                .map(|(k, at)| (crate::crypto::hex(k), *at))
                .collect();
            if let Err(e) = store.touch_sessions(&chunk).await {
                self.restore_sessions(batch.split_off(done));
                return Err(e);
            }
            done = end;
        }
        Ok(())
    }

    /// Puts back a batch that could not be written (the database was down).
    fn restore_sessions(&self, mut batch: Vec<([u8; 32], i64)>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: while the database is down, older notes are the ones to lose.
        if pending.len() < 100_000 {
            batch.append(&mut pending);
            *pending = batch;
        }
    }

    /// Users seen at or after `since`, most recent first.
    pub fn active_since(&self, since: i64) -> Vec<String> {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<(&String, &i64)> = users.iter().filter(|(_, t)| **t >= since).collect();
        v.sort_by(|a, b| b.1.cmp(a.1));
        v.into_iter().map(|(u, _)| u.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(user: &str, expires: i64) -> Arc<Identity> {
        Arc::new(Identity {
            user_id: user.into(),
            session_id: "s".into(),
            open_id: "o".into(),
            display_name: None,
            username: None,
            avatar: None,
            verified: false,
            videos: 0,
            streak: 0,
            nini_score: 0,
            follower_count: None,
            session_expires: expires,
            grant_error: None,
            derived: Default::default(),
        })
    }

    #[test]
    fn a_lookup_that_raced_a_sign_out_is_not_cached() {
        let c = SessionCache::new(10, 60);
        let seen = c.generation();
        // Sign-out lands while the lookup's database read is in flight.
        c.remove_user("u1");
        c.insert_if_unchanged([1; 32], identity("u1", 100), 0, seen);
        assert!(c.get(&[1; 32], 1).is_none());
        let seen = c.generation();
        c.insert_if_unchanged([1; 32], identity("u1", 100), 0, seen);
        assert!(c.get(&[1; 32], 1).is_some());
    }

    #[test]
    fn removing_a_user_drops_all_their_sessions_only() {
        let c = SessionCache::new(10, 60);
        c.insert([1; 32], identity("u1", 100), 0);
        c.insert([2; 32], identity("u1", 100), 0);
        c.insert([3; 32], identity("u2", 100), 0);
        c.remove_user("u1");
        assert!(c.get(&[1; 32], 1).is_none() && c.get(&[2; 32], 1).is_none());
        assert!(c.get(&[3; 32], 1).is_some());
        // A later read of the same session caches again.
        c.insert([1; 32], identity("u1", 100), 2);
        assert!(c.get(&[1; 32], 3).is_some());
    }

    #[test]
    fn entries_expire_with_the_ttl_and_the_session() {
        let c = SessionCache::new(10, 60);
        c.insert([1; 32], identity("u1", 1000), 0);
        assert!(c.get(&[1; 32], 59).is_some());
        assert!(c.get(&[1; 32], 60).is_none(), "read from the store a ttl ago");
        c.insert([2; 32], identity("u1", 30), 0);
        assert!(c.get(&[2; 32], 30).is_none(), "session expired");
    }

    #[test]
    fn activity_is_noted_once_a_minute() {
        let c = SessionCache::new(10, 600);
        c.insert_if_unchanged([1; 32], identity("u1", 1000), 0, c.generation());
        assert!(!c.get(&[1; 32], 10).map(|h| h.note_activity).unwrap_or(true));
        assert!(c.get(&[1; 32], 60).map(|h| h.note_activity).unwrap_or(false));
        assert!(!c.get(&[1; 32], 61).map(|h| h.note_activity).unwrap_or(true));
        // A session created here is noted at its first use.
        c.insert([2; 32], identity("u1", 1000), 0);
        assert!(c.get(&[2; 32], 1).map(|h| h.note_activity).unwrap_or(false));
    }

    #[test]
    fn unknown_sessions_are_remembered_for_a_minute() {
        let c = SessionCache::new(10, 60);
        assert!(!c.known_missing(&[9; 32], 0));
        c.note_missing([9; 32], 0);
        assert!(c.known_missing(&[9; 32], 59));
        assert!(!c.known_missing(&[9; 32], 60));
    }

    #[test]
    fn capacity_evicts_instead_of_growing() {
        let c = SessionCache::new(100, 60);
        for i in 0..1000u32 {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_le_bytes());
            c.insert(k, identity(&format!("u{i}"), 100), 0);
        }
        assert!(c.len() <= 100, "{}", c.len());
    }
}
