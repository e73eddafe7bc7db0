//! The store side of the operator CLI (`nini-auth users|sessions|keys|purge`): read-only views
//! of users and sessions that never decrypt a token, session revocation that tells running
//! sidecars through the invalidation log, and re-sealing every stored token under the primary
//! key in small batches so a rotation can be interrupted and re-run.

use rusqlite::{params, OptionalExtension, Transaction, TransactionBehavior};
use serde::Serialize;

use super::{aad, invalidate, Store, StoreError};
use crate::crypto::{CryptoError, KeyRing};

/// Rows re-sealed per write transaction: small enough that a running sidecar never waits long
/// for the write lock, large enough that a big table is not one fsync per row.
const ROTATE_BATCH: usize = 100;

/// How many hex characters of a session's hash the CLI shows: enough to tell sessions apart,
/// and a prefix of a hash is no credential anyway.
pub const SESSION_PREFIX_LEN: usize = 12;

/// Whether a user has TikTok tokens stored, and under which key ids (never the tokens).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub present: bool,
    /// Distinct key ids of the stored sealed values, access token's first. Two ids mean the
    /// row is mid-rotation; `"?"` stands for a value that does not parse.
    pub key_ids: Vec<String>,
    pub access_expires_at: Option<i64>,
    pub refresh_expires_at: Option<i64>,
    pub scope: Option<String>,
}

/// One user as the operator sees them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdminUser {
    pub id: String,
    pub open_id: String,
    pub username: Option<String>,
    pub tiktok_username: Option<String>,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub avatar: Option<String>,
    pub bio: Option<String>,
    pub verified: bool,
    pub videos: i64,
    pub streak: i64,
    pub nini_score: i64,
    pub earnings: f64,
    pub follower_count: Option<i64>,
    pub following_count: Option<i64>,
    pub likes_count: Option<i64>,
    pub tiktok_video_count: Option<i64>,
    /// Unexpired sessions.
    pub sessions: i64,
    pub tokens: TokenInfo,
    pub grant_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_synced_at: Option<i64>,
}

/// One live session; only a prefix of its hash leaves the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminSession {
    pub session: String,
    pub user_id: String,
    pub open_id: String,
    pub display_name: Option<String>,
    pub created_at: i64,
    pub expires: i64,
}

