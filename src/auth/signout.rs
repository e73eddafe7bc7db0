//! Sign-out: `POST /api/auth/signout` (CSRF) ends this browser's session; with
//! `everywhere=true` it ends every session of the user. The user's TikTok grant is revoked
//! when their last session ends (or everywhere was asked for), never by a sign-out on one
//! device while others are signed in. The tokens revoked are read under the user's refresh
//! lock, and forgotten only if they are still the stored ones (a sign-in elsewhere that
//! stored new tokens meanwhile keeps them).

use serde_json::json;

use super::{callback_target, csrf, error_reply, Auth, AuthError};
use crate::crypto;
use crate::web::{Reply, Request};

pub async fn signout(auth: &Auth, req: &Request) -> Reply {
    if !csrf::ok(auth, req) {
        return error_reply(auth, req, &AuthError::Csrf);
    }
    let target = callback_target(auth, req.form_one("callbackUrl").or_else(|| req.form_one("rd")));
    let everywhere = req.form_one("everywhere").is_some_and(|v| v == "true" || v == "1");
    let now = auth.clock.now();
    // The same bound as every other cookie read: a request stuffed with session cookies
    // costs at most two deletions.
    let keys: Vec<[u8; 32]> = req
        .cookies(&auth.cookies.session)
        .into_iter()
        .filter_map(|v| auth.session_key(v))
        .take(super::cookies::MAX_SESSION_COOKIES)
        .collect();
    for key in keys {
        auth.sessions.remove(&key);
        let hash = crypto::hex(&key);
        let ended = auth.store.end_session(&hash, now).await;
        // Once more after the commit: a lookup between the first removal and the commit read
        // the live row and may have cached it (and what holds the session open, such as a
        // WebSocket, re-checks it now and finds it gone).
        auth.sessions.remove(&key);
        let ended = match ended {
            Ok(Some(e)) => e,
            Ok(None) => continue,
            Err(e) => {
                log::error!("sign-out: ending the session failed: {e} request_id={}", req.request_id);
                return super::unavailable(req, &e);
            }
        };
        if everywhere {
            match auth.store.end_user_sessions(&ended.user_id, None, now).await {
                Ok(n) => log::info!(
                    "signed out everywhere: user {} ({} other session(s)) request_id={}",
                    ended.user_id,
                    n,
                    req.request_id
                ),
                Err(e) => {
                    log::error!("sign-out everywhere failed: {e} request_id={}", req.request_id);
                    return super::unavailable(req, &e);
                }
            }
            auth.sessions.remove_user(&ended.user_id);
        }
        if everywhere || ended.remaining == 0 {
            revoke_grant(auth, &ended.user_id, everywhere, &req.request_id).await;
        }
    }
    let reply = if req.wants_json_redirect() {
        Reply::json(200, &json!({ "url": target }))
    } else {
        Reply::redirect(&target)
    };
    reply.set_cookie(auth.cookies.clear(&auth.cookies.session))
}

/// Revokes the user's TikTok grant and forgets the tokens, under the user's refresh lock so
/// no refresh rotates them meanwhile. Unless `force`, a user who signed in again since (a
/// live session exists) keeps the grant. A failure does not block sign-out: the session is
/// already gone; the log says what TikTok answered.
pub(super) async fn revoke_grant(auth: &Auth, user_id: &str, force: bool, request_id: &str) {
    let result = auth
        .tokens
        .with_refresh_lock(user_id, || async {
            if !force {
                match auth.store.user_sessions(user_id, auth.clock.now()).await {
                    Ok(s) if !s.is_empty() => return,
                    Ok(_) => {}
                    Err(e) => {
                        log::warn!("sign-out: cannot check for other sessions: {e} request_id={request_id}");
                        return;
                    }
                }
            }
            let tokens = match auth.store.tokens(user_id).await {
                Ok(Some(t)) => t,
                Ok(None) => return,
                Err(e) => {
                    log::warn!("sign-out: cannot read tokens for revoke: {e} request_id={request_id}");
                    return;
                }
            };
            let forget = match auth.tiktok.revoke(&tokens.access_token).await {
                Ok(()) => true,
                // Already dead at TikTok: nothing left to revoke.
                Err(e) if e.is_invalid_grant() || e.is_access_token_invalid() => true,
                Err(e) => {
                    log::warn!("sign-out: TikTok revoke failed: {e} request_id={request_id}");
                    false
                }
            };
            if forget {
                let now = auth.clock.now();
                if let Err(e) = auth.store.clear_tokens(user_id, &tokens.refresh_token, now).await {
                    log::warn!("sign-out: clearing tokens failed: {e} request_id={request_id}");
                }
                auth.tokens.forget(user_id);
            }
        })
        .await;
    if let Err(e) = result {
        log::warn!("sign-out: revoke skipped for user {user_id}: {e} request_id={request_id}");
    }
}
