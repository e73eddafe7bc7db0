//! HTTP plumbing of the mock: serving, routing by exact method and path, request recording,
//! fault injection, reply helpers and the `/__mock/*` helper endpoints.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Request, State as AxumState};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use ring::rand::SystemRandom;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::config::MockConfig;
use super::state::{OAuthError, State};
use super::{api, ids, oauth, pages, Endpoint, Fault, RecordedRequest};

/// Far above anything TikTok's endpoints take; keeps a misbehaving client from exhausting memory.
const MAX_BODY: usize = 1024 * 1024;

pub(crate) struct Inner {
    pub addr: SocketAddr,
    pub base_url: String,
    pub rng: SystemRandom,
    clock_offset: AtomicI64,
    state: Mutex<State>,
    log: Mutex<RequestLog>,
    pub shutdown: watch::Sender<bool>,
    pub stopped: watch::Sender<bool>,
}

#[derive(Default)]
struct RequestLog {
    next_seq: u64,
    entries: Vec<RecordedRequest>,
}

/// A poisoned lock only means another handler panicked; the data is still the best we have.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn real_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Inner {
    pub fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub fn now(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    pub fn now_ms(&self) -> i64 {
        real_now_ms() + self.clock_offset.load(Ordering::SeqCst) * 1000
    }

    pub fn advance_clock(&self, secs: i64) {
        self.clock_offset.fetch_add(secs, Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.log).entries.clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.log).entries.clear();
    }

    fn record_start(&self, req: &Req, endpoint: &str) -> u64 {
        let form = if req.content_type_is("application/x-www-form-urlencoded") {
            form_pairs(&req.body)
        } else {
            Vec::new()
        };
        let headers = req
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let time = self.now();
        let mut log = lock(&self.log);
        log.next_seq += 1;
        let seq = log.next_seq;
        log.entries.push(RecordedRequest {
            seq,
            method: req.method.as_str().to_owned(),
            path: req.path.clone(),
            raw_query: req.raw_query.clone(),
            query: req.query.clone(),
            headers,
            body: String::from_utf8_lossy(&req.body).into_owned(),
            form,
            endpoint: endpoint.to_owned(),
            status: 0,
            time,
        });
        seq
    }

    fn record_finish(&self, seq: u64, status: u16) {
        let mut log = lock(&self.log);
        if let Some(entry) = log.entries.iter_mut().rev().find(|e| e.seq == seq) {
            entry.status = status;
        }
    }

    pub fn avatar_url(&self, open_id: &str) -> String {
        format!(
            "{}/__mock/avatar/{}.svg",
            self.base_url,
            ids::encode_query_value(open_id)
        )
    }
}

pub(crate) fn start(listener: tokio::net::TcpListener, config: MockConfig) -> std::io::Result<Arc<Inner>> {
    let addr = listener.local_addr()?;
    // A wildcard bind is reachable on loopback; handing out 0.0.0.0 would break redirects.
    let shown_ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let base_url = format!("http://{}", SocketAddr::new(shown_ip, addr.port()));
    let (shutdown, mut shutdown_rx) = watch::channel(false);
    let (stopped, _) = watch::channel(false);
    let inner = Arc::new(Inner {
        addr,
        base_url,
        rng: SystemRandom::new(),
        clock_offset: AtomicI64::new(0),
        state: Mutex::new(State::new(config)),
        log: Mutex::new(RequestLog::default()),
        shutdown,
        stopped,
    });
    let app = Router::new().fallback(handle).with_state(inner.clone());
    let task_inner = inner.clone();
    tokio::spawn(async move {
        let signal = async move {
            // Err: every sender is gone, so nobody could ask for a shutdown any more.
            let _ = shutdown_rx.wait_for(|stop| *stop).await;
        };
        if let Err(err) = axum::serve(listener, app).with_graceful_shutdown(signal).await {
            log::warn!("mock TikTok server stopped with an error: {err}");
        }
        task_inner.stopped.send_replace(true);
    });
    Ok(inner)
}

/// The parts of a request the handlers look at, with the body already read.
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub raw_query: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub log_id: String,
}

