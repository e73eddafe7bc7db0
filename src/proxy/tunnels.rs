//! Upgraded (WebSocket) connections and the sessions they belong to. Identity is checked at
//! the upgrade only, so a tunnel must be ended from outside when its session ends: every
//! sign-out, revocation, dead grant and deauthorization removes the session from the session
//! cache (in this process directly, in the others through the store's invalidations), and
//! each removal makes the tunnels of that session or user re-read their session. A tunnel
//! also ends when its session expires and, whatever the session, after
//! `server.websocket_max_lifetime`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::conn::Control;
use crate::auth::Auth;
use crate::store::cache::Dropped;
use crate::store::Identity;

/// How often, and how far apart, a re-check the store could not answer is tried again.
const RECHECK_ATTEMPTS: u32 = 4;
const RECHECK_AGAIN: Duration = Duration::from_secs(5);

pub struct Tunnels {
    auth: Arc<Auth>,
    max_lifetime: Duration,
    open: Mutex<HashMap<u64, Tunnel>>,
    next: AtomicU64,
}

struct Tunnel {
    /// The session key and user; None for an anonymous tunnel (a public path).
    session: Option<([u8; 32], String)>,
    control: Arc<Control>,
    /// Stops the lifetime timer when the tunnel ends first.
    ended: Arc<Notify>,
}

/// Why the sidecar ended a tunnel (the `reason` label of `nini_auth_websockets_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    SessionEnded,
    Lifetime,
}

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Reason::SessionEnded => "session_ended",
            Reason::Lifetime => "lifetime",
        }
    }
}

/// What a fresh look at a tunnel's session found.
enum Check {
    /// Still valid, until this (unix seconds).
    Live(i64),
    Ended,
    /// The store could not be asked: keep the tunnel, look again at the next occasion.
    Unknown,
}

impl Tunnels {
    pub fn new(auth: Arc<Auth>) -> Arc<Tunnels> {
        let tunnels = Arc::new(Tunnels {
            max_lifetime: auth.config.ops.websocket_max_lifetime,
            auth,
            open: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        });
        let weak = Arc::downgrade(&tunnels);
        tunnels.auth.sessions.on_drop(Box::new(move |what| {
            if let Some(t) = weak.upgrade() {
                t.dropped(what);
            }
        }));
        tunnels
    }

