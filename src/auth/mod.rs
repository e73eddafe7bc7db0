//! The `/api/auth/*` endpoints and what they share: `Auth` (the state every handler reads:
//! configuration, store, session cache, token manager, sync, cookies, signer), session
//! resolution from cookies, the dispatcher, and the one place an error becomes a page.
//! Handlers take a socket-free `web::Request` and return a `Reply`.
//!
//! Submodules by concern: `signin` (start + callback, state in a sealed cookie), `signout`,
//! `devices` (the user's sessions: list, revoke, page), `nextauth` (the next-auth REST
//! surface and pages), `verify` (forward-auth), `csrf`,
//! `cookies`, `headers` (identity headers: which are stripped, which injected), `redirect`
//! (the one redirect validator), `pages` (es/en HTML), `jwt` (signed
//! identity), `rules` (per-route authorization, `[[routes.rules]]`), `error` (the
//! request-path error type).

pub mod cookies;
pub mod csrf;
pub mod devices;
pub mod error;
pub mod headers;
pub mod jwt;
pub mod nextauth;
pub mod pages;
pub mod redirect;
pub mod rules;
pub mod signin;
pub mod signout;
pub mod verify;

use std::sync::Arc;

use serde_json::json;
use url::Url;

use crate::clock::Clock;
use crate::config::{Config, AUTH_BASE};
use crate::crypto;
use crate::metrics::Metrics;
use crate::store::cache::{Activity, SessionCache};
use crate::store::{Identity, Store, StoreError};
use crate::tiktok::sync::{SyncDeps, SyncService};
use crate::tiktok::tokens::TokenManager;
use crate::tiktok::webhook::Webhook;
use crate::tiktok::{TikTokClient, TikTokError};
use crate::web::{Reply, Request};
use cookies::CookieNames;
use error::AuthError;
use pages::Lang;

/// The base path next-auth clients call.
pub const BASE: &str = AUTH_BASE;

/// Everything the auth endpoints (and the proxy's session check) share; built once at start.
pub struct Auth {
    pub config: Arc<Config>,
    /// The public origin as a URL (`https://app.example.com/`), for redirects.
    pub origin: Url,
    pub store: Arc<dyn Store>,
    pub sessions: Arc<SessionCache>,
    pub activity: Arc<Activity>,
    pub tokens: Arc<TokenManager>,
    pub sync: Arc<SyncService>,
    pub webhook: Webhook,
    pub tiktok: TikTokClient,
    pub cookies: CookieNames,
    pub identity_jwt: jwt::IdentitySigner,
    /// `[[routes.rules]]`, compiled: who may enter which prefix.
    pub rules: rules::RouteRules,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
}

impl Auth {
    pub fn new(config: Arc<Config>, store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Result<Auth, TikTokError> {
        let clock = Clock::default();
        let tiktok = TikTokClient::new(config.tiktok.clone(), config.redirect_uri(), Some(metrics.clone()))?;
        let mut origin = config.public_url.clone();
        origin.set_path("/");
        let st = &config.storage;
        let sessions = Arc::new(SessionCache::new(st.cache_capacity, st.cache_ttl.as_secs() as i64));
        let activity = Arc::new(Activity::default());
        let tokens = Arc::new(TokenManager::new(
            store.clone(),
            tiktok.clone(),
            sessions.clone(),
            metrics.clone(),
            clock.clone(),
            config.refresh_margin,
        ));
        let reconsent = {
            let target = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("callbackUrl", &format!("{}/", config.origin()))
                .finish();
            format!("{}{BASE}/signin?{target}", config.origin())
        };
        let sync = Arc::new(SyncService::new(
            config.sync.clone(),
            config.tiktok.scopes.clone(),
            reconsent,
            SyncDeps {
                store: store.clone(),
                tiktok: tiktok.clone(),
                tokens: tokens.clone(),
                sessions: sessions.clone(),
                activity: activity.clone(),
                metrics: metrics.clone(),
                clock: clock.clone(),
            },
        ));
        let webhook = Webhook {
            client_key: config.tiktok.client_key.clone(),
            client_secret: config.tiktok.client_secret.clone(),
            store: store.clone(),
            sessions: sessions.clone(),
            tokens: tokens.clone(),
            clock: clock.clone(),
        };
        Ok(Auth {
            cookies: CookieNames::new(config.secure_cookies()),
            identity_jwt: jwt::IdentitySigner::new(&config),
            rules: rules::RouteRules::new(&config.route_rules, &metrics),
            origin,
            store,
            sessions,
            activity,
            tokens,
            sync,
            webhook,
            tiktok,
            metrics,
            clock,
            config,
        })
    }

    /// The session key (cache key, and in hex the stored id) of a session cookie value, only
    /// when its MAC verifies: a forged value costs a MAC check, never a lookup.
    pub fn session_key(&self, cookie_value: &str) -> Option<[u8; 32]> {
        self.store.keys().session_key(cookie_value)
    }

    /// `origin + path` as an absolute URL string; `path` starts with '/'.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.config.origin(), path)
    }