impl Req {
    pub fn query_first(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Compares the media type only, so `; charset=UTF-8` and letter case do not matter.
    pub fn content_type_is(&self, mime: &str) -> bool {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(mime))
    }
}

pub(crate) fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// A response before the common headers are added.
pub(crate) struct Reply {
    pub status: StatusCode,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    headers: Vec<(HeaderName, String)>,
}

impl Reply {
    pub fn json(status: StatusCode, value: &Value) -> Self {
        Self {
            status,
            content_type: Some("application/json; charset=utf-8"),
            body: value.to_string().into_bytes(),
            headers: Vec::new(),
        }
    }

    pub fn html(status: StatusCode, page: String) -> Self {
        Self {
            status,
            content_type: Some("text/html; charset=utf-8"),
            body: page.into_bytes(),
            headers: Vec::new(),
        }
    }

    pub fn bytes(status: StatusCode, content_type: Option<&'static str>, body: Vec<u8>) -> Self {
        Self {
            status,
            content_type,
            body,
            headers: Vec::new(),
        }
    }

    pub fn redirect(location: String) -> Self {
        Self {
            status: StatusCode::FOUND,
            content_type: None,
            body: Vec::new(),
            headers: vec![(header::LOCATION, location)],
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    fn into_response(self, log_id: &str) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        if let Some(ct) = self.content_type {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        for (name, value) in self.headers {
            match HeaderValue::from_str(&value) {
                Ok(v) => {
                    headers.append(name, v);
                }
                Err(_) => {
                    // Only a misconfigured redirect URI (control characters) gets here.
                    let mut broken = Response::new(Body::from("mock: unrepresentable header value"));
                    *broken.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    return with_log_id(broken, log_id);
                }
            }
        }
        with_log_id(response, log_id)
    }
}

fn with_log_id(mut response: Response, log_id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(log_id) {
        response.headers_mut().insert("x-tt-logid", v);
    }
    response
}

/// OAuth endpoints answer errors with the configured status (TikTok has been seen using 200).
pub(crate) fn oauth_error(inner: &Inner, req: &Req, err: &OAuthError) -> Reply {
    let status = inner.state().config.oauth_error_status;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    oauth_error_with_status(status, req, err)
}

fn oauth_error_with_status(status: StatusCode, req: &Req, err: &OAuthError) -> Reply {
    Reply::json(
        status,
        &json!({
            "error": err.error,
            "error_description": err.description,
            "log_id": req.log_id,
        }),
    )
}

/// Display API error envelope `{"error":{code,message,log_id}}` (+ `"data":{}` by knob).
pub(crate) fn api_error(inner: &Inner, req: &Req, status: StatusCode, code: &str, message: &str) -> Reply {
    let include_data = inner.state().config.error_includes_data;
    let error = json!({ "code": code, "message": message, "log_id": req.log_id });
    let body = if include_data {
        json!({ "data": {}, "error": error })
    } else {
        json!({ "error": error })
    };
    Reply::json(status, &body)
}

pub(crate) fn api_ok(req: &Req, data: Value) -> Reply {
    Reply::json(
        StatusCode::OK,
        &json!({
            "data": data,
            "error": { "code": "ok", "message": "", "log_id": req.log_id },
        }),
    )
}

pub(crate) fn rate_limited(inner: &Inner, reply: Reply) -> Reply {
    let retry_after = inner.state().config.retry_after_header;
    let mut reply = reply;
    reply.status = StatusCode::TOO_MANY_REQUESTS;
    if retry_after {
        reply = reply.with_header(header::RETRY_AFTER, "1".to_owned());
    }
    reply
}

pub(crate) const RATE_LIMIT_MESSAGE: &str = "API rate limit exceeded, please retry later.";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    AuthorizePage,
    AuthorizeDecision,
    Token,
    Revoke,
    UserInfo,
    VideoList,
    VideoQuery,
    NotFound,
}

impl Route {
    fn of(method: &Method, path: &str) -> Self {
        match (method.as_str(), path) {
            ("GET", "/v2/auth/authorize/") => Route::AuthorizePage,
            ("POST", "/v2/auth/authorize/") => Route::AuthorizeDecision,
            ("POST", "/v2/oauth/token/") => Route::Token,
            ("POST", "/v2/oauth/revoke/") => Route::Revoke,
            ("GET", "/v2/user/info/") => Route::UserInfo,
            ("POST", "/v2/video/list/") => Route::VideoList,
            ("POST", "/v2/video/query/") => Route::VideoQuery,
            _ => Route::NotFound,
        }
    }

