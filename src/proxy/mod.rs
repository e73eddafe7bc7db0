//! The pingora `ProxyHttp` implementation. `request_filter` reads as the request flow, top
//! to bottom: request id → forwarding info from trusted proxies → strip spoofable headers →
//! limits → canonical path → own endpoints → session → protected-route decision. Decisions
//! are small functions elsewhere; this file only moves bytes between pingora and them.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use serde_json::json;

pub mod conn;
pub mod forwarded;
pub mod paths;
pub mod tunnels;
pub mod upgrade;

use crate::auth::{self, headers, pages, Auth};
use crate::config::LogFormat;
use crate::crypto;
use crate::store::{Identity, StoreError};
use crate::tiktok::tokens::TokenError;
use crate::web::{self, Reply};
use forwarded::Forwarded;

pub struct AuthProxy {
    pub auth: Arc<Auth>,
    protected: paths::ProtectedRoutes,
    /// `sync.path` in the canonical matching form (lowercase).
    sync_path: String,
    strip: headers::StripPolicy,
    peer: HttpPeer,
    /// For our HTML pages. `form-action` must allow TikTok's origin: the sign-in form posts
    /// here and is redirected there, and browsers apply the directive to that redirect.
    csp: String,
    /// `Strict-Transport-Security` value when the public URL is https.
    hsts: Option<String>,
    /// Upgraded connections by session.
    pub tunnels: Arc<tunnels::Tunnels>,
    upgrades: upgrade::Upgrades,
    /// pingora's own keep-alive read timeout: just above ours (`proxy::conn` decides),
    /// None when keep-alive is off.
    keepalive: Option<u64>,
    /// `X-Forwarded-Proto` and `X-Forwarded-Host` from `public_url`, made once.
    public_proto: http::HeaderValue,
    public_host: Option<http::HeaderValue>,
}

/// Total size of request header names and values we accept (431 beyond).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Per-request facts.
pub struct Ctx {
    request_id: String,
    /// `request_id` as a header value, made once for the upstream request and the answer.
    request_id_header: Option<http::HeaderValue>,
    identity: Option<Arc<Identity>>,
    /// Only with `upstream.forward_access_token`.
    access_token: Option<String>,
    /// What a trusted proxy in front of us said about the client (None otherwise).
    forwarded: Option<Forwarded>,
    /// Route class for metrics: auth, sync, protected, public, rejected.
    route: &'static str,
    started: Instant,
    upstream_started: Option<Instant>,
    body_bytes: u64,
    status: u16,
    counted: bool,
    /// The connection the request came on (see `conn::Control`).
    conn: Option<Arc<conn::Control>>,
    /// The session key that matched the request's cookie.
    session_key: Option<[u8; 32]>,
    /// The session cache's generation when the session was read (see `Tunnels::open`).
    cache_generation: u64,
    /// Set when the request became an upgraded tunnel.
    tunnel: Option<u64>,
}

impl AuthProxy {
    pub fn new(auth: Arc<Auth>) -> AuthProxy {
        let app = &auth;
        let up = &app.config.upstream;
        let mut peer = HttpPeer::new(up.addr, up.tls, up.sni.clone());
        peer.options.connection_timeout = Some(up.connect_timeout);
        peer.options.read_timeout = Some(up.read_timeout);
        let csp = format!(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data: https:; \
             form-action 'self' {}; frame-ancestors 'none'; base-uri 'none'",
            app.config.tiktok.authorize_url.origin().ascii_serialization()
        );
        let hsts = app
            .config
            .ops
            .hsts_max_age
            .map(|d| format!("max-age={}; includeSubDomains", d.as_secs()));
        let ops = &auth.config.ops;
        let keepalive =
            (!ops.keepalive_timeout.is_zero()).then(|| ops.keepalive_timeout.max(ops.header_timeout).as_secs() + 1);
        let public = &auth.config.public_url;
        let public_proto =
            http::HeaderValue::from_str(public.scheme()).unwrap_or(http::HeaderValue::from_static("http"));
        let public_host = public
            .host_str()
            .map(|h| match public.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            })
            .and_then(|h| http::HeaderValue::try_from(h).ok());
        AuthProxy {
            public_proto,
            public_host,
            tunnels: tunnels::Tunnels::new(auth.clone()),
            upgrades: upgrade::Upgrades::new(),
            keepalive,
            protected: paths::ProtectedRoutes::new(&auth.config.protected),
            sync_path: auth.config.sync.path.to_ascii_lowercase(),
            strip: headers::StripPolicy::new(&auth.config.strip_also),
            auth,
            peer,
            csp,
            hsts,
        }
    }
}

