//! WebSockets end with their session: sign-out (this device, everywhere), a dead grant,
//! TikTok's deauthorization; and with `server.websocket_max_lifetime`. Frames are not a
//! request body. (The same across replicas: `replicas::websockets_close_on_every_replica`.)
//! Every handshake holds against a fast upstream, an idle socket outlives the upstream read
//! timeout, and an upgrade the upstream refuses is an ordinary answer.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

use crate::support::*;

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket to `base` + `path` (through the sidecar to the demo app's echo) with the
/// session cookie, if any; returns it after the app's greeting.
pub async fn open_ws(base: &str, path: &str, session: Option<&str>) -> Ws {
    let url = format!("{base}{path}").replacen("http://", "ws://", 1);
    let mut req = url.into_client_request().expect("request");
    if let Some(s) = session {
        req.headers_mut().insert(
            "cookie",
            format!("{}={s}", session_cookie_name()).parse().expect("header"),
        );
    }
    let (mut ws, resp) = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(req))
        .await
        .expect("upgrade in time")
        .expect("upgrade");
    assert_eq!(resp.status(), 101);
    match next_text(&mut ws).await {
        Some(t) if t.starts_with("hello ") => {}
        other => panic!("expected the greeting, got {other:?}"),
    }
    ws
}

/// The next text message, or None when the socket ended (closed, reset, or a close frame).
async fn next_text(ws: &mut Ws) -> Option<String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Err(_) => panic!("nothing from the WebSocket within 10 s"),
            Ok(Some(Ok(Message::Text(t)))) => return Some(t.to_string()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(Message::Close(_))) | Some(Err(_)) | None) => return None,
            Ok(Some(Ok(other))) => panic!("unexpected message {other:?}"),
        }
    }
}

/// True when a message sent comes back.
pub async fn echoes(ws: &mut Ws, text: &str) -> bool {
    if ws.send(Message::Text(text.to_string().into())).await.is_err() {
        return false;
    }
    next_text(ws).await.as_deref() == Some(text)
}

/// Waits (at most `limit`) for the sidecar to end the socket; returns how long it took.
pub async fn ended_within(ws: &mut Ws, limit: Duration, what: &str) -> Duration {
    let started = Instant::now();
    match tokio::time::timeout(limit, ws.next()).await {
        Err(_) => panic!("{what}: the WebSocket was still open after {limit:?}"),
        Ok(Some(Ok(Message::Text(t)))) => panic!("{what}: still carrying frames ({t})"),
        Ok(_) => started.elapsed(),
    }
}

