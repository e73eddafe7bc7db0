//! The admin CLI as an operator runs it: the real binary on the database of a running
//! sidecar. Users and sessions are listed without token material, revocation reaches the
//! running sidecar within a second, key rotation re-seals every stored token and can be
//! re-run, purge counts what it removes, and bad arguments exit 64.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nini_auth::store::{NewLogin, Profile, Tokens};

use crate::support::*;

/// A config that points at `db`; everything else is left at its defaults, the secrets come
/// from the environment as in production.
fn config(dir: &Path, db: &Path) -> PathBuf {
    write_file(
        dir,
        "admin.toml",
        &format!(
            "[storage]\ndatabase = \"{}\"\n[tiktok]\nclient_key = \"k\"\n",
            db.display()
        ),
    )
}

/// Runs `nini-auth --config CFG ARGS…` with `keys` as `NINI_AUTH_SECRET` (off the async
/// workers: the mock TikTok and the sidecar share them).
async fn admin(cfg: &Path, keys: &[String], args: &[&str]) -> RunOut {
    let cfg = cfg.to_path_buf();
    let keys = keys.join(",");
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || run(&cfg, &keys, &args))
        .await
        .expect("join")
}

/// Runs `nini-auth --config CFG ARGS…` with `keys` as `NINI_AUTH_SECRET`.
fn run(cfg: &Path, keys: &str, args: &[String]) -> RunOut {
    let mut all = vec!["--config", cfg.to_str().expect("path")];
    all.extend(args.iter().map(String::as_str));
    run_binary(&all, &[("NINI_AUTH_SECRET", keys), ("TIKTOK_CLIENT_SECRET", "s")])
}

/// The access token TikTok issued, as the sidecar presented it to the user-info endpoint.
fn issued_access_token(env: &TestEnv) -> String {
    env.mock.requests_to("/v2/user/info/")[0]
        .header("authorization")
        .expect("bearer")
        .trim_start_matches("Bearer ")
        .to_string()
}

fn session_prefix(env: &TestEnv, cookie: &str) -> String {
    let ring = nini_auth::crypto::KeyRing::from_base64(&env.keys).expect("ring");
    let key = ring.session_key(cookie).expect("session cookie verifies");
    nini_auth::crypto::hex(&key)[..12].to_string()
}

fn key_id(key: &str) -> String {
    primary_key_id(&[key.to_string()])
}

fn tokens(tag: &str) -> Tokens {
    Tokens {
        access_token: format!("act.{tag}"),
        refresh_token: format!("rft.{tag}"),
        access_expires_at: 4_000_000_000,
        refresh_expires_at: 4_000_000_000,
        scope: "user.info.basic".into(),
        obtained_at: 1,
    }
}

/// A user written straight into the database with `keys` (as a sidecar holding that ring
/// would have); returns its id.
async fn user_sealed_with(db: &Path, keys: &[&String], open_id: &str, now: i64, session_expires: i64) -> String {
    let ring: Vec<String> = keys.iter().map(|k| (*k).clone()).collect();
    let store = open_sqlite(db, &ring).await;
    let profile = Profile {
        open_id: open_id.into(),
        ..Default::default()
    };
    let session = nini_auth::crypto::sha256_hex(open_id.as_bytes());
    store
        .complete_login(NewLogin {
            profile: &profile,
            tokens: &tokens(open_id),
            session_hash: &session,
            session_expires,
            replaces: None,
            device: None,
            now,
        })
        .await
        .expect("login")
        .user_id
}