    /// The identity behind a session cookie value. The hot path: decode, hash, cache hit. A
    /// miss reads the store once (never writes) and fills the cache; a store failure is an
    /// error, not "signed out" (the caller answers 503).
    pub async fn identity(&self, cookie_value: &str) -> Result<Option<Arc<Identity>>, StoreError> {
        match self.session_key(cookie_value) {
            Some(key) => self.identity_by_key(key).await,
            None => {
                self.metrics.session_lookups.forged.inc();
                Ok(None)
            }
        }
    }

    /// The identity behind a verified session key (see `identity`).
    pub async fn identity_by_key(&self, key: [u8; 32]) -> Result<Option<Arc<Identity>>, StoreError> {
        let lookups = &self.metrics.session_lookups;
        let now = self.clock.now();
        if let Some(hit) = self.sessions.get(&key, now) {
            lookups.cached.inc();
            if hit.note_activity {
                self.activity.note(key, &hit.identity.user_id, now);
            }
            return Ok(Some(hit.identity));
        }
        if self.sessions.known_missing(&key, now) {
            lookups.known_unknown.inc();
            return Ok(None);
        }
        let seen = self.sessions.generation();
        match self.store.session_identity(&crypto::hex(&key), now).await? {
            Some(id) => {
                lookups.found.inc();
                let id = Arc::new(id);
                self.sessions.insert_if_unchanged(key, id.clone(), now, seen);
                self.activity.note(key, &id.user_id, now);
                Ok(Some(id))
            }
            None => {
                lookups.unknown.inc();
                self.sessions.note_missing(key, now);
                Ok(None)
            }
        }
    }

    /// The identity of the request's session cookies, and whether it carried one at all.
    /// Only values this deployment issued count (MAC-verified, in memory), and of those at
    /// most `cookies::MAX_SESSION_COOKIES`, in header order (a more specific `Path` first):
    /// junk cookies planted beside the real one cannot push it out, and a request stuffed
    /// with cookies costs at most two lookups.
    pub async fn cookie_identity<'a>(
        &self,
        values: impl Iterator<Item = &'a str>,
    ) -> Result<(Option<Arc<Identity>>, bool), StoreError> {
        let (found, had_cookie) = self.cookie_session(values).await?;
        Ok((found.map(|(_, id)| id), had_cookie))
    }

    /// `cookie_identity` with the session key that matched.
    pub async fn cookie_session<'a>(
        &self,
        values: impl Iterator<Item = &'a str>,
    ) -> Result<(Option<([u8; 32], Arc<Identity>)>, bool), StoreError> {
        let mut had_cookie = false;
        let mut keys = [None; cookies::MAX_SESSION_COOKIES];
        let mut n = 0;
        for v in values {
            had_cookie = true;
            match self.session_key(v) {
                Some(k) => {
                    keys[n] = Some(k);
                    n += 1;
                    if n == keys.len() {
                        break;
                    }
                }
                None => self.metrics.session_lookups.forged.inc(),
            }
        }
        for key in keys.into_iter().flatten() {
            if let Some(id) = self.identity_by_key(key).await? {
                return Ok((Some((key, id)), true));
            }
        }
        Ok((None, had_cookie))
    }

    /// The signed-in user, if any: a live session whose TikTok grant is not dead.
    pub async fn signed_in(&self, req: &Request) -> Result<Option<Arc<Identity>>, StoreError> {
        let (id, _) = self.request_identity(req).await?;
        Ok(id.filter(|id| id.grant_error.is_none()))
    }

    async fn request_identity(&self, req: &Request) -> Result<(Option<Arc<Identity>>, bool), StoreError> {
        let values = req.cookies(&self.cookies.session);
        self.cookie_identity(values.into_iter()).await
    }
}