    fn endpoint(self) -> Option<Endpoint> {
        match self {
            Route::AuthorizePage => Some(Endpoint::Authorize),
            Route::Token => Some(Endpoint::Token),
            Route::Revoke => Some(Endpoint::Revoke),
            Route::UserInfo => Some(Endpoint::UserInfo),
            Route::VideoList => Some(Endpoint::VideoList),
            Route::VideoQuery => Some(Endpoint::VideoQuery),
            Route::AuthorizeDecision | Route::NotFound => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Route::AuthorizeDecision => "authorize_decision",
            Route::NotFound => "not_found",
            other => other.endpoint().map(Endpoint::label).unwrap_or("not_found"),
        }
    }
}

async fn handle(AxumState(inner): AxumState<Arc<Inner>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let log_id = ids::log_id(&inner.rng, inner.now());
    let (body, too_large) = match to_bytes(body, MAX_BODY).await {
        Ok(b) => (b, false),
        Err(_) => (Bytes::new(), true),
    };
    let raw_query = parts.uri.query().unwrap_or("").to_owned();
    let req = Req {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: form_pairs(raw_query.as_bytes()),
        raw_query,
        headers: parts.headers,
        body,
        log_id,
    };
    if req.path.starts_with("/__mock/") {
        return with_date(&inner, helper(&inner, &req).into_response(&req.log_id));
    }
    let route = Route::of(&req.method, &req.path);
    let seq = inner.record_start(&req, route.label());
    let reply = if too_large {
        gateway_error(&req, StatusCode::PAYLOAD_TOO_LARGE, "Request body too large")
    } else {
        dispatch(&inner, &req, route).await
    };
    inner.record_finish(seq, reply.status.as_u16());
    with_date(&inner, reply.into_response(&req.log_id))
}

/// TikTok's answers carry TikTok's clock in `Date`; so do the mock's, from the mock clock
/// (hyper would send the machine's), so a clock that [`super::MockTikTok::advance_clock`]
/// moved is as visible to clients as a skewed server clock would be.
fn with_date(inner: &Inner, mut response: Response) -> Response {
    let printed = jiff::Timestamp::from_second(inner.now())
        .ok()
        .and_then(|t| {
            jiff::fmt::rfc2822::DateTimePrinter::new()
                .timestamp_to_rfc9110_string(&t)
                .ok()
        })
        .and_then(|d| HeaderValue::from_str(&d).ok());
    if let Some(v) = printed {
        response.headers_mut().insert(header::DATE, v);
    }
    response
}

async fn dispatch(inner: &Arc<Inner>, req: &Req, route: Route) -> Reply {
    if let Some(endpoint) = route.endpoint() {
        let fault = inner.state().take_fault(endpoint);
        match fault {
            Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
            Some(fault) => return fault_reply(inner, req, endpoint, &fault),
            None => {}
        }
    }
    match route {
        Route::AuthorizePage => oauth::authorize_page(inner, req),
        Route::AuthorizeDecision => oauth::authorize_decision(inner, req),
        Route::Token => oauth::token(inner, req).await,
        Route::Revoke => oauth::revoke(inner, req).await,
        Route::UserInfo => api::user_info(inner, req),
        Route::VideoList => api::video_list(inner, req),
        Route::VideoQuery => api::video_query(inner, req),
        Route::NotFound => gateway_error(
            req,
            StatusCode::NOT_FOUND,
            &format!("Unsupported path(Janus): {} {}", req.method, req.path),
        ),
    }
}

/// What TikTok's API gateway answers for paths and methods it does not route.
fn gateway_error(req: &Req, status: StatusCode, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({
            "error": { "code": "not_found", "message": message, "log_id": req.log_id },
        }),
    )
}

