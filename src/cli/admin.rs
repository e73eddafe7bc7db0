//! The operator commands, on the database and keys of the given configuration: `users
//! list|show`, `sessions list|revoke`, `keys rotate` and `purge`. Human tables on stdout by
//! default, one JSON document with `--json`. Exit codes follow `cli`: 0 ok, 64 bad config or
//! usage (clap and `cli::load` handle those), 1 failure. No command ever prints a token.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{ArgGroup, Args, Subcommand};
use serde::Serialize;

use crate::config::{Config, Database};
use crate::ops::block_on_fresh;
use crate::store::{AdminSession, AdminUser, RevokeScope, Store, StoreError};

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// List users, newest first: profile, live sessions, whether tokens are stored and under
    /// which key id (never the tokens).
    List {
        /// Show at most N users.
        #[arg(long, value_name = "N", value_parser = positive)]
        limit: Option<usize>,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One user in detail, with their live sessions.
    Show {
        /// Internal user id (`X-Nini-User-Id`) or TikTok open_id.
        #[arg(value_name = "ID_OR_OPEN_ID")]
        user: String,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// Live sessions, newest first (a prefix of the stored hash identifies each).
    List {
        /// Only this user's sessions (internal id or TikTok open_id).
        #[arg(long, value_name = "ID")]
        user: Option<String>,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// End sessions now; running sidecars drop them within a second.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["user", "all"])))]
pub struct RevokeArgs {
    /// Every session of this user (internal id or TikTok open_id).
    #[arg(long, value_name = "ID")]
    user: Option<String>,
    /// Every session of every user.
    #[arg(long)]
    all: bool,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Re-encrypt every stored token under the first key of `secrets.encryption_keys`. Safe
    /// to interrupt and run again. Exits 1 if some value cannot be opened with any key.
    Rotate {
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn users(cfg: &Config, cmd: UsersCommand) -> ExitCode {
    block_on_fresh(users_async(cfg, cmd))
}

async fn users_async(cfg: &Config, cmd: UsersCommand) -> ExitCode {
    let (store, now) = match open(cfg).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    match cmd {
        UsersCommand::List { limit, json } => match store.admin_users(limit, now).await {
            Ok(users) if json => emit_json(&users),
            Ok(users) => emit(&users_table(&users)),
            Err(e) => fail("listing users", &e),
        },
        UsersCommand::Show { user, json } => {
            let u = match find_user(&*store, &user, now).await {
                Ok(u) => u,
                Err(code) => return code,
            };
            let sessions = match store.admin_sessions(Some(&u.id), now).await {
                Ok(s) => s,
                Err(e) => return fail("listing sessions", &e),
            };
            if json {
                emit_json(&Shown {
                    user: &u,
                    sessions: &sessions,
                })
            } else {
                emit(&user_detail(&u, &sessions, store.keys()))
            }
        }
    }
}

pub fn sessions(cfg: &Config, cmd: SessionsCommand) -> ExitCode {
    block_on_fresh(sessions_async(cfg, cmd))
}

async fn sessions_async(cfg: &Config, cmd: SessionsCommand) -> ExitCode {
    let (store, now) = match open(cfg).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    match cmd {
        SessionsCommand::List { user, json } => {
            let user_id = match user {
                Some(u) => match find_user(&*store, &u, now).await {
                    Ok(u) => Some(u.id),
                    Err(code) => return code,
                },
                None => None,
            };
            match store.admin_sessions(user_id.as_deref(), now).await {
                Ok(s) if json => emit_json(&s),
                Ok(s) => emit(&sessions_table(&s, true)),
                Err(e) => fail("listing sessions", &e),
            }
        }
        SessionsCommand::Revoke(args) => {
            let user_id = match &args.user {
                Some(u) => match find_user(&*store, u, now).await {
                    Ok(u) => Some(u.id),
                    Err(code) => return code,
                },
                None => None,
            };
            let scope = match (&user_id, args.all) {
                (Some(id), false) => RevokeScope::User(id),
                (None, true) => RevokeScope::All,
                // clap's required, exclusive group makes this unreachable; still a usage error.
                _ => {
                    eprintln!("give exactly one of --user ID or --all");
                    return ExitCode::from(crate::config::EXIT_CONFIG);
                }
            };
            match store.revoke_sessions(scope, now).await {
                Ok(r) if args.json => emit_json(&RevokedJson {
                    revoked: r.sessions,
                    users: r.users,
                    user_id: user_id.as_deref(),
                }),
                Ok(r) => emit(&format!(
                    "revoked {} session(s) of {} user(s); running sidecars drop them within a second\n",
                    r.sessions, r.users
                )),
                Err(e) => fail("revoking sessions", &e),
            }
        }
    }
}

pub fn keys(cfg: &Config, cmd: KeysCommand) -> ExitCode {
    block_on_fresh(keys_async(cfg, cmd))
}

async fn keys_async(cfg: &Config, cmd: KeysCommand) -> ExitCode {
    let KeysCommand::Rotate { json } = cmd;
    let (store, _) = match open(cfg).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let report = match store.rotate_keys().await {
        Ok(r) => r,
        Err(e) => return fail("rotating keys", &e),
    };
    let printed = if json {
        emit_json(&report)
    } else {
        let mut out = format!(
            "primary key {} (ring: {})\n\n",
            report.primary_key_id,
            store.keys().key_ids().join(", ")
        );
        out.push_str(&table(
            &["ROWS", "RE-ENCRYPTED", "ALREADY CURRENT", "UNREADABLE"],
            &[vec![
                "users".to_string(),
                report.reencrypted.to_string(),
                report.current.to_string(),
                report.unreadable.to_string(),
            ]],
        ));
        if !report.unreadable_user_ids.is_empty() {
            out.push_str(&format!(
                "\nunreadable users: {}\n",
                report.unreadable_user_ids.join(", ")
            ));
        }
        emit(&out)
    };
    if report.unreadable > 0 {
        // Those rows were sealed with a key that is no longer in the ring: put it back (after
        // the new primary) and run again, or let the users sign in again.
        eprintln!(
            "{} row(s) cannot be opened with any configured key and were left unchanged",
            report.unreadable
        );
        return ExitCode::FAILURE;
    }
    printed
}

pub fn purge(cfg: &Config, args: PurgeArgs) -> ExitCode {
    block_on_fresh(purge_async(cfg, args))
}

async fn purge_async(cfg: &Config, args: PurgeArgs) -> ExitCode {
    let (store, now) = match open(cfg).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    match store.purge_expired(now).await {
        Ok(p) if args.json => emit_json(&p),
        Ok(p) => emit(&format!(
            "purged {} expired session(s) and {} expired sign-in state record(s)\n",
            p.sessions, p.states
        )),
        Err(e) => fail("purging", &e),
    }
}

/// `users show --json`: the user, then their live sessions.
#[derive(Serialize)]
struct Shown<'a> {
    user: &'a AdminUser,
    sessions: &'a [AdminSession],
}

/// `sessions revoke --json`.
#[derive(Serialize)]
struct RevokedJson<'a> {
    /// Sessions deleted.
    revoked: usize,
    /// Users whose sessions running sidecars were told to drop.
    users: usize,
    /// The user given with `--user`; null with `--all`.
    user_id: Option<&'a str>,
}

/// `--limit`: a count of at least one (clap turns the error into exit 64).
fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("expected a whole number of at least 1".into()),
    }
}

/// Opens the configured database, refusing to create one: an admin command pointed at a
/// mistyped path should fail, not report an empty new database.
async fn open(cfg: &Config) -> Result<(Arc<dyn Store>, i64), ExitCode> {
    if let Database::Sqlite(path) = &cfg.storage.database {
        if !path.is_file() {
            eprintln!("database {} does not exist", path.display());
            return Err(ExitCode::FAILURE);
        }
    }
    let store = crate::store::open(&cfg.storage, cfg.keys.clone())
        .await
        .map_err(|e| fail("opening the database", &e))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Ok((store, now))
}

async fn find_user(store: &dyn Store, id_or_open_id: &str, now: i64) -> Result<AdminUser, ExitCode> {
    match store.admin_user(id_or_open_id, now).await {
        Ok(Some(u)) => Ok(u),
        Ok(None) => {
            eprintln!("no user with id or open_id {:?}", clean(id_or_open_id));
            Err(ExitCode::FAILURE)
        }
        Err(e) => Err(fail("looking up the user", &e)),
    }
}

/// Prints the error with its causes: `StoreError`'s own message hides the database detail
/// an operator needs (locked, read-only, corrupt, refused).
pub(crate) fn fail(what: &str, e: &StoreError) -> ExitCode {
    eprintln!("{what} failed: {}", crate::auth::error::chain(e));
    ExitCode::FAILURE
}

/// Writes to stdout without panicking on a closed pipe (`... | head`).
fn emit(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cannot write output: {e}");
            ExitCode::FAILURE
        }
    }
}

