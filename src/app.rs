//! Shared state of a running sidecar (`App`): validated config, store, TikTok client, cookie
//! names, protected routes, the clock, the token manager, and the in-memory session cache
//! that keeps the hot path free of database writes and network calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use url::Url;

use crate::config::Config;
use crate::cookies::CookieNames;
use crate::crypto;
use crate::metrics::Metrics;
use crate::paths::ProtectedRoutes;
use crate::store::{Identity, Store, StoreError};
use crate::tiktok::{TikTokClient, TikTokError};
use crate::tokens::TokenManager;

/// Wall clock in unix seconds, with an offset tests can advance to expire states and
/// sessions without sleeping.
#[derive(Debug, Default)]
pub struct Clock {
    offset: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> i64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        real + self.offset.load(Ordering::Relaxed)
    }

    pub fn advance(&self, secs: i64) {
        self.offset.fetch_add(secs, Ordering::Relaxed);
    }
}

/// Live sessions by SHA-256 of the cookie token. Entries are immutable snapshots; a change
/// (sign-out, profile sync) removes them and the next request reloads from the store.
#[derive(Debug)]
pub struct SessionCache {
    entries: RwLock<HashMap<[u8; 32], Arc<Identity>>>,
    capacity: usize,
    /// Bumped by every removal: a lookup that read the store before a removal must not
    /// insert what it read afterwards (it may be the very session just signed out).
    generation: std::sync::atomic::AtomicU64,
}