/// Every sealed value in the database: (what, sealed).
fn sealed_values(db: &Path) -> Vec<(String, String)> {
    let c = rusqlite::Connection::open(db).expect("open db");
    let mut out = Vec::new();
    let mut st = c
        .prepare("SELECT id, access_token, refresh_token FROM users")
        .expect("prepare");
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })
        .expect("query");
    for row in rows {
        let (id, a, r) = row.expect("row");
        out.extend(a.map(|v| (format!("users.access_token:{id}"), v)));
        out.extend(r.map(|v| (format!("users.refresh_token:{id}"), v)));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn users_and_sessions_are_listed_and_revocation_reaches_the_running_sidecar() {
    let env = TestEnv::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let cfg = config(dir.path(), &env.raw_db);
    let (_b1, s1, uid) = signed_in(&env).await;
    let (_b2, s2, uid2) = signed_in(&env).await;
    assert_eq!(uid, uid2, "one TikTok account, two browsers");
    let access = issued_access_token(&env);
    let kid = key_id(&env.keys[0]);

    // users list --json: the user, counts, where the tokens are, never the tokens.
    let out = admin(&cfg, &env.keys, &["users", "list", "--json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stdout.contains(&access), "access token leaked: {}", out.stdout);
    assert!(!out.stdout.contains("v2."), "sealed value leaked: {}", out.stdout);
    let users = out.json();
    let list = users.as_array().expect("array");
    assert_eq!(list.len(), 1);
    let u = &list[0];
    assert_eq!(u["id"], uid.as_str());
    assert_eq!(u["open_id"], nini_auth::mock_tiktok::DEMO_OPEN_ID);
    assert_eq!(u["sessions"], 2);
    assert_eq!(u["tokens"]["present"], true);
    assert_eq!(u["tokens"]["key_ids"], serde_json::json!([kid]));
    assert!(u["grant_error"].is_null());
    assert!(u["created_at"].as_i64().expect("created_at") > 0);

    // The table: a header, one aligned row.
    let out = admin(&cfg, &env.keys, &["users", "list", "--limit", "5"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(
        lines[0].starts_with("ID ") && lines[0].contains("TOKENS"),
        "{}",
        out.stdout
    );
    assert!(lines[1].starts_with(&uid) && lines[1].contains(&format!("present ({kid})")));
    assert_eq!(
        lines[0].find("OPEN_ID"),
        lines[1].find(nini_auth::mock_tiktok::DEMO_OPEN_ID)
    );
    assert!(!out.stdout.contains(&access));

    // users show, by id and by open_id: the user and both live sessions by hash prefix.
    let out = admin(&cfg, &env.keys, &["users", "show", &uid, "--json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stdout.contains(&access));
    let shown = out.json();
    assert_eq!(shown["user"]["id"], uid.as_str());
    let prefixes: Vec<&str> = shown["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| s["session"].as_str().expect("prefix"))
        .collect();
    let (p1, p2) = (session_prefix(&env, &s1), session_prefix(&env, &s2));
    assert!(
        prefixes.contains(&p1.as_str()) && prefixes.contains(&p2.as_str()),
        "{prefixes:?}"
    );
    let out = admin(
        &cfg,
        &env.keys,
        &["users", "show", nini_auth::mock_tiktok::DEMO_OPEN_ID],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(&uid) && out.stdout.contains("live sessions: 2"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains(&format!("{kid} (primary)")), "{}", out.stdout);
    let out = admin(&cfg, &env.keys, &["users", "show", "nobody"]).await;
    assert_eq!(out.code, 1, "unknown user: {}", out.stdout);

    // sessions list, all and per user.
    let out = admin(&cfg, &env.keys, &["sessions", "list", "--json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json().as_array().expect("array").len(), 2);
    let out = admin(&cfg, &env.keys, &["sessions", "list", "--user", &uid]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("SESSION "), "{}", out.stdout);
    assert!(out.stdout.contains(&p1) && out.stdout.contains(&p2), "{}", out.stdout);

    // Both cookies work (and are now cached by the running sidecar).
    for s in [&s1, &s2] {
        assert_eq!(api_with(s).echo(&env.url("/api/user"), &[]).await.status, 200);
    }
    let out = admin(&cfg, &env.keys, &["sessions", "revoke", "--user", &uid, "--json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["revoked"], 2);
    let revoked_at = Instant::now();
    for s in [&s1, &s2] {
        loop {
            let status = api_with(s).get(&env.url("/api/user")).await.status;
            if status == 401 {
                break;
            }
            assert_eq!(status, 200);
            assert!(
                revoked_at.elapsed() < Duration::from_secs(1),
                "the running sidecar still accepts a revoked session"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    let out = admin(&cfg, &env.keys, &["sessions", "list", "--json"]).await;
    assert_eq!(out.json(), serde_json::json!([]));
    let out = admin(&cfg, &env.keys, &["sessions", "revoke", "--all"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("revoked 0 session(s)"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_rotate_reseals_every_token_and_can_be_rerun() {
    let mut env = TestEnv::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let cfg = config(dir.path(), &env.raw_db);
    let old = env.keys[0].clone();
    let new = nini_auth::crypto::generate_key_base64().expect("key");
    let (new_id, old_id) = (key_id(&new), key_id(&old));
    // A user sealed with the old key, through the real sign-in.
    let (b, _session, uid) = signed_in(&env).await;
    let access = issued_access_token(&env);
    // The documented order: every sidecar gets [new, old] first, so whatever it seals from
    // now on is under the new key and it still opens the old values.
    env.restart_with_keys(vec![new.clone(), old.clone()]).await;
    // A rotation interrupted half-way: one user is already under the new key.
    let now = unix_now();
    let current = user_sealed_with(&env.raw_db, &[&new, &old], "already-current", now, now + 3600).await;
    let before = sealed_values(&env.raw_db);
    assert!(before.iter().any(|(_, v)| v.starts_with(&format!("v2.{old_id}."))));

    let ring = [new.clone(), old.clone()];
    let out = admin(&cfg, &ring, &["keys", "rotate", "--json"]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let r = out.json();
    assert_eq!(r["primary_key_id"], new_id.as_str());
    assert_eq!(
        (&r["reencrypted"], &r["current"], &r["unreadable"]),
        (&serde_json::json!(1), &serde_json::json!(1), &serde_json::json!(0)),
        "{r}"
    );
    let after = sealed_values(&env.raw_db);
    assert_eq!(after.len(), 4, "{after:?}");
    for (what, v) in &after {
        assert!(
            v.starts_with(&format!("v2.{new_id}.")),
            "{what} not under the new key: {v}"
        );
    }
    assert!(!out.stdout.contains(&access));

    // Re-running finds nothing to do.
    let out = admin(&cfg, &ring, &["keys", "rotate"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with(&format!("primary key {new_id}")), "{}", out.stdout);
    let users_line = lines.iter().find(|l| l.starts_with("users")).expect("users row");
    assert_eq!(
        users_line.split_whitespace().collect::<Vec<_>>(),
        ["users", "0", "2", "0"],
        "{}",
        out.stdout
    );
    assert_eq!(sealed_values(&env.raw_db), after, "nothing rewritten");

    // The old key can go: a sidecar holding only the new one opens everything.
    env.restart_with_keys(vec![new.clone()]).await;
    let store = &env.sidecar().auth.store;
    let t = store.tokens(&uid).await.expect("opens").expect("tokens");
    assert_eq!(t.access_token, access);
    assert_eq!(
        store.tokens(&current).await.expect("opens"),
        Some(tokens("already-current"))
    );
    // And sign-out revokes at TikTok with the right token. Session cookies carry a MAC
    // under the key that issued them: a session from before the rotation needs the old key
    // in the ring (docs/operations.md, key rotation) — without it, it would simply end.
    env.restart_with_keys(vec![new.clone(), old.clone()]).await;
    let page = b.get(&env.url("/api/auth/signout")).await;
    let csrf = extract_value(&page.body, "csrfToken").expect("csrf");
    let r = b
        .post_form(
            &env.url("/api/auth/signout"),
            &[("csrfToken", &csrf), ("callbackUrl", "/")],
        )
        .await;
    assert_eq!(r.status, 302, "{}", r.body);
    let revokes = env.mock.requests_to("/v2/oauth/revoke/");
    assert_eq!(
        revokes.last().and_then(|r| r.form_param("token")),
        Some(access.as_str())
    );

    // A row sealed with a key nobody has any more: counted, named, left alone, exit 1.
    let lost = nini_auth::crypto::generate_key_base64().expect("key");
    let orphan = user_sealed_with(&env.raw_db, &[&lost], "orphan", now, now + 3600).await;
    let before = sealed_values(&env.raw_db);
    let out = admin(&cfg, &ring, &["keys", "rotate", "--json"]).await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let r = out.json();
    assert_eq!(r["unreadable"], 1);
    assert_eq!(r["unreadable_user_ids"], serde_json::json!([orphan]));
    assert!(out.stderr.contains("cannot be opened"), "{}", out.stderr);
    assert_eq!(sealed_values(&env.raw_db), before, "unreadable row untouched");
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_counts_expired_sessions_and_used_states() {
    let mut env = TestEnv::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let cfg = config(dir.path(), &env.raw_db);
    let (_b, session, uid) = signed_in(&env).await;
    // The sidecar purges once a minute on its own; stopped, it cannot race with the counts.
    env.stop_sidecar();
    let key = env.keys[0].clone();
    // A session and a used sign-in state that expired long ago.
    user_sealed_with(&env.raw_db, &[&key], "expired", 1000, 2000).await;
    let store = open_sqlite(&env.raw_db, std::slice::from_ref(&key)).await;
    assert!(store.consume_state("old-state", 2000).await.expect("state"));
    drop(store);

    let out = admin(&cfg, &env.keys, &["purge", "--json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json(), serde_json::json!({"sessions": 1, "states": 1}));
    let out = admin(&cfg, &env.keys, &["purge"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("purged 0 expired session(s) and 0 expired sign-in state record(s)"),
        "{}",
        out.stdout
    );
    // The live session survived.
    let out = admin(&cfg, &env.keys, &["sessions", "list", "--json"]).await;
    let live = out.json();
    assert_eq!(live.as_array().map(Vec::len), Some(1), "{live}");
    assert_eq!(live[0]["user_id"], uid.as_str());
    assert_eq!(live[0]["session"], session_prefix(&env, &session).as_str());
}

#[test]
fn bad_arguments_and_config_exit_64_failures_exit_1() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("missing.db");
    let cfg = config(dir.path(), &db);
    let key = nini_auth::crypto::generate_key_base64().expect("key");
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for bad in [
        &["users"][..],
        &["users", "list", "--limit", "0"],
        &["users", "list", "--limit", "many"],
        &["users", "show"],
        &["sessions", "revoke"],
        &["sessions", "revoke", "--user", "x", "--all"],
        &["sessions", "list", "--all"],
        &["keys", "forget"],
        &["purge", "--force"],
    ] {
        let out = run(&cfg, &key, &args(bad));
        assert_eq!(out.code, 64, "{bad:?}: {}", out.stderr);
    }
    // A bad key ring is a configuration problem.
    let out = run(&cfg, "not-a-key", &args(&["users", "list"]));
    assert_eq!(out.code, 64, "{}", out.stderr);
    assert!(out.stderr.contains("secrets.encryption_keys"), "{}", out.stderr);
    // A database that does not exist is a failure, and is not created.
    let out = run(&cfg, &key, &args(&["users", "list"]));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
    assert!(!db.exists());
}
