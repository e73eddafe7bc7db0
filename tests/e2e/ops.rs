//! Running it in production: health, readiness, metrics after a login, JSON logs without
//! secrets, SIGTERM draining an in-flight request, trusted proxies, size limits, upstream
//! failures.

use std::process::Stdio;
use std::sync::Arc;

use crate::support::*;

fn admin_env(r: &mut nini_auth::config::RawConfig, addr: std::net::SocketAddr) {
    r.admin.listen = addr.to_string();
}

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_metrics_funnel() {
    let admin = nini_auth::ops::free_port().expect("port");
    let env = TestEnv::builder().raw(move |r| admin_env(r, admin)).start().await;
    let c = reqwest::Client::new();
    let get = |path: &str| c.get(format!("http://{admin}{path}")).send();

    let h = get("/healthz").await.expect("healthz");
    assert_eq!(h.status(), 200);
    let r = get("/readyz").await.expect("readyz");
    assert_eq!(r.status(), 200);

    // Readiness fails while the database file is unwritable, and recovers.
    use std::os::unix::fs::PermissionsExt;
    let original = std::fs::metadata(&env.raw_db).expect("db").permissions();
    std::fs::set_permissions(&env.raw_db, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    let r = get("/readyz").await.expect("readyz");
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    std::fs::set_permissions(&env.raw_db, original).expect("chmod back");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("read-only"), "{body}");
    assert_eq!(get("/readyz").await.expect("readyz").status(), 200);

    // The admin endpoints are not reachable through the proxy port.
    let through = Browser::api().get(&env.url("/metrics")).await;
    assert!(
        !through.body.contains("nini_auth_"),
        "metrics leaked through the proxy port"
    );

    // A full login and one failed callback show up in the funnel.
    let b = Browser::new();
    assert_eq!(b.login(&env, "/dashboard").await.status, 302);
    let authorize = b.start_signin(&env, "/").await;
    let cb = b.consent(&authorize, "cancel").await;
    assert_eq!(b.get(&cb).await.status, 403);
    assert_eq!(b.get(&env.url("/dashboard")).await.status, 200);
    assert_eq!(Browser::api().get(&env.url("/api/user")).await.status, 401);

    // Request counters are recorded in pingora's logging phase, just after the response has
    // gone out: poll (bounded) until the last request is counted.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let m = loop {
        let m = get("/metrics").await.expect("metrics").text().await.expect("text");
        if m.contains("nini_auth_requests_total{route=\"protected\",status=\"401\"} 1")
            || std::time::Instant::now() > deadline
        {
            break m;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    for needle in [
        "nini_auth_oauth_total{reason=\"\",stage=\"started\"} 2",
        "nini_auth_oauth_total{reason=\"\",stage=\"callback\"} 2",
        "nini_auth_oauth_total{reason=\"\",stage=\"completed\"} 1",
        "nini_auth_oauth_total{reason=\"access_denied\",stage=\"failed\"} 1",
        "nini_auth_requests_total{route=\"protected\",status=\"200\"} 1",
        "nini_auth_requests_total{route=\"protected\",status=\"401\"} 1",
        "nini_auth_tiktok_requests_total{code=\"ok\",endpoint=\"token\"} 1",
        "nini_auth_tiktok_requests_total{code=\"ok\",endpoint=\"user_info\"} 1",
        "nini_auth_upstream_latency_seconds_count{status_class=\"2xx\"}",
        "nini_auth_in_flight_requests 0",
    ] {
        assert!(m.contains(needle), "missing {needle}:\n{m}");
    }
}

/// Spawns the real binary against the test's mock TikTok, with its own database in `dir` and
/// `extra` TOML appended; stderr is piped for the test to read.
fn spawn(env: &TestEnv, dir: &std::path::Path, extra: &str) -> (Kill, std::net::SocketAddr) {
    let config = |listen: std::net::SocketAddr| {
        env.allow_redirect_uri(&format!("http://{listen}{}", nini_auth::config::CALLBACK_PATH));
        format!(
            "[server]\nlisten = \"{listen}\"\npublic_url = \"http://{listen}\"\nshutdown_timeout = \"5s\"\n\
             [tiktok]\nclient_key = \"{}\"\nscopes = [\"user.info.basic\", \"user.info.profile\"]\n\
             authorize_url = \"{}/v2/auth/authorize/\"\napi_base_url = \"{}\"\n\
             [storage]\ndatabase = \"{}\"\n[admin]\nlisten = \"\"\n{extra}",
            nini_auth::mock_tiktok::DEMO_CLIENT_KEY,
            env.mock.base_url(),
            env.mock.base_url(),
            dir.join("bin.db").display()
        )
    };
    let secret = env.keys.join(",");
    let envs = [
        ("NINI_AUTH_SECRET", secret.as_str()),
        ("TIKTOK_CLIENT_SECRET", nini_auth::mock_tiktok::DEMO_CLIENT_SECRET),
        (
            "RUST_LOG",
            "debug,pingora=warn,pingora_core=warn,pingora_proxy=warn,reqwest=info,hyper_util=info,rustls=info",
        ),
    ];
    spawn_binary(dir, "bin", config, &envs, Stdio::piped())
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_parse_and_never_contain_secrets() {
    let env = TestEnv::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let extra = format!(
        "[upstream]\nurl = \"http://{}\"\n[log]\nformat = \"json\"\n",
        env.upstream
    );
    let (mut child, addr) = spawn(&env, dir.path(), &extra);
    let base = format!("http://{addr}");

    // A full login, a session read, an error, a sign-out.
    let b = Browser::new();
    let authorize = b.start_at(&base, "/dashboard").await;
    let cb = b.consent(&authorize, "authorize").await;
    let done = b.get(&cb).await;
    assert_eq!(done.status, 302);
    assert_eq!(b.get(&format!("{base}/dashboard")).await.status, 200);
    let session = b.cookie(session_cookie_name()).expect("session");
    let csrf_cookie = b.cookie("nini-auth.csrf");
    let r = b
        .get(&format!(
            "{base}/api/auth/callback/tiktok?code=leaked-code-value&state=leaked-state-value"
        ))
        .await;
    assert_eq!(r.status, 400);
    let csrf = extract_value(&b.get(&format!("{base}/api/auth/signout")).await.body, "csrfToken").expect("csrf");
    assert_eq!(
        b.post_form(&format!("{base}/api/auth/signout"), &[("csrfToken", &csrf)])
            .await
            .status,
        302
    );

    signal(&child, "-TERM");
    let status = child.wait().expect("wait");
    assert!(status.success());
    let logs = read_stderr(&mut child);

    // Every line is a JSON object with ts/level/target; access lines carry request fields.
    let mut access = 0;
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for k in ["ts", "level", "target"] {
            assert!(v.get(k).is_some(), "{k} missing: {line}");
        }
        if v["target"] == "nini_auth::access" {
            access += 1;
            for k in ["method", "path", "status", "duration_ms", "request_id", "route"] {
                assert!(v.get(k).is_some(), "{k} missing in access line: {line}");
            }
        }
    }
    assert!(access >= 6, "{access} access lines:\n{logs}");

    // Nothing secret, in any form.
    let tokens = env.mock.requests_to("/v2/user/info/");
    let access_token = tokens[0]
        .header("authorization")
        .expect("bearer")
        .trim_start_matches("Bearer ");
    let code = env.mock.requests_to("/v2/oauth/token/")[0]
        .form_param("code")
        .expect("code")
        .to_string();
    let state = url::Url::parse(&authorize)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("state");
    let mut secrets = vec![
        access_token.to_string(),
        code.clone(),
        code.split('*').next().unwrap_or("").to_string(),
        state,
        session.clone(),
        csrf.clone(),
        nini_auth::mock_tiktok::DEMO_CLIENT_SECRET.to_string(),
        "leaked-code-value".into(),
        "leaked-state-value".into(),
        "rft.".into(),
        "act.".into(),
    ];
    secrets.extend(env.keys.iter().cloned());
    if let Some(c) = csrf_cookie {
        secrets.push(c);
    }
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        assert!(!logs.contains(s.as_str()), "secret {s:?} appears in the logs:\n{logs}");
    }
}

