//! Your devices: every live session of a user is a device. `GET /api/auth/sessions` lists
//! them (JSON), `POST /api/auth/sessions/revoke` (CSRF) ends one of them or all but the
//! current one, and `GET /api/auth/devices` is the es/en page with a button per device. Also
//! what a device is called: a short description made from the User-Agent at sign-in.
//!
//! Ending a session deletes it in the store together with an invalidation record, so every
//! other replica drops it from its cache within a second; this process drops it from its own
//! cache after the delete committed. Ending the *current* session here is a sign-out of this
//! device (cookie cleared, TikTok grant revoked when it was the user's last session), exactly
//! as `POST /api/auth/signout` does it.

use std::sync::Arc;

use serde_json::json;
use time::format_description::well_known::Rfc3339;

use super::{csrf, error_reply, lang, pages, signout, unavailable, with_cookie, Auth, AuthError, BASE};
use crate::crypto;
use crate::store::{DeviceSession, Identity, StoreError};
use crate::web::{Reply, Request};

/// The devices page's own path (also where a form POST comes back to).
const PAGE: &str = "/devices";

/// Longer "ids" name no session: refused without asking the store.
const MAX_ID_LEN: usize = 128;

/// The signed-in session of the request: its key and identity. A session whose TikTok grant
/// died authenticates nothing, here as everywhere else.
async fn current(auth: &Auth, req: &Request) -> Result<Option<([u8; 32], Arc<Identity>)>, StoreError> {
    let values = req.cookies(&auth.cookies.session);
    let (found, _) = auth.cookie_session(values.into_iter()).await?;
    Ok(found.filter(|(_, id)| id.grant_error.is_none()))
}

fn unauthorized(req: &Request) -> Reply {
    Reply::json(401, &json!({ "error": "unauthorized", "requestId": req.request_id }))
        .header("WWW-Authenticate", "Cookie".into())
}

/// The devices page's path, keeping a language the request chose explicitly (`?lang=` or the
/// page form's `lang` field).
fn page_path(req: &Request) -> String {
    // Only the two language codes we render ever go into the URL, never the raw parameter.
    let explicit = req
        .query_one("lang")
        .or_else(|| req.form_one("lang"))
        .map(|l| pages::negotiate(Some(&l), None).code());
    match explicit {
        Some(code) => format!("{BASE}{PAGE}?lang={code}"),
        None => format!("{BASE}{PAGE}"),
    }
}

/// Not signed in on the page (or its form): to the sign-in page, and back here afterwards.
fn to_signin(auth: &Auth, req: &Request) -> Reply {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("callbackUrl", &page_path(req))
        .finish();
    Reply::redirect(&auth.url(&format!("{BASE}/signin?{q}")))
}

/// Writes the activity this process noted but has not flushed yet, so the list shows this
/// replica's devices at most a minute stale (activity is noted once a minute per session).
/// A failure only makes the list older: the batch goes back for the flusher.
async fn flush_activity(auth: &Auth, request_id: &str) {
    if let Err(e) = auth.activity.write_to(auth.store.as_ref()).await {
        log::warn!("devices: recording activity failed (kept for the flusher): {e} request_id={request_id}");
    }
}

/// The user's live sessions, newest first, the current one marked. Only a GET writes pending
/// activity first: HEAD changes nothing.
async fn sessions(auth: &Auth, req: &Request, id: &Identity) -> Result<Vec<Device>, StoreError> {
    if req.method == http::Method::GET {
        flush_activity(auth, &req.request_id).await;
    }
    let now = auth.clock.now();
    let list = auth.store.user_sessions(&id.user_id, now).await?;
    Ok(list.into_iter().map(|s| Device::new(s, &id.session_id, now)).collect())
}

/// One device as the list and the page show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The session's public id (never its token or the token's hash).
    pub id: String,
    pub current: bool,
    pub label: Option<String>,
    pub created_at: i64,
    pub last_seen_at: Option<i64>,
    pub expires: i64,
}