/// Polls (bounded) until the sidecar counts `n` open tunnels.
async fn tunnels_open(env: &TestEnv, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = env.sidecar().auth.metrics.tunnels_open.get();
        if now == n {
            return;
        }
        assert!(Instant::now() < deadline, "{now} tunnels open, expected {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn sign_out(env: &TestEnv, b: &Browser, everywhere: bool) {
    let csrf = b.csrf(env).await;
    let mut form = vec![("csrfToken", csrf.as_str())];
    if everywhere {
        form.push(("everywhere", "true"));
    }
    assert_eq!(b.post_form(&env.url("/api/auth/signout"), &form).await.status, 302);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_ends_with_its_session() {
    let env = TestEnv::start().await;
    let base = env.url("");
    let (b1, s1, _) = signed_in(&env).await;
    let (b2, s2, _) = signed_in(&env).await;
    let mut ws1 = open_ws(&base, "/dashboard/ws", Some(&s1)).await;
    let mut ws2 = open_ws(&base, "/dashboard/ws", Some(&s2)).await;
    let mut anon = open_ws(&base, "/ws", None).await;
    tunnels_open(&env, 3).await;
    assert!(echoes(&mut ws1, "one").await);

    // Signing out on device 1 ends device 1's socket, not device 2's nor an anonymous one.
    sign_out(&env, &b1, false).await;
    let t = ended_within(&mut ws1, Duration::from_secs(5), "sign-out").await;
    eprintln!("sign-out ended the WebSocket after {t:?}");
    assert!(echoes(&mut ws2, "two").await, "another device's socket stays");
    assert!(echoes(&mut anon, "anon").await);
    tunnels_open(&env, 2).await;

    // "Sign out everywhere" from device 2 ends every socket of the user.
    let (_b3, s3, _) = signed_in(&env).await;
    let mut ws3 = open_ws(&base, "/dashboard/ws", Some(&s3)).await;
    sign_out(&env, &b2, true).await;
    ended_within(&mut ws2, Duration::from_secs(5), "sign-out everywhere (this device)").await;
    ended_within(&mut ws3, Duration::from_secs(5), "sign-out everywhere (other device)").await;
    assert!(echoes(&mut anon, "still here").await);
    tunnels_open(&env, 1).await;
    let closed = env
        .sidecar()
        .auth
        .metrics
        .tunnels_closed
        .with_label_values(&["session_ended"])
        .get();
    assert_eq!(closed, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_grant_or_deauthorization_ends_websockets() {
    let env = TestEnv::builder().mock(|m| m.access_ttl_s = 7200).start().await;
    let base = env.url("");
    let (b, session, _) = signed_in(&env).await;
    let mut ws = open_ws(&base, "/dashboard/ws", Some(&session)).await;
    // The user removes the app at TikTok; the next token check finds the grant dead.
    env.mock.revoke_user_grants(nini_auth::mock_tiktok::DEMO_OPEN_ID);
    env.mock.advance_clock(3700);
    env.sidecar().auth.clock.advance(3700);
    assert!(echoes(&mut ws, "before the token check").await);
    let s = b.get(&env.url("/api/auth/session")).await.json();
    assert_eq!(s["error"], "RefreshAccessTokenError", "{s}");
    ended_within(&mut ws, Duration::from_secs(5), "dead grant").await;

    // Signed in again; then TikTok's deauthorization webhook arrives.
    assert_eq!(b.login(&env, "/").await.status, 302);
    let session = b.cookie(session_cookie_name()).expect("session");
    let mut ws = open_ws(&base, "/dashboard/ws", Some(&session)).await;
    // Signed at the sidecar's (advanced) time: the webhook checks the timestamp against it.
    assert_eq!(
        deliver_deauthorization(&env.url(""), env.sidecar().auth.clock.now()).await,
        200
    );
    ended_within(&mut ws, Duration::from_secs(5), "deauthorization").await;
    tunnels_open(&env, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_lives_at_most_websocket_max_lifetime() {
    let env = TestEnv::builder()
        .raw(|r| r.server.websocket_max_lifetime = "1s".into())
        .start()
        .await;
    let (_, session, _) = signed_in(&env).await;
    let opened = Instant::now();
    let mut ws = open_ws(&env.url(""), "/dashboard/ws", Some(&session)).await;
    let mut anon = open_ws(&env.url(""), "/ws", None).await;
    assert!(echoes(&mut ws, "within the lifetime").await);
    ended_within(&mut ws, Duration::from_secs(5), "lifetime").await;
    ended_within(&mut anon, Duration::from_secs(5), "lifetime (anonymous)").await;
    assert!(opened.elapsed() >= Duration::from_millis(900), "{:?}", opened.elapsed());
    let m = &env.sidecar().auth.metrics;
    assert_eq!(m.tunnels_closed.with_label_values(&["lifetime"]).get(), 2);
    // The session itself is untouched.
    assert_eq!(api_with(&session).get(&env.url("/api/user")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_frames_are_not_a_request_body() {
    let env = TestEnv::builder()
        .raw(|r| r.server.max_request_body = 1000)
        .start()
        .await;
    let (_, session, _) = signed_in(&env).await;
    let mut ws = open_ws(&env.url(""), "/dashboard/ws", Some(&session)).await;
    // 20 messages of 400 bytes: 8000 bytes through a socket on a 1000-byte body limit.
    for i in 0..20 {
        let msg = format!("{i:03}{}", "x".repeat(397));
        assert!(echoes(&mut ws, &msg).await, "message {i}");
    }
}

/// Sockets opened one after another against an upstream that answers at once (on a pooled
/// connection) all get their
/// greeting. pingora's own proxy loop tore about one in twenty down right after the `101`
/// (cloudflare/pingora#946); `proxy::upgrade` relays upgrades itself.
#[tokio::test(flavor = "multi_thread")]
async fn every_websocket_handshake_holds() {
    let env = TestEnv::start().await;
    let (_, session, _) = signed_in(&env).await;
    let http = reqwest::Client::new();
    for i in 0..150 {
        // A plain request first leaves a pooled upstream connection for the handshake: its
        // `101` then comes back before pingora's loop has taken the request's end.
        let plain = http.get(env.url("/plain")).send().await.expect("plain request");
        assert_eq!(plain.status(), 200);
        let (path, cookie) = if i % 2 == 0 {
            ("/dashboard/ws", Some(session.as_str()))
        } else {
            ("/ws", None)
        };
        let mut ws = open_ws(&env.url(""), path, cookie).await;
        assert!(echoes(&mut ws, &format!("message {i}")).await, "socket {i}");
    }
    assert_eq!(
        env.sidecar()
            .auth
            .metrics
            .tunnels_closed
            .with_label_values(&["session_ended"])
            .get(),
        0
    );
}

/// A WebSocket with no traffic is normal: the upstream read timeout is for answers, not for
/// tunnels (pingora's loop applied it to both).
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_websocket_outlives_the_upstream_read_timeout() {
    let env = TestEnv::builder()
        .raw(|r| r.upstream.read_timeout = "1s".into())
        .start()
        .await;
    let (_, session, _) = signed_in(&env).await;
    let mut ws = open_ws(&env.url(""), "/dashboard/ws", Some(&session)).await;
    // Idle on purpose, past the timeout: the time is the behaviour under test.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(echoes(&mut ws, "still here").await);
}

/// An upgrade request the upstream answers without switching protocols gets that answer,
/// body and all, through the same filters as any request: spoofed identity headers never
/// reach the upstream, the answer carries our request id.
#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_the_upstream_refuses_is_an_ordinary_answer() {
    let env = TestEnv::start().await;
    let resp = reqwest::Client::new()
        .get(env.url("/not-a-socket"))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("x-nini-user-id", "forged")
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    let echo: serde_json::Value = resp.json().await.expect("the app's JSON echo");
    assert_eq!(echo["path"], "/not-a-socket");
    assert!(upstream_header(&echo, "x-nini-user-id").is_empty(), "{echo}");
    assert_eq!(upstream_header(&echo, "upgrade"), vec!["websocket".to_string()]);
}
