//! The `/api/auth/*` endpoints: the TikTok sign-in flow (start, callback), sign-out, and the
//! next-auth REST surface (`session`, `csrf`, `providers`, `signin`, `signout`, `error`).
//! Each handler takes a `Request` and returns a `Reply`; no sockets here.

use std::sync::Arc;

use serde_json::json;
use time::format_description::well_known::Rfc3339;

use crate::app::{session_key, App};
use crate::crypto;
use crate::error::{AuthError, StateProblem};
use crate::pages::{self, Lang};
use crate::redirect;
use crate::store::{Identity, LoginState, Profile, Tokens};
use crate::tiktok;
use crate::tokens::{TokenError, REFRESH_ERROR};
use crate::web::{Reply, Request};

/// The base path next-auth clients call.
pub const BASE: &str = "/api/auth";
/// How long a started sign-in may take before its state expires.
pub const LOGIN_STATE_TTL: i64 = 600;

/// True for paths the sidecar answers itself (`matching` form: lowercased, canonical).
pub fn is_auth_path(matching: &str) -> bool {
    matching == BASE || matching.starts_with("/api/auth/")
}

/// Dispatches one `/api/auth/*` request.
pub async fn handle(app: &App, req: &Request) -> Reply {
    let action = req.path.to_ascii_lowercase();
    let action = action.strip_prefix(BASE).unwrap_or("").trim_end_matches('/');
    let get = req.method == http::Method::GET || req.method == http::Method::HEAD;
    let post = req.method == http::Method::POST;
    match (action, get, post) {
        ("/signin", true, _) => signin_page(app, req),
        ("/webhooks/tiktok", _, true) => crate::webhook::tiktok(app, req).await,
        ("/signin/tiktok", true, _) | ("/signin/tiktok", _, true) => start(app, req).await,
        ("/callback/tiktok", true, _) => callback(app, req).await,
        ("/signout", true, _) => signout_page(app, req).await,
        ("/signout", _, true) => signout(app, req).await,
        ("/session", true, _) => session(app, req).await,
        ("/session", _, true) => session_update(app, req).await,
        ("/csrf", true, _) => csrf(app, req),
        ("/providers", true, _) => providers(app),
        ("/error", true, _) => error_page(app, req),
        // Public keys: cacheable, unlike every other answer here.
        ("/jwks.json", true, _) => Reply::new(200, "application/json", app.identity_jwt.jwks().to_string())
            .header("Cache-Control", "public, max-age=300".into()),
        ("/tiktok/profile", true, _) => crate::sync::profile(app, req, signed_in(app, req).await).await,
        ("/tiktok/videos", true, _) => crate::sync::videos(app, req, signed_in(app, req).await).await,
        // next-auth v4 clients post their logs here; accept and drop them.
        ("/_log", _, true) => Reply::json(200, &json!({})),
        _ => Reply::json(400, &json!("Bad request.")),
    }
}

// === CSRF (double submit, HMAC-signed cookie) ===

/// The CSRF token for this browser: reused when its cookie verifies, new otherwise (then the
/// second value is the `Set-Cookie` to send).
fn csrf_token(app: &App, req: &Request) -> Result<(String, Option<String>), AuthError> {
    let keys = app.store.keys();
    if let Some(token) = req
        .cookies(&app.cookies.csrf)
        .into_iter()
        .find_map(|c| keys.csrf_token_from_cookie(c))
    {
        return Ok((token.to_string(), None));
    }
    let (token, value) = keys.new_csrf_cookie()?;
    Ok((token, Some(app.cookies.build(&app.cookies.csrf, &value, None))))
}

/// A POST passes when its `csrfToken` equals the token in a valid CSRF cookie.
fn csrf_ok(app: &App, req: &Request) -> bool {
    let Some(sent) = req.form_one("csrfToken") else {
        return false;
    };
    let keys = app.store.keys();
    req.cookies(&app.cookies.csrf)
        .into_iter()
        .filter_map(|c| keys.csrf_token_from_cookie(c))
        .any(|t| crypto::ct_eq(t.as_bytes(), sent.as_bytes()))
}

