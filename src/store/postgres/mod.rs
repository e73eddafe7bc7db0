//! The PostgreSQL backend, for many replicas on one server: the NINI app's Prisma tables plus
//! nini-auth's own tables in the schema `nini_auth` (schema.rs), a deadpool connection pool, advisory
//! locks for per-user locks (lock.rs), LISTEN/NOTIFY with a polling backstop for
//! invalidations (notify.rs), and rate windows shared through the database.
//!
//! All database work runs on a small runtime the store owns: tokio-postgres drives each
//! connection from a task on the runtime current when it connected, and callers run on
//! several pingora runtimes and on short-lived test runtimes; a connection whose runtime
//! ended would die with it. Trait methods spawn their work there and await the result.
//!
//! Invalidation records are stamped with the server's clock (the follower's window is
//! measured in it), which is why some methods here do not use the `now` they are given.

mod admin;
mod connect;
mod lock;
mod notify;
mod queries;
mod schema;
mod sql;
mod sync;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;

use super::*;
use crate::config::{PgUrl, StorageConfig};
use crate::crypto::KeyRing;
use connect::{chain, scrub, WHAT};

/// Worker threads of the database runtime: the work is waiting on sockets, not computing.
const DB_WORKERS: usize = 2;

/// The store's own runtime. Dropped with `shutdown_background`: a plain drop blocks, and
/// panics when the last store is dropped inside an async context (as tests and shutdown
/// paths do). Shutting it down ends every connection task, closing their connections.
struct DbRuntime(Option<tokio::runtime::Runtime>);

impl Drop for DbRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

struct Inner {
    pool: Pool,
    /// Connections that hold per-user locks, apart from `pool`: a held lock pins its
    /// connection, and lock holders then need a connection to store their result (a refresh
    /// holds the lock across `save_refreshed`). Sharing one pool, N holders could take all N
    /// connections and wait for each other until the pool timeout. Filled lazily, so a
    /// replica opens at most 2 x max_connections + 1 (the listener) connections, and
    /// usually far fewer.
    locks: Pool,
    keys: KeyRing,
    /// Settings for connections outside the pool (the invalidation listener).
    pg: tokio_postgres::Config,
    /// This store's id in the invalidations it writes.
    origin: String,
    handle: tokio::runtime::Handle,
    /// Declared last: dropped after the pool.
    _runtime: DbRuntime,
}

/// The PostgreSQL store. Clones share the pool and the runtime.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

/// What a task on the database runtime needs (everything but the runtime itself, so no
/// task keeps the runtime alive).
struct Ctx {
    pool: Pool,
    keys: KeyRing,
}

/// Aborts the task when the awaiting future is dropped (a follower whose caller went away).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl PgStore {
    /// Connects (within `storage.connect_timeout`), then creates or migrates the schema.
    /// Works from inside any runtime: the connecting happens on the store's own.
    pub async fn open(url: &PgUrl, cfg: &StorageConfig, keys: KeyRing) -> Result<PgStore, StoreError> {
        let origin = new_id()?;
        let pg = connect::pg_config(url, cfg, &origin)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(DB_WORKERS)
            .thread_name("nini-auth-db")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Open {
                what: WHAT.into(),
                reason: format!("cannot start the database runtime: {e}"),
            })?;
        let handle = runtime.handle().clone();
        // Owned from here on, so an early return below shuts it down without blocking.
        let runtime = DbRuntime(Some(runtime));
        let pool = connect::pool(pg.clone(), cfg)?;
        let locks = connect::pool(pg.clone(), cfg)?;
        let (p, redacted, password) = (
            pool.clone(),
            url.redacted().to_string(),
            pg.get_password().map(<[u8]>::to_vec),
        );
        handle
            .spawn(async move {
                let mut conn = p.get().await.map_err(|e| StoreError::Open {
                    what: WHAT.into(),
                    reason: scrub(
                        &format!("cannot connect to {redacted}: {}", connect::describe_pool_error(&e)),
                        password.as_deref(),
                    ),
                })?;
                schema::migrate(&mut conn).await.map_err(|e| match e {
                    e @ (StoreError::SchemaTooNew { .. } | StoreError::Open { .. }) => e,
                    other => StoreError::Open {
                        what: WHAT.into(),
                        reason: scrub(
                            &format!("migrating the schema at {redacted}: {}", chain(&other)),
                            password.as_deref(),
                        ),
                    },
                })
            })
            .await
            .map_err(|_| StoreError::Join)??;
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                locks,
                keys,
                pg,
                origin,
                handle,
                _runtime: runtime,
            }),
        })
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            pool: self.inner.pool.clone(),
            keys: self.inner.keys.clone(),
        }
    }

    /// Runs database work on the store's runtime. The work runs to completion even if the
    /// caller stops waiting, so a transaction is never cut off between two statements.
    async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.inner.handle.spawn(work).await.map_err(|_| StoreError::Join)?
    }
}