fn fault_reply(inner: &Inner, req: &Req, endpoint: Endpoint, fault: &Fault) -> Reply {
    match (fault, endpoint) {
        (Fault::NonJson502, _) => Reply::html(
            StatusCode::BAD_GATEWAY,
            "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n".to_owned(),
        ),
        (Fault::InternalError, Endpoint::Authorize) => Reply::html(
            StatusCode::INTERNAL_SERVER_ERROR,
            pages::error_page("server_error", "Something went wrong. Please try again later."),
        ),
        (Fault::InternalError, Endpoint::Token | Endpoint::Revoke) => oauth_error_with_status(
            StatusCode::INTERNAL_SERVER_ERROR,
            req,
            &OAuthError::new("server_error", "Internal server error, please retry later."),
        ),
        (Fault::InternalError, _) => api_error(
            inner,
            req,
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Something went wrong. Please try again later.",
        ),
        (Fault::RateLimited, Endpoint::Authorize) => rate_limited(
            inner,
            Reply::html(
                StatusCode::TOO_MANY_REQUESTS,
                pages::error_page("rate_limit_exceeded", "Too many requests. Please try again later."),
            ),
        ),
        (Fault::RateLimited, Endpoint::Token | Endpoint::Revoke) => rate_limited(
            inner,
            oauth_error_with_status(
                StatusCode::TOO_MANY_REQUESTS,
                req,
                &OAuthError::new("temporarily_unavailable", RATE_LIMIT_MESSAGE),
            ),
        ),
        (Fault::RateLimited, _) => rate_limited(
            inner,
            api_error(
                inner,
                req,
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                RATE_LIMIT_MESSAGE,
            ),
        ),
        (Fault::Garbage, _) => Reply::bytes(StatusCode::OK, None, b"\x00\xff\xfe{{not json at all".to_vec()),
        (Fault::Html200, _) => Reply::html(
            StatusCode::OK,
            "<!doctype html><html><body><h1>Welcome to the hotel Wi-Fi</h1></body></html>".to_owned(),
        ),
        (Fault::TruncatedJson, _) => Reply::bytes(
            StatusCode::OK,
            Some("application/json"),
            br#"{"data":{"user":{"open_id":"x","display_na"#.to_vec(),
        ),
        // Handled by the caller before dispatching.
        (Fault::Delay(_), _) => gateway_error(req, StatusCode::INTERNAL_SERVER_ERROR, "delay"),
    }
}

/// `/__mock/*`: tooling helpers, deliberately not recorded so they never disturb assertions.
fn helper(inner: &Inner, req: &Req) -> Reply {
    let path = req.path.as_str();
    match (req.method.as_str(), path) {
        ("GET", "/__mock/requests") => match serde_json::to_value(inner.requests()) {
            Ok(v) => Reply::json(StatusCode::OK, &v),
            Err(e) => gateway_error(req, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        },
        ("POST", "/__mock/reset-log") => {
            inner.clear_requests();
            Reply::json(StatusCode::OK, &json!({}))
        }
        ("GET", _) if svg_name(path, "/__mock/avatar/").is_some() => {
            let raw = svg_name(path, "/__mock/avatar/").unwrap_or_default();
            let open_id = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
            let user = inner.state().config.user(&open_id).cloned();
            match user {
                Some(u) => svg(pages::avatar_svg(&u)),
                None => gateway_error(req, StatusCode::NOT_FOUND, "no such user"),
            }
        }
        ("GET", _) if svg_name(path, "/__mock/cover/").is_some() => {
            let id = svg_name(path, "/__mock/cover/").unwrap_or_default();
            let expires = req.query_first("x-expires").and_then(|v| v.parse::<i64>().ok());
            // Signed CDN links stop working after x-expires; clients must re-fetch the list.
            match expires {
                Some(exp) if exp > inner.now() => svg(pages::cover_svg(id)),
                _ => Reply::bytes(StatusCode::FORBIDDEN, Some("text/plain"), b"Access Denied".to_vec()),
            }
        }
        _ => gateway_error(req, StatusCode::NOT_FOUND, "unknown mock helper"),
    }
}

fn svg(body: String) -> Reply {
    Reply::bytes(StatusCode::OK, Some("image/svg+xml"), body.into_bytes())
}

fn svg_name<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix)?.strip_suffix(".svg")
}
