//! The demo upstream app (what an app behind nini-auth sees) and the `demo` command that
//! wires sidecar + mock TikTok + demo app together on localhost.
//!
//! The demo app renders `/`, `/dashboard` and `/profile` as HTML for browsers and answers
//! every other request (and non-HTML requests) with a JSON echo of what it received, so tests
//! can assert exactly which headers reached the upstream. Started with a static directory
//! ([`serve_app_with_static`]), it also serves `GET /static/<file>` from it (the next-auth/react
//! test page, same-origin with `/api/auth`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use crate::auth::pages::escape;

/// Serves the demo app on `listener` until the returned handle is aborted.
pub async fn serve_app(
    listener: tokio::net::TcpListener,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_app_with_static(listener, None).await
}

/// [`serve_app`], plus `GET`/`HEAD /static/<file>` answered from `static_dir` when given
/// (404 for a missing file; `..` and other non-plain path parts are refused).
pub async fn serve_app_with_static(
    listener: tokio::net::TcpListener,
    static_dir: Option<PathBuf>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let addr = listener.local_addr()?;
    let static_dir = static_dir.map(Arc::new);
    let app = axum::Router::new()
        .route("/ws", axum::routing::get(ws_echo))
        .route("/dashboard/ws", axum::routing::get(ws_echo))
        .fallback(move |req: Request| {
            let static_dir = static_dir.clone();
            async move {
                let get = matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD);
                match (static_dir, req.uri().path().strip_prefix("/static/")) {
                    (Some(dir), Some(rel)) if get => static_file(&dir, rel).await,
                    _ => handle(req).await,
                }
            }
        });
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            log::error!("demo app stopped: {e}");
        }
    });
    Ok((addr, task))
}

