//! TikTok's webhook (`POST /api/auth/webhooks/tiktok`): verifies the `TikTok-Signature`
//! header (HMAC-SHA256 with the client secret over `"<t>.<raw body>"`, timestamp within five
//! minutes) and, on `authorization.removed`, forgets the user's tokens and ends their
//! sessions. Format from TikTok's "Webhooks" and "Webhook Events" documentation.

use std::sync::Arc;

use ring::hmac;
use serde::Deserialize;
use serde_json::json;

use crate::clock::Clock;
use crate::config::Secret;
use crate::crypto;
use crate::store::cache::SessionCache;
use crate::store::Store;
use crate::tiktok::tokens::TokenManager;
use crate::web::{Reply, Request};

/// How old a signed delivery may be: replayed captures are refused after this.
const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Deserialize)]
struct Event {
    client_key: String,
    event: String,
    #[serde(default)]
    user_openid: String,
}

/// Checks `t=<unix>,s=<hex>`; returns whether the signature matches and is fresh.
pub fn signature_ok(header: &str, body: &[u8], secret: &str, now: i64) -> bool {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("s", v)) => sigs.push(v.to_ascii_lowercase()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if now.abs_diff(t) > TOLERANCE_SECS as u64 {
        return false;
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut msg = t.to_string().into_bytes();
    msg.push(b'.');
    msg.extend_from_slice(body);
    let expected = crypto::hex(hmac::sign(&key, &msg).as_ref());
    sigs.iter().any(|s| crypto::ct_eq(s.as_bytes(), expected.as_bytes()))
}

/// Signs like TikTok does (tests, and anyone replaying a delivery by hand).
pub fn sign(body: &[u8], secret: &str, t: i64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut msg = t.to_string().into_bytes();
    msg.push(b'.');
    msg.extend_from_slice(body);
    format!("t={t},s={}", crypto::hex(hmac::sign(&key, &msg).as_ref()))
}

/// What the webhook needs: the app's credentials and the handles it changes.
pub struct Webhook {
    pub client_key: String,
    pub client_secret: Secret,
    pub store: Arc<dyn Store>,
    pub sessions: Arc<SessionCache>,
    pub tokens: Arc<TokenManager>,
    pub clock: Clock,
}

impl Webhook {
    pub async fn handle(&self, req: &Request) -> Reply {
        let now = self.clock.now();
        let header = req.header("tiktok-signature").unwrap_or("");
        if !signature_ok(header, &req.body, self.client_secret.expose(), now) {
            log::warn!(
                "webhook refused: bad or stale TikTok-Signature request_id={}",
                req.request_id
            );
            return Reply::json(401, &json!({ "error": "invalid_signature" }));
        }
        let event: Event = match serde_json::from_slice(&req.body) {
            Ok(e) => e,
            Err(_) => return Reply::json(400, &json!({ "error": "invalid_payload" })),
        };
        if !crypto::ct_eq(event.client_key.as_bytes(), self.client_key.as_bytes()) {
            return Reply::json(400, &json!({ "error": "wrong_client_key" }));
        }
        if event.event != "authorization.removed" {
            // Other events (video.*, portability.*) are not ours; acknowledge so TikTok stops.
            return Reply::json(200, &json!({ "ok": true, "ignored": event.event }));
        }
        match self.store.authorization_removed(&event.user_openid, now).await {
            Ok(Some((user_id, sessions))) => {
                self.sessions.remove_user(&user_id);
                self.tokens.forget(&user_id);
                log::info!("TikTok authorization removed: user {user_id}, {sessions} session(s) ended");
                Reply::json(200, &json!({ "ok": true }))
            }
            // Unknown user (or already removed): deliveries repeat, the answer stays 200.
            Ok(None) => Reply::json(200, &json!({ "ok": true })),
            Err(e) => {
                // 5xx makes TikTok retry the delivery later (it retries for 72 h).
                log::error!("webhook: {e} request_id={}", req.request_id);
                Reply::json(503, &json!({ "error": "unavailable", "requestId": req.request_id }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        let body = br#"{"client_key":"k","event":"authorization.removed","user_openid":"o"}"#;
        let h = sign(body, "secret", 1000);
        assert!(signature_ok(&h, body, "secret", 1000));
        assert!(signature_ok(&h, body, "secret", 1299));
        assert!(!signature_ok(&h, body, "secret", 1301), "stale");
        assert!(!signature_ok(&h, body, "other", 1000), "wrong secret");
        assert!(!signature_ok(&h, b"{}", "secret", 1000), "other body");
        assert!(!signature_ok("s=abc", body, "secret", 1000), "no timestamp");
        assert!(!signature_ok("", body, "secret", 1000));
        assert!(
            !signature_ok(&h.replace("t=1000", "t=1001"), body, "secret", 1000),
            "timestamp is signed"
        );
    }
}
