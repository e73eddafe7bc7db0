//! The next-auth REST surface `next-auth/react` speaks (`session`, `csrf`, `providers`,
//! `error`) and the sign-in / sign-out pages (es/en) that post to the flow.

use serde::Serialize;
use serde_json::json;
use time::format_description::well_known::Rfc3339;

use super::{callback_target, csrf, error_reply, lang, pages, unavailable, with_cookie, Auth, BASE};
use crate::store::Identity;
use crate::tiktok::tokens::{TokenError, REFRESH_ERROR};
use crate::web::{Reply, Request};

/// The page's own path and query without `lang`, for the language switch links.
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

pub fn signin_page(auth: &Auth, req: &Request) -> Reply {
    let (token, cookie) = match csrf::token(auth, req) {
        Ok(t) => t,
        Err(e) => return error_reply(auth, req, &e),
    };
    let target = callback_target(auth, req.query_one("callbackUrl").or_else(|| req.query_one("rd")));
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

/// `GET /api/auth/signin/tiktok` (a link, e.g. from an app's "Sign in" button or a proxy's
/// `rd=` redirect): the sign-in page for the same target. A GET never starts a sign-in;
/// the page's form POSTs, with its CSRF token.
pub fn signin_link(auth: &Auth, req: &Request) -> Reply {
    let target = callback_target(auth, req.query_one("callbackUrl").or_else(|| req.query_one("rd")));
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("callbackUrl", &target)
        .finish();
    Reply::redirect(&auth.url(&format!("{BASE}/signin?{q}")))
}

pub fn signout_page(auth: &Auth, req: &Request) -> Reply {
    let (token, cookie) = match csrf::token(auth, req) {
        Ok(t) => t,
        Err(e) => return error_reply(auth, req, &e),
    };
    let target = callback_target(auth, req.query_one("callbackUrl").or_else(|| req.query_one("rd")));
    let html = pages::signout(
        lang(req),
        &format!("{BASE}/signout"),
        &token,
        &target,
        &auth.url("/"),
        &self_path(req),
    );
    with_cookie(Reply::html(200, html), cookie)
}

fn is_error_code(s: &str) -> bool {
    !s.is_empty() && s.len() <= 40 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

pub fn error_page(auth: &Auth, req: &Request) -> Reply {
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
        &auth.url(&format!("{BASE}/signin")),
        &auth.url("/"),
    );
    Reply::html(status, html)
}

pub fn providers(auth: &Auth) -> Reply {
    Reply::json(
        200,
        &json!({
            "tiktok": {
                "id": "tiktok",
                "name": "TikTok",
                "type": "oauth",
                "signinUrl": auth.url(&format!("{BASE}/signin/tiktok")),
                "callbackUrl": auth.url(&format!("{BASE}/callback/tiktok")),
            }
        }),
    )
}

pub fn csrf(auth: &Auth, req: &Request) -> Reply {
    match csrf::token(auth, req) {
        Ok((token, cookie)) => with_cookie(Reply::json(200, &json!({ "csrfToken": token })), cookie),
        Err(e) => error_reply(auth, req, &e),
    }
}

/// The next-auth session object (the literal `null` when signed out is the caller's). Written
/// straight from the identity, without a `serde_json::Value` in between: every open tab of the
/// app polls `/api/auth/session`.
#[derive(Serialize)]
pub struct SessionJson<'a> {
    user: SessionUser<'a>,
    expires: String,
    /// `RefreshAccessTokenError` (or the stored reason) when the TikTok grant is gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionUser<'a> {
    id: &'a str,
    name: Option<&'a str>,
    /// TikTok gives no e-mail; next-auth's type has the field, so it is always `null`.
    email: Option<&'a str>,
    image: Option<&'a str>,
    tiktok_id: &'a str,
    username: Option<&'a str>,
    verified: bool,
    nini_score: i64,
    videos: i64,
    streak: i64,
}

pub fn session_json(id: &Identity) -> SessionJson<'_> {
    let expires = time::OffsetDateTime::from_unix_timestamp(id.session_expires)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default();
    SessionJson {
        user: SessionUser {
            id: &id.user_id,
            name: id.display_name.as_deref(),
            email: None,
            image: id.avatar.as_deref(),
            tiktok_id: &id.open_id,
            username: id.username.as_deref(),
            verified: id.verified,
            nini_score: id.nini_score,
            videos: id.videos,
            streak: id.streak,
        },
        expires,
        error: None,
    }
}

pub async fn session(auth: &Auth, req: &Request) -> Reply {
    match auth.request_identity(req).await {
        Ok((Some(id), _)) => Reply::json(200, &session_with_token_check(auth, &id).await),
        // A cookie that no longer names a session is cleared, as Auth.js does.
        Ok((None, true)) => {
            Reply::json(200, &serde_json::Value::Null).set_cookie(auth.cookies.clear(&auth.cookies.session))
        }
        Ok((None, false)) => Reply::json(200, &serde_json::Value::Null),
        Err(e) => unavailable(req, &e),
    }
}

/// The session JSON, with `"error": "RefreshAccessTokenError"` when the TikTok grant is gone
/// (the NINI frontend then sends the user to sign in again). Checking costs a memory lookup
/// while the access token is fresh, and one refresh when it is due.
async fn session_with_token_check<'a>(auth: &Auth, id: &'a Identity) -> SessionJson<'a> {
    let mut body = session_json(id);
    body.error = match &id.grant_error {
        Some(e) => Some(e.as_str()),
        None => match auth.tokens.access_token(&id.user_id).await {
            Ok(_) => None,
            Err(TokenError::GrantDead) => Some(REFRESH_ERROR),
            Err(e) => {
                // TikTok or the store is unwell: the session itself is fine.
                log::warn!("session token check for user {}: {e}", id.user_id);
                None
            }
        },
    };
    body
}

/// `useSession().update()`: CSRF-checked; the session is server-owned, so it is returned
/// as it is (client-sent data cannot change identity).
pub async fn session_update(auth: &Auth, req: &Request) -> Reply {
    if !csrf::ok(auth, req) {
        return Reply::json(400, &serde_json::Value::Null);
    }
    match auth.request_identity(req).await {
        Ok((Some(id), _)) => Reply::json(200, &session_json(&id)),
        Ok(_) => Reply::json(400, &serde_json::Value::Null),
        Err(e) => unavailable(req, &e),
    }
}
