//! CSRF protection for the sidecar's forms and next-auth's POSTs: double submit of a token
//! whose cookie carries an HMAC under the primary key (so only tokens this deployment issued
//! count), compared in constant time.

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
