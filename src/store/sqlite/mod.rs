//! The SQLite backend: one file in WAL mode, one writer connection and a few reader
//! connections (WAL lets reads run beside the write), every statement a cached prepared
//! statement, blocking calls moved off the async executor with `spawn_blocking`. Several
//! processes may share the file: SQLite's own lock serialises their writes, lease rows
//! stand in for per-user locks, and invalidations are a sequence other processes poll.

mod admin;
mod queries;
mod schema;
mod sync;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::*;
use crate::config::StorageConfig;
use crate::crypto::KeyRing;

/// How a storage failure (full or read-only disk, I/O error) reads in `Unavailable`: writes
/// keep failing until an operator acts, so readiness must say so (see `SqliteStore::ping`).
const STORAGE_FAILURE: &str = "storage failure: ";

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        match e.sqlite_error_code() {
            // Another process holds the write lock past busy_timeout: retry later.
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Unavailable(e.to_string()),
            // The disk is full or read-only: retry later too, and readiness fails meanwhile.
            Some(ErrorCode::ReadOnly | ErrorCode::DiskFull | ErrorCode::SystemIoFailure | ErrorCode::CannotOpen) => {
                StoreError::Unavailable(format!("{STORAGE_FAILURE}{e}"))
            }
            _ => StoreError::backend(e),
        }
    }
}

/// Reader connections beside the writer.
const READERS: usize = 4;
/// How often `follow_invalidations` reads the log.
const POLL_EVERY: Duration = Duration::from_millis(250);

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    keys: KeyRing,
    /// This store's id in the invalidations it writes (its follower skips those).
    origin: String,
    /// The last write failed for lack of storage (full, read-only, I/O): readiness probes a
    /// write until one succeeds.
    degraded: Mutex<Option<String>>,
    /// Rate windows: (window start, count) per key. A SQLite deployment is one process, so
    /// counting in memory is exact there (and spares a synchronous write per hit).
    rates: Mutex<HashMap<String, (i64, u32)>>,
}

#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

