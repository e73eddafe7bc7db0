//! The request-path error type and its one mapping to what people and clients see: a
//! next-auth error code, an HTTP status, and whether it is the client's fault (logged at
//! info) or ours / TikTok's (logged at error with the whole chain).

use crate::crypto::CryptoError;
use crate::store::StoreError;
use crate::tiktok::TikTokError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateProblem {
    Missing,
    Duplicated,
    Unknown,
    Expired,
    WrongBrowser,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("CSRF token missing or invalid")]
    Csrf,
    #[error("too many sign-ins started from one address")]
    TooManyStarts,
    #[error("sign-in callback rejected: state {0:?}")]
    State(StateProblem),
    #[error("TikTok sent the user back with error {0:?}")]
    ProviderError(String),
    #[error("sign-in callback without exactly one code")]
    MissingCode,
    #[error("granted scopes {0:?} lack user.info.basic")]
    ScopeMissing(String),
    #[error("user info open_id does not match the token's open_id")]
    OpenIdMismatch,
    #[error("TikTok request failed")]
    TikTok(#[from] TikTokError),
    #[error("store failure")]
    Store(#[from] StoreError),
    #[error("crypto failure")]
    Crypto(#[from] CryptoError),
}

impl AuthError {
    /// The next-auth error code shown on the error page and put in `?error=`.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Csrf => "MissingCSRF",
            AuthError::TooManyStarts => "OAuthSignin",
            AuthError::State(_) | AuthError::MissingCode | AuthError::OpenIdMismatch => "OAuthCallbackError",
            AuthError::ProviderError(e) if e == "access_denied" => "AccessDenied",
            AuthError::ProviderError(_) => "OAuthCallbackError",
            AuthError::ScopeMissing(_) => "AccessDenied",
            AuthError::TikTok(e) => match e {
                TikTokError::OAuth { error, .. } if error == "invalid_grant" => "OAuthCallbackError",
                TikTokError::OAuth { error, .. }
                    if error == "invalid_client"
                        || error == "unauthorized_client"
                        || error == "invalid_request"
                        || error == "invalid_scope" =>
                {
                    "Configuration"
                }
                _ => "TikTokUnavailable",
            },
            AuthError::Store(e) if e.is_unavailable() => "Unavailable",
            AuthError::Store(_) | AuthError::Crypto(_) => "Configuration",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            AuthError::Csrf => 403,
            AuthError::TooManyStarts => 429,
            AuthError::ProviderError(e) if e == "access_denied" => 403,
            AuthError::State(_) | AuthError::MissingCode | AuthError::ProviderError(_) => 400,
            AuthError::ScopeMissing(_) => 403,
            AuthError::OpenIdMismatch => 502,
            AuthError::TikTok(TikTokError::Timeout(_)) => 504,
            AuthError::TikTok(e) if e.is_invalid_grant() => 400,
            // invalid_client & co: our credentials or redirect URI are wrong, not TikTok down.
            AuthError::TikTok(_) if self.code() == "Configuration" => 500,
            AuthError::TikTok(_) => 502,
            AuthError::Store(e) if e.is_unavailable() => 503,
            AuthError::Store(_) | AuthError::Crypto(_) => 500,
        }
    }

    /// A short, bounded label for metrics (`nini_auth_oauth_total{stage="failed",reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Csrf => "csrf",
            AuthError::TooManyStarts => "rate_limited",
            AuthError::State(StateProblem::Expired) => "state_expired",
            AuthError::State(StateProblem::WrongBrowser) => "state_wrong_browser",
            AuthError::State(_) => "state_invalid",
            AuthError::ProviderError(e) if e == "access_denied" => "access_denied",
            AuthError::ProviderError(_) => "provider_error",
            AuthError::MissingCode => "missing_code",
            AuthError::ScopeMissing(_) => "scope_missing",
            AuthError::OpenIdMismatch => "open_id_mismatch",
            AuthError::TikTok(e) if e.is_invalid_grant() => "code_rejected",
            AuthError::TikTok(TikTokError::Timeout(_)) => "tiktok_timeout",
            AuthError::TikTok(TikTokError::OAuth { .. }) => "tiktok_oauth_error",
            AuthError::TikTok(_) => "tiktok_unavailable",
            AuthError::Store(e) if e.is_unavailable() => "store_unavailable",
            AuthError::Store(_) | AuthError::Crypto(_) => "internal",
        }
    }

    /// Bad or stale input from a browser: expected, logged quietly.
    pub fn is_client_error(&self) -> bool {
        self.status() < 500
    }

    /// "error: cause: cause" for the log line (never contains tokens or codes).
    pub fn chain(&self) -> String {
        chain(self)
    }
}

/// "error: cause: cause": an error and its sources on one line, for logs.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut src = err.source();
    while let Some(e) = src {
        s.push_str(": ");
        s.push_str(&e.to_string());
        src = e.source();
    }
    s
}