/// Takes the client's `X-Request-Id` when it is short and plain, otherwise makes one.
pub fn request_id(incoming: Option<&str>) -> String {
    match incoming {
        Some(v)
            if !v.is_empty()
                && v.len() <= 64
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            v.to_string()
        }
        _ => fresh_request_id(),
    }
}

/// 96 bits as 24 hex characters, with no system call per request: a SplitMix64 stream per
/// thread, seeded once from the OS. Request ids correlate log lines; they are not secrets
/// (a client may send its own) and need only be unique in practice.
fn fresh_request_id() -> String {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            crypto::random_bytes::<8>().map(u64::from_le_bytes).unwrap_or_else(|_| {
                // No OS randomness: the time and a per-thread address keep ids apart.
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0);
                let local = 0u8;
                t ^ ((&local as *const u8 as u64) << 16)
            }),
        );
    }
    fn next(state: &Cell<u64>) -> u64 {
        let mut z = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    let (a, b) = STATE.with(|s| (next(s), next(s)));
    let mut id = String::with_capacity(24);
    for nibble in (0..16)
        .rev()
        .map(|i| (a >> (i * 4)) & 0xf)
        .chain((0..8).rev().map(|i| (b >> (i * 4)) & 0xf))
    {
        id.push(char::from(b"0123456789abcdef"[nibble as usize]));
    }
    id
}

/// Removes every header an upstream could read as identity or as forwarding information,
/// whatever its case or `_`/`-` spelling.
fn strip_spoofable(req: &mut RequestHeader, policy: &headers::StripPolicy) {
    if !req.headers.keys().any(|k| policy.must_strip(k.as_str())) {
        return;
    }
    let names: Vec<String> = req
        .headers
        .keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| policy.must_strip(k))
        .collect();
    for n in names {
        // remove_header drops every value of the name, and pingora's case map with it.
        while req.remove_header(n.as_str()).is_some() {}
    }
}

/// What an unauthenticated request to a protected path gets: browsers go to sign-in with
/// the path they wanted, API clients get 401 JSON.
pub fn unauthenticated(auth: &Auth, navigation: bool, path_and_query: &str) -> Reply {
    if navigation {
        let target = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("callbackUrl", path_and_query)
            .finish();
        Reply::redirect(&auth.url(&format!("{}/signin?{target}", auth::BASE)))
    } else {
        Reply::json(401, &json!({ "error": "unauthorized" })).header("WWW-Authenticate", "Cookie".into())
    }
}

/// The database did not answer while resolving a session: 503, never "signed out".
fn unavailable_reply(navigation: bool, request_id: &str, lang: pages::Lang, e: &StoreError) -> Reply {
    log::error!(
        "session lookup failed: {} request_id={request_id}",
        auth::error::chain(e)
    );
    let reply = if navigation {
        Reply::html(503, pages::error(lang, "Unavailable", request_id, "/", "/"))
    } else {
        Reply::json(503, &json!({ "error": "Unavailable", "requestId": request_id }))
    };
    reply.header("Retry-After", "5".into()).no_store()
}

/// The language of our own pages for this request (only computed when a page is written).
fn lang_of(req: &RequestHeader) -> pages::Lang {
    pages::negotiate(None, req.headers.get("accept-language").and_then(|v| v.to_str().ok()))
}