fn configure(conn: &Connection, busy: Duration) -> Result<(), StoreError> {
    conn.busy_timeout(busy)?;
    conn.set_prepared_statement_cache_capacity(64);
    // FULL: a commit survives power loss, not just a crash; our write rate is small.
    conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database in WAL mode and applies migrations.
    pub async fn open(path: &Path, cfg: &StorageConfig, keys: KeyRing) -> Result<SqliteStore, StoreError> {
        let path = path.to_path_buf();
        let busy = cfg.statement_timeout;
        let readers = (cfg.max_connections as usize).clamp(1, READERS);
        tokio::task::spawn_blocking(move || Self::open_blocking(path, busy, readers, keys))
            .await
            .map_err(|_| StoreError::Join)?
    }

    fn open_blocking(path: PathBuf, busy: Duration, readers: usize, keys: KeyRing) -> Result<SqliteStore, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            what: format!("database file {}", path.display()),
            reason,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.is_dir() {
                return Err(open_err(format!("directory {} does not exist", parent.display())));
            }
        }
        let mut writer = Connection::open(&path).map_err(|e| open_err(e.to_string()))?;
        let mode: String = writer
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| open_err(e.to_string()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_err(format!("cannot enable WAL journal mode (got {mode})")));
        }
        configure(&writer, busy).map_err(|e| open_err(e.to_string()))?;
        schema::migrate(&mut writer).map_err(|e| match e {
            e @ StoreError::SchemaTooNew { .. } => e,
            other => open_err(crate::auth::error::chain(&other)),
        })?;
        // The writer connection's own origin, read by `queries::invalidate`: a TEMP table is
        // private to its connection, which only this process uses.
        let origin = new_id()?;
        writer
            .execute_batch("CREATE TEMP TABLE origin (id TEXT NOT NULL)")
            .and_then(|()| writer.execute("INSERT INTO temp.origin (id) VALUES (?1)", [&origin]))
            .map_err(|e| open_err(e.to_string()))?;
        let mut pool = Vec::with_capacity(readers);
        for _ in 0..readers {
            let r = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| open_err(e.to_string()))?;
            r.busy_timeout(busy).map_err(|e| open_err(e.to_string()))?;
            r.set_prepared_statement_cache_capacity(64);
            pool.push(Mutex::new(r));
        }
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(writer),
                readers: pool,
                next_reader: AtomicUsize::new(0),
                keys,
                origin,
                degraded: Mutex::new(None),
                rates: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Runs `f` on a reader connection, off the executor.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &KeyRing) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let n = inner.readers.len();
            let start = inner.next_reader.fetch_add(1, Ordering::Relaxed);
            // Any free reader will do; if all are busy, queue on one of them.
            for i in 0..n {
                if let Ok(c) = inner.readers[(start + i) % n].try_lock() {
                    return f(&c, &inner.keys);
                }
            }
            let c = inner.readers[start % n].lock().unwrap_or_else(|p| p.into_inner());
            f(&c, &inner.keys)
        })
        .await
        .map_err(|_| StoreError::Join)?
    }

    /// Runs `f` on the writer connection, off the executor. A poisoned lock means a panic
    /// mid-call; the connection itself is consistent because every multi-row change is a
    /// transaction that rolled back.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &KeyRing) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            let out = f(&mut c, &inner.keys);
            let mut degraded = inner.degraded.lock().unwrap_or_else(|p| p.into_inner());
            match &out {
                Ok(_) => *degraded = None,
                Err(StoreError::Unavailable(m)) if m.starts_with(STORAGE_FAILURE) => *degraded = Some(m.clone()),
                Err(_) => {}
            }
            out
        })
        .await
        .map_err(|_| StoreError::Join)?
    }

    /// The database file, its directory and their mode bits (which hold for root too):
    /// readiness fails on a file that can no longer be written, before a write finds out.
    fn file_writable(path: &Path) -> Result<(), StoreError> {
        let unready = |reason: String| StoreError::Unavailable(format!("{}: {reason}", path.display()));
        let meta = std::fs::metadata(path).map_err(|e| unready(e.to_string()))?;
        if !meta.is_file() {
            return Err(unready("not a regular file".into()));
        }
        if meta.permissions().readonly() {
            return Err(unready("file is read-only".into()));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let dmeta = std::fs::metadata(dir).map_err(|e| unready(e.to_string()))?;
            if dmeta.permissions().readonly() {
                return Err(unready("directory is read-only (WAL files cannot be created)".into()));
            }
        }
        Ok(())
    }
}

/// A lease row in `user_locks`, deleted on release (or by anyone once it expired).
struct LeaseLock {
    store: SqliteStore,
    purpose: LockPurpose,
    user_id: String,
    holder: String,
    released: bool,
}

#[async_trait]
impl HeldLock for LeaseLock {
    async fn release(mut self: Box<Self>) {
        self.released = true;
        let (p, u, h) = (self.purpose, self.user_id.clone(), self.holder.clone());
        if let Err(e) = self.store.write(move |c, _| queries::release_lock(c, p, &u, &h)).await {
            log::warn!("releasing the {} lock of user {}: {e}", p.as_str(), self.user_id);
        }
    }
}

impl Drop for LeaseLock {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        // Dropped without release (a cancelled request): free it now rather than at expiry.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let inner = self.store.inner.clone();
            let (p, u, h) = (
                self.purpose,
                std::mem::take(&mut self.user_id),
                std::mem::take(&mut self.holder),
            );
            rt.spawn_blocking(move || {
                let c = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
                let _ = queries::release_lock(&c, p, &u, &h);
            });
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn keys(&self) -> &KeyRing {
        &self.inner.keys
    }

