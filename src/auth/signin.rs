//! The TikTok sign-in: `start` (a new single-use state, and a PKCE verifier when configured,
//! sealed into a short-lived cookie of this browser, then off to TikTok) and `callback`
//! (the cookie must match the state, the state is recorded as used, only then is the code
//! exchanged and a session issued).
//!
//! Starting a sign-in writes nothing on the server: the pending sign-in lives in the
//! browser, sealed (AES-GCM) under the primary key, so no client can fill a table for
//! everyone, and any replica that shares the keys can finish any sign-in. Only a used state
//! is recorded (a primary key, purged when it expires), which is what makes a state single
//! use even against someone who copied the cookie.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::StateProblem;
use super::{callback_target, csrf, error_reply, Auth, AuthError};
use crate::crypto::{self, CryptoError};
use crate::store::{NewLogin, Profile, Tokens};
use crate::tiktok;
use crate::web::{Reply, Request};

/// How long a started sign-in may take before its state expires.
pub const LOGIN_STATE_TTL: i64 = 600;
/// Pending sign-ins one browser keeps (tabs signing in at once); older ones are dropped.
const MAX_PENDING: usize = 4;
/// Hex characters of the state's hash in the cookie name: enough that a browser's few
/// pending sign-ins never collide, short enough to keep headers small.
const NAME_HASH_LEN: usize = 16;
/// Sign-in starts one client address may make per minute (a person needs a handful).
pub const START_LIMIT_PER_MINUTE: u32 = 60;

/// What a pending sign-in needs at the callback; sealed into its cookie.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    /// SHA-256 (hex) of the state: the callback's state must hash to this.
    s: String,
    /// PKCE code verifier, when PKCE is on.
    v: Option<String>,
    /// Validated callback URL.
    c: String,
    /// Expiry (unix seconds).
    e: i64,
}

fn cookie_name(auth: &Auth, state_hash: &str) -> String {
    format!(
        "{}{}",
        auth.cookies.state_prefix,
        &state_hash[..NAME_HASH_LEN.min(state_hash.len())]
    )
}

/// Binds the sealed value to its cookie name, so a value cannot be replayed under another.
fn aad(name: &str) -> String {
    format!("nini-auth:signin-state:{name}")
}

fn seal(auth: &Auth, name: &str, p: &Pending) -> Result<String, CryptoError> {
    let json = serde_json::to_vec(p).map_err(|_| CryptoError::Malformed)?;
    auth.store.keys().seal(&json, &aad(name))
}

fn open(auth: &Auth, name: &str, value: &str) -> Option<Pending> {
    let plain = auth.store.keys().open(value, &aad(name)).ok()?;
    serde_json::from_slice(&plain).ok()
}

/// Starts a sign-in: `POST /api/auth/signin/tiktok` from the sign-in form or next-auth's
/// `signIn()`, CSRF-checked.
pub async fn start(auth: &Auth, req: &Request) -> Reply {
    if !csrf::ok(auth, req) {
        return error_reply(auth, req, &AuthError::Csrf);
    }
    let target = callback_target(auth, req.form_one("callbackUrl").or_else(|| req.form_one("rd")));
    if let Some(ip) = req.client_ip {
        let now = auth.clock.now();
        let key = format!("signin:{}", crate::web::limit_key(ip));
        match auth.store.rate_hit(&key, 60, now).await {
            Ok(hit) if hit.count > auth.config.limits.signin_starts_per_minute => {
                auth.metrics.oauth("failed", AuthError::TooManyStarts.reason());
                return error_reply(auth, req, &AuthError::TooManyStarts)
                    .header("Retry-After", hit.resets_in.to_string());
            }
            Ok(_) => {}
            Err(e) => {
                let e = AuthError::Store(e);
                auth.metrics.oauth("failed", e.reason());
                return error_reply(auth, req, &e);
            }
        }
    }
    match start_inner(auth, req, target) {
        Ok((url, cookies)) => {
            auth.metrics.oauth("started", "");
            let mut reply = if req.wants_json_redirect() {
                Reply::json(200, &json!({ "url": url }))
            } else {
                Reply::redirect(&url)
            };
            for c in cookies {
                reply = reply.set_cookie(c);
            }
            reply.no_store()
        }
        Err(e) => {
            auth.metrics.oauth("failed", e.reason());
            error_reply(auth, req, &e)
        }
    }
}

/// The authorize URL and the `Set-Cookie`s: the new pending sign-in, and deletions of this
/// browser's expired, unreadable or surplus ones.
fn start_inner(auth: &Auth, req: &Request, callback_url: String) -> Result<(String, Vec<String>), AuthError> {
    let now = auth.clock.now();
    let mut cookies = Vec::new();
    let mut live: Vec<(String, i64)> = Vec::new();
    for (name, value) in req.cookie_pairs() {
        if !name.starts_with(&auth.cookies.state_prefix) {
            continue;
        }
        match open(auth, name, value).filter(|p| p.e > now) {
            Some(p) => live.push((name.to_string(), p.e)),
            None => cookies.push(auth.cookies.clear(name)),
        }
    }
    live.sort_by_key(|(_, e)| *e);
    while live.len() >= MAX_PENDING {
        let (name, _) = live.remove(0);
        cookies.push(auth.cookies.clear(&name));
    }

    let state = crypto::random_token()?;
    let verifier = match auth.tiktok.pkce() {
        crate::config::Pkce::Off => None,
        _ => Some(format!("{}{}", crypto::random_token()?, crypto::random_token()?)),
    };
    let challenge = verifier
        .as_deref()
        .map(|v| crypto::pkce_challenge(v, auth.tiktok.pkce() == crate::config::Pkce::S256Hex));
    let state_hash = crypto::sha256_hex(state.as_bytes());
    let name = cookie_name(auth, &state_hash);
    let pending = Pending {
        s: state_hash,
        v: verifier,
        c: callback_url,
        e: now + LOGIN_STATE_TTL,
    };
    cookies.push(
        auth.cookies
            .build(&name, &seal(auth, &name, &pending)?, Some(LOGIN_STATE_TTL)),
    );
    Ok((auth.tiktok.authorize_url(&state, challenge.as_deref()), cookies))
}

