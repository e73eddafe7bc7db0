//! The demo app's server: the pages (`pages`) for browsers, their script and style, a
//! WebSocket echo, `/static/*` from a directory when given, and a JSON echo of every other
//! request (what the tests read to see which headers reached the upstream).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

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

pub(super) fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
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
    if let Some(asset) = super::pages::asset(path) {
        return asset;
    }
    if wants_html {
        if let Some(html) = super::pages::page(path, parts.uri.query(), &parts.headers).await {
            return html;
        }
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