fn csrf(app: &App, req: &Request) -> Reply {
    match csrf_token(app, req) {
        Ok((token, cookie)) => with_cookie(Reply::json(200, &json!({ "csrfToken": token })), cookie),
        Err(e) => error_reply(app, req, &e),
    }
}

fn with_cookie(reply: Reply, cookie: Option<String>) -> Reply {
    match cookie {
        Some(c) => reply.set_cookie(c),
        None => reply,
    }
}

fn lang(req: &Request) -> Lang {
    pages::negotiate(req.query_one("lang").as_deref(), req.header("accept-language"))
}

/// `callbackUrl` (next-auth) or `rd` (nginx/oauth2-proxy style), validated; home otherwise.
fn callback_target(app: &App, raw: Option<String>) -> String {
    redirect::or_home(raw.as_deref(), &app.origin)
}

fn self_path(req: &Request) -> String {
    let keep: Vec<(String, String)> = req.query_pairs().into_iter().filter(|(k, _)| k != "lang").collect();
    if keep.is_empty() {
        req.path.clone()
    } else {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(keep)
            .finish();
        format!("{}?{q}", req.path)
    }
}

// === pages ===

fn signin_page(app: &App, req: &Request) -> Reply {
    let (token, cookie) = match csrf_token(app, req) {
        Ok(t) => t,
        Err(e) => return error_reply(app, req, &e),
    };
    let target = callback_target(app, req.query_one("callbackUrl").or_else(|| req.query_one("rd")));
    let error = req.query_one("error").filter(|e| is_error_code(e));
    let html = pages::signin(
        lang(req),
        &format!("{BASE}/signin/tiktok"),
        &token,
        &target,
        error.as_deref(),
        &self_path(req),
    );
    with_cookie(Reply::html(200, html), cookie)
}

async fn signout_page(app: &App, req: &Request) -> Reply {
    let (token, cookie) = match csrf_token(app, req) {
        Ok(t) => t,
        Err(e) => return error_reply(app, req, &e),
    };
    let target = callback_target(app, req.query_one("callbackUrl").or_else(|| req.query_one("rd")));
    let html = pages::signout(
        lang(req),
        &format!("{BASE}/signout"),
        &token,
        &target,
        &app.url("/"),
        &self_path(req),
    );
    with_cookie(Reply::html(200, html), cookie)
}