/// TikTok sends the browser back here. The state is checked against this browser's sealed
/// cookie and recorded as used before anything is sent to TikTok; only then is the code
/// exchanged and a new session issued. The pending sign-in's cookie is deleted whatever
/// the outcome.
pub async fn callback(auth: &Auth, req: &Request) -> Reply {
    auth.metrics.oauth("callback", "");
    let (result, used_cookie) = callback_inner(auth, req).await;
    let reply = match result {
        Ok((location, session_cookie)) => {
            auth.metrics.oauth("completed", "");
            Reply::redirect(&location).set_cookie(session_cookie)
        }
        Err(e) => {
            auth.metrics.oauth("failed", e.reason());
            error_reply(auth, req, &e)
        }
    };
    match used_cookie {
        Some(name) => reply.set_cookie(auth.cookies.clear(&name)),
        None => reply,
    }
}

type CallbackResult = Result<(String, String), AuthError>;

async fn callback_inner(auth: &Auth, req: &Request) -> (CallbackResult, Option<String>) {
    let state = match req.query_count("state") {
        0 => return (Err(AuthError::State(StateProblem::Missing)), None),
        1 => req.query_one("state").unwrap_or_default(),
        _ => return (Err(AuthError::State(StateProblem::Duplicated)), None),
    };
    if state.is_empty() {
        return (Err(AuthError::State(StateProblem::Missing)), None);
    }
    let state_hash = crypto::sha256_hex(state.as_bytes());
    let name = cookie_name(auth, &state_hash);
    // Only a cookie this browser got from `start` for exactly this state will do: a
    // callback fed to another browser (login CSRF) finds none.
    let pending = req
        .cookies(&name)
        .into_iter()
        .filter_map(|v| open(auth, &name, v))
        .find(|p| crypto::ct_eq(p.s.as_bytes(), state_hash.as_bytes()));
    let Some(pending) = pending else {
        return (Err(AuthError::State(StateProblem::WrongBrowser)), None);
    };
    let now = auth.clock.now();
    if pending.e <= now {
        return (Err(AuthError::State(StateProblem::Expired)), Some(name));
    }
    // Recording the state as used is what makes it single use: whatever happens below, it
    // cannot be replayed, even with a copy of the cookie.
    match auth.store.consume_state(&state_hash, pending.e).await {
        Ok(true) => {}
        Ok(false) => return (Err(AuthError::State(StateProblem::Unknown)), Some(name)),
        Err(e) => return (Err(AuthError::Store(e)), Some(name)),
    }
    (complete(auth, req, pending).await, Some(name))
}

/// With a verified, consumed state: exchange the code, read the profile, store the user and
/// a new session.
async fn complete(auth: &Auth, req: &Request, pending: Pending) -> CallbackResult {
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

    let tok = auth.tiktok.exchange_code(&code, pending.v.as_deref()).await?;
    let granted = tok.scopes();
    if !granted.contains(&"user.info.basic") {
        return Err(AuthError::ScopeMissing(tok.scope.clone()));
    }
    let fields = tiktok::fields_for_scopes(&granted);
    let info = auth.tiktok.user_info(&tok.access_token, &fields).await?;
    if info.open_id.as_deref().is_some_and(|o| o != tok.open_id) {
        return Err(AuthError::OpenIdMismatch);
    }
    let now = auth.clock.now();
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
    let (session_token, key) = auth.store.keys().new_session_token()?;
    let old_key = req
        .cookies(&auth.cookies.session)
        .into_iter()
        .find_map(|v| auth.session_key(v));
    let lifetime = auth.config.session_lifetime.as_secs() as i64;
    let new_hash = crypto::hex(&key);
    let old_hash = old_key.map(|k| crypto::hex(&k));
    let device = super::devices::device_label(req.header("user-agent"));
    let identity = auth
        .store
        .complete_login(NewLogin {
            profile: &profile,
            tokens: &tokens,
            session_hash: &new_hash,
            session_expires: now + lifetime,
            replaces: old_hash.as_deref(),
            device: device.as_deref(),
            now,
        })
        .await?;
    if let Some(old) = old_key {
        auth.sessions.remove(&old);
    }
    // Tokens and identity changed: nothing this process cached about the user still holds.
    auth.tokens.forget(&identity.user_id);
    auth.sessions.remove_user(&identity.user_id);
    log::info!(
        "sign-in completed user_id={} request_id={}",
        identity.user_id,
        req.request_id
    );
    auth.sessions.insert(key, std::sync::Arc::new(identity), now);
    let cookie = auth
        .cookies
        .build(&auth.cookies.session, &session_token, Some(lifetime));
    Ok((pending.c, cookie))
}
