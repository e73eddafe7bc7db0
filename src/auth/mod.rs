//! The `/api/auth/*` endpoints and what they share: `Auth` (the state every handler reads:
//! configuration, store, session cache, token manager, sync, cookies, signer), session
//! resolution from cookies, the dispatcher, and the one place an error becomes a page.
//! Handlers take a socket-free `web::Request` and return a `Reply`.
//!
//! Submodules by concern: `signin` (start + callback, state in a sealed cookie), `signout`,
//! `nextauth` (the next-auth REST surface and pages), `verify` (forward-auth), `csrf`,
//! `cookies`, `headers` (identity headers: which are stripped, which injected), `redirect`
//! (the one redirect validator), `pages` (es/en HTML), `jwt` (signed
//! identity), `error` (the request-path error type).

pub mod cookies;
pub mod csrf;
pub mod error;
pub mod headers;
pub mod jwt;
pub mod nextauth;
pub mod pages;
pub mod redirect;
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

    /// `origin + path` as an absolute URL string; `path` starts with '/'.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.config.origin(), path)
    }

    /// The identity behind a session cookie value. The hot path: decode, hash, cache hit. A
    /// miss reads the store once (never writes) and fills the cache; a store failure is an
    /// error, not "signed out" (the caller answers 503).
    pub async fn identity(&self, cookie_value: &str) -> Result<Option<Arc<Identity>>, StoreError> {
        let Some(key) = session_key(cookie_value) else {
            return Ok(None);
        };
        let now = self.clock.now();
        if let Some(hit) = self.sessions.get(&key, now) {
            if hit.note_activity {
                self.activity.note(crypto::hex(&key), &hit.identity.user_id, now);
            }
            return Ok(Some(hit.identity));
        }
        let seen = self.sessions.generation();
        let found = self.store.session_identity(&crypto::hex(&key), now).await?;
        Ok(found.map(|id| {
            let id = Arc::new(id);
            self.sessions.insert_if_unchanged(key, id.clone(), now, seen);
            self.activity.note(crypto::hex(&key), &id.user_id, now);
            id
        }))
    }

    /// The identity of the first of the request's session cookies (at most
    /// `cookies::MAX_SESSION_COOKIES` well-formed ones are looked at) that names a live
    /// session, and whether the request carried a session cookie at all.
    pub async fn cookie_identity<'a>(
        &self,
        values: impl Iterator<Item = &'a str>,
    ) -> Result<(Option<Arc<Identity>>, bool), StoreError> {
        let mut had_cookie = false;
        for v in values
            .inspect(|_| had_cookie = true)
            .filter(|v| session_key(v).is_some())
            .take(cookies::MAX_SESSION_COOKIES)
        {
            if let Some(id) = self.identity(v).await? {
                return Ok((Some(id), true));
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

/// SHA-256 of a session cookie token, as the cache key and (hex) as the stored id.
pub fn session_key(cookie_value: &str) -> Option<[u8; 32]> {
    crypto::decode_token(cookie_value).map(|t| crypto::sha256(&t))
}

/// True for paths the sidecar answers itself (`matching` form: lowercased, canonical).
pub fn is_auth_path(matching: &str) -> bool {
    matching == BASE || matching.starts_with("/api/auth/")
}

/// Dispatches one `/api/auth/*` request.
pub async fn handle(auth: &Auth, req: &Request) -> Reply {
    let action = req.path.to_ascii_lowercase();
    let action = action.strip_prefix(BASE).unwrap_or("").trim_end_matches('/');
    let get = req.method == http::Method::GET || req.method == http::Method::HEAD;
    let post = req.method == http::Method::POST;
    match (action, get, post) {
        ("/signin", true, _) => nextauth::signin_page(auth, req),
        ("/webhooks/tiktok", _, true) => auth.webhook.handle(req).await,
        ("/signin/tiktok", true, _) | ("/signin/tiktok", _, true) => signin::start(auth, req).await,
        ("/callback/tiktok", true, _) => signin::callback(auth, req).await,
        ("/signout", true, _) => nextauth::signout_page(auth, req),
        ("/signout", _, true) => signout::signout(auth, req).await,
        ("/session", true, _) => nextauth::session(auth, req).await,
        ("/session", _, true) => nextauth::session_update(auth, req).await,
        ("/csrf", true, _) => nextauth::csrf(auth, req),
        ("/providers", true, _) => nextauth::providers(auth),
        ("/error", true, _) => nextauth::error_page(auth, req),
        // Public keys: cacheable, unlike every other answer here.
        ("/jwks.json", true, _) => Reply::new(200, "application/json", auth.identity_jwt.jwks().to_string())
            .header("Cache-Control", "public, max-age=300".into()),
        ("/tiktok/profile", true, _) => match auth.signed_in(req).await {
            Ok(id) => crate::tiktok::sync::profile(&auth.sync, &req.request_id, id).await,
            Err(e) => unavailable(req, &e),
        },
        ("/tiktok/videos", true, _) => match auth.signed_in(req).await {
            Ok(id) => crate::tiktok::sync::videos(&auth.sync, req, id).await,
            Err(e) => unavailable(req, &e),
        },
        // next-auth v4 clients post their logs here; accept and drop them.
        ("/_log", _, true) => Reply::json(200, &json!({})),
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
    if req.accepts_html() {
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
    }
}
