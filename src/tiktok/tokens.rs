//! The TikTok token lifecycle: a fresh access token on demand, refreshed when less than the
//! refresh margin remains, with exactly one refresh per user at a time — across tasks (a
//! per-user async lock) and across processes and replicas (`Store::try_lock_user`). The
//! tokens a refresh redeems are read after that lock is held; the rotated refresh token is
//! stored (compare-and-swap) before it is used; a grant is declared dead only if the stored
//! refresh token is still the one TikTok rejected.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::clock::Clock;
use crate::crypto;
use crate::metrics::Metrics;
use crate::store::cache::SessionCache;
use crate::store::{LockPurpose, Store, StoreError, Tokens, UserLock};
use crate::tiktok::{TikTokClient, TikTokError};

/// After a failed refresh while the current token still works: how long to keep using it
/// before trying TikTok again.
const REFRESH_RETRY_SECS: i64 = 60;
/// How often a task waiting on another process's refresh looks again.
const LOCK_POLL: Duration = Duration::from_millis(50);

/// The next-auth error a dead grant is reported as (`session.error`).
pub const REFRESH_ERROR: &str = "RefreshAccessTokenError";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The refresh token expired or was revoked, or the user has no tokens: sign in again.
    #[error("TikTok grant is gone; the user must sign in again")]
    GrantDead,
    /// Another task or process is refreshing and did not finish within the wait bound.
    #[error("timed out waiting for another refresh of the same user")]
    Busy,
    #[error("TikTok refresh failed")]
    TikTok(#[from] TikTokError),
    #[error("store failure during refresh")]
    Store(#[from] StoreError),
}

#[derive(Clone)]
struct Cached {
    access_token: String,
    /// After this instant (unix seconds) the token is due for refresh.
    refresh_after: i64,
}

/// Outcomes worth counting (tests and metrics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RefreshStats {
    pub refreshed: u64,
    pub failed: u64,
    pub waited: u64,
}

pub struct TokenManager {
    store: Arc<dyn Store>,
    tiktok: TikTokClient,
    sessions: Arc<SessionCache>,
    metrics: Arc<Metrics>,
    clock: Clock,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    cache: RwLock<HashMap<String, Cached>>,
    margin: Duration,
    /// How long a request waits for someone else's refresh before giving up.
    wait: Duration,
    stats: Mutex<RefreshStats>,
}

impl TokenManager {
    pub fn new(
        store: Arc<dyn Store>,
        tiktok: TikTokClient,
        sessions: Arc<SessionCache>,
        metrics: Arc<Metrics>,
        clock: Clock,
        margin: Duration,
    ) -> TokenManager {
        // A refresh takes at most one TikTok call plus a transaction.
        let wait = tiktok.config().timeout * 2 + Duration::from_secs(2);
        TokenManager {
            store,
            tiktok,
            sessions,
            metrics,
            clock,
            locks: Mutex::new(HashMap::new()),
            cache: RwLock::new(HashMap::new()),
            margin,
            wait,
            stats: Mutex::new(RefreshStats::default()),
        }
    }