fn emit_json<T: Serialize + ?Sized>(value: &T) -> ExitCode {
    match serde_json::to_string_pretty(value) {
        Ok(s) => emit(&format!("{s}\n")),
        Err(e) => {
            eprintln!("cannot encode JSON: {e}");
            ExitCode::FAILURE
        }
    }
}

fn users_table(users: &[AdminUser]) -> String {
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            vec![
                u.id.clone(),
                clean(&u.open_id),
                opt(&u.username),
                opt(&u.display_name),
                yes_no(u.verified),
                u.videos.to_string(),
                u.streak.to_string(),
                u.sessions.to_string(),
                tokens_cell(u),
                opt(&u.grant_error),
                ts(u.created_at),
                ts(u.updated_at),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "OPEN_ID",
            "USERNAME",
            "NAME",
            "VERIFIED",
            "VIDEOS",
            "STREAK",
            "SESSIONS",
            "TOKENS",
            "GRANT_ERROR",
            "CREATED",
            "UPDATED",
        ],
        &rows,
    )
}

fn sessions_table(sessions: &[AdminSession], with_user: bool) -> String {
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            let mut row = vec![s.session.clone()];
            if with_user {
                row.extend([s.user_id.clone(), clean(&s.open_id), opt(&s.display_name)]);
            }
            row.extend([ts(s.created_at), ts(s.expires)]);
            row
        })
        .collect();
    let header: &[&str] = if with_user {
        &["SESSION", "USER_ID", "OPEN_ID", "NAME", "CREATED", "EXPIRES"]
    } else {
        &["SESSION", "CREATED", "EXPIRES"]
    };
    table(header, &rows)
}