/// True for paths the sidecar answers itself (`matching` form: lowercased, canonical).
pub fn is_auth_path(matching: &str) -> bool {
    matching == BASE || matching.starts_with("/api/auth/")
}

/// Which methods an endpoint serves. `Read` endpoints answer GET and HEAD and change nothing;
/// everything that changes state is POST only, except the OAuth callback, which TikTok sends
/// as a GET (and which HEAD must not run: it would use up the state and the code).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Methods {
    Read,
    Post,
    ReadOrPost,
    CallbackGet,
}

impl Methods {
    fn allow(self) -> &'static str {
        match self {
            Methods::Read => "GET, HEAD",
            Methods::Post => "POST",
            Methods::ReadOrPost => "GET, HEAD, POST",
            Methods::CallbackGet => "GET",
        }
    }

    fn permits(self, m: &http::Method) -> bool {
        let read = m == http::Method::GET || m == http::Method::HEAD;
        match self {
            Methods::Read => read,
            Methods::Post => m == http::Method::POST,
            Methods::ReadOrPost => read || m == http::Method::POST,
            Methods::CallbackGet => m == http::Method::GET,
        }
    }
}

/// The endpoints under `/api/auth` and the methods each serves.
fn route(action: &str) -> Option<Methods> {
    Some(match action {
        "/signin" | "/csrf" | "/providers" | "/error" | "/jwks.json" | "/tiktok/profile" | "/tiktok/videos"
        | "/sessions" | "/devices" => Methods::Read,
        // GET is the sign-in page's address for links (it starts nothing); POST starts.
        "/signin/tiktok" | "/signout" | "/session" => Methods::ReadOrPost,
        "/callback/tiktok" => Methods::CallbackGet,
        "/webhooks/tiktok" | "/_log" | "/sessions/revoke" => Methods::Post,
        _ => return None,
    })
}

