//! CSRF protection: for the sidecar's forms and next-auth's POSTs, double submit of a token
//! whose cookie carries an HMAC under the primary key (so only tokens this deployment issued
//! count), compared in constant time; for the app-facing sync POST (called by the app's own
//! `fetch`, which has no token to send), the browser's own word on where the request comes
//! from (`Sec-Fetch-Site`, `Origin`).

use super::{Auth, AuthError};
use crate::crypto;
use crate::web::Request;

/// The CSRF token for this browser: reused when its cookie verifies, new otherwise (then the
/// second value is the `Set-Cookie` to send).
pub fn token(auth: &Auth, req: &Request) -> Result<(String, Option<String>), AuthError> {
    let keys = auth.store.keys();
    if let Some(token) = req
        .cookies(&auth.cookies.csrf)
        .into_iter()
        .find_map(|c| keys.csrf_token_from_cookie(c))
    {
        return Ok((token.to_string(), None));
    }
    let (token, value) = keys.new_csrf_cookie()?;
    Ok((token, Some(auth.cookies.build(&auth.cookies.csrf, &value, None))))
}

/// A POST passes when its `csrfToken` equals the token in a valid CSRF cookie.
pub fn ok(auth: &Auth, req: &Request) -> bool {
    let Some(sent) = req.form_one("csrfToken") else {
        return false;
    };
    let keys = auth.store.keys();
    req.cookies(&auth.cookies.csrf)
        .into_iter()
        .filter_map(|c| keys.csrf_token_from_cookie(c))
        .any(|t| crypto::ct_eq(t.as_bytes(), sent.as_bytes()))
}

/// A state-changing request a browser may have been made to send from another site is
/// refused: `Sec-Fetch-Site` must say `same-origin` when present, and `Origin`, when present,
/// must be ours. A request with neither came from no browser (curl, a server), so it carries
/// no victim's cookie by accident.
pub fn same_origin(headers: &http::HeaderMap, origin: &str) -> bool {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site") {
        return site.eq_ignore_ascii_case("same-origin");
    }
    match get("origin") {
        Some(o) => o.trim_end_matches('/').eq_ignore_ascii_case(origin),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("value"));
        }
        h
    }

    #[test]
    fn only_same_origin_browsers_or_non_browsers_pass() {
        let o = "https://app.example.com";
        assert!(same_origin(&headers(&[]), o), "curl and servers");
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")]), o));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")]), o));
        assert!(
            !same_origin(&headers(&[("sec-fetch-site", "same-site")]), o),
            "a sibling subdomain"
        );
        assert!(!same_origin(&headers(&[("sec-fetch-site", "none")]), o));
        assert!(same_origin(&headers(&[("origin", "https://app.example.com")]), o));
        assert!(!same_origin(&headers(&[("origin", "https://evil.example")]), o));
        assert!(!same_origin(&headers(&[("origin", "null")]), o));
        // Sec-Fetch-Site wins over a matching Origin.
        assert!(!same_origin(
            &headers(&[("sec-fetch-site", "cross-site"), ("origin", "https://app.example.com")]),
            o
        ));
    }
}