    pub fn stats(&self) -> RefreshStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, f: impl FnOnce(&mut RefreshStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// When a token should be refreshed: `refresh_margin` before expiry, but never more than
    /// half of the token's own lifetime (a 2 h token with a 1 h margin would otherwise be
    /// refreshed half the time).
    pub fn refresh_after(&self, t: &Tokens) -> i64 {
        let lifetime = (t.access_expires_at - t.obtained_at).max(0);
        let margin = (self.margin.as_secs() as i64).min(lifetime / 2);
        t.access_expires_at - margin
    }

    /// Drops what this process cached for a user (after a change in the store).
    pub fn forget(&self, user_id: &str) {
        self.cache.write().unwrap_or_else(|p| p.into_inner()).remove(user_id);
    }

    /// Drops every cached access token (an "everything" invalidation).
    pub fn forget_all(&self) {
        self.cache.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn cached(&self, user_id: &str, now: i64) -> Option<String> {
        let map = self.cache.read().unwrap_or_else(|p| p.into_inner());
        map.get(user_id)
            .filter(|c| now < c.refresh_after)
            .map(|c| c.access_token.clone())
    }

    fn remember_until(&self, user_id: &str, token: &str, until: i64) {
        let mut map = self.cache.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= 100_000 && !map.contains_key(user_id) {
            let now = self.clock.now();
            map.retain(|_, c| c.refresh_after > now);
        }
        map.insert(
            user_id.to_string(),
            Cached {
                access_token: token.to_string(),
                refresh_after: until,
            },
        );
    }

    fn remember(&self, user_id: &str, t: &Tokens) {
        self.remember_until(user_id, &t.access_token, self.refresh_after(t));
    }

    fn user_lock(&self, user_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if locks.len() > 10_000 {
            // Locks nobody holds or waits for can go; a live one has other Arc owners.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(user_id.to_string()).or_default().clone()
    }

    /// A usable access token for the user: from memory when fresh, else from the store, else
    /// refreshed (once, whoever asks).
    pub async fn access_token(&self, user_id: &str) -> Result<String, TokenError> {
        let now = self.clock.now();
        if let Some(t) = self.cached(user_id, now) {
            return Ok(t);
        }
        // A read-only look first: most misses (a restart, another replica's refresh) find a
        // fresh token and need no lock. Nothing read here is ever redeemed.
        if let Some(t) = self.store.tokens(user_id).await? {
            if now < self.refresh_after(&t) {
                self.remember(user_id, &t);
                return Ok(t.access_token);
            }
        }
        self.refresh_if_due(user_id, None).await
    }

    /// After TikTok said `access_token_invalid` for `stale`: refresh now, unless someone else
    /// already replaced that token.
    pub async fn force_refresh(&self, user_id: &str, stale: &str) -> Result<String, TokenError> {
        self.forget(user_id);
        self.refresh_if_due(user_id, Some(stale)).await
    }

    async fn refresh_if_due(&self, user_id: &str, stale: Option<&str>) -> Result<String, TokenError> {
        let lock = self.user_lock(user_id);
        let mut waited = false;
        let _local = match lock.try_lock() {
            Ok(g) => g,
            Err(_) => {
                waited = true;
                match tokio::time::timeout(self.wait, lock.lock()).await {
                    Ok(g) => g,
                    Err(_) => return Err(TokenError::Busy),
                }
            }
        };
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            let now = self.clock.now();
            let ttl = self.wait + Duration::from_secs(1);
            match self
                .store
                .try_lock_user(LockPurpose::Refresh, user_id, ttl, now)
                .await?
            {
                Some(held) => {
                    let result = self.refresh_locked(user_id, stale, waited).await;
                    held.release().await;
                    return result;
                }
                None => {
                    // Another process is refreshing: its rotated tokens will appear in the
                    // store; a read (no lock) tells whether they already did.
                    waited = true;
                    if let Some(t) = self.store.tokens(user_id).await? {
                        let replaced = stale.is_none_or(|s| !crypto::ct_eq(s.as_bytes(), t.access_token.as_bytes()));
                        if now < self.refresh_after(&t) && replaced {
                            self.count(|s| s.waited += 1);
                            self.metrics.refresh("waited");
                            self.remember(user_id, &t);
                            return Ok(t.access_token);
                        }
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(TokenError::Busy);
                    }
                    tokio::time::sleep(LOCK_POLL).await;
                }
            }
        }
    }

    /// With the user's refresh lock held: read the tokens, and refresh them if still due.
    async fn refresh_locked(&self, user_id: &str, stale: Option<&str>, waited: bool) -> Result<String, TokenError> {
        let now = self.clock.now();
        let Some(tokens) = self.store.tokens(user_id).await? else {
            // Signed out (and revoked) elsewhere, or already marked dead.
            self.grant_dead(user_id, None, "no tokens stored").await?;
            return Err(TokenError::GrantDead);
        };
        let is_stale = stale.is_some_and(|s| crypto::ct_eq(s.as_bytes(), tokens.access_token.as_bytes()));
        if now < self.refresh_after(&tokens) && !is_stale {
            // Fresh: another task or process refreshed while we waited, or it never was due.
            if waited {
                self.count(|s| s.waited += 1);
                self.metrics.refresh("waited");
            }
            self.remember(user_id, &tokens);
            return Ok(tokens.access_token);
        }
        if tokens.refresh_expires_at <= now {
            self.grant_dead(user_id, Some(&tokens.refresh_token), "refresh token expired")
                .await?;
            return Err(TokenError::GrantDead);
        }
        self.redeem(user_id, tokens).await
    }

    /// Redeems the refresh token (lock held); stores the result before anyone uses it.
    async fn redeem(&self, user_id: &str, old: Tokens) -> Result<String, TokenError> {
        let result = self.tiktok.refresh(&old.refresh_token).await;
        let now = self.clock.now();
        let e = match result {
            Ok(resp) => {
                let new = Tokens {
                    access_token: resp.access_token.clone(),
                    refresh_token: resp.refresh_token.clone(),
                    access_expires_at: now.saturating_add(resp.expires_in.max(0)),
                    refresh_expires_at: now.saturating_add(resp.refresh_expires_in.max(0)),
                    scope: if resp.scope.is_empty() {
                        old.scope.clone()
                    } else {
                        resp.scope.clone()
                    },
                    obtained_at: now,
                };
                if !self
                    .store
                    .save_refreshed(user_id, &old.refresh_token, &new, now)
                    .await?
                {
                    // The stored refresh token changed under a held lock: only a SQLite lease
                    // that outlived its ttl allows that. TikTok rotated ours anyway; use
                    // what is stored now.
                    log::warn!("refresh result for user {user_id} lost a race; using the stored tokens");
                    return match self.store.tokens(user_id).await? {
                        Some(t) => {
                            self.remember(user_id, &t);
                            Ok(t.access_token)
                        }
                        None => Err(TokenError::GrantDead),
                    };
                }
                self.count(|s| s.refreshed += 1);
                self.metrics.refresh("ok");
                log::info!("refreshed TikTok access token for user {user_id}");
                self.remember(user_id, &new);
                return Ok(new.access_token);
            }
            Err(e) => e,
        };
        self.count(|s| s.failed += 1);
        if !e.is_invalid_grant() {
            // A dead grant is counted once, by grant_dead below.
            self.metrics.refresh("failed");
            log::warn!("TikTok refresh for user {user_id} failed: {e}");
            // The refresh was early (inside the margin): while the current token is still
            // valid, keep using it and try again after a pause, rather than make every
            // request wait on TikTok and then go without a token.
            if old.access_expires_at > now + REFRESH_RETRY_SECS {
                self.remember_until(user_id, &old.access_token, now + REFRESH_RETRY_SECS);
                return Ok(old.access_token);
            }
            return Err(TokenError::TikTok(e));
        }
        // TikTok rejected the token we read under the lock. The mark is a compare-and-swap
        // on it: a newer grant stored meanwhile (a sign-in elsewhere) survives.
        self.grant_dead(
            user_id,
            Some(&old.refresh_token),
            "refresh token rejected (invalid_grant)",
        )
        .await?;
        match self.store.tokens(user_id).await? {
            Some(t) => {
                self.remember(user_id, &t);
                Ok(t.access_token)
            }
            None => Err(TokenError::GrantDead),
        }
    }

    async fn grant_dead(&self, user_id: &str, dead: Option<&str>, why: &str) -> Result<(), TokenError> {
        let now = self.clock.now();
        if self.store.mark_grant_dead(user_id, dead, REFRESH_ERROR, now).await? {
            self.metrics.refresh("grant_dead");
            log::info!("TikTok grant of user {user_id} is gone ({why}); their sessions end");
        }
        self.forget(user_id);
        self.sessions.remove_user(user_id);
        Ok(())
    }

    /// Holds the user's refresh lock (all processes) while `f` runs: sign-out reads and
    /// revokes the tokens without a refresh rotating them underneath.
    pub async fn with_refresh_lock<T, F, Fut>(&self, user_id: &str, f: F) -> Result<T, TokenError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let lock = self.user_lock(user_id);
        let _local = tokio::time::timeout(self.wait, lock.lock())
            .await
            .map_err(|_| TokenError::Busy)?;
        let deadline = tokio::time::Instant::now() + self.wait;
        let held: UserLock = loop {
            let ttl = self.wait + Duration::from_secs(1);
            if let Some(l) = self
                .store
                .try_lock_user(LockPurpose::Refresh, user_id, ttl, self.clock.now())
                .await?
            {
                break l;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(TokenError::Busy);
            }
            tokio::time::sleep(LOCK_POLL).await;
        };
        let out = f().await;
        held.release().await;
        Ok(out)
    }
}

#[cfg(all(test, feature = "demo"))]
mod tests {
    //! Two token managers on one database stand in for two processes; the second is stopped
    //! at exactly the point where reading tokens before taking the lock would go wrong.

    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::config::{Pkce, Secret, TikTokConfig};
    use crate::mock_tiktok::{MockConfig, MockTikTok, DEMO_CLIENT_KEY, DEMO_CLIENT_SECRET, DEMO_OPEN_ID};
    use crate::store::*;