fn bad_path_reply(navigation: bool, request_id: &str, lang: pages::Lang) -> Reply {
    if navigation {
        Reply::html(400, pages::error(lang, "BadRequest", request_id, "/", "/"))
    } else {
        Reply::json(400, &json!({ "error": "bad_request", "requestId": request_id }))
    }
}

/// Size limits checked before anything else reads the request: total header bytes (431) and
/// a declared body larger than `server.max_request_body` (413).
pub fn limits_exceeded(req: &RequestHeader, max_body: u64, request_id: &str) -> Option<Reply> {
    let header_bytes: usize = req.headers.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Some(Reply::json(
            431,
            &json!({ "error": "headers_too_large", "requestId": request_id }),
        ));
    }
    let declared = match declared_length(&req.headers) {
        Ok(n) => n,
        Err(AmbiguousLength) => {
            return Some(Reply::json(
                400,
                &json!({ "error": "bad_content_length", "requestId": request_id }),
            ))
        }
    };
    if declared.is_some_and(|n| n > max_body) {
        return Some(Reply::json(
            413,
            &json!({ "error": "payload_too_large", "requestId": request_id }),
        ));
    }
    None
}

/// `Content-Length` values that disagree or are not numbers: no framing can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmbiguousLength;

/// The body length a request declares, reconciled the way pingora frames it (hyper's rule):
/// every `Content-Length` line and every comma-separated value in them must be digits and
/// equal (`150, 150` is 150). Judging it any other way would let a body pingora accepts slip
/// past the 413 as "no length". `Err` when values disagree or one is not a number: pingora
/// refuses such a request too, so answering 400 first changes nothing for honest clients.
pub fn declared_length(headers: &http::HeaderMap) -> Result<Option<u64>, AmbiguousLength> {
    let mut length = None;
    for value in headers.get_all(http::header::CONTENT_LENGTH) {
        let line = value.to_str().map_err(|_| AmbiguousLength)?;
        for v in line.split(',') {
            let v = v.trim();
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(AmbiguousLength);
            }
            let n: u64 = v.parse().map_err(|_| AmbiguousLength)?;
            match length {
                Some(prev) if prev != n => return Err(AmbiguousLength),
                _ => length = Some(n),
            }
        }
    }
    Ok(length)
}

/// The socket-free view of a request for the sidecar's own endpoints.
fn web_request(
    session: &Session,
    ctx: &Ctx,
    trusted: &[crate::config::Cidr],
    path: String,
    query: Option<String>,
    body: Bytes,
) -> web::Request {
    let h = session.req_header();
    web::Request {
        method: h.method.clone(),
        path,
        query,
        headers: h.headers.clone(),
        body,
        request_id: ctx.request_id.clone(),
        forwarded_uri: ctx.forwarded.as_ref().and_then(|f| f.uri.clone()),
        client_ip: client_ip(session, ctx, trusted),
        from_trusted_proxy: ctx.forwarded.is_some(),
    }
}

/// The client's address: the rightmost address in a trusted proxy's `X-Forwarded-For` that
/// is not itself a trusted proxy (see `forwarded::client_address`), else the peer.
fn client_ip(session: &Session, ctx: &Ctx, trusted: &[crate::config::Cidr]) -> Option<std::net::IpAddr> {
    let peer = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
    let chain = ctx.forwarded.as_ref().and_then(|f| f.for_chain.as_deref());
    forwarded::client_address(chain, peer, trusted)
}

fn is_navigation(req: &RequestHeader) -> bool {
    web::is_navigation(&req.method, &req.headers)
}