/// Dispatches one `/api/auth/*` request.
pub async fn handle(auth: &Auth, req: &Request) -> Reply {
    let action = req.path.to_ascii_lowercase();
    let action = action.strip_prefix(BASE).unwrap_or("").trim_end_matches('/');
    let Some(methods) = route(action) else {
        return Reply::json(400, &json!("Bad request."));
    };
    if !methods.permits(&req.method) {
        return Reply::json(
            405,
            &json!({ "error": "method_not_allowed", "requestId": req.request_id }),
        )
        .header("Allow", methods.allow().into());
    }
    let post = req.method == http::Method::POST;
    match (action, post) {
        ("/signin", _) => nextauth::signin_page(auth, req),
        ("/signin/tiktok", false) => nextauth::signin_link(auth, req),
        ("/signin/tiktok", true) => signin::start(auth, req).await,
        ("/callback/tiktok", _) => signin::callback(auth, req).await,
        ("/signout", false) => nextauth::signout_page(auth, req),
        ("/signout", true) => signout::signout(auth, req).await,
        ("/session", false) => nextauth::session(auth, req).await,
        ("/session", true) => nextauth::session_update(auth, req).await,
        ("/csrf", _) => nextauth::csrf(auth, req),
        ("/providers", _) => nextauth::providers(auth),
        ("/error", _) => nextauth::error_page(auth, req),
        // Public keys: cacheable, unlike every other answer here.
        ("/jwks.json", _) => Reply::new(200, "application/json", auth.identity_jwt.jwks().to_string())
            .header("Cache-Control", "public, max-age=300".into()),
        ("/tiktok/profile", _) => match auth.signed_in(req).await {
            Ok(id) => crate::tiktok::sync::profile(&auth.sync, &req.request_id, id).await,
            Err(e) => unavailable(req, &e),
        },
        ("/tiktok/videos", _) => match auth.signed_in(req).await {
            Ok(id) => crate::tiktok::sync::videos(&auth.sync, req, id).await,
            Err(e) => unavailable(req, &e),
        },
        ("/sessions", _) => devices::list(auth, req).await,
        ("/sessions/revoke", _) => devices::revoke(auth, req).await,
        ("/devices", _) => devices::page(auth, req).await,
        ("/webhooks/tiktok", _) => auth.webhook.handle(req).await,
        // next-auth v4 clients post their logs here; accept and drop them.
        ("/_log", _) => Reply::json(200, &json!({})),
        _ => Reply::json(400, &json!("Bad request.")),
    }
}

pub fn lang(req: &Request) -> Lang {
    pages::negotiate(req.query_one("lang").as_deref(), req.header("accept-language"))
}

pub fn with_cookie(reply: Reply, cookie: Option<String>) -> Reply {
    match cookie {
        Some(c) => reply.set_cookie(c),
        None => reply,
    }
}

/// `callbackUrl` (next-auth) or `rd` (nginx/oauth2-proxy style), validated; home otherwise.
pub fn callback_target(auth: &Auth, raw: Option<String>) -> String {
    redirect::or_home(raw.as_deref(), &auth.origin)
}

/// The database did not answer: 503 with the request id, a page for browsers.
pub fn unavailable(req: &Request, e: &StoreError) -> Reply {
    log::error!("store unavailable: {} request_id={}", error::chain(e), req.request_id);
    let reply = if req.accepts_html() {
        Reply::html(503, pages::error(lang(req), "Unavailable", &req.request_id, "/", "/"))
    } else {
        Reply::json(503, &json!({ "error": "Unavailable", "requestId": req.request_id }))
    };
    reply.header("Retry-After", "5".into()).no_store()
}

/// The one place an `AuthError` becomes a response: JSON `{url}` for next-auth's fetches,
/// an HTML page for browsers, JSON for other API clients. Users see a safe message and the
/// request id; the log gets the chain.
pub fn error_reply(auth: &Auth, req: &Request, err: &AuthError) -> Reply {
    if err.is_client_error() {
        log::info!("auth request refused: {} request_id={}", err.chain(), req.request_id);
    } else {
        log::error!("auth request failed: {} request_id={}", err.chain(), req.request_id);
    }
    let code = err.code();
    if req.wants_json_redirect() {
        // next-auth expects 200 {"url"} even on errors and reads ?error= from it.
        let page = if code == "MissingCSRF" { "signin" } else { "error" };
        return Reply::json(200, &json!({ "url": auth.url(&format!("{BASE}/{page}?error={code}")) }));
    }
    let reply = if req.accepts_html() {
        let html = pages::error(
            lang(req),
            code,
            &req.request_id,
            &auth.url(&format!("{BASE}/signin")),
            &auth.url("/"),
        );
        Reply::html(err.status(), html)
    } else {
        Reply::json(err.status(), &json!({ "error": code, "requestId": req.request_id }))
    };
    match err {
        AuthError::Store(e) if e.is_unavailable() => reply.header("Retry-After", "5".into()),
        _ => reply,
    }
}
