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
        let ended = match auth.store.end_session(&hash, now).await {
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
async fn revoke_grant(auth: &Auth, user_id: &str, force: bool, request_id: &str) {
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

/// A short description of the device from its User-Agent ("Chrome on Android"), for the
/// devices list; None when nothing is recognised.
pub fn device_label(user_agent: Option<&str>) -> Option<String> {
    let ua = user_agent?;
    let has = |s: &str| ua.contains(s);
    // Order matters: Edge and Opera also say "Chrome", Chrome also says "Safari".
    let browser = if has("Edg/") {
        "Edge"
    } else if has("OPR/") || has("Opera") {
        "Opera"
    } else if has("SamsungBrowser") {
        "Samsung Internet"
    } else if has("Firefox/") || has("FxiOS") {
        "Firefox"
    } else if has("Chrome/") || has("CriOS") || has("HeadlessChrome") {
        "Chrome"
    } else if has("Safari/") {
        "Safari"
    } else if has("curl/") {
        "curl"
    } else if has("node") || has("undici") {
        "Node.js"
    } else {
        ""
    };
    let os = if has("iPhone") || has("iPad") || has("iOS") {
        "iOS"
    } else if has("Android") {
        "Android"
    } else if has("Windows") {
        "Windows"
    } else if has("CrOS") {
        "ChromeOS"
    } else if has("Mac OS X") || has("Macintosh") {
        "macOS"
    } else if has("Linux") {
        "Linux"
    } else {
        ""
    };
    match (browser, os) {
        ("", "") => None,
        (b, "") => Some(b.to_string()),
        ("", o) => Some(o.to_string()),
        (b, o) => Some(format!("{b} · {o}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_described_briefly() {
        let cases = [
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36",
                Some("Chrome · Android"),
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
                Some("Safari · iOS"),
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36 Edg/126.0",
                Some("Edge · Windows"),
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:127.0) Gecko/20100101 Firefox/127.0",
                Some("Firefox · macOS"),
            ),
            ("curl/8.5.0", Some("curl")),
            ("", None),
        ];
        for (ua, want) in cases {
            assert_eq!(device_label(Some(ua)).as_deref(), want, "{ua}");
        }
        assert_eq!(device_label(None), None);
    }
}