impl Device {
    fn new(s: DeviceSession, current_id: &str, now: i64) -> Device {
        let current = s.id == current_id;
        Device {
            current,
            // The current device is being seen right now, by this very request.
            last_seen_at: if current {
                Some(s.last_seen_at.map_or(now, |t| t.max(now)))
            } else {
                s.last_seen_at
            },
            id: s.id,
            label: s.device,
            created_at: s.created_at,
            expires: s.expires,
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "id": self.id,
            "current": self.current,
            "device": self.label,
            "createdAt": rfc3339(self.created_at),
            "lastSeenAt": self.last_seen_at.and_then(rfc3339),
            "expires": rfc3339(self.expires),
        })
    }
}

fn rfc3339(t: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
}

/// `GET /api/auth/sessions`: `{"sessions": [...]}` for the signed-in user, else 401.
pub async fn list(auth: &Auth, req: &Request) -> Reply {
    let id = match current(auth, req).await {
        Ok(Some((_, id))) => id,
        Ok(None) => return unauthorized(req),
        Err(e) => return unavailable(req, &e),
    };
    match sessions(auth, req, &id).await {
        Ok(devices) => {
            let items: Vec<serde_json::Value> = devices.iter().map(Device::json).collect();
            Reply::json(200, &json!({ "sessions": items }))
        }
        Err(e) => unavailable(req, &e),
    }
}

/// `GET /api/auth/devices`: the page; not signed in, the sign-in page first.
pub async fn page(auth: &Auth, req: &Request) -> Reply {
    let id = match current(auth, req).await {
        Ok(Some((_, id))) => id,
        Ok(None) => return to_signin(auth, req),
        Err(e) => return unavailable(req, &e),
    };
    let devices = match sessions(auth, req, &id).await {
        Ok(d) => d,
        Err(e) => return unavailable(req, &e),
    };
    let (token, cookie) = match csrf::token(auth, req) {
        Ok(t) => t,
        Err(e) => return error_reply(auth, req, &e),
    };
    let lang = lang(req);
    let html = pages::devices(
        lang,
        &pages::DevicesView {
            now: auth.clock.now(),
            action: &format!("{BASE}/sessions/revoke"),
            csrf_token: &token,
            signout: &format!("{BASE}/signout"),
            devices: &devices,
            self_path: &format!("{BASE}{PAGE}"),
        },
    );
    with_cookie(Reply::html(200, html), cookie)
}

/// What a revoke request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    One(String),
    Others,
}

fn target(req: &Request) -> Option<Target> {
    let others = req.form_one("others").is_some_and(|v| v == "true" || v == "1");
    match (req.form_one("id"), others) {
        (Some(id), false) if !id.is_empty() => Some(Target::One(id)),
        (None, true) => Some(Target::Others),
        _ => None,
    }
}

/// `POST /api/auth/sessions/revoke` (CSRF): `id=<session id>` ends that session of the
/// signed-in user (404 when the user has no such session), `others=true` ends all the user's
/// other sessions. Browsers (the page's forms) are sent back to the page; API clients get
/// `{"ended": N}`.
pub async fn revoke(auth: &Auth, req: &Request) -> Reply {
    if !csrf::ok(auth, req) {
        return error_reply(auth, req, &AuthError::Csrf);
    }
    let (key, id) = match current(auth, req).await {
        Ok(Some(found)) => found,
        Ok(None) if req.accepts_html() => return to_signin(auth, req),
        Ok(None) => return unauthorized(req),
        Err(e) => return unavailable(req, &e),
    };
    let Some(target) = target(req) else {
        return Reply::json(
            400,
            &json!({ "error": "bad_request", "message": "send id=<session id> or others=true", "requestId": req.request_id }),
        );
    };
    let single = matches!(target, Target::One(_));
    let now = auth.clock.now();
    let result = match target {
        Target::One(sid) if sid == id.session_id => return end_current(auth, req, key, &id).await,
        Target::One(sid) => end_one(auth, &id, &sid, now).await,
        Target::Others => end_others(auth, &id, key, now).await,
    };
    let ended = match result {
        Ok(n) => n,
        Err(e) => return unavailable(req, &e),
    };
    log::info!(
        "devices: user {} ended {ended} other session(s) request_id={}",
        id.user_id,
        req.request_id
    );
    if req.accepts_html() {
        // The page shows what is left, whether or not the session was still there.
        return Reply::redirect(&auth.url(&page_path(req)));
    }
    if ended == 0 && single {
        return Reply::json(404, &json!({ "error": "not_found", "requestId": req.request_id }));
    }
    Reply::json(200, &json!({ "ended": ended }))
}