    /// Tracks an upgraded connection from now on; `close` with the returned id when it ends.
    /// `stale` says the session cache dropped something since the request's session was read
    /// (that removal may have been this very session): it is checked again at once.
    pub fn open(self: &Arc<Self>, session: Option<([u8; 32], &Identity)>, control: Arc<Control>, stale: bool) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let ended = Arc::new(Notify::new());
        let expires = session.map(|(_, i)| i.session_expires);
        let key = session.map(|(k, _)| k);
        self.lock().insert(
            id,
            Tunnel {
                session: session.map(|(k, i)| (k, i.user_id.clone())),
                control,
                ended: ended.clone(),
            },
        );
        self.auth.metrics.tunnels_open.inc();
        let this = self.clone();
        tokio::spawn(async move { this.watch(id, key, expires, ended).await });
        if stale {
            if let Some(k) = key {
                self.recheck(vec![(id, k)]);
            }
        }
        id
    }

    /// The tunnel ended by itself (either side closed it).
    pub fn close(&self, id: u64) {
        if let Some(t) = self.lock().remove(&id) {
            t.ended.notify_one();
            self.auth.metrics.tunnels_open.dec();
        }
    }

    /// Tunnels open now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Tunnel>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the tunnel at its session's expiry or its maximum lifetime, whichever is first.
    /// A session that was extended meanwhile keeps its tunnel until the new expiry.
    async fn watch(self: Arc<Self>, id: u64, key: Option<[u8; 32]>, mut expires: Option<i64>, ended: Arc<Notify>) {
        let cap = Instant::now() + self.max_lifetime;
        loop {
            let until = wake_at(Instant::now(), cap, expires, self.auth.clock.now());
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = ended.notified() => return,
            }
            if Instant::now() >= cap {
                self.kill(id, Reason::Lifetime);
                return;
            }
            let Some(k) = key else {
                continue;
            };
            match self.check(k).await {
                Check::Live(e) => expires = Some(e),
                Check::Ended => {
                    self.kill(id, Reason::Lifetime);
                    return;
                }
                // Look again in a while rather than end a tunnel on a store hiccup.
                Check::Unknown => expires = Some(self.auth.clock.now() + 5),
            }
        }
    }

    /// The session cache dropped something: the tunnels it may concern re-check their session.
    fn dropped(self: &Arc<Self>, what: Dropped<'_>) {
        let affected: Vec<(u64, [u8; 32])> = self
            .lock()
            .iter()
            .filter_map(|(id, t)| {
                let (key, user) = t.session.as_ref()?;
                let hit = match what {
                    Dropped::Session(k) => k == key,
                    Dropped::User(u) => u == user,
                    Dropped::Everything => true,
                };
                hit.then_some((*id, *key))
            })
            .collect();
        if !affected.is_empty() {
            self.recheck(affected);
        }
    }

    fn recheck(self: &Arc<Self>, tunnels: Vec<(u64, [u8; 32])>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = self.clone();
        rt.spawn(async move {
            let mut pending = tunnels;
            // A store that cannot answer is asked again a few times rather than leaving a
            // tunnel whose session may have ended open until the next occasion.
            for attempt in 0..RECHECK_ATTEMPTS {
                if attempt > 0 {
                    tokio::time::sleep(RECHECK_AGAIN).await;
                }
                let mut unknown = Vec::new();
                for (id, key) in pending {
                    match this.check(key).await {
                        Check::Ended => this.kill(id, Reason::SessionEnded),
                        Check::Unknown => unknown.push((id, key)),
                        Check::Live(_) => {}
                    }
                }
                if unknown.is_empty() {
                    return;
                }
                pending = unknown;
            }
        });
    }

    async fn check(&self, key: [u8; 32]) -> Check {
        match self.auth.identity_by_key(key).await {
            Ok(Some(id)) if id.grant_error.is_none() && id.session_expires > self.auth.clock.now() => {
                Check::Live(id.session_expires)
            }
            Ok(_) => Check::Ended,
            Err(e) => {
                log::warn!("cannot re-check a WebSocket's session: {e}");
                Check::Unknown
            }
        }
    }

    fn kill(&self, id: u64, reason: Reason) {
        let Some(t) = self.lock().remove(&id) else {
            return;
        };
        t.control.kill();
        t.ended.notify_one();
        let m = &self.auth.metrics;
        m.tunnels_open.dec();
        m.tunnels_closed.with_label_values(&[reason.label()]).inc();
        let user = t.session.as_ref().map(|(_, u)| u.as_str()).unwrap_or("-");
        log::info!("closed a WebSocket: {} (user {user})", reason.label());
    }
}

/// When a tunnel's watcher next wakes: at the session's expiry (unix seconds, on the
/// sidecar's clock `clock_now`) or at the lifetime cap, whichever is first.
fn wake_at(now: Instant, cap: Instant, expires: Option<i64>, clock_now: i64) -> Instant {
    match expires {
        Some(e) => {
            let left = u64::try_from(e.saturating_sub(clock_now)).unwrap_or(0);
            cap.min(now + Duration::from_secs(left))
        }
        None => cap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tunnel_wakes_at_session_expiry_or_its_cap() {
        let now = Instant::now();
        let cap = now + Duration::from_secs(86_400);
        // The session ends in an hour: that comes first.
        assert_eq!(
            wake_at(now, cap, Some(1_000 + 3_600), 1_000),
            now + Duration::from_secs(3_600)
        );
        // The session outlives the cap.
        assert_eq!(wake_at(now, cap, Some(1_000 + 30 * 86_400), 1_000), cap);
        // Already expired: at once (the watcher then re-reads the session).
        assert_eq!(wake_at(now, cap, Some(900), 1_000), now);
        // No session (a public path): the cap only.
        assert_eq!(wake_at(now, cap, None, 1_000), cap);
    }
}
