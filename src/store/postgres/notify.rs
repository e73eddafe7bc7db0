//! Following invalidations across replicas: a dedicated connection LISTENs for the NOTIFY
//! every invalidation write sends on commit (milliseconds), and a backstop polls the
//! invalidation table every second through the pool, so a lost connection, a restart or a
//! dropped notification costs at most a poll's delay, never a missed invalidation.
//!
//! The backstop cannot follow `seq` in order: a bigserial value is taken at insert time, so
//! a transaction holding seq 10 can commit after one holding seq 11 has been read. It reads
//! by the server's own clock instead: every row created after (the previous successful
//! poll's `clock_timestamp()` minus `SLACK`), skipping seqs already delivered. A row's
//! `created_at` is taken inside its transaction, so unless that transaction stayed open
//! longer than `SLACK`, a row not yet visible at one poll is inside the next poll's window;
//! and after an outage the window still starts at the last poll that succeeded.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_postgres::{AsyncMessage, Notification};

use super::connect::connect_dedicated;
use super::queries::CHANNEL;
use super::sql::{query, query_one};
use crate::store::{Invalidation, StoreError};

/// How often the backstop reads the table.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// How far before the previous poll the backstop looks: longer than any of our write
/// transactions stays open between its insert and its commit.
const SLACK_SECS: f64 = 30.0;
/// Delivered seqs remembered for de-duplication: far more than a window holds in practice.
/// Forgetting one only means delivering it twice, which is harmless.
const SEEN_CAP: usize = 100_000;
/// Reconnect backoff for the LISTEN connection.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Notifications buffered between the connection and the loop.
pub(super) const QUEUE: usize = 4096;

/// Seqs already delivered, bounded (oldest forgotten first).
struct Seen {
    set: HashSet<i64>,
    order: VecDeque<i64>,
}