/// Ends one other session of the user. The store deletes it only if it is this user's, and
/// records the invalidation other replicas follow.
async fn end_one(auth: &Auth, id: &Identity, session_id: &str, now: i64) -> Result<usize, StoreError> {
    if session_id.len() > MAX_ID_LEN {
        return Ok(0);
    }
    if !auth.store.end_session_by_id(&id.user_id, session_id, now).await? {
        return Ok(0);
    }
    // The ended session's cache key is its token's hash, which the store does not give out:
    // drop the user's cached sessions, the live ones cost one read each on their next use.
    auth.sessions.remove_user(&id.user_id);
    auth.metrics.device_revocations.with_label_values(&["one"]).inc();
    Ok(1)
}

async fn end_others(auth: &Auth, id: &Identity, key: [u8; 32], now: i64) -> Result<usize, StoreError> {
    let keep = crypto::hex(&key);
    let n = auth.store.end_user_sessions(&id.user_id, Some(&keep), now).await?;
    if n > 0 {
        auth.sessions.remove_user(&id.user_id);
        auth.metrics
            .device_revocations
            .with_label_values(&["others"])
            .inc_by(n as u64);
    }
    Ok(n)
}

/// Ending the current session is a sign-out of this device, with sign-out's rules.
async fn end_current(auth: &Auth, req: &Request, key: [u8; 32], id: &Identity) -> Reply {
    let now = auth.clock.now();
    let ended = match auth.store.end_session(&crypto::hex(&key), now).await {
        Ok(e) => e,
        Err(e) => return unavailable(req, &e),
    };
    auth.sessions.remove(&key);
    if let Some(e) = &ended {
        auth.metrics.device_revocations.with_label_values(&["current"]).inc();
        log::info!(
            "devices: user {} ended the current session request_id={}",
            id.user_id,
            req.request_id
        );
        if e.remaining == 0 {
            signout::revoke_grant(auth, &e.user_id, false, &req.request_id).await;
        }
    }
    let reply = if req.accepts_html() {
        Reply::redirect(&auth.url("/"))
    } else {
        Reply::json(
            200,
            &json!({ "ended": usize::from(ended.is_some()), "signedOut": true }),
        )
    };
    reply.set_cookie(auth.cookies.clear(&auth.cookies.session))
}

/// A short description of the device from its User-Agent ("Chrome · Android"), for the
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

    #[test]
    fn the_current_device_is_seen_now_and_the_others_as_stored() {
        let s = |id: &str, seen: Option<i64>| DeviceSession {
            id: id.into(),
            created_at: 100,
            last_seen_at: seen,
            device: Some("curl".into()),
            expires: 9_000,
        };
        let cur = Device::new(s("a", Some(150)), "a", 200);
        assert!(cur.current);
        assert_eq!(cur.last_seen_at, Some(200));
        let other = Device::new(s("b", Some(150)), "a", 200);
        assert!(!other.current);
        assert_eq!(other.last_seen_at, Some(150));
        assert_eq!(Device::new(s("b", None), "a", 200).last_seen_at, None);
        let j = cur.json();
        assert_eq!(j["createdAt"], "1970-01-01T00:01:40Z");
        assert_eq!(j["lastSeenAt"], "1970-01-01T00:03:20Z");
        assert_eq!(j["device"], "curl");
        assert!(j.get("token").is_none() && j.get("hash").is_none());
    }
}