fn is_error_code(s: &str) -> bool {
    !s.is_empty() && s.len() <= 40 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn error_page(app: &App, req: &Request) -> Reply {
    let code = req
        .query_one("error")
        .filter(|e| is_error_code(e))
        .unwrap_or_else(|| "Default".into());
    // next-auth's statuses for its error page.
    let status = match code.as_str() {
        "Configuration" => 500,
        "AccessDenied" | "Verification" => 403,
        _ => 200,
    };
    let html = pages::error(
        lang(req),
        &code,
        &req.request_id,
        &app.url(&format!("{BASE}/signin")),
        &app.url("/"),
    );
    Reply::html(status, html)
}

fn providers(app: &App) -> Reply {
    Reply::json(
        200,
        &json!({
            "tiktok": {
                "id": "tiktok",
                "name": "TikTok",
                "type": "oauth",
                "signinUrl": app.url(&format!("{BASE}/signin/tiktok")),
                "callbackUrl": app.url(&format!("{BASE}/callback/tiktok")),
            }
        }),
    )
}

// === sign-in ===

/// Starts a sign-in: a new single-use state bound to this browser (and a PKCE verifier when
/// configured), stored server-side, then off to TikTok's consent page.
async fn start(app: &App, req: &Request) -> Reply {
    let post = req.method == http::Method::POST;
    if post && !csrf_ok(app, req) {
        return error_reply(app, req, &AuthError::Csrf);
    }
    let raw_target = if post {
        req.form_one("callbackUrl").or_else(|| req.form_one("rd"))
    } else {
        req.query_one("callbackUrl").or_else(|| req.query_one("rd"))
    };
    let target = callback_target(app, raw_target);
    if let Some(ip) = req.client_ip {
        if !app.start_limiter.allow(ip, app.clock.now()) {
            app.metrics.oauth("failed", AuthError::TooManyStarts.reason());
            return error_reply(app, req, &AuthError::TooManyStarts).header("Retry-After", "60".into());
        }
    }
    match start_inner(app, req, target).await {
        Ok((url, binding_cookie)) => {
            app.metrics.oauth("started", "");
            let reply = if req.wants_json_redirect() {
                Reply::json(200, &json!({ "url": url }))
            } else {
                Reply::redirect(&url)
            };
            with_cookie(reply, binding_cookie)
        }
        Err(e) => {
            app.metrics.oauth("failed", e.reason());
            error_reply(app, req, &e)
        }
    }
}

async fn start_inner(app: &App, req: &Request, callback_url: String) -> Result<(String, Option<String>), AuthError> {
    // One binding value per browser, reused across tabs so parallel sign-ins do not break
    // each other; only its hash is stored with the state.
    let existing = req
        .cookies(&app.cookies.login)
        .into_iter()
        .find(|v| crypto::decode_token(v).is_some())
        .map(String::from);
    let binding = match existing {
        Some(b) => b,
        None => crypto::random_token()?,
    };
    // Re-issued on every start, so the binding outlives this sign-in's state even when the
    // browser's cookie was about to expire.
    let cookie = Some(app.cookies.build(&app.cookies.login, &binding, Some(LOGIN_STATE_TTL)));
    let state = crypto::random_token()?;
    let verifier = match app.tiktok.pkce() {
        crate::config::Pkce::Off => None,
        _ => Some(format!("{}{}", crypto::random_token()?, crypto::random_token()?)),
    };
    let challenge = verifier
        .as_deref()
        .map(|v| crypto::pkce_challenge(v, app.tiktok.pkce() == crate::config::Pkce::S256Hex));
    let now = app.clock.now();
    let login = LoginState {
        browser_hash: crypto::sha256_hex(binding.as_bytes()),
        pkce_verifier: verifier,
        callback_url,
        expires: now + LOGIN_STATE_TTL,
    };
    let state_hash = crypto::sha256_hex(state.as_bytes());
    app.store
        .run(move |s| s.insert_login_state(&state_hash, &login, now))
        .await?;
    Ok((app.tiktok.authorize_url(&state, challenge.as_deref()), cookie))
}

/// TikTok sends the browser back here. The state is checked (and consumed) before anything
/// is sent to TikTok; only then is the code exchanged and a new session issued.
async fn callback(app: &App, req: &Request) -> Reply {
    app.metrics.oauth("callback", "");
    match callback_inner(app, req).await {
        Ok((location, session_cookie)) => {
            app.metrics.oauth("completed", "");
            Reply::redirect(&location).set_cookie(session_cookie)
        }
        Err(e) => {
            app.metrics.oauth("failed", e.reason());
            error_reply(app, req, &e)
        }
    }
}

async fn callback_inner(app: &App, req: &Request) -> Result<(String, String), AuthError> {
    let state = match req.query_count("state") {
        0 => return Err(AuthError::State(StateProblem::Missing)),
        1 => req.query_one("state").unwrap_or_default(),
        _ => return Err(AuthError::State(StateProblem::Duplicated)),
    };
    if state.is_empty() {
        return Err(AuthError::State(StateProblem::Missing));
    }
    let state_hash = crypto::sha256_hex(state.as_bytes());
    // Taking the state deletes it: whatever happens below, it cannot be replayed.
    let login = app
        .store
        .run(move |s| s.take_login_state(&state_hash))
        .await?
        .ok_or(AuthError::State(StateProblem::Unknown))?;
    let now = app.clock.now();
    if login.expires <= now {
        return Err(AuthError::State(StateProblem::Expired));
    }
    let bound = req.cookies(&app.cookies.login).into_iter().any(|b| {
        crypto::ct_eq(
            crypto::sha256_hex(b.as_bytes()).as_bytes(),
            login.browser_hash.as_bytes(),
        )
    });
    if !bound {
        return Err(AuthError::State(StateProblem::WrongBrowser));
    }
    if req.query_count("error") > 0 {
        let err = req.query_one("error").unwrap_or_else(|| "invalid_request".into());
        return Err(AuthError::ProviderError(err.chars().take(64).collect()));
    }
    // The query parser decodes the code exactly once (`%2A0%21` → `*0!`); reqwest encodes it
    // exactly once again in the token request.
    let code = req
        .query_one("code")
        .filter(|c| !c.is_empty())
        .ok_or(AuthError::MissingCode)?;

    let tok = app.tiktok.exchange_code(&code, login.pkce_verifier.as_deref()).await?;
    let granted = tok.scopes();
    if !granted.contains(&"user.info.basic") {
        return Err(AuthError::ScopeMissing(tok.scope.clone()));
    }
    let fields = tiktok::fields_for_scopes(&granted);
    let info = app.tiktok.user_info(&tok.access_token, &fields).await?;
    if info.open_id.as_deref().is_some_and(|o| o != tok.open_id) {
        return Err(AuthError::OpenIdMismatch);
    }
    let now = app.clock.now();
    let profile = Profile {
        open_id: tok.open_id.clone(),
        display_name: info.display_name.clone(),
        username: info.username.clone(),
        avatar: info.avatar_url.clone(),
        verified: info.is_verified,
    };
    let tokens = Tokens {
        access_token: tok.access_token.clone(),
        refresh_token: tok.refresh_token.clone(),
        access_expires_at: now.saturating_add(tok.expires_in.max(0)),
        refresh_expires_at: now.saturating_add(tok.refresh_expires_in.max(0)),
        scope: tok.scope.clone(),
        obtained_at: now,
    };

    // A fresh session id on every sign-in; any session the browser had is deleted in the
    // same transaction (session fixation).
    let session_token = crypto::random_token()?;
    let Some(key) = session_key(&session_token) else {
        return Err(AuthError::Crypto(crypto::CryptoError::Malformed));
    };
    let old_key = req.cookies(&app.cookies.session).into_iter().find_map(session_key);
    let lifetime = app.config.session_lifetime.as_secs() as i64;
    let expires = now + lifetime;
    let new_hash = crypto::hex(&key);
    let old_hash = old_key.map(|k| crypto::hex(&k));
    let identity = app
        .store
        .run(move |s| s.complete_login(&profile, &tokens, &new_hash, expires, old_hash.as_deref(), now))
        .await?;
    if let Some(old) = old_key {
        app.sessions.remove(&old);
    }
    log::info!(
        "sign-in completed user_id={} request_id={}",
        identity.user_id,
        req.request_id
    );
    app.sessions.insert(key, Arc::new(identity), now);
    let cookie = app.cookies.build(&app.cookies.session, &session_token, Some(lifetime));
    Ok((login.callback_url, cookie))
}

// === sign-out ===

async fn signout(app: &App, req: &Request) -> Reply {
    if !csrf_ok(app, req) {
        return error_reply(app, req, &AuthError::Csrf);
    }
    let target = callback_target(app, req.form_one("callbackUrl").or_else(|| req.form_one("rd")));
    let now = app.clock.now();
    for key in req.cookies(&app.cookies.session).into_iter().filter_map(session_key) {
        app.sessions.remove(&key);
        let hash = crypto::hex(&key);
        match app.store.run(move |s| s.delete_session(&hash, now)).await {
            Ok(Some(user_id)) => revoke_tokens(app, &user_id, &req.request_id).await,
            Ok(None) => {}
            Err(e) => log::error!("sign-out: deleting session failed: {e} request_id={}", req.request_id),
        }
    }
    let reply = if req.wants_json_redirect() {
        Reply::json(200, &json!({ "url": target }))
    } else {
        Reply::redirect(&target)
    };
    reply.set_cookie(app.cookies.clear(&app.cookies.session))
}

/// Revokes the user's TikTok grant and forgets the tokens. A failure does not block sign-out:
/// the session is already gone; the log says what TikTok answered.
async fn revoke_tokens(app: &App, user_id: &str, request_id: &str) {
    let uid = user_id.to_string();
    let tokens = match app.store.run(move |s| s.tokens(&uid)).await {
        Ok(Some(t)) => t,
        Ok(None) => return,
        Err(e) => {
            log::warn!("sign-out: cannot read tokens for revoke: {e} request_id={request_id}");
            return;
        }
    };
    let forget = match app.tiktok.revoke(&tokens.access_token).await {
        Ok(()) => true,
        // Already dead at TikTok: nothing left to revoke.
        Err(e) if e.is_invalid_grant() || e.is_access_token_invalid() => true,
        Err(e) => {
            log::warn!("sign-out: TikTok revoke failed: {} request_id={request_id}", e);
            false
        }
    };
    if forget {
        let uid = user_id.to_string();
        let now = app.clock.now();
        if let Err(e) = app.store.run(move |s| s.clear_tokens(&uid, now)).await {
            log::warn!("sign-out: clearing tokens failed: {e} request_id={request_id}");
        }
        app.tokens.forget(user_id);
    }
}

// === session ===

/// The next-auth session object, or the literal `null`.
pub fn session_json(id: &Identity) -> serde_json::Value {
    let expires = time::OffsetDateTime::from_unix_timestamp(id.session_expires)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default();
    json!({
        "user": {
            "id": id.user_id,
            "name": id.display_name,
            "email": null,
            "image": id.avatar,
            "tiktokId": id.open_id,
            "username": id.username,
            "verified": id.verified,
            "niniScore": id.nini_score,
            "videos": id.videos,
            "streak": id.streak,
        },
        "expires": expires,
    })
}

/// The signed-in user, if any: a live session whose TikTok grant is not dead.
pub async fn signed_in(app: &App, req: &Request) -> Option<Arc<Identity>> {
    match current_identity(app, req).await {
        (Some(id), _) if id.grant_error.is_none() => Some(id),
        _ => None,
    }
}

async fn current_identity(app: &App, req: &Request) -> (Option<Arc<Identity>>, bool) {
    let values = req.cookies(&app.cookies.session);
    let had_cookie = !values.is_empty();
    for v in values.into_iter().take(crate::cookies::MAX_SESSION_COOKIES) {
        if let Some(id) = app.identity(v).await {
            return (Some(id), had_cookie);
        }
    }
    (None, had_cookie)
}

async fn session(app: &App, req: &Request) -> Reply {
    match current_identity(app, req).await {
        (Some(id), _) => Reply::json(200, &session_with_token_check(app, &id).await),
        // A cookie that no longer names a session is cleared, as Auth.js does.
        (None, true) => Reply::json(200, &serde_json::Value::Null).set_cookie(app.cookies.clear(&app.cookies.session)),
        (None, false) => Reply::json(200, &serde_json::Value::Null),
    }
}

/// The session JSON, with `"error": "RefreshAccessTokenError"` when the TikTok grant is gone
/// (the NINI frontend then sends the user to sign in again). Checking costs a memory lookup
/// while the access token is fresh, and one refresh when it is due.
async fn session_with_token_check(app: &App, id: &Identity) -> serde_json::Value {
    let mut body = session_json(id);
    let error = match &id.grant_error {
        Some(e) => Some(e.clone()),
        None => match app.tokens.access_token(app, &id.user_id).await {
            Ok(_) => None,
            Err(TokenError::GrantDead) => Some(REFRESH_ERROR.to_string()),
            Err(e) => {
                // TikTok or the store is unwell: the session itself is fine.
                log::warn!("session token check for user {}: {e}", id.user_id);
                None
            }
        },
    };
    if let (Some(e), Some(obj)) = (error, body.as_object_mut()) {
        obj.insert("error".into(), serde_json::Value::String(e));
    }
    body
}

/// `useSession().update()`: CSRF-checked; the session is server-owned, so it is returned
/// as it is (client-sent data cannot change identity).
async fn session_update(app: &App, req: &Request) -> Reply {
    if !csrf_ok(app, req) {
        return Reply::json(400, &serde_json::Value::Null);
    }
    match current_identity(app, req).await {
        (Some(id), _) => Reply::json(200, &session_json(&id)),
        _ => Reply::json(400, &serde_json::Value::Null),
    }
}

// === forward-auth ===

/// Recognises the forward-auth endpoint on the RAW request path: `Some(None)` for
/// `/api/auth/verify`, `Some(Some(suffix))` for Envoy's `/api/auth/verify/<original path>`.
pub fn verify_suffix(raw_path: &str) -> Option<Option<&str>> {
    let prefix = "/api/auth/verify";
    let head = raw_path.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    match &raw_path[prefix.len()..] {
        "" => Some(None),
        rest if rest.starts_with('/') => Some(Some(rest)),
        _ => None,
    }
}

/// `/api/auth/verify` (any method): a 2xx with the identity headers for a live session, 401
/// otherwise — never a redirect (the calling proxy decides what to do with a 401). The 2xx is
/// 202, except for Envoy's path-suffix form: Envoy's HTTP ext_authz allows only 200. A
/// trusted proxy's original URI only shapes the sign-in link offered in
/// `X-Auth-Request-Redirect`; it never decides whether a session is required.
pub async fn verify(app: &App, req: &Request, envoy: bool) -> Reply {
    match signed_in(app, req).await {
        Some(id) => {
            let status = if envoy { 200 } else { 202 };
            let mut reply = Reply::new(status, "text/plain; charset=utf-8", bytes::Bytes::new()).no_store();
            for (name, value) in crate::headers::identity_headers(&id) {
                reply = reply.header(name, value);
            }
            if let Some(jwt) = app.identity_jwt.header_value(&id, app.clock.now()) {
                reply = reply.header(crate::headers::IDENTITY_JWT, jwt);
            }
            reply
        }
        None => {
            let target = req.forwarded_uri.as_deref().unwrap_or("/");
            let signin = format!(
                "{}?{}",
                app.url(&format!("{BASE}/signin")),
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("callbackUrl", &redirect::or_home(Some(target), &app.origin))
                    .finish()
            );
            Reply::json(401, &json!({ "error": "unauthorized", "signin": signin }))
                .header("X-Auth-Request-Redirect", signin)
        }
    }
}

// === errors ===

/// The one place an `AuthError` becomes a response: JSON `{url}` for next-auth's fetches,
/// an HTML page for browsers, JSON for other API clients. Users see a safe message and the
/// request id; the log gets the chain.
pub fn error_reply(app: &App, req: &Request, err: &AuthError) -> Reply {
    if err.is_client_error() {
        log::info!("auth request refused: {} request_id={}", err.chain(), req.request_id);
    } else {
        log::error!("auth request failed: {} request_id={}", err.chain(), req.request_id);
    }
    let code = err.code();
    if req.wants_json_redirect() {
        // next-auth expects 200 {"url"} even on errors and reads ?error= from it.
        let page = if code == "MissingCSRF" { "signin" } else { "error" };
        return Reply::json(200, &json!({ "url": app.url(&format!("{BASE}/{page}?error={code}")) }));
    }
    let navigation = req.accepts_html();
    if navigation {
        let html = pages::error(
            lang(req),
            code,
            &req.request_id,
            &app.url(&format!("{BASE}/signin")),
            &app.url("/"),
        );
        Reply::html(err.status(), html)
    } else {
        Reply::json(err.status(), &json!({ "error": code, "requestId": req.request_id }))
    }
}