/// A WebSocket echo: greets with the user the identity headers name (or `anonymous`), then
/// echoes every text message.
async fn ws_echo(ws: axum::extract::WebSocketUpgrade, headers: HeaderMap) -> Response {
    let user = header(&headers, "x-nini-user-id").unwrap_or("anonymous").to_string();
    ws.on_upgrade(move |mut socket| async move {
        use axum::extract::ws::Message;
        if socket
            .send(Message::Text(format!("hello {user}").into()))
            .await
            .is_err()
        {
            return;
        }
        while let Some(Ok(msg)) = socket.recv().await {
            match msg {
                Message::Text(t) if socket.send(Message::Text(t.clone())).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
    })
}

/// One file below `dir`, by its URL path relative to `/static/` (percent-decoded).
async fn static_file(dir: &Path, rel: &str) -> Response {
    let not_found = || (StatusCode::NOT_FOUND, "not found\n").into_response();
    let Ok(rel) = percent_encoding::percent_decode_str(rel).decode_utf8() else {
        return not_found();
    };
    let rel = Path::new(rel.as_ref());
    if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return not_found();
    }
    let Ok(bytes) = tokio::fs::read(dir.join(rel)).await else {
        return not_found();
    };
    let content_type = match rel.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    };
    (
        StatusCode::OK,
        [
            (axum::http::header::CONTENT_TYPE, content_type),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        bytes,
    )
        .into_response()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// `X-Nini-Display-Name` is UTF-8 percent-encoded; decode it like `decodeURIComponent`.
pub fn display_name(h: &HeaderMap) -> Option<String> {
    header(h, "x-nini-display-name").map(|v| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
}

async fn handle(req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1024 * 1024)
        .await
        .unwrap_or_else(|_| Bytes::new());
    let wants_html = header(&parts.headers, "accept").is_some_and(|a| a.contains("text/html"));
    let path = parts.uri.path();
    if wants_html && matches!(path, "/" | "/dashboard" | "/profile") {
        return Html(page(path, &parts.headers)).into_response();
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &parts.headers {
        headers
            .entry(k.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let echo = json!({
        "method": parts.method.as_str(),
        "path": path,
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    (StatusCode::OK, axum::Json(echo)).into_response()
}

fn page(path: &str, h: &HeaderMap) -> String {
    let user = header(h, "x-nini-user-id");
    let name = display_name(h);
    let avatar = header(h, "x-nini-avatar-url");
    let body = match (path, user) {
        ("/", None) => "<h1>NINI demo</h1><p>You are not signed in.</p>\
             <p><a id=\"go-dashboard\" href=\"/dashboard\">Open your dashboard</a> (it will ask you to sign in)</p>"
            .to_string(),
        ("/", Some(_)) => format!(
            "<h1>NINI demo</h1><p>Signed in as <b>{}</b>.</p><p><a href=\"/dashboard\">Dashboard</a> · \
             <a href=\"/api/auth/signout\">Sign out</a></p>",
            escape(name.as_deref().unwrap_or("?"))
        ),
        (_, Some(uid)) => format!(
            "<h1>Dashboard</h1>{}<p id=\"welcome\">Hola, <b id=\"user-name\">{}</b></p>\
             <table><tr><th>X-Nini-User-Id</th><td id=\"user-id\">{}</td></tr>\
             <tr><th>X-Nini-Tiktok-Open-Id</th><td>{}</td></tr><tr><th>X-Nini-Verified</th><td>{}</td></tr></table>\
             <p>These values came from the identity headers nini-auth injected; this app never saw a token.</p>\
             <p><a href=\"/api/auth/session\">/api/auth/session</a> · <a id=\"signout\" href=\"/api/auth/signout\">Sign out</a></p>",
            avatar
                .map(|a| format!("<img src=\"{}\" width=\"64\" height=\"64\" alt=\"\">", escape(a)))
                .unwrap_or_default(),
            escape(name.as_deref().unwrap_or("")),
            escape(uid),
            escape(header(h, "x-nini-tiktok-open-id").unwrap_or("")),
            escape(header(h, "x-nini-verified").unwrap_or("")),
        ),
        (_, None) => "<h1>Not signed in</h1><p>nini-auth should never let this page through without a session.</p>".to_string(),
    };
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>NINI demo</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:720px;margin:40px auto;padding:0 16px}}\
         th{{text-align:left;padding-right:12px}}img{{border-radius:50%}}</style></head><body>{body}</body></html>"
    )
}

/// The raw config `demo` and the tests use: everything on loopback, secrets generated.
pub fn raw_config(
    listen: SocketAddr,
    mock_base: &str,
    upstream: SocketAddr,
    database: &std::path::Path,
) -> crate::config::RawConfig {
    let mut raw = crate::config::RawConfig::default();
    raw.server.listen = listen.to_string();
    raw.server.public_url = format!("http://{listen}");
    raw.server.shutdown_timeout = "2s".into();
    raw.upstream.url = format!("http://{upstream}");
    raw.tiktok.client_key = crate::mock_tiktok::DEMO_CLIENT_KEY.into();
    raw.tiktok.client_secret = crate::mock_tiktok::DEMO_CLIENT_SECRET.into();
    raw.tiktok.scopes = vec![
        "user.info.basic".into(),
        "user.info.profile".into(),
        "user.info.stats".into(),
        "video.list".into(),
    ];
    raw.tiktok.authorize_url = format!("{mock_base}/v2/auth/authorize/");
    raw.tiktok.api_base_url = mock_base.to_string();
    raw.tiktok.timeout = "5s".into();
    raw.storage.database = database.display().to_string();
    // Several sidecars run side by side in tests; the admin port is opt-in there.
    raw.admin.listen = String::new();
    raw
}

/// `nini-auth demo`: mock TikTok and demo app on ephemeral ports, the sidecar on `listen`,
/// a throw-away database. Blocks until SIGINT/SIGTERM.
pub fn run(listen: SocketAddr) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))?;
    let public = format!("http://{listen}");
    let redirect_uri = format!("{public}{}", crate::config::CALLBACK_PATH);
    let (mock, app_addr) = rt.block_on(async {
        let ml = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let mock = crate::mock_tiktok::MockTikTok::start(ml, crate::mock_tiktok::MockConfig::demo(vec![redirect_uri]))
            .await
            .map_err(|e| e.to_string())?;
        let al = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let (app_addr, _task) = serve_app(al).await.map_err(|e| e.to_string())?;
        Ok::<_, String>((mock, app_addr))
    })?;
    let dir = tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let raw = raw_config(listen, &mock.base_url(), app_addr, &dir.path().join("demo.db"));
    let env = std::collections::HashMap::<String, String>::new();
    let config = crate::config::validate(raw, &env, crate::config::SecretsPolicy::Generate)
        .map_err(|e| format!("demo config invalid:\n{}", e.report()))?;
    let (server, _app) = crate::ops::build(config, crate::ops::Mode::Embedded).map_err(|e| e.to_string())?;
    println!();
    println!("  nini-auth demo is running.");
    println!();
    println!("  Open            {public}/");
    println!("  Protected page  {public}/dashboard   (redirects to sign-in)");
    println!("  Sign-in page    {public}/api/auth/signin");
    println!(
        "  Mock TikTok     {}   (consent page; no TikTok account needed)",
        mock.base_url()
    );
    println!("  Demo app        http://{app_addr}   (the upstream; it only reads identity headers)");
    println!(
        "  Database        {}   (deleted on exit)",
        dir.path().join("demo.db").display()
    );
    println!();
    println!("  Stop with Ctrl-C.");
    println!();
    crate::ops::run(server);
    mock.shutdown();
    drop(rt);
    Ok(())
}