/// Fixed rate windows: (window length, start of the one containing `now`).
fn rate_window(window: u64, now: i64) -> (i64, i64) {
    let window = i64::try_from(window.max(1)).unwrap_or(i64::MAX);
    (window, now.div_euclid(window).saturating_mul(window))
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn keys(&self) -> &KeyRing {
        &self.inner.keys
    }

    async fn ping(&self, deadline: Duration) -> Result<(), StoreError> {
        let ctx = self.ctx();
        self.run(async move {
            let probe = async {
                let c = ctx.pool.get().await?;
                sql::query_one(&c, "SELECT 1", &[]).await?;
                Ok(())
            };
            tokio::time::timeout(deadline, probe)
                .await
                .map_err(|_| StoreError::Unavailable(format!("no answer within {deadline:?}")))?
        })
        .await
    }

    async fn close(&self) -> Result<(), StoreError> {
        // Idle connections close now; checked-out ones when they come back.
        self.inner.pool.close();
        self.inner.locks.close();
        Ok(())
    }

    async fn consume_state(&self, state_hash: &str, expires: i64) -> Result<bool, StoreError> {
        let (ctx, h) = (self.ctx(), state_hash.to_string());
        self.run(async move {
            let c = ctx.pool.get().await?;
            queries::consume_state(&c, &h, expires).await
        })
        .await
    }

    async fn complete_login(&self, login: NewLogin<'_>) -> Result<Identity, StoreError> {
        let (ctx, owned) = (self.ctx(), queries::OwnedLogin::from(login));
        self.run(async move {
            let mut c = ctx.pool.get().await?;
            let mut tx = c.transaction().await?;
            let identity = queries::complete_login(&mut tx, &ctx.keys, &owned).await?;
            tx.commit().await?;
            Ok(identity)
        })
        .await
    }

    async fn session_identity(&self, session_hash: &str, now: i64) -> Result<Option<Identity>, StoreError> {
        let (ctx, h) = (self.ctx(), session_hash.to_string());
        self.run(async move {
            let c = ctx.pool.get().await?;
            queries::identity_for(&c, &h, now).await
        })
        .await
    }

    async fn end_session(&self, session_hash: &str, now: i64) -> Result<Option<EndedSession>, StoreError> {
        let (ctx, h) = (self.ctx(), session_hash.to_string());
        self.run(async move {
            let mut c = ctx.pool.get().await?;
            let tx = c.transaction().await?;
            let ended = queries::end_session(&tx, &h, now).await?;
            tx.commit().await?;
            Ok(ended)
        })
        .await
    }

    async fn end_session_by_id(&self, user_id: &str, session_id: &str, _now: i64) -> Result<bool, StoreError> {
        let (ctx, u, s) = (self.ctx(), user_id.to_string(), session_id.to_string());
        self.run(async move {
            let mut c = ctx.pool.get().await?;
            let tx = c.transaction().await?;
            let ended = queries::end_session_by_id(&tx, &u, &s).await?;
            tx.commit().await?;
            Ok(ended)
        })
        .await
    }

    async fn end_user_sessions(&self, user_id: &str, keep: Option<&str>, _now: i64) -> Result<usize, StoreError> {
        let (ctx, u, k) = (self.ctx(), user_id.to_string(), keep.map(str::to_string));
        self.run(async move {
            let mut c = ctx.pool.get().await?;
            let tx = c.transaction().await?;
            let n = queries::end_user_sessions(&tx, &u, k.as_deref()).await?;
            tx.commit().await?;
            Ok(n)
        })
        .await
    }

    async fn user_sessions(&self, user_id: &str, now: i64) -> Result<Vec<DeviceSession>, StoreError> {
        let (ctx, u) = (self.ctx(), user_id.to_string());
        self.run(async move {
            let c = ctx.pool.get().await?;
            queries::user_sessions(&c, &u, now).await
        })
        .await
    }

    async fn touch_sessions(&self, seen: &[(String, i64)]) -> Result<(), StoreError> {
        if seen.is_empty() {
            return Ok(());
        }
        let (ctx, batch) = (self.ctx(), seen.to_vec());
        self.run(async move {
            let c = ctx.pool.get().await?;
            queries::touch_sessions(&c, &batch).await
        })
        .await
    }

    async fn count_sessions(&self, now: i64) -> Result<i64, StoreError> {
        let ctx = self.ctx();
        self.run(async move {
            let c = ctx.pool.get().await?;
            queries::count_sessions(&c, now).await
        })
        .await
    }

    async fn purge_expired(&self, now: i64) -> Result<Purged, StoreError> {
        let ctx = self.ctx();
        self.run(async move {
            let mut c = ctx.pool.get().await?;
            let tx = c.transaction().await?;
            let purged = queries::purge_expired(&tx, now).await?;
            tx.commit().await?;
            Ok(purged)
        })
        .await
    }

    async fn tokens(&self, user_id: &str) -> Result<Option<Tokens>, StoreError> {
        let (ctx, u) = (self.ctx(), user_id.to_string());
        self.run(async move {
            let c = ctx.pool.get().await?;
            queries::tokens(&c, &ctx.keys, &u).await
        })
        .await
    }

    /// `ttl` is unused: the server ends an advisory lock with its connection (see lock.rs).
    async fn try_lock_user(
        &self,
        purpose: LockPurpose,
        user_id: &str,
        _ttl: Duration,
        _now: i64,
    ) -> Result<Option<UserLock>, StoreError> {
        let (locks, u, handle) = (self.inner.locks.clone(), user_id.to_string(), self.inner.handle.clone());
        self.run(async move {
            let conn = locks.get().await?;
            let lock = lock::try_lock(conn, handle, purpose, &u).await?;
            Ok(lock.map(|l| UserLock::new(Box::new(l))))
        })
        .await
    }

    async fn save_refreshed(&self, user_id: &str, redeemed: &str, new: &Tokens, now: i64) -> Result<bool, StoreError> {
        let (ctx, u, r, t) = (self.ctx(), user_id.to_string(), redeemed.to_string(), new.clone());
        self.run(async move {
            let mut c = ctx.pool.get().await?;
            let tx = c.transaction().await?;
            let saved = queries::save_refreshed(&tx, &ctx.keys, &u, &r, &t, now).await?;
            tx.commit().await?;
            Ok(saved)
        })
        .await
    }

    async fn clear_tokens(&self, user_id: &str, read: &str, now: i64) -> Result<bool, StoreError> {
        let (ctx, u, r) = (self.ctx(), user_id.to_string(), read.to_string());
        self.run(async move {
            let mut c = ctx.pool.get().await?;
            let tx = c.transaction().await?;
            let cleared = queries::clear_tokens(&tx, &ctx.keys, &u, Some(&r), None, now).await?;
            tx.commit().await?;
            Ok(cleared)
        })
        .await
    }

    async fn mark_grant_dead(
        &self,
        user_id: &str,
        dead: Option<&str>,
        error: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (ctx, u, d, e) = (
            self.ctx(),
            user_id.to_string(),
            dead.map(str::to_string),
            error.to_string(),
        );
        self.run(async move {
            let mut c = ctx.pool.get().await?;
            let tx = c.transaction().await?;
            let marked = queries::clear_tokens(&tx, &ctx.keys, &u, d.as_deref(), Some(&e), now).await?;
            tx.commit().await?;
            Ok(marked)
        })
        .await
    }

    async fn authorization_removed(&self, open_id: &str, now: i64) -> Result<Option<(String, usize)>, StoreError> {
        let (ctx, o) = (self.ctx(), open_id.to_string());
        self.run(async move {
            let mut c = ctx.pool.get().await?;
            let tx = c.transaction().await?;
            let removed = queries::authorization_removed(&tx, &o, now).await?;
            tx.commit().await?;
            Ok(removed)
        })
        .await
    }

    async fn follow_invalidations(&self, sink: InvalidationSink, stop: tokio::sync::watch::Receiver<bool>) {
        // The follower runs on the database runtime; the sink is called here, on the
        // caller's task, so whatever it spawns lives on the caller's runtime, not ours.
        let (tx, mut rx) = tokio::sync::mpsc::channel(notify::QUEUE);
        let follower = notify::follow(
            self.inner.pool.clone(),
            self.inner.pg.clone(),
            self.inner.origin.clone(),
            tx,
            stop,
        );
        let _task = AbortOnDrop(self.inner.handle.spawn(follower));
        // Ends when the follower returns (stop turned true) and drops its sender.
        while let Some(inv) = rx.recv().await {
            sink(&inv);
        }
    }

    async fn rate_hit(&self, key: &str, window: u64, now: i64) -> Result<RateHit, StoreError> {
        let (window, start) = rate_window(window, now);
        let (ctx, k) = (self.ctx(), key.to_string());
        let count = self
            .run(async move {
                let c = ctx.pool.get().await?;
                queries::rate_hit(&c, &k, start).await
            })
            .await?;
        Ok(RateHit {
            count,
            resets_in: start.saturating_add(window).saturating_sub(now).max(1) as u64,
        })
    }

    async fn rate_peek(&self, key: &str, window: u64, now: i64) -> Result<u32, StoreError> {
        let (_, start) = rate_window(window, now);
        let (ctx, k) = (self.ctx(), key.to_string());
        self.run(async move {
            let c = ctx.pool.get().await?;
            queries::rate_peek(&c, &k, start).await
        })
        .await
    }

    async fn save_sync(
        &self,
        user_id: &str,
        profile: &SyncedProfile,
        videos: Option<VideoSet<'_>>,
        now: i64,
    ) -> Result<Option<UserProfile>, StoreError> {
        let (ctx, u, p) = (self.ctx(), user_id.to_string(), profile.clone());
        let set = videos.map(|v| (v.videos.to_vec(), v.streak));
        self.run(async move {
            let mut c = ctx.pool.get().await?;
            let mut tx = c.transaction().await?;
            let videos = set.as_ref().map(|(v, s)| (v.as_slice(), *s));
            let saved = sync::save_sync(&mut tx, &u, &p, videos, now).await?;
            tx.commit().await?;
            Ok(saved)
        })
        .await
    }

    async fn user_profile(&self, user_id: &str) -> Result<Option<UserProfile>, StoreError> {
        let (ctx, u) = (self.ctx(), user_id.to_string());
        self.run(async move {
            let c = ctx.pool.get().await?;
            sync::profile_of(&c, &u).await
        })
        .await
    }

    async fn last_synced_at(&self, user_id: &str) -> Result<Option<i64>, StoreError> {
        let (ctx, u) = (self.ctx(), user_id.to_string());
        self.run(async move {
            let c = ctx.pool.get().await?;
            sync::last_synced_at(&c, &u).await
        })
        .await
    }

    async fn user_videos(
        &self,
        user_id: &str,
        limit: u32,
        before: Option<(i64, &str)>,
    ) -> Result<(Vec<StoredVideo>, i64), StoreError> {
        let (ctx, u) = (self.ctx(), user_id.to_string());
        let before = before.map(|(t, id)| (t, id.to_string()));
        self.run(async move {
            let c = ctx.pool.get().await?;
            sync::user_videos(&c, &u, limit, before.as_ref().map(|(t, id)| (*t, id.as_str()))).await
        })
        .await
    }

    async fn due_for_sync(
        &self,
        candidates: &[String],
        synced_before: i64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let (ctx, cands) = (self.ctx(), candidates.to_vec());
        self.run(async move {
            let c = ctx.pool.get().await?;
            sync::due_for_sync(&c, &cands, synced_before, limit).await
        })
        .await
    }

    async fn admin_users(&self, limit: Option<usize>, now: i64) -> Result<Vec<AdminUser>, StoreError> {
        let ctx = self.ctx();
        self.run(async move {
            let c = ctx.pool.get().await?;
            admin::users(&c, limit, now).await
        })
        .await
    }

    async fn admin_user(&self, id_or_open_id: &str, now: i64) -> Result<Option<AdminUser>, StoreError> {
        let (ctx, q) = (self.ctx(), id_or_open_id.to_string());
        self.run(async move {
            let c = ctx.pool.get().await?;
            admin::user(&c, &q, now).await
        })
        .await
    }

    async fn admin_sessions(&self, user_id: Option<&str>, now: i64) -> Result<Vec<AdminSession>, StoreError> {
        let (ctx, u) = (self.ctx(), user_id.map(str::to_string));
        self.run(async move {
            let c = ctx.pool.get().await?;
            admin::sessions(&c, u.as_deref(), now).await
        })
        .await
    }

    async fn revoke_sessions(&self, scope: RevokeScope<'_>, _now: i64) -> Result<Revoked, StoreError> {
        let user = match scope {
            RevokeScope::User(u) => Some(u.to_string()),
            RevokeScope::All => None,
        };
        let ctx = self.ctx();
        self.run(async move {
            let mut c = ctx.pool.get().await?;
            let tx = c.transaction().await?;
            let revoked = admin::revoke(&tx, user.as_deref()).await?;
            tx.commit().await?;
            Ok(revoked)
        })
        .await
    }

    async fn rotate_keys(&self) -> Result<RotateReport, StoreError> {
        let primary = self
            .inner
            .keys
            .primary_id()
            .ok_or_else(|| CryptoError::UnknownKey(String::new()))?
            .to_string();
        let ctx = self.ctx();
        self.run(async move {
            let mut report = RotateReport {
                primary_key_id: primary.clone(),
                ..RotateReport::default()
            };
            let mut c = ctx.pool.get().await?;
            let mut after = String::new();
            // One committed transaction per batch: a running sidecar's refresh waits for at
            // most one batch's row locks.
            loop {
                let tx = c.transaction().await?;
                let last = admin::rotate_batch(&tx, &ctx.keys, &after, &mut report).await?;
                tx.commit().await?;
                match last {
                    Some(id) => after = id,
                    None => break,
                }
            }
            // Nothing cached is wrong after a rotation, but every replica should read the
            // re-sealed rows rather than trust what it read under the old key.
            queries::invalidate(&c, None, None).await?;
            Ok(report)
        })
        .await
    }

    async fn export(&self, kind: RecordKind, after: &str, limit: usize) -> Result<Vec<Record>, StoreError> {
        let (ctx, a) = (self.ctx(), after.to_string());
        self.run(async move {
            let c = ctx.pool.get().await?;
            admin::export(&c, kind, &a, limit).await
        })
        .await
    }

    async fn import(&self, records: &[Record]) -> Result<ImportCounts, StoreError> {
        let (ctx, rs) = (self.ctx(), records.to_vec());
        self.run(async move {
            let mut c = ctx.pool.get().await?;
            let tx = c.transaction().await?;
            let counts = admin::import(&tx, &rs).await?;
            tx.commit().await?;
            Ok(counts)
        })
        .await
    }
}