    /// A real store, with a gate: after this handle's first `tokens` read, its next
    /// `try_lock_user` waits until `release` is signalled (another process has refreshed and
    /// let go of the lock).
    struct Gated {
        inner: Arc<dyn Store>,
        reads: AtomicUsize,
        armed: AtomicBool,
        release: Arc<tokio::sync::Notify>,
    }

    #[async_trait]
    impl Store for Gated {
        fn backend(&self) -> &'static str {
            self.inner.backend()
        }
        fn keys(&self) -> &crate::crypto::KeyRing {
            self.inner.keys()
        }
        async fn tokens(&self, user_id: &str) -> Result<Option<Tokens>, StoreError> {
            if self.reads.fetch_add(1, Ordering::SeqCst) == 0 {
                self.armed.store(true, Ordering::SeqCst);
            }
            self.inner.tokens(user_id).await
        }
        async fn try_lock_user(
            &self,
            purpose: LockPurpose,
            user_id: &str,
            ttl: Duration,
            now: i64,
        ) -> Result<Option<UserLock>, StoreError> {
            if self.armed.swap(false, Ordering::SeqCst) {
                self.release.notified().await;
            }
            self.inner.try_lock_user(purpose, user_id, ttl, now).await
        }
        async fn follow_invalidations(&self, sink: InvalidationSink, stop: tokio::sync::watch::Receiver<bool>) {
            self.inner.follow_invalidations(sink, stop).await
        }
        async fn complete_login(&self, login: NewLogin<'_>) -> Result<Identity, StoreError> {
            self.inner.complete_login(login).await
        }
        async fn save_sync(
            &self,
            user_id: &str,
            profile: &SyncedProfile,
            videos: Option<VideoSet<'_>>,
            now: i64,
        ) -> Result<Option<UserProfile>, StoreError> {
            self.inner.save_sync(user_id, profile, videos, now).await
        }
        async fn user_videos(
            &self,
            user_id: &str,
            limit: u32,
            before: Option<(i64, &str)>,
        ) -> Result<(Vec<StoredVideo>, i64), StoreError> {
            self.inner.user_videos(user_id, limit, before).await
        }
        async fn revoke_sessions(&self, scope: RevokeScope<'_>, now: i64) -> Result<Revoked, StoreError> {
            self.inner.revoke_sessions(scope, now).await
        }
        async fn ping(&self, deadline: Duration) -> Result<(), StoreError> {
            self.inner.ping(deadline).await
        }
        async fn close(&self) -> Result<(), StoreError> {
            self.inner.close().await
        }
        async fn consume_state(&self, state_hash: &str, expires: i64) -> Result<bool, StoreError> {
            self.inner.consume_state(state_hash, expires).await
        }
        async fn session_identity(&self, session_hash: &str, now: i64) -> Result<Option<Identity>, StoreError> {
            self.inner.session_identity(session_hash, now).await
        }
        async fn end_session(&self, session_hash: &str, now: i64) -> Result<Option<EndedSession>, StoreError> {
            self.inner.end_session(session_hash, now).await
        }
        async fn end_session_by_id(&self, user_id: &str, session_id: &str, now: i64) -> Result<bool, StoreError> {
            self.inner.end_session_by_id(user_id, session_id, now).await
        }
        async fn end_user_sessions(&self, user_id: &str, keep: Option<&str>, now: i64) -> Result<usize, StoreError> {
            self.inner.end_user_sessions(user_id, keep, now).await
        }
        async fn user_sessions(&self, user_id: &str, now: i64) -> Result<Vec<DeviceSession>, StoreError> {
            self.inner.user_sessions(user_id, now).await
        }
        async fn touch_sessions(&self, seen: &[(String, i64)]) -> Result<(), StoreError> {
            self.inner.touch_sessions(seen).await
        }
        async fn count_sessions(&self, now: i64) -> Result<i64, StoreError> {
            self.inner.count_sessions(now).await
        }
        async fn purge_expired(&self, now: i64) -> Result<Purged, StoreError> {
            self.inner.purge_expired(now).await
        }
        async fn save_refreshed(
            &self,
            user_id: &str,
            redeemed: &str,
            new: &Tokens,
            now: i64,
        ) -> Result<bool, StoreError> {
            self.inner.save_refreshed(user_id, redeemed, new, now).await
        }
        async fn clear_tokens(&self, user_id: &str, read: &str, now: i64) -> Result<bool, StoreError> {
            self.inner.clear_tokens(user_id, read, now).await
        }
        async fn mark_grant_dead(
            &self,
            user_id: &str,
            dead: Option<&str>,
            error: &str,
            now: i64,
        ) -> Result<bool, StoreError> {
            self.inner.mark_grant_dead(user_id, dead, error, now).await
        }
        async fn authorization_removed(&self, open_id: &str, now: i64) -> Result<Option<(String, usize)>, StoreError> {
            self.inner.authorization_removed(open_id, now).await
        }
        async fn rate_hit(&self, key: &str, window: u64, now: i64) -> Result<RateHit, StoreError> {
            self.inner.rate_hit(key, window, now).await
        }
        async fn rate_peek(&self, key: &str, window: u64, now: i64) -> Result<u32, StoreError> {
            self.inner.rate_peek(key, window, now).await
        }
        async fn user_profile(&self, user_id: &str) -> Result<Option<UserProfile>, StoreError> {
            self.inner.user_profile(user_id).await
        }
        async fn last_synced_at(&self, user_id: &str) -> Result<Option<i64>, StoreError> {
            self.inner.last_synced_at(user_id).await
        }
        async fn due_for_sync(
            &self,
            candidates: &[String],
            synced_before: i64,
            limit: usize,
        ) -> Result<Vec<String>, StoreError> {
            self.inner.due_for_sync(candidates, synced_before, limit).await
        }
        async fn admin_users(&self, limit: Option<usize>, now: i64) -> Result<Vec<AdminUser>, StoreError> {
            self.inner.admin_users(limit, now).await
        }
        async fn admin_user(&self, id_or_open_id: &str, now: i64) -> Result<Option<AdminUser>, StoreError> {
            self.inner.admin_user(id_or_open_id, now).await
        }
        async fn admin_sessions(&self, user_id: Option<&str>, now: i64) -> Result<Vec<AdminSession>, StoreError> {
            self.inner.admin_sessions(user_id, now).await
        }
        async fn rotate_keys(&self) -> Result<RotateReport, StoreError> {
            self.inner.rotate_keys().await
        }
        async fn export(&self, kind: RecordKind, after: &str, limit: usize) -> Result<Vec<Record>, StoreError> {
            self.inner.export(kind, after, limit).await
        }
        async fn import(&self, records: &[Record]) -> Result<ImportCounts, StoreError> {
            self.inner.import(records).await
        }
    }