impl SessionCache {
    pub fn new(capacity: usize) -> SessionCache {
        SessionCache {
            entries: RwLock::new(HashMap::new()),
            capacity: capacity.max(1),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn get(&self, key: &[u8; 32]) -> Option<Arc<Identity>> {
        let map = self.entries.read().unwrap_or_else(|p| p.into_inner());
        map.get(key).cloned()
    }

    pub fn insert(&self, key: [u8; 32], id: Arc<Identity>, now: i64) {
        let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
        self.put(&mut map, key, id, now);
    }

    fn put(&self, map: &mut HashMap<[u8; 32], Arc<Identity>>, key: [u8; 32], id: Arc<Identity>, now: i64) {
        if map.len() >= self.capacity {
            // Expired entries go first; if that is not enough, start over. A cold cache only
            // costs one indexed read per session, while unbounded growth is a DoS vector.
            map.retain(|_, v| v.session_expires > now);
            if map.len() >= self.capacity {
                map.clear();
            }
        }
        map.insert(key, id);
    }

    pub fn remove(&self, key: &[u8; 32]) {
        let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        map.remove(key);
    }

    pub fn remove_user(&self, user_id: &str) {
        let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        map.retain(|_, v| v.user_id != user_id);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Inserts unless a removal happened since `seen` (see `generation`). Removals bump the
    /// generation while holding the write lock, so checking it under that lock is exact.
    pub fn insert_if_unchanged(&self, key: [u8; 32], id: Arc<Identity>, now: i64, seen: u64) {
        let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::SeqCst) == seen {
            self.put(&mut map, key, id, now);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// When each user was last seen on the proxy (memory only: the hot path never writes to the
/// database). The background sync uses it to pick recently active users.
#[derive(Debug, Default)]
pub struct Activity {
    last_seen: RwLock<HashMap<String, i64>>,
}

impl Activity {
    pub fn seen(&self, user_id: &str, now: i64) {
        // Most requests find a recent timestamp under the read lock and stop there.
        if let Some(t) = self.last_seen.read().unwrap_or_else(|p| p.into_inner()).get(user_id) {
            if now - *t < 60 {
                return;
            }
        }
        let mut map = self.last_seen.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= 1_000_000 {
            map.clear();
        }
        map.insert(user_id.to_string(), now);
    }

    /// Users seen at or after `since`, most recent first.
    pub fn active_since(&self, since: i64) -> Vec<String> {
        let map = self.last_seen.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<(&String, &i64)> = map.iter().filter(|(_, t)| **t >= since).collect();
        v.sort_by(|a, b| b.1.cmp(a.1));
        v.into_iter().map(|(u, _)| u.clone()).collect()
    }
}

/// Counts events per client address in fixed one-minute windows (sign-in starts): starting a
/// sign-in needs no session and writes a row, so one address must not be able to fill the
/// table for everyone.
#[derive(Debug)]
pub struct IpLimiter {
    per_minute: u32,
    windows: std::sync::Mutex<HashMap<std::net::IpAddr, (i64, u32)>>,
}

impl IpLimiter {
    pub fn new(per_minute: u32) -> IpLimiter {
        IpLimiter {
            per_minute,
            windows: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Counts one event for `ip` at `now`; false when over the limit this minute.
    pub fn allow(&self, ip: std::net::IpAddr, now: i64) -> bool {
        let minute = now.div_euclid(60);
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if w.len() > 100_000 {
            w.retain(|_, (m, _)| *m == minute);
        }
        let entry = w.entry(ip).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 += 1;
        entry.1 <= self.per_minute
    }
}

pub struct App {
    pub config: Config,
    /// The public origin as a URL (`https://app.example.com/`), for redirects.
    pub origin: Url,
    pub store: Store,
    pub tiktok: TikTokClient,
    pub cookies: CookieNames,
    pub protected: ProtectedRoutes,
    pub sessions: SessionCache,
    pub tokens: TokenManager,
    pub activity: Activity,
    pub metrics: Arc<Metrics>,
    pub identity_jwt: crate::jwt::IdentitySigner,
    /// Sign-in starts per client address.
    pub start_limiter: IpLimiter,
    /// Sync rate limiters and the users being synced now.
    pub sync: crate::sync::SyncState,
    pub clock: Clock,
    /// `sync.path` in the canonical matching form (lowercase).
    pub sync_path: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot build the TikTok HTTP client")]
    TikTok(#[from] TikTokError),
}

impl App {
    pub fn new(config: Config) -> Result<App, StartError> {
        let store = Store::open(&config.database, config.keys.clone())?;
        let metrics = Arc::new(Metrics::new());
        let tiktok = TikTokClient::new(config.tiktok.clone(), config.redirect_uri(), Some(metrics.clone()))?;
        let mut origin = config.public_url.clone();
        origin.set_path("/");
        Ok(App {
            cookies: CookieNames::new(config.secure_cookies()),
            protected: ProtectedRoutes::new(&config.protected),
            sessions: SessionCache::new(100_000),
            tokens: TokenManager::new(config.refresh_margin, config.tiktok.timeout),
            activity: Activity::default(),
            identity_jwt: crate::jwt::IdentitySigner::new(&config),
            sync: crate::sync::SyncState::new(&config.sync),
            start_limiter: IpLimiter::new(START_LIMIT_PER_MINUTE),
            metrics,
            sync_path: config.sync.path.to_ascii_lowercase(),
            clock: Clock::default(),
            origin,
            store,
            tiktok,
            config,
        })
    }

    /// `origin + path` as an absolute URL string; `path` starts with '/'.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.config.origin(), path)
    }

    /// The identity behind a session cookie value. The hot path: decode, hash, cache hit.
    /// A miss reads the store once (never writes) and fills the cache.
    pub async fn identity(&self, cookie_value: &str) -> Option<Arc<Identity>> {
        let token = crypto::decode_token(cookie_value)?;
        let key = crypto::sha256(&token);
        let now = self.clock.now();
        if let Some(id) = self.sessions.get(&key) {
            if id.session_expires > now {
                return Some(id);
            }
            self.sessions.remove(&key);
            return None;
        }
        let hash = crypto::hex(&key);
        let seen = self.sessions.generation();
        match self.store.run(move |s| s.session_identity(&hash, now)).await {
            Ok(Some(id)) => {
                let id = Arc::new(id);
                self.sessions.insert_if_unchanged(key, id.clone(), now, seen);
                Some(id)
            }
            Ok(None) => None,
            Err(e) => {
                log::error!("session lookup failed: {e}");
                None
            }
        }
    }
}

impl App {
    /// Applies invalidations other processes (and this one) recorded in the store since
    /// `after`; returns the newest sequence number seen.
    pub async fn apply_invalidations(&self, after: i64) -> i64 {
        let rows = match self.store.run(move |s| s.invalidations_since(after)).await {
            Ok(r) => r,
            Err(e) => {
                log::warn!("reading cache invalidations failed: {e}");
                return after;
            }
        };
        let mut last = after;
        for (seq, user, session) in rows {
            if let Some(u) = user {
                self.sessions.remove_user(&u);
                self.tokens.forget(&u);
            }
            if let Some(key) = session.as_deref().and_then(hex32) {
                self.sessions.remove(&key);
            }
            last = seq;
        }
        last
    }
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Sign-in starts one client address may make per minute (a person needs a handful).
pub const START_LIMIT_PER_MINUTE: u32 = 60;

/// SHA-256 of a session cookie token, as the cache key and (hex) as the stored id.
pub fn session_key(cookie_value: &str) -> Option<[u8; 32]> {
    crypto::decode_token(cookie_value).map(|t| crypto::sha256(&t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(user: &str) -> Arc<Identity> {
        Arc::new(Identity {
            user_id: user.into(),
            open_id: "o".into(),
            display_name: None,
            username: None,
            avatar: None,
            verified: false,
            videos: 0,
            streak: 0,
            nini_score: 0,
            session_expires: 100,
            grant_error: None,
        })
    }

    #[test]
    fn a_lookup_that_raced_a_sign_out_is_not_cached() {
        let c = SessionCache::new(10);
        let seen = c.generation();
        // Sign-out lands while the lookup's database read is in flight.
        c.remove_user("u1");
        c.insert_if_unchanged([1; 32], identity("u1"), 0, seen);
        assert!(c.get(&[1; 32]).is_none());
        let seen = c.generation();
        c.insert_if_unchanged([1; 32], identity("u1"), 0, seen);
        assert!(c.get(&[1; 32]).is_some());
    }

    #[test]
    fn limiter_counts_per_address_and_minute() {
        let l = IpLimiter::new(2);
        let a: std::net::IpAddr = "192.0.2.1".parse().expect("ip");
        let b: std::net::IpAddr = "192.0.2.2".parse().expect("ip");
        assert!(l.allow(a, 0) && l.allow(a, 10));
        assert!(!l.allow(a, 20));
        assert!(l.allow(b, 20));
        assert!(l.allow(a, 60), "a new minute");
    }
}