fn tokens_cell(u: &AdminUser) -> String {
    if u.tokens.present {
        format!("present ({})", u.tokens.key_ids.join(","))
    } else {
        "absent".into()
    }
}

fn user_detail(u: &AdminUser, sessions: &[AdminSession], keys: &crate::crypto::KeyRing) -> String {
    let n = |v: Option<i64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let t = |v: Option<i64>| v.map_or_else(|| "-".to_string(), ts);
    let tokens = if u.tokens.present {
        // Whether this ring can still open them: the question an operator asks before
        // dropping an old key.
        let ids: Vec<String> = u
            .tokens
            .key_ids
            .iter()
            .map(|id| {
                let state = if keys.primary_id() == Some(id.as_str()) {
                    "primary"
                } else if keys.key_ids().contains(id) {
                    "older key in the ring; `keys rotate` re-encrypts"
                } else {
                    "not in the ring: cannot be opened"
                };
                format!("{id} ({state})")
            })
            .collect();
        format!("present, key {}", ids.join(", "))
    } else {
        "absent".to_string()
    };
    let fields: Vec<(&str, String)> = vec![
        ("id", u.id.clone()),
        ("open_id", clean(&u.open_id)),
        ("username", opt(&u.username)),
        ("tiktok username", opt(&u.tiktok_username)),
        ("display name", opt(&u.display_name)),
        ("email", opt(&u.email)),
        ("verified", yes_no(u.verified)),
        (
            "videos",
            format!("{} (TikTok count {})", u.videos, n(u.tiktok_video_count)),
        ),
        ("streak", u.streak.to_string()),
        ("nini score", u.nini_score.to_string()),
        ("earnings", u.earnings.to_string()),
        (
            "followers/following/likes",
            format!("{}/{}/{}", n(u.follower_count), n(u.following_count), n(u.likes_count)),
        ),
        ("bio", opt(&u.bio)),
        ("avatar", opt(&u.avatar)),
        ("tokens", tokens),
        ("access expires", t(u.tokens.access_expires_at)),
        ("refresh expires", t(u.tokens.refresh_expires_at)),
        ("scope", opt(&u.tokens.scope)),
        ("grant error", opt(&u.grant_error)),
        ("created", ts(u.created_at)),
        ("updated", ts(u.updated_at)),
        ("last synced", t(u.last_synced_at)),
    ];
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (k, v) in fields {
        out.push_str(&format!("{:<width$} {v}\n", format!("{k}:")));
    }
    out.push_str(&format!("\nlive sessions: {}\n", sessions.len()));
    if !sessions.is_empty() {
        out.push_str(&sessions_table(sessions, false));
    }
    out
}