    fn manager(store: Arc<dyn Store>, mock: &MockTikTok, clock: &Clock) -> TokenManager {
        let base = url::Url::parse(&mock.base_url()).expect("mock url");
        let cfg = TikTokConfig {
            client_key: DEMO_CLIENT_KEY.into(),
            client_secret: Secret::new(DEMO_CLIENT_SECRET),
            scopes: vec!["user.info.basic".into()],
            pkce: Pkce::Off,
            authorize_url: base.join("/v2/auth/authorize/").expect("url"),
            api_base_url: base,
            timeout: Duration::from_secs(5),
        };
        let metrics = Arc::new(Metrics::new());
        let client = TikTokClient::new(cfg, "http://127.0.0.1/cb".into(), Some(metrics.clone())).expect("client");
        TokenManager::new(
            store,
            client,
            Arc::new(SessionCache::new(100, 60)),
            metrics,
            clock.clone(),
            Duration::from_secs(3600),
        )
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_refresh_decided_before_the_lock_never_redeems_a_rotated_token() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut mcfg = MockConfig::demo(vec![]);
        mcfg.refresh_delay_ms = 300;
        let mock = MockTikTok::start(listener, mcfg).await.expect("mock");
        let dir = tempfile::tempdir().expect("dir");
        let cfg = crate::config::storage_from_url("db", &dir.path().join("t.db").display().to_string()).expect("cfg");
        let keys = crate::crypto::KeyRing::generate().expect("keys");
        let p1_store = crate::store::open(&cfg, keys.clone()).await.expect("store");
        let p2_store = crate::store::open(&cfg, keys).await.expect("store");

        // A signed-in user whose access token is due for refresh (still valid at TikTok).
        let issued = mock.issue_tokens_for_test(DEMO_CLIENT_KEY, DEMO_OPEN_ID, &["user.info.basic"]);
        let clock = Clock::default();
        let now = clock.now();
        let tokens = Tokens {
            access_token: issued.access_token.clone(),
            refresh_token: issued.refresh_token.clone(),
            access_expires_at: now + 60,
            refresh_expires_at: now + 86_400,
            scope: "user.info.basic".into(),
            obtained_at: now + 60 - 7200,
        };
        let profile = Profile {
            open_id: DEMO_OPEN_ID.into(),
            ..Default::default()
        };
        let uid = p1_store
            .complete_login(NewLogin {
                profile: &profile,
                tokens: &tokens,
                session_hash: "h",
                session_expires: now + 3600,
                replaces: None,
                device: None,
                now,
            })
            .await
            .expect("login")
            .user_id;

        let release = Arc::new(tokio::sync::Notify::new());
        let gated: Arc<dyn Store> = Arc::new(Gated {
            inner: p2_store,
            reads: AtomicUsize::new(0),
            armed: AtomicBool::new(false),
            release: release.clone(),
        });
        let p1 = Arc::new(manager(p1_store, &mock, &clock));
        let p2 = Arc::new(manager(gated, &mock, &clock));

        // P2 reads the (due) tokens and stops right before taking the lock.
        let p2_task = {
            let (p2, uid) = (p2.clone(), uid.clone());
            tokio::spawn(async move { p2.access_token(&uid).await })
        };
        // P1 refreshes meanwhile: TikTok rotates the refresh token P2 read.
        let t1 = p1.access_token(&uid).await.expect("P1 refreshes");
        assert_eq!(mock.refresh_calls(), 1);
        // Only now does P2 go on to take the lock.
        release.notify_one();
        let t2 = p2_task.await.expect("join").expect("P2 gets a token");
        assert_eq!(t1, t2, "P2 uses P1's rotated token");
        assert_eq!(
            mock.refresh_calls(),
            1,
            "P2 never redeemed the token it read before the lock"
        );
        assert_eq!(p2.stats().refreshed, 0);
        mock.shutdown();
    }
}