    async fn ping(&self, deadline: Duration) -> Result<(), StoreError> {
        Self::file_writable(&self.inner.path)?;
        let degraded = self.inner.degraded.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let check = async {
            match degraded {
                // Writes were failing for lack of storage: only a write tells whether they
                // work again (a read would succeed on a full disk).
                Some(_) => self.write(|c, _| queries::write_probe(c)).await,
                // Normally a read: readiness must not queue behind another process's write.
                None => {
                    self.read(|c, _| {
                        c.prepare_cached("SELECT count(*) FROM users WHERE 0")?
                            .query_row([], |r| r.get::<_, i64>(0))?;
                        Ok(())
                    })
                    .await
                }
            }
        };
        tokio::time::timeout(deadline, check)
            .await
            .map_err(|_| StoreError::Unavailable(format!("no answer within {deadline:?}")))?
    }

    async fn close(&self) -> Result<(), StoreError> {
        // Fold the WAL back into the main file so a backup of the .db alone is complete.
        self.write(|c, _| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    async fn consume_state(&self, state_hash: &str, expires: i64) -> Result<bool, StoreError> {
        let h = state_hash.to_string();
        self.write(move |c, _| queries::consume_state(c, &h, expires)).await
    }

    async fn complete_login(&self, login: NewLogin<'_>) -> Result<Identity, StoreError> {
        let owned = queries::OwnedLogin::from(login);
        self.write(move |c, keys| queries::complete_login(c, keys, &owned))
            .await
    }

    async fn session_identity(&self, session_hash: &str, now: i64) -> Result<Option<Identity>, StoreError> {
        let h = session_hash.to_string();
        self.read(move |c, _| queries::identity_for(c, &h, now)).await
    }

    async fn end_session(&self, session_hash: &str, now: i64) -> Result<Option<EndedSession>, StoreError> {
        let h = session_hash.to_string();
        self.write(move |c, _| queries::end_session(c, &h, now)).await
    }

    async fn end_session_by_id(&self, user_id: &str, session_id: &str, now: i64) -> Result<bool, StoreError> {
        let (u, s) = (user_id.to_string(), session_id.to_string());
        self.write(move |c, _| queries::end_session_by_id(c, &u, &s, now)).await
    }

    async fn end_user_sessions(&self, user_id: &str, keep: Option<&str>, now: i64) -> Result<usize, StoreError> {
        let (u, k) = (user_id.to_string(), keep.map(str::to_string));
        self.write(move |c, _| queries::end_user_sessions(c, &u, k.as_deref(), now))
            .await
    }

    async fn user_sessions(&self, user_id: &str, now: i64) -> Result<Vec<DeviceSession>, StoreError> {
        let u = user_id.to_string();
        self.read(move |c, _| queries::user_sessions(c, &u, now)).await
    }

    async fn touch_sessions(&self, seen: &[(String, i64)]) -> Result<(), StoreError> {
        if seen.is_empty() {
            return Ok(());
        }
        let batch = seen.to_vec();
        self.write(move |c, _| queries::touch_sessions(c, &batch)).await
    }

    async fn count_sessions(&self, now: i64) -> Result<i64, StoreError> {
        self.read(move |c, _| {
            Ok(c.prepare_cached("SELECT count(*) FROM sessions WHERE expires > ?1")?
                .query_row([now], |r| r.get(0))?)
        })
        .await
    }

    async fn purge_expired(&self, now: i64) -> Result<Purged, StoreError> {
        let purged = self.write(move |c, _| queries::purge_expired(c, now)).await?;
        let mut rates = self.inner.rates.lock().unwrap_or_else(|p| p.into_inner());
        rates.retain(|_, (start, _)| now - *start < INVALIDATION_RETENTION_SECS);
        Ok(purged)
    }

    async fn tokens(&self, user_id: &str) -> Result<Option<Tokens>, StoreError> {
        let u = user_id.to_string();
        self.read(move |c, keys| queries::tokens(c, keys, &u)).await
    }

    async fn try_lock_user(
        &self,
        purpose: LockPurpose,
        user_id: &str,
        ttl: Duration,
        now: i64,
    ) -> Result<Option<UserLock>, StoreError> {
        let holder = new_id()?;
        let (u, h) = (user_id.to_string(), holder.clone());
        let ttl = ttl.as_secs().max(1) as i64;
        let taken = self
            .write(move |c, _| queries::try_lock(c, purpose, &u, &h, now, ttl))
            .await?;
        Ok(taken.then(|| {
            UserLock::new(Box::new(LeaseLock {
                store: self.clone(),
                purpose,
                user_id: user_id.to_string(),
                holder,
                released: false,
            }))
        }))
    }

    async fn save_refreshed(&self, user_id: &str, redeemed: &str, new: &Tokens, now: i64) -> Result<bool, StoreError> {
        let (u, r, t) = (user_id.to_string(), redeemed.to_string(), new.clone());
        self.write(move |c, keys| queries::save_refreshed(c, keys, &u, &r, &t, now))
            .await
    }

    async fn clear_tokens(&self, user_id: &str, read: &str, now: i64) -> Result<bool, StoreError> {
        let (u, r) = (user_id.to_string(), read.to_string());
        self.write(move |c, keys| queries::clear_tokens(c, keys, &u, Some(&r), None, now))
            .await
    }

    async fn mark_grant_dead(
        &self,
        user_id: &str,
        dead: Option<&str>,
        error: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (u, d, e) = (user_id.to_string(), dead.map(str::to_string), error.to_string());
        self.write(move |c, keys| queries::clear_tokens(c, keys, &u, d.as_deref(), Some(&e), now))
            .await
    }

    async fn authorization_removed(&self, open_id: &str, now: i64) -> Result<Option<(String, usize)>, StoreError> {
        let o = open_id.to_string();
        self.write(move |c, _| queries::authorization_removed(c, &o, now)).await
    }

    async fn follow_invalidations(&self, sink: InvalidationSink, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut seen = loop {
            match self.read(|c, _| queries::invalidation_head(c)).await {
                Ok(h) => break h,
                Err(e) => log::warn!("cannot read the invalidation log: {e}"),
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        };
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => {}
            }
            // SQLite commits one writer at a time, so sequence numbers become visible in
            // order and "after the last one seen" misses nothing.
            let origin = self.inner.origin.clone();
            match self
                .read(move |c, _| queries::invalidations_since(c, seen, &origin))
                .await
            {
                Ok(rows) => {
                    for (seq, inv) in rows {
                        if let Some(inv) = inv {
                            sink(&inv);
                        }
                        seen = seq;
                    }
                }
                Err(e) => log::warn!("reading cache invalidations failed: {e}"),
            }
        }
    }

    async fn rate_hit(&self, key: &str, window: u64, now: i64) -> Result<RateHit, StoreError> {
        let window = window.max(1) as i64;
        let start = now.div_euclid(window) * window;
        let mut rates = self.inner.rates.lock().unwrap_or_else(|p| p.into_inner());
        if rates.len() > 100_000 {
            rates.retain(|_, (s, _)| *s == start);
        }
        let e = rates.entry(key.to_string()).or_insert((start, 0));
        if e.0 != start {
            *e = (start, 0);
        }
        e.1 = e.1.saturating_add(1);
        Ok(RateHit {
            count: e.1,
            resets_in: (start + window - now).max(1) as u64,
        })
    }

    async fn rate_peek(&self, key: &str, window: u64, now: i64) -> Result<u32, StoreError> {
        let window = window.max(1) as i64;
        let start = now.div_euclid(window) * window;
        let rates = self.inner.rates.lock().unwrap_or_else(|p| p.into_inner());
        Ok(rates.get(key).filter(|(s, _)| *s == start).map_or(0, |(_, n)| *n))
    }

    async fn save_sync(
        &self,
        user_id: &str,
        profile: &SyncedProfile,
        videos: Option<VideoSet<'_>>,
        now: i64,
    ) -> Result<Option<UserProfile>, StoreError> {
        let (u, p) = (user_id.to_string(), profile.clone());
        let set = videos.map(|v| (v.videos.to_vec(), v.streak));
        self.write(move |c, _| sync::save_sync(c, &u, &p, set.as_ref().map(|(v, s)| (v.as_slice(), *s)), now))
            .await
    }

    async fn user_profile(&self, user_id: &str) -> Result<Option<UserProfile>, StoreError> {
        let u = user_id.to_string();
        self.read(move |c, _| sync::profile_of(c, &u)).await
    }

    async fn last_synced_at(&self, user_id: &str) -> Result<Option<i64>, StoreError> {
        let u = user_id.to_string();
        self.read(move |c, _| sync::last_synced_at(c, &u)).await
    }

    async fn user_videos(
        &self,
        user_id: &str,
        limit: u32,
        before: Option<(i64, &str)>,
    ) -> Result<(Vec<StoredVideo>, i64), StoreError> {
        let u = user_id.to_string();
        let before = before.map(|(t, id)| (t, id.to_string()));
        self.read(move |c, _| sync::user_videos(c, &u, limit, before.as_ref().map(|(t, id)| (*t, id.as_str()))))
            .await
    }

    async fn due_for_sync(
        &self,
        candidates: &[String],
        synced_before: i64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let cands = candidates.to_vec();
        self.read(move |c, _| sync::due_for_sync(c, &cands, synced_before, limit))
            .await
    }

    async fn admin_users(&self, limit: Option<usize>, now: i64) -> Result<Vec<AdminUser>, StoreError> {
        self.read(move |c, _| admin::users(c, limit, now)).await
    }

    async fn admin_user(&self, id_or_open_id: &str, now: i64) -> Result<Option<AdminUser>, StoreError> {
        let q = id_or_open_id.to_string();
        self.read(move |c, _| admin::user(c, &q, now)).await
    }

    async fn admin_sessions(&self, user_id: Option<&str>, now: i64) -> Result<Vec<AdminSession>, StoreError> {
        let u = user_id.map(str::to_string);
        self.read(move |c, _| admin::sessions(c, u.as_deref(), now)).await
    }

    async fn revoke_sessions(&self, scope: RevokeScope<'_>, now: i64) -> Result<Revoked, StoreError> {
        let user = match scope {
            RevokeScope::User(u) => Some(u.to_string()),
            RevokeScope::All => None,
        };
        self.write(move |c, _| admin::revoke(c, user.as_deref(), now)).await
    }

    async fn rotate_keys(&self) -> Result<RotateReport, StoreError> {
        let primary = self
            .inner
            .keys
            .primary_id()
            .ok_or_else(|| CryptoError::UnknownKey(String::new()))?
            .to_string();
        let mut report = RotateReport {
            primary_key_id: primary.clone(),
            ..RotateReport::default()
        };
        let mut after = String::new();
        loop {
            let a = after.clone();
            let (batch, last, done) = self
                .write(move |c, keys| {
                    let mut r = RotateReport::default();
                    let (last, done) = admin::rotate_batch(c, keys, &a, &mut r)?;
                    Ok((r, last, done))
                })
                .await?;
            report.reencrypted += batch.reencrypted;
            report.current += batch.current;
            report.unreadable += batch.unreadable;
            report.unreadable_user_ids.extend(batch.unreadable_user_ids);
            if done {
                break;
            }
            after = last;
        }
        // Nothing cached is wrong after a rotation, but every process should read the
        // re-sealed rows rather than trust what it read under the old key.
        let now = crate::clock::Clock::default().now();
        self.write(move |c, _| queries::invalidate(c, None, None, now)).await?;
        Ok(report)
    }

    async fn export(&self, kind: RecordKind, after: &str, limit: usize) -> Result<Vec<Record>, StoreError> {
        let a = after.to_string();
        self.read(move |c, _| admin::export(c, kind, &a, limit)).await
    }

    async fn import(&self, records: &[Record]) -> Result<ImportCounts, StoreError> {
        let rs = records.to_vec();
        self.write(move |c, _| admin::import(c, &rs)).await
    }
}