/// An upstream whose `/slow` tells the test it has the request, then answers after a delay.
async fn slow_upstream(arrived: Arc<tokio::sync::Notify>) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/slow",
        axum::routing::get(move || {
            let arrived = arrived.clone();
            async move {
                arrived.notify_one();
                tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
                "finished"
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_in_flight_request_finish() {
    let env = TestEnv::start().await;
    let arrived = Arc::new(tokio::sync::Notify::new());
    let upstream = slow_upstream(arrived.clone()).await;
    let dir = tempfile::tempdir().expect("dir");
    let (mut child, addr) = spawn(&env, dir.path(), &format!("[upstream]\nurl = \"http://{upstream}\"\n"));

    let client = reqwest::Client::new();
    let pending = tokio::spawn(async move { client.get(format!("http://{addr}/slow")).send().await });
    // The request is inside the upstream now.
    tokio::time::timeout(std::time::Duration::from_secs(10), arrived.notified())
        .await
        .expect("request reached the upstream");
    signal(&child, "-TERM");
    let resp = pending.await.expect("join").expect("in-flight request completed");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "finished");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "{status:?}");
    // Nothing listens any more.
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarding_headers_only_from_trusted_proxies() {
    let headers = [
        ("X-Forwarded-For", "203.0.113.9"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "app.example.com"),
        ("X_Forwarded_Host", "evil.example"),
    ];
    // Loopback trusted: its claims are passed on (and the peer appended).
    let env = TestEnv::builder()
        .raw(|r| r.server.trusted_proxies = vec!["127.0.0.0/8".into()])
        .start()
        .await;
    let e = Browser::api().echo(&env.url("/public"), &headers).await.json();
    assert_eq!(
        upstream_header(&e, "x-forwarded-for"),
        vec!["203.0.113.9, 127.0.0.1".to_string()]
    );
    assert_eq!(upstream_header(&e, "x-forwarded-proto"), vec!["https".to_string()]);
    assert_eq!(
        upstream_header(&e, "x-forwarded-host"),
        vec!["app.example.com".to_string()]
    );
    assert!(!e.to_string().contains("evil.example"));
    // Garbage from a trusted proxy is not passed on.
    let e = Browser::api()
        .echo(
            &env.url("/public"),
            &[("X-Forwarded-For", "not-an-ip"), ("X-Forwarded-Proto", "gopher")],
        )
        .await
        .json();
    assert_eq!(upstream_header(&e, "x-forwarded-for"), vec!["127.0.0.1".to_string()]);
    assert_eq!(upstream_header(&e, "x-forwarded-proto"), vec!["http".to_string()]);

    // Not trusted: replaced by what the sidecar knows.
    let env = TestEnv::builder()
        .raw(|r| r.server.trusted_proxies = vec!["10.0.0.0/8".into()])
        .start()
        .await;
    let e = Browser::api().echo(&env.url("/public"), &headers).await.json();
    assert_eq!(upstream_header(&e, "x-forwarded-for"), vec!["127.0.0.1".to_string()]);
    assert_eq!(upstream_header(&e, "x-forwarded-proto"), vec!["http".to_string()]);
    let host = upstream_header(&e, "x-forwarded-host");
    assert_eq!(host, vec![env.url("").trim_start_matches("http://").to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_and_timeout_pages() {
    // Port 1 (tcpmux) on loopback: nothing listens there, and unlike a freed ephemeral port
    // no parallel test can take it in the meantime.
    let dead: std::net::SocketAddr = "127.0.0.1:1".parse().expect("addr");
    let env = TestEnv::builder()
        .raw(move |r| {
            r.upstream.url = format!("http://{dead}");
            r.upstream.connect_timeout = "1s".into();
        })
        .start()
        .await;
    let b = Browser::new();
    let r = b.get(&env.url("/public")).await;
    assert_eq!(r.status, 502);
    assert!(r.body.contains("data-error=\"UpstreamUnavailable\""), "{}", r.body);
    // The failed connection is closed: the answer says so, so clients do not reuse it.
    assert_eq!(r.header("connection"), Some("close"));
    let rid = r.header("x-request-id").expect("rid");
    assert!(r.body.contains(rid));
    let es = b.get_with(&env.url("/public"), &[("accept-language", "en")]).await;
    assert!(es.body.contains("lang=\"en\""));
    let api = Browser::api().get(&env.url("/public")).await;
    assert_eq!(api.status, 502);
    assert_eq!(api.json()["error"], "UpstreamUnavailable");

    let arrived = Arc::new(tokio::sync::Notify::new());
    let slow = slow_upstream(arrived).await;
    let env = TestEnv::builder()
        .raw(move |r| {
            r.upstream.url = format!("http://{slow}");
            r.upstream.read_timeout = "500ms".into();
        })
        .start()
        .await;
    let r = Browser::api().get(&env.url("/slow")).await;
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.json()["error"], "UpstreamTimeout");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_and_header_size_limits() {
    let env = TestEnv::builder()
        .raw(|r| r.server.max_request_body = 1000)
        .start()
        .await;
    let api = Browser::api();
    let big = "x".repeat(70 * 1024);
    let r = api.get_with(&env.url("/public"), &[("x-big", &big)]).await;
    assert_eq!(r.status, 431);
    let r = api
        .send(api.client.post(env.url("/public")).body("y".repeat(2000)))
        .await;
    assert_eq!(r.status, 413);
    // Chunked (no Content-Length): counted as it streams.
    let mut body = String::new();
    for _ in 0..4 {
        body.push_str(&format!("{:x}\r\n{}\r\n", 600, "z".repeat(600)));
    }
    body.push_str("0\r\n\r\n");
    let (status, _) = raw_with_body(
        env.sidecar().addr,
        "POST /public HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        &body,
    )
    .await;
    assert_eq!(status, 413);
    // Repeated equal lengths are one length to pingora (`2000, 2000` frames a 2000-byte
    // body), so they are refused up front as well, before the upstream sees a byte.
    let big = "y".repeat(2000);
    for lengths in ["2000, 2000", "2000,2000"] {
        let head =
            format!("POST /public HTTP/1.1\r\nHost: x\r\nContent-Length: {lengths}\r\nConnection: close\r\n\r\n");
        let (status, body) = raw_with_body(env.sidecar().addr, &head, &big).await;
        assert_eq!(status, 413, "{lengths}: {body}");
        assert!(body.contains("payload_too_large"), "refused before forwarding: {body}");
    }
    let head =
        "POST /public HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n";
    let (status, body) = raw_with_body(env.sidecar().addr, head, &big).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");
    // Lengths that disagree or are not numbers frame nothing: 400, nothing forwarded.
    for lengths in ["2, 3", "+2", "2 2", "0x2"] {
        let head =
            format!("POST /public HTTP/1.1\r\nHost: x\r\nContent-Length: {lengths}\r\nConnection: close\r\n\r\n");
        let (status, body) = raw_with_body(env.sidecar().addr, &head, "ok").await;
        assert_eq!(status, 400, "{lengths}: {body}");
    }
    let (status, body) = raw_with_body(
        env.sidecar().addr,
        "POST /public HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\nConnection: close\r\n\r\n",
        "ok",
    )
    .await;
    assert_eq!(status, 200, "equal small lengths pass: {body}");
    // Within limits it passes.
    let r = api.send(api.client.post(env.url("/public")).body("ok")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body"], "ok");
}

async fn raw_with_body(addr: std::net::SocketAddr, head: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write head");
    // The server may answer and close before the whole body is sent.
    let _ = s.write_all(body.as_bytes()).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread")]
async fn websockets_upgrade_for_signed_in_users_only() {
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
    let env = TestEnv::start().await;
    let ws_url = env.url("/dashboard/ws").replacen("http://", "ws://", 1);

    // Without a session: refused before any upgrade (401, protected path).
    let req = ws_url.clone().into_client_request().expect("request");
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("upgrade allowed without a session"),
    }

    let b = Browser::new();
    b.login(&env, "/").await;
    let session = b.cookie(session_cookie_name()).expect("session");
    let mut req = ws_url.into_client_request().expect("request");
    req.headers_mut().insert(
        "cookie",
        format!("{}={session}", session_cookie_name()).parse().expect("header"),
    );
    req.headers_mut()
        .insert("x-nini-user-id", "forged".parse().expect("header"));
    let (mut ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade with a session");
    assert_eq!(resp.status(), 101);
    use futures_util::{SinkExt, StreamExt};
    let text = |m: Option<Result<Message, _>>| match m {
        Some(Ok(Message::Text(t))) => t.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    };
    let hello = text(ws.next().await);
    // The upgrade carried our identity headers, not the client's forged one.
    assert!(
        hello.starts_with("hello ") && !hello.contains("forged") && hello != "hello anonymous",
        "{hello}"
    );
    ws.send(Message::Text("ping through the sidecar".into()))
        .await
        .expect("send");
    assert_eq!(text(ws.next().await), "ping through the sidecar");
    ws.close(None).await.expect("close");
}

/// A log pipe nobody reads (a stuck log shipper) fills up; requests must go on, with the
/// lost lines counted, not wait on stderr.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_log_pipe_never_stops_requests() {
    let env = TestEnv::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let admin = nini_auth::ops::free_port().expect("port");
    let config = |listen: std::net::SocketAddr| {
        format!(
            "[server]\nlisten = \"{listen}\"\npublic_url = \"http://{listen}\"\n\
             [upstream]\nurl = \"http://{}\"\n\
             [tiktok]\nclient_key = \"{}\"\n[storage]\ndatabase = \"{}\"\n\
             [admin]\nlisten = \"{admin}\"\n[log]\nformat = \"json\"\n",
            env.upstream,
            nini_auth::mock_tiktok::DEMO_CLIENT_KEY,
            dir.path().join("log.db").display()
        )
    };
    let secret = env.keys.join(",");
    let envs = [
        ("NINI_AUTH_SECRET", secret.as_str()),
        ("TIKTOK_CLIENT_SECRET", nini_auth::mock_tiktok::DEMO_CLIENT_SECRET),
        ("RUST_LOG", "debug"),
    ];
    // stderr is a pipe that nobody here ever reads: after 64 KiB, every write would block.
    let (mut child, addr) = spawn_binary(dir.path(), "stalled", config, &envs, Stdio::piped());
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    for i in 0..3000 {
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.get(format!("http://{addr}/public/{i}")).send(),
        )
        .await
        .unwrap_or_else(|_| panic!("request {i} hung: the proxy is waiting on its log"))
        .expect("request");
        assert_eq!(r.status().as_u16(), 200);
    }
    eprintln!("3000 requests with a stalled log pipe in {:?}", started.elapsed());
    assert!(child.try_wait().expect("wait").is_none(), "still running");
    let metrics = client
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("nini_auth_log_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the dropped-lines counter");
    assert!(dropped > 0, "lines were lost and counted");
}