/// Which sessions `revoke_sessions` ends.
#[derive(Debug, Clone, Copy)]
pub enum RevokeScope<'a> {
    User(&'a str),
    All,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Revoked {
    /// Session rows deleted.
    pub sessions: usize,
    /// Users whose cached sessions running sidecars were told to drop.
    pub users: usize,
}

/// Outcome of re-sealing one table's sealed column(s).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RotateCounts {
    pub reencrypted: usize,
    pub current: usize,
    pub unreadable: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RotateReport {
    pub primary_key_id: String,
    pub users: RotateCounts,
    pub login_states: RotateCounts,
    /// Users whose tokens no key in the ring opens; their rows were left as they are.
    pub unreadable_user_ids: Vec<String>,
}

impl RotateReport {
    pub fn unreadable(&self) -> usize {
        self.users.unreadable + self.login_states.unreadable
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Purged {
    /// Expired sessions and login states found at `now`.
    pub sessions: usize,
    pub login_states: usize,
    /// Rows this purge deleted; less than the two above only when a running sidecar's own
    /// purge removed some of them in between.
    pub removed: usize,
}

const USER_COLUMNS: &str = "u.id, u.tiktok_id, u.username, u.tiktok_username, u.display_name, u.email, u.avatar, u.bio,
     u.verified, u.videos, u.streak, u.nini_score, u.earnings, u.follower_count, u.following_count, u.likes_count,
     u.tiktok_video_count, (SELECT count(*) FROM sessions s WHERE s.user_id = u.id AND s.expires > ?1),
     u.access_token, u.refresh_token, u.token_expires_at, u.refresh_expires_at, u.token_scope, u.grant_error,
     u.created_at, u.updated_at, u.last_synced_at";

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AdminUser> {
    let access: Option<String> = r.get(18)?;
    let refresh: Option<String> = r.get(19)?;
    // Only the key id is read out of a sealed value: listing users never decrypts a token.
    let mut key_ids: Vec<String> = Vec::new();
    for sealed in [&access, &refresh].into_iter().flatten() {
        let id = KeyRing::sealed_key_id(sealed).unwrap_or("?").to_string();
        if !key_ids.contains(&id) {
            key_ids.push(id);
        }
    }
    Ok(AdminUser {
        id: r.get(0)?,
        open_id: r.get(1)?,
        username: r.get(2)?,
        tiktok_username: r.get(3)?,
        display_name: r.get(4)?,
        email: r.get(5)?,
        avatar: r.get(6)?,
        bio: r.get(7)?,
        verified: r.get::<_, i64>(8)? != 0,
        videos: r.get(9)?,
        streak: r.get(10)?,
        nini_score: r.get(11)?,
        earnings: r.get(12)?,
        follower_count: r.get(13)?,
        following_count: r.get(14)?,
        likes_count: r.get(15)?,
        tiktok_video_count: r.get(16)?,
        sessions: r.get(17)?,
        tokens: TokenInfo {
            present: access.is_some() || refresh.is_some(),
            key_ids,
            access_expires_at: r.get(20)?,
            refresh_expires_at: r.get(21)?,
            scope: r.get(22)?,
        },
        grant_error: r.get(23)?,
        created_at: r.get(24)?,
        updated_at: r.get(25)?,
        last_synced_at: r.get(26)?,
    })
}

fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AdminSession> {
    let hash: String = r.get(0)?;
    Ok(AdminSession {
        session: hash.chars().take(SESSION_PREFIX_LEN).collect(),
        user_id: r.get(1)?,
        open_id: r.get(2)?,
        display_name: r.get(3)?,
        created_at: r.get(4)?,
        expires: r.get(5)?,
    })
}

/// Whether a sealed value is already under `primary` (only the id is compared: opening every
/// current value would make a re-run as slow as the first run).
fn is_current(sealed: &str, primary: &str) -> bool {
    KeyRing::sealed_key_id(sealed) == Some(primary)
}

/// Opens with whichever key of the ring the value names and seals again with the primary.
fn reseal(keys: &KeyRing, sealed: &str, aad: &str) -> Result<String, CryptoError> {
    keys.seal(&keys.open(sealed, aad)?, aad)
}

impl Store {
    /// Users, newest first, with their live-session counts; `limit` caps how many.
    pub fn admin_users(&self, limit: Option<usize>, now: i64) -> Result<Vec<AdminUser>, StoreError> {
        // SQLite reads a negative LIMIT as "no limit".
        let limit = limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        self.with_conn(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {USER_COLUMNS} FROM users u ORDER BY u.created_at DESC, u.id LIMIT ?2"
            ))?;
            let rows = st.query_map(params![now, limit], user_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// One user by internal id or TikTok open_id (the id wins if both would match).
    pub fn admin_user(&self, id_or_open_id: &str, now: i64) -> Result<Option<AdminUser>, StoreError> {
        self.with_conn(|c| {
            Ok(c.query_row(
                &format!(
                    "SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?2 OR u.tiktok_id = ?2
                     ORDER BY u.id = ?2 DESC LIMIT 1"
                ),
                params![now, id_or_open_id],
                user_row,
            )
            .optional()?)
        })
    }

    /// Live sessions, newest first, of one user (by internal id) or of everyone.
    pub fn admin_sessions(&self, user_id: Option<&str>, now: i64) -> Result<Vec<AdminSession>, StoreError> {
        self.with_conn(|c| {
            let mut st = c.prepare(
                "SELECT s.session_token, s.user_id, u.tiktok_id, u.display_name, s.created_at, s.expires
                 FROM sessions s JOIN users u ON u.id = s.user_id
                 WHERE s.expires > ?1 AND (?2 IS NULL OR s.user_id = ?2)
                 ORDER BY s.created_at DESC, s.session_token",
            )?;
            let rows = st.query_map(params![now, user_id], session_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Deletes the sessions in `scope` and, in the same transaction, records one invalidation
    /// per affected user: running sidecars poll that log and drop every cached session of
    /// those users, so the revocation reaches them without a restart.
    pub fn revoke_sessions(&self, scope: RevokeScope<'_>, now: i64) -> Result<Revoked, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let users: Vec<String> = match scope {
                // The user is invalidated even with no session rows left: a cache entry can
                // outlive a row someone deleted by hand, and the entry costs nothing.
                RevokeScope::User(id) => vec![id.to_string()],
                RevokeScope::All => {
                    let mut st = tx.prepare("SELECT DISTINCT user_id FROM sessions")?;
                    let rows = st.query_map([], |r| r.get(0))?;
                    rows.collect::<Result<Vec<_>, _>>()?
                }
            };
            let sessions = match scope {
                RevokeScope::User(id) => tx.execute("DELETE FROM sessions WHERE user_id = ?1", params![id])?,
                RevokeScope::All => tx.execute("DELETE FROM sessions", [])?,
            };
            for u in &users {
                invalidate(&tx, Some(u), None, now)?;
            }
            tx.commit()?;
            Ok(Revoked {
                sessions,
                users: users.len(),
            })
        })
    }

    /// Re-seals every stored token (`users.access_token`, `users.refresh_token`,
    /// `login_states.pkce_verifier`) under the ring's primary key. Values already under it are
    /// skipped, so an interrupted run is finished by running again; each batch commits on its
    /// own. A row any of whose values no key opens is counted and left untouched.
    ///
    /// No cache invalidation: the plaintext does not change, so nothing a sidecar cached is
    /// stale. Every sidecar must already hold the new key (anywhere in its ring) to read the
    /// re-sealed rows.
    pub fn rotate_keys(&self) -> Result<RotateReport, StoreError> {
        let primary = self
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
            let (last, done) = self.with_conn(|c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let out = self.rotate_user_batch(&tx, &primary, &after, &mut report)?;
                tx.commit()?;
                Ok(out)
            })?;
            if done {
                break;
            }
            after = last;
        }
        let mut after = String::new();
        loop {
            let (last, done) = self.with_conn(|c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let out = self.rotate_state_batch(&tx, &primary, &after, &mut report.login_states)?;
                tx.commit()?;
                Ok(out)
            })?;
            if done {
                break;
            }
            after = last;
        }
        Ok(report)
    }

    /// Up to `ROTATE_BATCH` users with ids after `after`, read inside the write transaction
    /// so a concurrent token refresh cannot be overwritten with older tokens. Returns the last
    /// id seen and whether the table is exhausted.
    fn rotate_user_batch(
        &self,
        tx: &Transaction<'_>,
        primary: &str,
        after: &str,
        report: &mut RotateReport,
    ) -> Result<(String, bool), StoreError> {
        type Row = (String, Option<String>, Option<String>);
        let rows: Vec<Row> = {
            let mut st = tx.prepare(
                "SELECT id, access_token, refresh_token FROM users
                 WHERE id > ?1 AND (access_token IS NOT NULL OR refresh_token IS NOT NULL)
                 ORDER BY id LIMIT ?2",
            )?;
            let rows = st.query_map(params![after, ROTATE_BATCH as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        let done = rows.len() < ROTATE_BATCH;
        let last = rows.last().map(|r| r.0.clone()).unwrap_or_default();
        for (id, access, refresh) in rows {
            let values = [("access_token", access), ("refresh_token", refresh)];
            if values
                .iter()
                .all(|(_, v)| v.as_deref().is_none_or(|s| is_current(s, primary)))
            {
                report.users.current += 1;
                continue;
            }
            let resealed: Result<Vec<Option<String>>, CryptoError> = values
                .iter()
                .map(|(col, v)| v.as_deref().map(|s| reseal(&self.keys, s, &aad(col, &id))).transpose())
                .collect();
            match resealed {
                Ok(new) => {
                    tx.execute(
                        "UPDATE users SET access_token = ?2, refresh_token = ?3 WHERE id = ?1",
                        params![id, new[0], new[1]],
                    )?;
                    report.users.reencrypted += 1;
                }
                Err(_) => {
                    report.users.unreadable += 1;
                    report.unreadable_user_ids.push(id);
                }
            }
        }
        Ok((last, done))
    }

    /// The `login_states` counterpart of `rotate_user_batch`, keyed by state hash.
    fn rotate_state_batch(
        &self,
        tx: &Transaction<'_>,
        primary: &str,
        after: &str,
        counts: &mut RotateCounts,
    ) -> Result<(String, bool), StoreError> {
        let rows: Vec<(String, String)> = {
            let mut st = tx.prepare(
                "SELECT state_hash, pkce_verifier FROM login_states
                 WHERE state_hash > ?1 AND pkce_verifier IS NOT NULL
                 ORDER BY state_hash LIMIT ?2",
            )?;
            let rows = st.query_map(params![after, ROTATE_BATCH as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        let done = rows.len() < ROTATE_BATCH;
        let last = rows.last().map(|r| r.0.clone()).unwrap_or_default();
        for (hash, sealed) in rows {
            if is_current(&sealed, primary) {
                counts.current += 1;
                continue;
            }
            match reseal(
                &self.keys,
                &sealed,
                &format!("nini-auth:login_states.pkce_verifier:{hash}"),
            ) {
                Ok(new) => {
                    tx.execute(
                        "UPDATE login_states SET pkce_verifier = ?2 WHERE state_hash = ?1",
                        params![hash, new],
                    )?;
                    counts.reencrypted += 1;
                }
                // A pending sign-in expires within minutes; it is only counted.
                Err(_) => counts.unreadable += 1,
            }
        }
        Ok((last, done))
    }

    /// How many sessions and login states are expired at `now`, then `purge_expired(now)`.
    pub fn admin_purge(&self, now: i64) -> Result<Purged, StoreError> {
        let (sessions, login_states) = self.with_conn(|c| {
            let count = |table: &str| -> Result<usize, StoreError> {
                let n: i64 = c.query_row(
                    &format!("SELECT count(*) FROM {table} WHERE expires <= ?1"),
                    params![now],
                    |r| r.get(0),
                )?;
                Ok(usize::try_from(n).unwrap_or(0))
            };
            Ok((count("sessions")?, count("login_states")?))
        })?;
        let removed = self.purge_expired(now)?;
        Ok(Purged {
            sessions,
            login_states,
            removed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LoginState, Profile, Tokens};

    fn tokens(n: u32) -> Tokens {
        Tokens {
            access_token: format!("act.access{n}"),
            refresh_token: format!("rft.refresh{n}"),
            access_expires_at: 1000,
            refresh_expires_at: 2000,
            scope: "user.info.basic".into(),
            obtained_at: 10,
        }
    }

    fn login(s: &Store, open_id: &str, session: &str) -> String {
        let p = Profile {
            open_id: open_id.into(),
            display_name: Some(format!("name {open_id}")),
            ..Default::default()
        };
        s.complete_login(&p, &tokens(1), session, 500, None, 10)
            .expect("login")
            .user_id
    }

    fn key() -> String {
        crate::crypto::generate_key_base64().expect("key")
    }

    fn ring(keys: &[&String]) -> KeyRing {
        KeyRing::from_base64(&keys.iter().map(|k| (*k).clone()).collect::<Vec<_>>()).expect("ring")
    }

    #[test]
    fn rotation_reseals_skips_current_and_reports_unreadable() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("t.db");
        let (old, new, lost) = (key(), key(), key());
        let a = login(&Store::open(&path, ring(&[&old])).expect("open"), "a", "ha");
        let b = login(&Store::open(&path, ring(&[&new])).expect("open"), "b", "hb");
        let c = login(&Store::open(&path, ring(&[&lost])).expect("open"), "c", "hc");
        let st = LoginState {
            browser_hash: "br".into(),
            pkce_verifier: Some("verifier".into()),
            callback_url: "/".into(),
            expires: 999,
        };
        Store::open(&path, ring(&[&old]))
            .expect("open")
            .insert_login_state("sh", &st, 1)
            .expect("state");

        let s = Store::open(&path, ring(&[&new, &old])).expect("open");
        let r = s.rotate_keys().expect("rotate");
        assert_eq!((r.users.reencrypted, r.users.current, r.users.unreadable), (1, 1, 1));
        assert_eq!(r.unreadable_user_ids, vec![c.clone()]);
        assert_eq!(r.login_states.reencrypted, 1);

        let only_new = Store::open(&path, ring(&[&new])).expect("open");
        assert_eq!(only_new.tokens(&a).expect("a"), Some(tokens(1)));
        assert_eq!(only_new.tokens(&b).expect("b"), Some(tokens(1)));
        let got = only_new.take_login_state("sh").expect("take").expect("state");
        assert_eq!(got.pkce_verifier.as_deref(), Some("verifier"));

        let again = s.rotate_keys().expect("rotate");
        assert_eq!((again.users.reencrypted, again.users.current), (0, 2));
        assert_eq!(again.users.unreadable, 1, "unreadable rows are left alone");
    }

    #[test]
    fn rotation_walks_more_than_one_batch() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("t.db");
        let (old, new) = (key(), key());
        let s = Store::open(&path, ring(&[&old])).expect("open");
        for i in 0..(ROTATE_BATCH + 5) {
            login(&s, &format!("open-{i}"), &format!("h{i}"));
        }
        let r = Store::open(&path, ring(&[&new, &old]))
            .expect("open")
            .rotate_keys()
            .expect("rotate");
        assert_eq!(r.users.reencrypted, ROTATE_BATCH + 5);
    }

    #[test]
    fn revoke_records_invalidations_and_lists_never_show_tokens() {
        let dir = tempfile::tempdir().expect("dir");
        let s = Store::open(&dir.path().join("t.db"), KeyRing::generate()).expect("open");
        let a = login(&s, "a", "ha");
        login(&s, "b", "hb");
        let users = s.admin_users(None, 20).expect("users");
        assert_eq!(users.len(), 2);
        let dump = format!("{users:?}");
        assert!(!dump.contains("act.access1") && !dump.contains("v1."), "{dump}");
        assert_eq!(s.admin_user("a", 20).expect("q").map(|u| u.id), Some(a.clone()));
        assert_eq!(s.admin_sessions(Some(&a), 20).expect("q").len(), 1);

        let head = s.invalidation_head().expect("head");
        let r = s.revoke_sessions(RevokeScope::User(&a), 20).expect("revoke");
        assert_eq!(r, Revoked { sessions: 1, users: 1 });
        let inv = s.invalidations_since(head).expect("inv");
        assert_eq!(inv.len(), 1);
        assert_eq!(inv[0].1.as_deref(), Some(a.as_str()));
        assert_eq!(s.revoke_sessions(RevokeScope::All, 20).expect("all").sessions, 1);
        assert!(s.admin_sessions(None, 20).expect("q").is_empty());
    }
}
