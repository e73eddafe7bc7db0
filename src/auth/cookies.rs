//! The sidecar's cookies: names (with the `__Host-` prefix over https), attributes
//! (`HttpOnly`, `SameSite=Lax`, `Path=/`, `Secure` over https), tolerant parsing of `Cookie`
//! headers, and removal of our cookies before a request goes upstream.

use cookie::{Cookie, SameSite};

/// Session cookies of our name looked at per request. A browser has one (two while a stale
/// one lingers on another path); a request stuffed with hundreds would otherwise cost a
/// database read each.
pub const MAX_SESSION_COOKIES: usize = 2;

/// Cookie names for one deployment; fixed at start-up from the public URL's scheme.
#[derive(Debug, Clone)]
pub struct CookieNames {
    pub session: String,
    pub csrf: String,
    /// Names of the sealed cookies that carry pending sign-ins start with this (one cookie
    /// per sign-in in progress, named after its state).
    pub state_prefix: String,
    /// The login-binding cookie of earlier versions: still never forwarded upstream.
    legacy_login: String,
    secure: bool,
}

impl CookieNames {
    pub fn new(secure: bool) -> CookieNames {
        // `__Host-` makes browsers refuse the cookie unless Secure, Path=/ and no Domain, so a
        // sibling subdomain cannot plant ("toss") one. It needs https, hence the plain names
        // for local http development.
        let prefix = if secure { "__Host-" } else { "" };
        CookieNames {
            session: format!("{prefix}nini-auth.session"),
            csrf: format!("{prefix}nini-auth.csrf"),
            state_prefix: format!("{prefix}nini-auth.state."),
            legacy_login: format!("{prefix}nini-auth.login"),
            secure,
        }
    }

    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Is this one of ours (so it must not be forwarded upstream)?
    pub fn is_ours(&self, name: &str) -> bool {
        name == self.session || name == self.csrf || name == self.legacy_login || name.starts_with(&self.state_prefix)
    }

    /// `Set-Cookie` value; `max_age` None = browser-session cookie.
    pub fn build(&self, name: &str, value: &str, max_age: Option<i64>) -> String {
        let mut c = Cookie::build((name.to_string(), value.to_string()))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.secure);
        if let Some(secs) = max_age {
            c = c.max_age(cookie::time::Duration::seconds(secs));
        }
        c.build().to_string()
    }

    /// `Set-Cookie` value that deletes the cookie.
    pub fn clear(&self, name: &str) -> String {
        let c = Cookie::build((name.to_string(), String::new()))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.secure)
            .max_age(cookie::time::Duration::ZERO)
            .expires(cookie::time::OffsetDateTime::UNIX_EPOCH);
        c.build().to_string()
    }

    /// The `Cookie` header value without our cookies, or None when nothing is left.
    pub fn strip_ours(&self, header: &str) -> Option<String> {
        let kept: Vec<&str> = parts(header).filter(|part| !self.is_ours(part_name(part))).collect();
        (!kept.is_empty()).then(|| kept.join("; "))
    }

    /// Does this `Cookie` header carry one of our cookies (what `strip_ours` would remove)?
    pub fn has_ours(&self, header: &str) -> bool {
        parts(header).any(|part| self.is_ours(part_name(part)))
    }
}

fn parts(header: &str) -> impl Iterator<Item = &str> {
    header.split(';').map(str::trim).filter(|part| !part.is_empty())
}

fn part_name(part: &str) -> &str {
    part.split_once('=').map(|(n, _)| n).unwrap_or(part).trim()
}

/// Name/value pairs of one `Cookie` header (see `web::cookie_pairs`).
pub use crate::web::cookie_pairs as pairs;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_cookies_are_host_prefixed_and_secure() {
        let n = CookieNames::new(true);
        assert_eq!(n.session, "__Host-nini-auth.session");
        let c = n.build(&n.session, "v", Some(60));
        for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Secure", "Max-Age=60"] {
            assert!(c.contains(attr), "{c} lacks {attr}");
        }
        assert!(!c.contains("Domain"));
    }

    #[test]
    fn http_cookies_are_plain() {
        let n = CookieNames::new(false);
        assert_eq!(n.session, "nini-auth.session");
        let c = n.build(&n.session, "v", None);
        assert!(c.contains("HttpOnly") && !c.contains("Secure"));
        assert!(n.clear(&n.session).contains("Max-Age=0"));
    }

    #[test]
    fn strip_removes_only_ours() {
        let n = CookieNames::new(false);
        assert_eq!(
            n.strip_ours("a=1; nini-auth.session=x; b=2; nini-auth.csrf=y")
                .as_deref(),
            Some("a=1; b=2")
        );
        assert_eq!(n.strip_ours("nini-auth.session=x"), None);
        assert_eq!(n.strip_ours(";;;").as_deref(), None);
    }
}