/// Left-aligned columns two spaces apart, header first, no trailing spaces.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.push_str(&" ".repeat(w - width(cell) + 2));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Terminal columns a string takes, close enough for TikTok display names: emoji and East
/// Asian wide characters take two, combining marks, joiners and variation selectors none.
/// (An approximation of UAX #11 without a dependency; an odd character only shifts its row.)
fn width(s: &str) -> usize {
    s.chars()
        .map(|c| match u32::from(c) {
            0x0300..=0x036F | 0x200B..=0x200F | 0xFE00..=0xFE0F | 0xE0100..=0xE01EF => 0,
            0x1100..=0x115F
            | 0x2E80..=0x303E
            | 0x3041..=0x33FF
            | 0x3400..=0x4DBF
            | 0x4E00..=0x9FFF
            | 0xA000..=0xA4CF
            | 0xAC00..=0xD7A3
            | 0xF900..=0xFAFF
            | 0xFE30..=0xFE4F
            | 0xFF00..=0xFF60
            | 0xFFE0..=0xFFE6
            | 0x1F300..=0x1F64F
            | 0x1F900..=0x1F9FF
            | 0x20000..=0x3FFFD => 2,
            _ => 1,
        })
        .sum()
}

/// Profile fields come from TikTok: control characters (terminal escapes, newlines) would
/// let a display name rewrite the operator's screen or break the table.
fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '\u{FFFD}' } else { c }).collect()
}

fn opt(v: &Option<String>) -> String {
    match v.as_deref() {
        Some(s) if !s.is_empty() => clean(s),
        _ => "-".into(),
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// UTC, to the second; the raw number if it is out of range.
fn ts(t: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(fmt).ok())
        .unwrap_or_else(|| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_and_has_no_trailing_spaces() {
        let t = table(
            &["A", "LONGER"],
            &[vec!["xyz".into(), "1".into()], vec!["é".into(), "22".into()]],
        );
        assert_eq!(t, "A    LONGER\nxyz  1\né    22\n");
        let t = table(
            &["NAME", "X"],
            &[vec!["Ana 🌮".into(), "1".into()], vec!["李".into(), "2".into()]],
        );
        assert_eq!(t, "NAME    X\nAna 🌮  1\n李      2\n");
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(clean("a\u{1b}[2Jb\nc"), "a\u{FFFD}[2Jb\u{FFFD}c");
        assert_eq!(opt(&Some(String::new())), "-");
    }

    #[test]
    fn timestamps_are_utc() {
        assert_eq!(ts(0), "1970-01-01 00:00:00Z");
        assert_eq!(ts(i64::MAX), i64::MAX.to_string());
    }
}
