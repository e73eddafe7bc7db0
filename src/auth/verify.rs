//! Forward-auth: `/api/auth/verify` for nginx `auth_request`, Traefik `forwardAuth` and
//! Envoy `ext_authz` — a 2xx with the identity headers for a live session, 401 otherwise,
//! 403 when a `[[routes.rules]]` rule refuses the user on the original path; never a
//! redirect (the calling proxy decides what to do with a 401 or 403).

use serde_json::json;

use super::{redirect, unavailable, Auth, BASE};
use crate::web::{Reply, Request};

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

/// `/api/auth/verify` (any method). The 2xx carries the identity headers (and, to trusted
/// proxies only, the signed `X-Nini-Identity`). It is 202, except for Envoy's path-suffix form:
/// Envoy's HTTP ext_authz allows only 200. A trusted proxy's original URI only shapes the
/// sign-in link offered in `X-Auth-Request-Redirect`; it never decides whether a session is
/// required.
///
/// Rules are judged on the original path: Envoy's path suffix (`envoy_suffix`), else a
/// trusted proxy's `X-Original-URI` / `X-Forwarded-Uri`. When neither is known, the user must
/// meet every rule (see `RouteRules::refusing_original`).
pub async fn verify(auth: &Auth, req: &Request, envoy_suffix: Option<&str>) -> Reply {
    let envoy = envoy_suffix.is_some();
    let id = match auth.signed_in(req).await {
        Ok(id) => id,
        Err(e) => return unavailable(req, &e),
    };
    match id {
        Some(id) => {
            let original = envoy_suffix.or(req.forwarded_uri.as_deref());
            if let Some(rule) = auth.rules.refusing_original(original, &id) {
                // The path only: a query may carry anything (the README promises none is logged).
                let path = original.map_or("(unknown path)", |o| o.split(['?', '#']).next().unwrap_or(o));
                super::rules::note_denial(rule, &id, path, &req.request_id);
                return Reply::json(403, &json!({ "error": "forbidden", "requestId": req.request_id }));
            }
            let status = if envoy { 200 } else { 202 };
            let mut reply = Reply::new(status, "text/plain; charset=utf-8", bytes::Bytes::new()).no_store();
            for (name, value) in super::headers::identity_headers(&id) {
                reply = reply.header(name, value);
            }
            // The signed identity only goes to a front proxy we trust, which passes it on to
            // the app: handed to a browser's own request (same-origin JavaScript can call
            // /verify), it would be a bearer credential for up to identity.ttl.
            if req.from_trusted_proxy {
                if let Some(jwt) = auth.identity_jwt.header_value(&id, auth.clock.now()) {
                    reply = reply.header(super::headers::IDENTITY_JWT, jwt);
                }
            }
            reply
        }
        None => {
            let target = req.forwarded_uri.as_deref().unwrap_or("/");
            let signin = format!(
                "{}?{}",
                auth.url(&format!("{BASE}/signin")),
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("callbackUrl", &redirect::or_home(Some(target), &auth.origin))
                    .finish()
            );
            Reply::json(401, &json!({ "error": "unauthorized", "signin": signin }))
                .header("X-Auth-Request-Redirect", signin)
        }
    }
}