async fn read_body(session: &mut Session) -> Result<Option<Bytes>> {
    let mut buf = Vec::new();
    while let Some(chunk) = session.read_request_body().await? {
        if buf.len() + chunk.len() > web::MAX_BODY {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(Bytes::from(buf)))
}

#[async_trait]
impl ProxyHttp for AuthProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            request_id: String::new(),
            request_id_header: None,
            identity: None,
            access_token: None,
            forwarded: None,
            route: "public",
            started: Instant::now(),
            upstream_started: None,
            body_bytes: 0,
            status: 0,
            counted: false,
            conn: None,
            session_key: None,
            cache_generation: 0,
            tunnel: None,
        }
    }

    /// Ok(true) means the response was written here and the upstream is never contacted.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let app = &self.auth;
        app.metrics.request_started();
        ctx.counted = true;
        ctx.request_id = request_id(session.get_header("x-request-id").and_then(|v| v.to_str().ok()));
        ctx.request_id_header = http::HeaderValue::from_str(&ctx.request_id).ok();
        // From here the connection is in a request: no head deadline until it is answered.
        ctx.conn = conn::control_of(session.stream());
        if let Some(c) = &ctx.conn {
            c.request_started();
        }
        session.set_keepalive(self.keepalive);

        // Only a trusted proxy may tell us who the client is; read that before stripping.
        let peer = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        if peer.is_some_and(|ip| app.config.ops.trusted_proxies.iter().any(|c| c.contains(ip))) {
            ctx.forwarded = Some(Forwarded::from_headers(&session.req_header().headers));
        }
        // Spoofed identity and forwarding headers go before anything looks at the request.
        strip_spoofable(session.req_header_mut(), &self.strip);

        let req = session.req_header();
        let navigation = is_navigation(req);
        if let Some(reply) = limits_exceeded(req, app.config.ops.max_request_body, &ctx.request_id) {
            ctx.route = "rejected";
            return self.answer(session, ctx, reply).await;
        }
        let query = req.uri.query().map(String::from);
        // Envoy ext_authz appends the original path to /api/auth/verify. That suffix is data,
        // not routing: judged on the raw path, before dot segments could move it elsewhere.
        if let Some(suffix) = auth::verify::verify_suffix(req.uri.path()) {
            ctx.route = "auth";
            let wreq = web_request(
                session,
                ctx,
                &app.config.ops.trusted_proxies,
                format!("{}/verify", auth::BASE),
                None,
                Bytes::new(),
            );
            let reply = auth::verify::verify(app, &wreq, suffix).await;
            return self.answer(session, ctx, reply).await;
        }
        let canonical = if !paths::is_routable_target(req.raw_path()) {
            Err(paths::PathRejection::NotOriginForm)
        } else if req.raw_path_is_utf8() {
            paths::canonicalize(req.uri.path())
        } else {
            Err(paths::PathRejection::InvalidUtf8)
        };
        let canonical = match canonical {
            Ok(c) => c,
            Err(e) => {
                log::info!("rejected path: {e} request_id={}", ctx.request_id);
                ctx.route = "rejected";
                return self
                    .answer(
                        session,
                        ctx,
                        bad_path_reply(navigation, &ctx.request_id, lang_of(session.req_header())),
                    )
                    .await;
            }
        };

        if auth::is_auth_path(&canonical.matching) {
            ctx.route = "auth";
            let Some(body) = read_body(session).await? else {
                let reply = Reply::json(413, &json!({ "error": "payload_too_large" }));
                return self.answer(session, ctx, reply).await;
            };
            let wreq = web_request(
                session,
                ctx,
                &app.config.ops.trusted_proxies,
                canonical.forward.clone(),
                query,
                body,
            );
            let reply = auth::handle(app, &wreq).await;
            return self.answer(session, ctx, reply).await;
        }

        ctx.cache_generation = app.sessions.generation();
        ctx.identity = match self.session_identity(session).await {
            Ok(Some((key, id))) => {
                ctx.session_key = Some(key);
                Some(id)
            }
            Ok(None) => None,
            Err(e) => {
                let reply = unavailable_reply(navigation, &ctx.request_id, lang_of(session.req_header()), &e);
                return self.answer(session, ctx, reply).await;
            }
        };
        if app.config.upstream.forward_access_token {
            if let Some(id) = ctx.identity.clone() {
                match app.tokens.access_token(&id.user_id).await {
                    Ok(t) => ctx.access_token = Some(t),
                    // The grant died: the session ends here, like any missing session.
                    Err(TokenError::GrantDead) => ctx.identity = None,
                    Err(e) => log::warn!("no access token to forward: {e} request_id={}", ctx.request_id),
                }
            }
        }
        // The sync endpoint lives in the app's namespace but is answered here.
        if canonical.matching == self.sync_path && session.req_header().method == http::Method::POST {
            ctx.route = "sync";
            if !auth::csrf::same_origin(&session.req_header().headers, &app.config.origin()) {
                let reply = Reply::json(403, &json!({ "error": "cross_site", "requestId": ctx.request_id }));
                return self.answer(session, ctx, reply).await;
            }
            let reply = crate::tiktok::sync::sync_endpoint(&app.sync, ctx.identity.clone(), &ctx.request_id).await;
            return self.answer(session, ctx, reply).await;
        }
        let path_and_query = || match &query {
            Some(q) => format!("{}?{q}", canonical.forward),
            None => canonical.forward.clone(),
        };
        // A path a [[routes.rules]] rule matches needs a session too (auth::rules).
        let protected = self.protected.is_protected(&canonical) || app.rules.covers(&canonical);
        ctx.route = if protected { "protected" } else { "public" };
        if ctx.identity.is_none() && protected {
            let reply = unauthenticated(app, navigation, &path_and_query());
            return self.answer(session, ctx, reply).await;
        }
        if let Some(id) = ctx.identity.as_deref() {
            if let Some(rule) = app.rules.refusing(&canonical, id) {
                auth::rules::note_denial(rule, id, &canonical.forward, &ctx.request_id);
                let origin = app.config.origin();
                let reply = auth::rules::forbidden(
                    &origin,
                    navigation,
                    lang_of(session.req_header()),
                    id,
                    &canonical.forward,
                    &ctx.request_id,
                );
                return self.answer(session, ctx, reply).await;
            }
        }

        // The upstream gets exactly the path the decision was made on (already so for an
        // origin-form request whose path was canonical).
        let unchanged = paths::target_is(session.req_header().raw_path(), &canonical.forward, query.as_deref());
        if !unchanged {
            match path_and_query().parse::<http::Uri>() {
                Ok(uri) => session.req_header_mut().set_uri(uri),
                Err(_) => {
                    let reply = bad_path_reply(navigation, &ctx.request_id, lang_of(session.req_header()));
                    return self.answer(session, ctx, reply).await;
                }
            }
        }
        if upgrade::is_upgrade(session) {
            return self.relay_upgrade(session, ctx).await;
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        strip_spoofable(up, &self.strip);
        if let Some(id) = &ctx.identity {
            let ready = headers::ready(id);
            for (name, value) in ready.headers.iter() {
                up.insert_header(*name, value.clone())?;
            }
            if let Some(jwt) = self.auth.identity_jwt.header(id, &ready, self.auth.clock.now()) {
                up.insert_header(headers::IDENTITY_JWT, jwt)?;
            }
        }
        if let Some(token) = &ctx.access_token {
            up.insert_header(headers::ACCESS_TOKEN, token.as_str())?;
        }
        // Our cookies (session, CSRF, sign-in state) are ours alone. A Cookie header that
        // carries none of them (or none at all) is left as it is.
        let rewrite = up
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .any(|v| v.to_str().map_or(true, |c| self.auth.cookies.has_ours(c)));
        if rewrite {
            let cookies: Vec<String> = up
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(String::from)
                .collect();
            while up.remove_header("cookie").is_some() {}
            if let Some(kept) = self.auth.cookies.strip_ours(&cookies.join("; ")) {
                up.insert_header("Cookie", kept)?;
            }
        }
        if let Some(conn) = up
            .headers
            .get("connection")
            .and_then(|v| v.to_str().ok())
            .map(String::from)
        {
            up.remove_header("connection");
            if let Some(c) = headers::sanitize_connection(&conn) {
                up.insert_header("Connection", c)?;
            }
        }
        // `150, 150` frames one 150-byte body for pingora, but not for every upstream (hyper
        // refuses a list): send the one length we enforced.
        if let Ok(Some(n)) = declared_length(&up.headers) {
            let single = up.headers.get_all(http::header::CONTENT_LENGTH).iter().count() == 1
                && up
                    .headers
                    .get(http::header::CONTENT_LENGTH)
                    .is_some_and(|v| v.as_bytes().iter().all(u8::is_ascii_digit));
            if !single {
                up.insert_header(http::header::CONTENT_LENGTH, n.to_string())?;
            }
        }
        // Client-sent forwarding headers are gone (strip_spoofable); say what we know, and
        // what a trusted proxy told us.
        let peer = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        let fwd = ctx.forwarded.as_ref();
        let xff = match (fwd.and_then(|f| f.for_chain.as_deref()), peer) {
            (Some(chain), Some(p)) => Some(format!("{chain}, {p}")),
            (None, Some(p)) => Some(p.to_string()),
            (chain, None) => chain.map(String::from),
        };
        if let Some(v) = xff {
            up.insert_header("X-Forwarded-For", v)?;
        }
        match fwd.and_then(|f| f.proto.as_deref()) {
            Some(p) => up.insert_header("X-Forwarded-Proto", p)?,
            None => up.insert_header("X-Forwarded-Proto", self.public_proto.clone())?,
        }
        match (fwd.and_then(|f| f.host.as_deref()), &self.public_host) {
            (Some(h), _) => up.insert_header("X-Forwarded-Host", h)?,
            (None, Some(h)) => up.insert_header("X-Forwarded-Host", h.clone())?,
            (None, None) => {}
        }
        if let Some(id) = &ctx.request_id_header {
            up.insert_header("X-Request-Id", id.clone())?;
        }
        ctx.upstream_started = Some(Instant::now());
        Ok(())
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // A WebSocket's frames are not a request body: a long-lived socket may carry any
        // amount.
        if session.was_upgraded() {
            return Ok(());
        }
        // Content-Length was checked up front; this catches chunked bodies.
        if let Some(b) = body {
            ctx.body_bytes += b.len() as u64;
            if ctx.body_bytes > self.auth.config.ops.max_request_body {
                return Error::e_explain(ErrorType::HTTPStatus(413), "request body over server.max_request_body");
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(t) = ctx.upstream_started {
            self.auth
                .metrics
                .upstream(resp.status.as_u16(), t.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn response_filter(&self, _session: &mut Session, resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        ctx.status = resp.status.as_u16();
        if let Some(id) = &ctx.request_id_header {
            resp.insert_header("X-Request-Id", id.clone())?;
        }
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
            if let Some(c) = &ctx.conn {
                let session = ctx.session_key.zip(ctx.identity.as_deref());
                let stale = self.auth.sessions.generation() != ctx.cache_generation;
                ctx.tunnel = Some(self.tunnels.open(session, c.clone(), stale));
            }
        }
        if let Some(v) = &self.hsts {
            resp.insert_header("Strict-Transport-Security", v.as_str())?;
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy
    where
        Ctx: Send + Sync,
    {
        let code = match e.etype() {
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => 504,
            ErrorType::HTTPStatus(c) => *c,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => 0,
                _ => 500,
            },
        };
        if code > 0 {
            log::warn!("proxy failure {code}: {e} request_id={}", ctx.request_id);
            let navigation = is_navigation(session.req_header());
            let lang = pages::negotiate(
                None,
                session.get_header("accept-language").and_then(|v| v.to_str().ok()),
            );
            let name = match code {
                504 => "UpstreamTimeout",
                413 => "PayloadTooLarge",
                400..=499 => "BadRequest",
                _ => "UpstreamUnavailable",
            };
            let reply = if navigation {
                Reply::html(code, pages::error(lang, name, &ctx.request_id, "/", "/"))
            } else {
                Reply::json(code, &json!({ "error": name, "requestId": ctx.request_id }))
            };
            let rid = ctx.request_id.clone();
            // The connection is not reused after a failure (can_reuse_downstream below): say so
            // in the answer, or a client may send its next request into the closing socket.
            session.set_keepalive(None);
            if let Ok(status) = self.write_reply(session, reply, &rid).await {
                ctx.status = status;
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// What pingora writes in its own error logs about a request: method, path and request id,
    /// never the query (the callback's carries the authorization code and state).
    fn request_summary(&self, session: &Session, ctx: &Ctx) -> String {
        let req = session.req_header();
        format!("{} {} request_id={}", req.method, req.uri.path(), ctx.request_id)
    }

    /// One access-log line per request. The query is left out on purpose: the callback's
    /// carries the authorization code and state.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        if let Some(id) = ctx.tunnel.take() {
            self.tunnels.close(id);
        }
        if let Some(c) = &ctx.conn {
            c.request_done();
        }
        let req = session.req_header();
        let status = if ctx.status > 0 {
            ctx.status
        } else {
            session.response_written().map(|r| r.status.as_u16()).unwrap_or(0)
        };
        if ctx.counted {
            self.auth.metrics.request_finished(ctx.route, status);
        }
        if !log::log_enabled!(target: web::ACCESS_TARGET, log::Level::Info) {
            return;
        }
        let user = ctx.identity.as_ref().map(|i| i.user_id.as_str()).unwrap_or("-");
        let ms = ctx.started.elapsed().as_millis() as u64;
        match self.auth.config.ops.log_format {
            LogFormat::Json => {
                let peer = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
                let line = access_json(req, status, ms, ctx, user, peer, e.map(|e| e.etype()));
                log::info!(target: web::ACCESS_TARGET, "{line}");
            }
            LogFormat::Text => match e {
                None => log::info!(
                    target: web::ACCESS_TARGET,
                    "{} {} {} {}ms route={} user={} request_id={}",
                    req.method,
                    req.uri.path(),
                    status,
                    ms,
                    ctx.route,
                    user,
                    ctx.request_id,
                ),
                Some(e) => log::info!(
                    target: web::ACCESS_TARGET,
                    "{} {} {} {}ms route={} user={} request_id={} error={:?}",
                    req.method,
                    req.uri.path(),
                    status,
                    ms,
                    ctx.route,
                    user,
                    ctx.request_id,
                    e.etype(),
                ),
            },
        }
    }
}

/// The JSON access line (an object; the logger lifts its fields), rendered directly.
fn access_json(
    req: &RequestHeader,
    status: u16,
    ms: u64,
    ctx: &Ctx,
    user: &str,
    peer: Option<std::net::IpAddr>,
    error: Option<&ErrorType>,
) -> String {
    use std::io::Write as _;
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"method\":");
    web::push_json_str(&mut out, req.method.as_str());
    out.extend_from_slice(b",\"path\":");
    web::push_json_str(&mut out, req.uri.path());
    let _ = write!(out, ",\"status\":{status},\"duration_ms\":{ms},\"route\":");
    web::push_json_str(&mut out, ctx.route);
    out.extend_from_slice(b",\"user\":");
    web::push_json_str(&mut out, user);
    out.extend_from_slice(b",\"request_id\":");
    web::push_json_str(&mut out, &ctx.request_id);
    out.extend_from_slice(b",\"peer\":");
    match peer {
        Some(ip) => {
            let _ = write!(out, "\"{ip}\"");
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"error\":");
    match error {
        Some(e) => web::push_json_str(&mut out, &format!("{e:?}")),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
    String::from_utf8(out).unwrap_or_default()
}

impl AuthProxy {
    /// Writes our own answer from `request_filter`; `Ok(true)` tells pingora the request is
    /// done and the upstream is never contacted.
    async fn answer(&self, session: &mut Session, ctx: &mut Ctx, reply: Reply) -> Result<bool> {
        ctx.status = self.write_reply(session, reply, &ctx.request_id).await?;
        Ok(true)
    }

    async fn write_reply(&self, session: &mut Session, reply: Reply, request_id: &str) -> Result<u16> {
        let mut h = ResponseHeader::build(reply.status, Some(reply.headers.len() + 3))?;
        for (k, v) in &reply.headers {
            h.append_header(*k, v.as_str())?;
        }
        h.insert_header("Content-Length", reply.body.len().to_string())?;
        h.insert_header("X-Request-Id", request_id)?;
        h.insert_header("X-Content-Type-Options", "nosniff")?;
        h.insert_header("Referrer-Policy", "no-referrer")?;
        if let Some(v) = &self.hsts {
            h.insert_header("Strict-Transport-Security", v.as_str())?;
        }
        if reply
            .header_value("Content-Type")
            .is_some_and(|c| c.starts_with("text/html"))
        {
            h.insert_header("X-Frame-Options", "DENY")?;
            h.insert_header("Content-Security-Policy", self.csp.as_str())?;
        }
        let head = session.req_header().method == http::Method::HEAD;
        session.write_response_header(Box::new(h), false).await?;
        let body = if head { Bytes::new() } else { reply.body };
        session.write_response_body(Some(body), true).await?;
        Ok(reply.status)
    }

    /// The request's session, if any (a session whose TikTok grant died no longer
    /// authenticates anyone); an error when the store could not be asked.
    async fn session_identity(&self, session: &Session) -> Result<Option<([u8; 32], Arc<Identity>)>, StoreError> {
        let name = &self.auth.cookies.session;
        let values = session
            .req_header()
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(web::cookie_pairs)
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v);
        let (found, _) = self.auth.cookie_session(values).await?;
        Ok(found.filter(|(_, id)| id.grant_error.is_none()))
    }
}

#[cfg(test)]
mod tests {
    use super::{declared_length, request_id, AmbiguousLength};

    #[test]
    fn request_ids_are_kept_when_plain_and_fresh_ones_are_unique() {
        assert_eq!(request_id(Some("abc-123_x.y")), "abc-123_x.y");
        let mut seen = std::collections::HashSet::new();
        for bad in [None, Some(""), Some("has space"), Some("ünï"), Some(&*"x".repeat(65))] {
            let id = request_id(bad);
            assert_eq!(id.len(), 24, "{id}");
            assert!(
                id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{id}"
            );
            assert!(seen.insert(id));
        }
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..5000).map(|_| request_id(None)).collect::<Vec<_>>()))
            .collect();
        for t in threads {
            for id in t.join().expect("thread") {
                assert!(seen.insert(id), "ids repeat");
            }
        }
    }

    fn headers(values: &[&str]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for v in values {
            h.append(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn content_length_is_reconciled_like_pingora() {
        assert_eq!(declared_length(&headers(&[])), Ok(None));
        assert_eq!(declared_length(&headers(&["150"])), Ok(Some(150)));
        assert_eq!(declared_length(&headers(&["150, 150"])), Ok(Some(150)));
        assert_eq!(declared_length(&headers(&["150,150"])), Ok(Some(150)));
        assert_eq!(declared_length(&headers(&["150", "150"])), Ok(Some(150)));
        assert_eq!(declared_length(&headers(&[" 150 "])), Ok(Some(150)));
        for bad in [
            "150, 151",
            "+150",
            "-1",
            "1_0",
            "0x10",
            "",
            "150,",
            "1 50",
            "99999999999999999999999",
        ] {
            assert_eq!(declared_length(&headers(&[bad])), Err(AmbiguousLength), "{bad:?}");
        }
        assert_eq!(declared_length(&headers(&["150", "151"])), Err(AmbiguousLength));
    }
}
