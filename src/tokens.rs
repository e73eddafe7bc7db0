//! The TikTok token lifecycle: a fresh access token on demand, refreshed when less than the
//! refresh margin remains, with exactly one refresh per user at a time — across tasks (a
//! per-user async lock) and across processes sharing the database (a lease row). The rotated
//! refresh token is stored before it is used; a dead grant is recorded so that every session
//! of the user ends cleanly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::app::App;
use crate::crypto;
use crate::store::{StoreError, Tokens};
use crate::tiktok::TikTokError;

/// After a failed refresh while the current token still works: how long to keep using it
/// before trying TikTok again.
const REFRESH_RETRY_SECS: i64 = 60;

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

/// Outcomes worth counting (tests and, later, metrics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RefreshStats {
    pub refreshed: u64,
    pub failed: u64,
    pub waited: u64,
}

pub struct TokenManager {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    cache: RwLock<HashMap<String, Cached>>,
    /// Identifies this process's leases.
    holder: String,
    margin: Duration,
    /// How long a request waits for someone else's refresh before giving up.
    wait: Duration,
    stats: Mutex<RefreshStats>,
}

impl TokenManager {
    pub fn new(margin: Duration, tiktok_timeout: Duration) -> TokenManager {
        let holder = crypto::random_bytes::<12>()
            .map(|b| crypto::hex(&b))
            .unwrap_or_else(|_| format!("pid-{}", std::process::id()));
        TokenManager {
            locks: Mutex::new(HashMap::new()),
            cache: RwLock::new(HashMap::new()),
            holder,
            margin,
            // A refresh takes at most one TikTok call plus a transaction.
            wait: tiktok_timeout * 2 + Duration::from_secs(2),
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

    fn cached(&self, user_id: &str, now: i64) -> Option<String> {
        let map = self.cache.read().unwrap_or_else(|p| p.into_inner());
        map.get(user_id)
            .filter(|c| now < c.refresh_after)
            .map(|c| c.access_token.clone())
    }

    fn remember(&self, user_id: &str, t: &Tokens) {
        let c = Cached {
            access_token: t.access_token.clone(),
            refresh_after: self.refresh_after(t),
        };
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(user_id.to_string(), c);
    }

    /// Caches `token` until `until` (a retry pause after a failed early refresh).
    fn remember_until(&self, user_id: &str, token: &str, until: i64) {
        let c = Cached {
            access_token: token.to_string(),
            refresh_after: until,
        };
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(user_id.to_string(), c);
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
    pub async fn access_token(&self, app: &App, user_id: &str) -> Result<String, TokenError> {
        let now = app.clock.now();
        if let Some(t) = self.cached(user_id, now) {
            return Ok(t);
        }
        self.refresh_if_due(app, user_id, None).await
    }

    /// After TikTok said `access_token_invalid` for `stale`: refresh now, unless someone else
    /// already replaced that token.
    pub async fn force_refresh(&self, app: &App, user_id: &str, stale: &str) -> Result<String, TokenError> {
        self.forget(user_id);
        self.refresh_if_due(app, user_id, Some(stale)).await
    }

    async fn refresh_if_due(&self, app: &App, user_id: &str, stale: Option<&str>) -> Result<String, TokenError> {
        let lock = self.user_lock(user_id);
        let mut waited = false;
        let _guard = match lock.try_lock() {
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
            let now = app.clock.now();
            let uid = user_id.to_string();
            let Some(tokens) = app.store.run(move |s| s.tokens(&uid)).await? else {
                // Signed out (and revoked) elsewhere, or already marked dead.
                self.grant_dead(app, user_id, "no tokens stored").await?;
                return Err(TokenError::GrantDead);
            };
            let is_stale = stale.is_some_and(|s| crypto::ct_eq(s.as_bytes(), tokens.access_token.as_bytes()));
            if now < self.refresh_after(&tokens) && !is_stale {
                // Fresh: another task or process refreshed while we waited, or it never was due.
                if waited {
                    self.count(|s| s.waited += 1);
                    app.metrics.refresh("waited");
                }
                self.remember(user_id, &tokens);
                return Ok(tokens.access_token);
            }
            if tokens.refresh_expires_at <= now {
                self.grant_dead(app, user_id, "refresh token expired").await?;
                return Err(TokenError::GrantDead);
            }
            let (uid, holder, ttl) = (user_id.to_string(), self.holder.clone(), self.wait.as_secs() as i64 + 1);
            if app.store.run(move |s| s.try_lease(&uid, &holder, now, ttl)).await? {
                return self.redeem(app, user_id, tokens).await;
            }
            // Another process holds the lease: wait for its result (bounded), re-reading the
            // store, which is where its rotated tokens will appear.
            waited = true;
            if tokio::time::Instant::now() >= deadline {
                return Err(TokenError::Busy);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Redeems the refresh token while holding the lease; stores the result before use.
    async fn redeem(&self, app: &App, user_id: &str, old: Tokens) -> Result<String, TokenError> {
        let result = app.tiktok.refresh(&old.refresh_token).await;
        let now = app.clock.now();
        match result {
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
                let (uid, holder, redeemed, to_store) = (
                    user_id.to_string(),
                    self.holder.clone(),
                    old.refresh_token.clone(),
                    new.clone(),
                );
                let written = app
                    .store
                    .run(move |s| s.save_refreshed(&uid, &redeemed, &to_store, &holder, now))
                    .await?;
                if !written {
                    // The stored refresh token changed under us (a stale lease); TikTok has
                    // rotated ours anyway. Use what is stored now.
                    log::warn!("refresh result for user {user_id} lost a race; using the stored tokens");
                    let uid = user_id.to_string();
                    return match app.store.run(move |s| s.tokens(&uid)).await? {
                        Some(t) => {
                            self.remember(user_id, &t);
                            Ok(t.access_token)
                        }
                        None => Err(TokenError::GrantDead),
                    };
                }
                self.count(|s| s.refreshed += 1);
                app.metrics.refresh("ok");
                log::info!("refreshed TikTok access token for user {user_id}");
                self.remember(user_id, &new);
                app.sessions.remove_user(user_id);
                Ok(new.access_token)
            }
            Err(e) => {
                let (uid, holder) = (user_id.to_string(), self.holder.clone());
                let _ = app.store.run(move |s| s.release_lease(&uid, &holder)).await;
                self.count(|s| s.failed += 1);
                if !e.is_invalid_grant() {
                    // A dead grant is counted once, by grant_dead below.
                    app.metrics.refresh("failed");
                    log::warn!("TikTok refresh for user {user_id} failed: {e}");
                    // The refresh was early (inside the margin): while the current token is
                    // still valid, keep using it and try again after a pause, rather than make
                    // every request wait on TikTok and then go without a token.
                    if old.access_expires_at > now + REFRESH_RETRY_SECS {
                        self.remember_until(user_id, &old.access_token, now + REFRESH_RETRY_SECS);
                        return Ok(old.access_token);
                    }
                    return Err(TokenError::TikTok(e));
                }
                // Before declaring the grant dead: another process sharing this database may
                // have rotated the token we just redeemed. Re-read once.
                let uid = user_id.to_string();
                if let Some(t) = app.store.run(move |s| s.tokens(&uid)).await? {
                    if !crypto::ct_eq(t.refresh_token.as_bytes(), old.refresh_token.as_bytes()) {
                        self.remember(user_id, &t);
                        return Ok(t.access_token);
                    }
                }
                self.grant_dead(app, user_id, "refresh token rejected (invalid_grant)")
                    .await?;
                Err(TokenError::GrantDead)
            }
        }
    }

    async fn grant_dead(&self, app: &App, user_id: &str, why: &str) -> Result<(), TokenError> {
        app.metrics.refresh("grant_dead");
        log::info!("TikTok grant of user {user_id} is gone ({why}); their sessions end");
        let (uid, now) = (user_id.to_string(), app.clock.now());
        app.store
            .run(move |s| s.mark_grant_dead(&uid, REFRESH_ERROR, now))
            .await?;
        self.forget(user_id);
        app.sessions.remove_user(user_id);
        Ok(())
    }
}