impl Seen {
    fn new() -> Seen {
        Seen {
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// True when `seq` was not seen before.
    fn insert(&mut self, seq: i64) -> bool {
        if !self.set.insert(seq) {
            return false;
        }
        self.order.push_back(seq);
        if self.order.len() > SEEN_CAP {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// A LISTEN connection: notifications arrive on `rx`; `rx` closing means the connection
/// ended. Dropping it closes the connection.
struct Listener {
    _client: tokio_postgres::Client,
    rx: mpsc::Receiver<Notification>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

async fn listen(pg: &tokio_postgres::Config) -> Result<Listener, StoreError> {
    let (client, mut conn) = connect_dedicated(pg).await?;
    let (tx, rx) = mpsc::channel(QUEUE);
    // The connection only makes progress while polled; this task polls it (which also serves
    // the LISTEN below) and forwards notifications until the connection ends.
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(n).await.is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    log::warn!("invalidation listener connection failed: {}", super::connect::chain(&e));
                    return;
                }
                None => return,
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    Ok(Listener {
        _client: client,
        rx,
        driver,
    })
}

#[derive(serde::Deserialize)]
struct Payload {
    seq: Option<i64>,
    u: Option<String>,
    s: Option<String>,
    /// The writing store's id.
    o: Option<String>,
}

/// What a notification says. Besides our JSON, `u:<user id>`, `s:<session hash>` and `all`
/// are accepted so an operator can invalidate by hand with NOTIFY.
fn parse(payload: &str) -> Option<Parsed> {
    let by_hand = |i| {
        Some(Parsed {
            seq: None,
            origin: None,
            inv: i,
        })
    };
    if payload == "all" {
        return by_hand(Invalidation::EVERYTHING);
    }
    if let Some(user) = payload.strip_prefix("u:") {
        return by_hand(inv(Some(user.to_string()), None));
    }
    if let Some(session) = payload.strip_prefix("s:") {
        return by_hand(inv(None, Some(session.to_string())));
    }
    let p: Payload = serde_json::from_str(payload).ok()?;
    // A row with neither user nor session is "everything"; without a seq it is not ours.
    p.seq.map(|seq| Parsed {
        seq: Some(seq),
        origin: p.o,
        inv: inv(p.u, p.s),
    })
}

/// A notification's content.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    seq: Option<i64>,
    origin: Option<String>,
    inv: Invalidation,
}

fn inv(user_id: Option<String>, session_hash: Option<String>) -> Invalidation {
    Invalidation { user_id, session_hash }
}

/// The server's clock, as unix seconds with microseconds (exact in an f64 for centuries).
async fn server_clock(c: &impl deadpool_postgres::GenericClient) -> Result<f64, StoreError> {
    Ok(
        query_one(c, "SELECT extract(epoch FROM clock_timestamp())::float8", &[])
            .await?
            .try_get(0)?,
    )
}

/// Rows created after `since - SLACK`, in seq order, and the server clock read before them
/// (the next poll's `since`).
async fn read_window(pool: &Pool, since: f64) -> Result<(f64, Vec<(i64, Option<String>, Invalidation)>), StoreError> {
    let c = pool.get().await?;
    let clock = server_clock(&c).await?;
    let rows = query(
        &c,
        "SELECT seq, user_id, session_token, origin FROM nini_auth.invalidations
         WHERE created_at > to_timestamp($1::float8) ORDER BY seq",
        &[&(since - SLACK_SECS)],
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push((r.try_get(0)?, r.try_get(3)?, inv(r.try_get(1)?, r.try_get(2)?)));
    }
    Ok((clock, out))
}

/// The starting point: the server's clock, with what is already in the window marked as
/// delivered (history: another process's cache has long applied it).
async fn starting_point(pool: &Pool, seen: &mut Seen) -> Result<f64, StoreError> {
    let c = pool.get().await?;
    let clock = server_clock(&c).await?;
    let rows = query(
        &c,
        "SELECT seq FROM nini_auth.invalidations WHERE created_at > to_timestamp($1::float8)",
        &[&(clock - SLACK_SECS)],
    )
    .await?;
    for r in rows {
        seen.insert(r.try_get(0)?);
    }
    Ok(clock)
}

/// Resolves when `stop` is (or turns) true, or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            return;
        }
    }
}

async fn next_notification(listener: &mut Option<Listener>) -> Option<Notification> {
    match listener {
        Some(l) => l.rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Runs until `stop` turns true (or `out` is closed), sending each invalidation to `out` once.
/// Like the SQLite backend it starts at "now": what was recorded before it started is not
/// delivered. Failures are logged at warn once per outage, then at debug until recovery.
pub async fn follow(
    pool: Pool,
    pg: tokio_postgres::Config,
    origin: String,
    out: mpsc::Sender<Invalidation>,
    mut stop: watch::Receiver<bool>,
) {
    let mut seen = Seen::new();
    let (mut listen_failing, mut poll_failing) = (false, false);
    // LISTEN before the starting point is read, so nothing committed in between is missed.
    let mut listener = tokio::select! {
        _ = stopped(&mut stop) => return,
        l = listen(&pg) => match l {
            Ok(l) => Some(l),
            Err(e) => {
                log::warn!("cannot listen for cache invalidations (polling meanwhile): {e}");
                listen_failing = true;
                None
            }
        },
    };
    let mut since = loop {
        match starting_point(&pool, &mut seen).await {
            Ok(clock) => break clock,
            Err(e) => log::warn!("cannot read the invalidation log: {e}"),
        }
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tokio::time::sleep(POLL_EVERY) => {}
        }
    };
    let mut backoff = MIN_BACKOFF;
    let mut retry_at = Instant::now();
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => return,
            n = next_notification(&mut listener) => match n {
                Some(n) => match parse(n.payload()) {
                    Some(p) => {
                        let new = p.seq.is_none_or(|seq| seen.insert(seq));
                        let ours = p.origin.as_deref() == Some(origin.as_str());
                        if new && !ours && out.send(p.inv).await.is_err() {
                            return;
                        }
                    }
                    None => log::warn!("ignoring a malformed invalidation notification"),
                },
                None => {
                    log::warn!("invalidation listener disconnected; polling every {POLL_EVERY:?} until it is back");
                    listener = None;
                    listen_failing = true;
                    backoff = MIN_BACKOFF;
                    retry_at = Instant::now() + backoff;
                }
            },
            _ = tokio::time::sleep_until(retry_at), if listener.is_none() => {
                let attempt = tokio::select! {
                    _ = stopped(&mut stop) => return,
                    l = listen(&pg) => l,
                };
                match attempt {
                    Ok(l) => {
                        if std::mem::take(&mut listen_failing) {
                            log::info!("listening for cache invalidations again");
                        }
                        listener = Some(l);
                        backoff = MIN_BACKOFF;
                        // Whatever committed while nobody listened: the next poll, now.
                        tick.reset_immediately();
                    }
                    Err(e) => {
                        if std::mem::replace(&mut listen_failing, true) {
                            log::debug!("cannot listen for cache invalidations, retrying in {backoff:?}: {e}");
                        } else {
                            log::warn!("cannot listen for cache invalidations, retrying in {backoff:?}: {e}");
                        }
                        retry_at = Instant::now() + backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            _ = tick.tick() => {
                let poll = tokio::select! {
                    _ = stopped(&mut stop) => return,
                    p = read_window(&pool, since) => p,
                };
                match poll {
                    Ok((clock, rows)) => {
                        if std::mem::take(&mut poll_failing) {
                            log::info!("reading cache invalidations again");
                        }
                        // Away longer than the log is kept: some invalidations may be gone.
                        if clock - since > (crate::store::INVALIDATION_RETENTION_SECS as f64) - 2.0 * SLACK_SECS {
                            log::warn!("cache invalidations were unreadable for too long; dropping every cached session");
                            if out.send(Invalidation::EVERYTHING).await.is_err() {
                                return;
                            }
                        }
                        for (seq, from, inv) in rows {
                            let ours = from.as_deref() == Some(origin.as_str());
                            if seen.insert(seq) && !ours && out.send(inv).await.is_err() {
                                return;
                            }
                        }
                        since = clock;
                    }
                    // `since` stays at the last successful poll: the window after an outage
                    // reaches back over all of it.
                    Err(e) => {
                        if std::mem::replace(&mut poll_failing, true) {
                            log::debug!("reading cache invalidations failed: {e}");
                        } else {
                            log::warn!("reading cache invalidations failed (retrying every {POLL_EVERY:?}): {e}");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        let p = parse(r#"{"seq":7,"u":"abc","s":null,"o":"me"}"#).expect("json");
        assert_eq!((p.seq, p.origin.as_deref()), (Some(7), Some("me")));
        assert_eq!(p.inv, inv(Some("abc".into()), None));
        let by_hand = |i| {
            Some(Parsed {
                seq: None,
                origin: None,
                inv: i,
            })
        };
        assert_eq!(parse("s:h1"), by_hand(inv(None, Some("h1".into()))));
        assert_eq!(parse("u:x"), by_hand(inv(Some("x".into()), None)));
        assert_eq!(parse("garbage"), None);
        assert_eq!(parse(r#"{"u":"x"}"#), None, "not ours without a seq");
        assert_eq!(parse(r#"{"seq":1}"#).map(|p| p.inv), Some(Invalidation::EVERYTHING));
        assert_eq!(parse("all"), by_hand(Invalidation::EVERYTHING));
    }

    #[test]
    fn seen_is_bounded() {
        let mut s = Seen::new();
        for i in 0..(SEEN_CAP as i64 + 10) {
            assert!(s.insert(i));
        }
        assert!(!s.insert(SEEN_CAP as i64 + 5));
        assert!(s.insert(0), "the oldest was forgotten");
        assert!(s.set.len() <= SEEN_CAP);
    }
}
