//! What lands on disk: no plaintext token or session id in the database file; a restart
//! keeps sessions; a tampered ciphertext or an unknown key id is refused without a panic.

use crate::support::*;

fn db_bytes(env: &TestEnv) -> String {
    let mut bytes = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let p = format!("{}{suffix}", env.raw_db.display());
        if let Ok(b) = std::fs::read(&p) {
            bytes.extend(b);
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn database_holds_no_plaintext_tokens_and_survives_restart() {
    let mut env = TestEnv::start().await;
    let b = Browser::new();
    assert_eq!(b.login(&env, "/dashboard").await.status, 302);
    let session = b.cookie(session_cookie_name()).expect("session");

    // Tokens the mock issued, as the sidecar received them.
    let tok = env.mock.requests_to("/v2/user/info/");
    let bearer = tok[0]
        .header("authorization")
        .expect("bearer")
        .trim_start_matches("Bearer ")
        .to_string();
    assert!(bearer.starts_with("act."));

    // WAL mode.
    let conn = rusqlite::Connection::open(&env.raw_db).expect("open db");
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).expect("mode");
    assert_eq!(mode, "wal");
    let (access, refresh): (String, String) = conn
        .query_row("SELECT access_token, refresh_token FROM users", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("user row");
    assert!(
        access.starts_with("v2.") && refresh.starts_with("v2."),
        "sealed: {access}"
    );
    let stored_session: String = conn
        .query_row("SELECT session_token FROM sessions", [], |r| r.get(0))
        .expect("session row");
    assert_eq!(stored_session.len(), 64, "sha-256 hex");
    assert_ne!(stored_session, session);
    drop(conn);

    let raw = db_bytes(&env);
    assert!(!raw.contains(&bearer), "access token in plaintext on disk");
    assert!(!raw.contains("rft."), "refresh token in plaintext on disk");
    assert!(!raw.contains(&session), "session token in plaintext on disk");

    // Restart: same database, same keys; the session still works.
    env.restart().await;
    let api = Browser::api();
    api.set_cookie(session_cookie_name(), &session);
    let r = api.echo(&env.url("/api/user"), &[]).await;
    assert_eq!(r.status, 200, "session survives a restart");
    assert_eq!(
        upstream_header(&r.json(), "x-nini-tiktok-open-id"),
        vec![nini_auth::mock_tiktok::DEMO_OPEN_ID.to_string()]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_or_foreign_ciphertext_is_refused_without_panic() {
    let mut env = TestEnv::start().await;
    let b = Browser::new();
    b.login(&env, "/").await;
    let conn = rusqlite::Connection::open(&env.raw_db).expect("open db");
    let access: String = conn
        .query_row("SELECT access_token FROM users", [], |r| r.get(0))
        .expect("row");
    // Flip one character of the ciphertext.
    let mut chars: Vec<char> = access.chars().collect();
    let i = chars.len() - 5;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    conn.execute("UPDATE users SET access_token = ?1", [&tampered])
        .expect("update");
    drop(conn);
    let store = &env.sidecar().auth.store;
    let uid: String = rusqlite::Connection::open(&env.raw_db)
        .expect("db")
        .query_row("SELECT id FROM users", [], |r| r.get(0))
        .expect("id");
    assert!(store.tokens(&uid).await.is_err(), "tampered ciphertext must not open");

    // Sign-out needs the token for revoke: it must still sign out cleanly.
    let csrf = b.csrf(&env).await;
    let r = b
        .post_form(
            &env.url("/api/auth/signout"),
            &[("csrfToken", &csrf), ("callbackUrl", "/")],
        )
        .await;
    assert_eq!(r.status, 302);

    // A different key ring cannot open anything the first one sealed.
    let b2 = Browser::new();
    b2.login(&env, "/").await;
    let other = vec![nini_auth::crypto::generate_key_base64().expect("key")];
    env.restart_with_keys(other).await;
    let uid2: String = rusqlite::Connection::open(&env.raw_db)
        .expect("db")
        .query_row("SELECT id FROM users WHERE access_token IS NOT NULL", [], |r| r.get(0))
        .expect("id");
    let err = env
        .sidecar()
        .auth
        .store
        .tokens(&uid2)
        .await
        .expect_err("unknown key id");
    assert!(err.to_string().contains("cannot be opened"), "{err}");
    // The sidecar keeps serving.
    assert_eq!(Browser::api().get(&env.url("/api/auth/session")).await.status, 200);
}
