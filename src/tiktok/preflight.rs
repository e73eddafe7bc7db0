//! `nini-auth check --online`: asks TikTok, the way a sign-in does but without a user, whether
//! it accepts this configuration, and names for every finding what to fix and where (a page of
//! the TikTok developer portal, a config key, an environment variable). It makes two requests,
//! plus one per configured scope when TikTok refuses the scope list:
//!
//! 1. the authorize URL a sign-in sends browsers to, without following redirects: before any
//!    user is involved TikTok answers an unknown `client_key`, an unregistered `redirect_uri`,
//!    an unapproved `scope` or a missing `code_challenge` with its own error page naming it;
//! 2. the token endpoint, with a made-up code, the configured redirect URI and the client
//!    credentials, exactly as a sign-in's code exchange: a valid client gets `invalid_grant`
//!    (the code is wrong), a wrong key or secret gets `invalid_client`.
//!
//! The `Date` of TikTok's answers is compared with this machine's clock. Every request is
//! bounded by `tiktok.timeout`. The client secret goes only to the token endpoint, as in a
//! sign-in, and never into the report. Nothing here runs inside the sidecar.

use std::fmt;

use url::Url;

use super::client::{PageAnswer, TikTokClient, TikTokError};
use crate::clock::Clock;
use crate::config::{Config, Pkce};

/// The largest difference between this machine's clock and TikTok's that passes.
pub const MAX_SKEW_SECS: i64 = 60;

/// The made-up authorization code: shaped like TikTok's (`…*0!<digits>.e1`), so that only its
/// value is wrong, and easy to recognise in TikTok's logs.
pub const DUMMY_CODE: &str = "nini-auth-check.not-a-real-code*0!0000.e1";

/// The PKCE verifier sent with the made-up code (43+ characters of the allowed alphabet; it
/// needs no secrecy, the code it would protect does not exist).
const DUMMY_VERIFIER: &str = "nini-auth-check.not-a-real-verifier.0000000000";

/// The `state` of the authorize URL the check loads (and prints).
const DUMMY_STATE: &str = "nini-auth-check";

/// Where TikTok's settings live, for the fixes.
const PORTAL: &str = "In the TikTok developer portal (https://developers.tiktok.com > Manage apps > your app)";

/// How much of a text TikTok sent (an error description, a page's detail) the report shows.
const MAX_QUOTE: usize = 200;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Could not be told from here; not a failure.
    Note,
    /// Sign-ins fail (or misbehave) until it is fixed.
    Finding,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub outcome: Outcome,
    /// What was checked: "client key", "redirect URI", "clock", …
    pub topic: &'static str,
    pub message: String,
    /// What to do about it, and where.
    pub fix: Option<String>,
}

impl Item {
    fn ok(topic: &'static str, message: impl Into<String>) -> Item {
        Item {
            outcome: Outcome::Ok,
            topic,
            message: message.into(),
            fix: None,
        }
    }

    fn note(topic: &'static str, message: impl Into<String>) -> Item {
        Item {
            outcome: Outcome::Note,
            topic,
            message: message.into(),
            fix: None,
        }
    }

    fn finding(topic: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Item {
        Item {
            outcome: Outcome::Finding,
            topic,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Everything `check --online` found, in the order it was checked.
#[derive(Debug, Clone)]
pub struct Report {
    pub items: Vec<Item>,
    /// The authorize URL that was loaded: what to open in a browser to see TikTok's page.
    pub authorize_url: String,
    pub timeout_secs: f64,
}

impl Report {
    pub fn findings(&self) -> usize {
        self.items.iter().filter(|i| i.outcome == Outcome::Finding).count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "# Online checks against TikTok (each request bounded by tiktok.timeout = {}s):",
            self.timeout_secs
        )?;
        for i in &self.items {
            let label = match i.outcome {
                Outcome::Ok => "ok",
                Outcome::Note => "note",
                Outcome::Finding => "FINDING",
            };
            writeln!(f, "{label:<8} {:<15} {}", i.topic, i.message)?;
            if let Some(fix) = &i.fix {
                writeln!(f, "{:<24} fix: {fix}", "")?;
            }
        }
        writeln!(
            f,
            "# TikTok's authorize page as a browser is sent to it (open it to see TikTok's own message):"
        )?;
        writeln!(f, "{}", self.authorize_url)?;
        match self.findings() {
            0 => return writeln!(f, "# No findings: TikTok accepts this configuration."),
            1 => writeln!(f, "# 1 finding: sign-ins fail or misbehave until it is fixed.")?,
            n => writeln!(f, "# {n} findings: sign-ins fail or misbehave until they are fixed.")?,
        }
        // TikTok's authorize page stops at the first problem it sees: a fixed key may reveal
        // a redirect URI or scope problem behind it.
        let from_page = ["client key", "redirect URI", "scopes", "PKCE", "authorize page"];
        if self
            .items
            .iter()
            .any(|i| i.outcome == Outcome::Finding && from_page.contains(&i.topic))
        {
            writeln!(
                f,
                "# TikTok names one problem at a time: run `check --online` again after each fix."
            )?;
        }
        Ok(())
    }
}

/// Runs the checks against the configured TikTok endpoints.
pub async fn run(cfg: &Config) -> Report {
    let timeout_secs = cfg.tiktok.timeout.as_secs_f64();
    let client = match TikTokClient::new(cfg.tiktok.clone(), cfg.redirect_uri(), None) {
        Ok(c) => c,
        Err(e) => {
            return Report {
                items: vec![Item::finding(
                    "TikTok client",
                    format!("cannot set up an HTTP client: {}", causes(&e)),
                    "this is a local problem (TLS roots, resources); try again",
                )],
                authorize_url: String::new(),
                timeout_secs,
            }
        }
    };
    let clock = Clock::default();
    // A sign-in sends a PKCE challenge when configured; so does the check, or TikTok would
    // rightly complain about a missing one.
    let verifier = (cfg.tiktok.pkce != Pkce::Off).then_some(DUMMY_VERIFIER);
    let challenge = verifier.map(|v| crate::crypto::pkce_challenge(v, cfg.tiktok.pkce == Pkce::S256Hex));
    let authorize_url = client.authorize_url(DUMMY_STATE, challenge.as_deref());

    let mut items = Vec::new();
    let page = client.fetch_page(&authorize_url).await;
    let page_seen_at = clock.now();
    let verdict = match &page {
        Ok(p) => read_page(p, client.redirect_uri()),
        Err(e) => Verdict::Unreachable(causes(e)),
    };
    items.extend(page_items(&client, cfg, &verdict, &authorize_url).await);

    let (token, token_date) = client.exchange_code_dated(DUMMY_CODE, verifier).await;
    let token_seen_at = clock.now();
    items.push(token_item(cfg, &verdict, token));

    let theirs = token_date
        .map(|d| (d, token_seen_at))
        .or_else(|| page.as_ref().ok().and_then(|p| p.date).map(|d| (d, page_seen_at)));
    items.push(clock_item(theirs));

    let secret = cfg.tiktok.client_secret.expose();
    for i in &mut items {
        i.message = scrub(&i.message, secret);
        i.fix = i.fix.as_deref().map(|f| scrub(f, secret));
    }
    Report {
        items,
        authorize_url: scrub(&authorize_url, secret),
        timeout_secs,
    }
}

/// What TikTok's authorize page said.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Its sign-in or consent page, no error: client key, redirect URI and scopes passed.
    Accepted,
    /// Its pre-consent error page, naming the parameter to correct.
    Refused { param: String, detail: Option<String> },
    /// A redirect back to our redirect URI carrying `error=`.
    ErrorRedirect { error: String, description: Option<String> },
    /// Nothing conclusive (why).
    Unclear(String),
    /// The page could not be loaded from here (why).
    Unreachable(String),
}

/// Parameters TikTok's error page names, longest first where one contains another.
const PAGE_PARAMS: &[&str] = &[
    "code_challenge_method",
    "code_challenge",
    "non_sandbox_target",
    "redirect_uri",
    "response_type",
    "client_key",
    "scope",
];

fn read_page(page: &PageAnswer, redirect_uri: &str) -> Verdict {
    if (300..400).contains(&page.status) {
        let Some(location) = page.location.as_deref() else {
            return Verdict::Unclear(format!("TikTok answered HTTP {} without a Location", page.status));
        };
        let back_to_us = location.split(['?', '#']).next() == Some(redirect_uri);
        if back_to_us {
            let q: Vec<(String, String)> = Url::parse(location)
                .map(|u| u.query_pairs().into_owned().collect())
                .unwrap_or_default();
            let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| quote(v));
            return match get("error") {
                Some(error) => Verdict::ErrorRedirect {
                    error,
                    description: get("error_description"),
                },
                None => Verdict::Unclear("TikTok sent the browser straight back without a user".into()),
            };
        }
        let shown = Url::parse(location)
            .map(|u| format!("{}{}", u.origin().ascii_serialization(), u.path()))
            .unwrap_or_else(|_| quote(location));
        return Verdict::Unclear(format!("TikTok redirected to {shown}"));
    }
    if let Some(param) = error_page_param(&page.body) {
        return Verdict::Refused {
            param,
            detail: detail_text(&page.body),
        };
    }
    if (200..300).contains(&page.status) {
        Verdict::Accepted
    } else {
        Verdict::Unclear(format!("TikTok's authorize page answered HTTP {}", page.status))
    }
}

/// The parameter TikTok's error page ("We couldn't log in with TikTok … correct the following
/// and try again: redirect_uri") asks to correct, if the page is that page.
fn error_page_param(html: &str) -> Option<String> {
    if let Some(rest) = html.split("data-error=\"").nth(1) {
        let name: String = rest.chars().take_while(|c| *c != '"').take(64).collect();
        if !name.is_empty() {
            return Some(quote(&name));
        }
    }
    let lower = html.to_ascii_lowercase();
    let marker = [
        "correct the following",
        "couldn't log in with tiktok",
        "couldn’t log in with tiktok",
    ]
    .iter()
    .find_map(|m| lower.find(m))?;
    let after = &lower[marker..];
    let named = PAGE_PARAMS
        .iter()
        .filter_map(|p| after.find(p).map(|at| (at, *p)))
        .min_by_key(|(at, p)| (*at, std::cmp::Reverse(p.len())));
    Some(named.map_or_else(|| "unknown".to_string(), |(_, p)| p.to_string()))
}

/// The page's explanation (`<p id="detail">…</p>` on the mock), as plain text.
fn detail_text(html: &str) -> Option<String> {
    let start = html.find("id=\"detail\"")?;
    let inner = html[start..].split_once('>')?.1;
    let text = inner.split('<').next()?;
    let text = text
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    let text = quote(text.trim());
    (!text.is_empty()).then_some(text)
}

fn redirect_fix(redirect_uri: &str) -> String {
    format!(
        "{PORTAL}, open Login Kit > Web > Redirect URI and add exactly {redirect_uri} (https, no query \
         string, at most 10 URIs). It is server.public_url + /api/auth/callback/tiktok: if public_url \
         is wrong, correct that instead."
    )
}

fn scope_fix() -> String {
    format!(
        "{PORTAL}, add the product that grants each scope (Login Kit: user.info.basic; Display API or \
         the Scopes page: user.info.profile, user.info.stats, video.list) and, for an app in \
         production, get it approved in App review. Or remove the scope from tiktok.scopes."
    )
}

fn key_fix() -> String {
    format!(
        "{PORTAL}, copy the Client key into TIKTOK_CLIENT_KEY (or tiktok.client_key). Sandbox and \
         production apps have different keys."
    )
}

fn secret_fix() -> String {
    format!(
        "{PORTAL}, copy the Client secret into TIKTOK_CLIENT_SECRET (or the file named by \
         tiktok.client_secret_file). Regenerating the secret in the portal retires the old one."
    )
}

/// The authorize page's verdict as report items; when TikTok refuses the scope list, each
/// scope is tried alone to name the refused ones.
async fn page_items(client: &TikTokClient, cfg: &Config, verdict: &Verdict, url: &str) -> Vec<Item> {
    let redirect_uri = client.redirect_uri();
    let scopes = cfg.tiktok.scopes.join(",");
    let item = match verdict {
        Verdict::Accepted => Item::ok(
            "authorize page",
            format!(
                "TikTok showed no error for client key \"{}\", redirect URI {redirect_uri} and scopes {scopes}",
                cfg.tiktok.client_key
            ),
        ),
        Verdict::Refused { param, detail } => {
            let said = detail.as_deref().map(|d| format!(" (\"{d}\")")).unwrap_or_default();
            match param.as_str() {
                "client_key" => Item::finding(
                    "client key",
                    format!(
                        "TikTok does not know the client key \"{}\"{said}",
                        cfg.tiktok.client_key
                    ),
                    key_fix(),
                ),
                "redirect_uri" => Item::finding(
                    "redirect URI",
                    format!("TikTok does not accept the redirect URI {redirect_uri} for this app{said}"),
                    redirect_fix(redirect_uri),
                ),
                "scope" => {
                    let refused = refused_scopes(client, cfg, url).await;
                    let which = if refused.is_empty() {
                        format!("the scope list {scopes}")
                    } else {
                        format!("scope {}", refused.join(", "))
                    };
                    Item::finding(
                        "scopes",
                        format!(
                            "TikTok refuses {which} for this app{said}; one refused scope makes it refuse every sign-in"
                        ),
                        scope_fix(),
                    )
                }
                "code_challenge" | "code_challenge_method" => Item::finding(
                    "PKCE",
                    format!("TikTok asks for a PKCE {param}{said}"),
                    match cfg.tiktok.pkce {
                        Pkce::Off => "Set tiktok.pkce = \"s256\" (or \"s256_hex\" for a registration TikTok treats as \
                                      desktop, such as a localhost redirect URI)."
                            .to_string(),
                        Pkce::S256 => {
                            "Try tiktok.pkce = \"s256_hex\"; TikTok's desktop flow wants a hex challenge.".into()
                        }
                        Pkce::S256Hex => {
                            "Try tiktok.pkce = \"s256\"; TikTok's web flow wants a base64url challenge.".into()
                        }
                    },
                ),
                other => Item::finding(
                    "authorize page",
                    format!("TikTok's authorize page refuses the request and names {other}{said}"),
                    "Open the URL below in a browser to read TikTok's message.",
                ),
            }
        }
        Verdict::ErrorRedirect { error, description } => {
            let said = description
                .as_deref()
                .map(|d| format!(" (\"{d}\")"))
                .unwrap_or_default();
            let fix = match error.as_str() {
                "invalid_scope" => scope_fix(),
                "unauthorized_client" => {
                    format!("{PORTAL}, add Login Kit (Web) to the app; for production, submit it for review.")
                }
                _ => "Open the URL below in a browser to read TikTok's message.".to_string(),
            };
            Item::finding(
                "authorize page",
                format!("TikTok sends browsers straight back with error={error}{said}"),
                fix,
            )
        }
        Verdict::Unclear(why) => Item::note(
            "authorize page",
            format!("{why}: client key, redirect URI and scopes not confirmed; open the URL below in a browser to see"),
        ),
        Verdict::Unreachable(why) => Item::note(
            "authorize page",
            format!(
                "could not load {} from this machine ({why}); browsers load it, not the sidecar: open the URL \
                 below in a browser to check client key, redirect URI and scopes",
                origin(&cfg.tiktok.authorize_url)
            ),
        ),
    };
    vec![item]
}

/// The configured scopes TikTok's authorize page refuses when each is asked for alone.
async fn refused_scopes(client: &TikTokClient, cfg: &Config, url: &str) -> Vec<String> {
    let mut refused = Vec::new();
    for scope in &cfg.tiktok.scopes {
        let Some(one) = with_scope(url, scope) else {
            continue;
        };
        if let Ok(page) = client.fetch_page(&one).await {
            if matches!(read_page(&page, client.redirect_uri()), Verdict::Refused { ref param, .. } if param == "scope")
            {
                refused.push(scope.clone());
            }
        }
    }
    refused
}

/// `url` with its `scope` parameter replaced by `scope`.
fn with_scope(url: &str, scope: &str) -> Option<String> {
    let mut u = Url::parse(url).ok()?;
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .into_owned()
        .map(|(k, v)| if k == "scope" { (k, scope.to_string()) } else { (k, v) })
        .collect();
    u.query_pairs_mut().clear().extend_pairs(pairs);
    Some(u.to_string())
}

/// The code exchange with a made-up code, read together with what the authorize page said.
fn token_item(cfg: &Config, page: &Verdict, answer: Result<super::client::TokenResponse, TikTokError>) -> Item {
    let endpoint = format!("{}/v2/oauth/token/", origin(&cfg.tiktok.api_base_url));
    let timeout = cfg.tiktok.timeout.as_secs_f64();
    let host = host_port(&cfg.tiktok.api_base_url);
    let err = match answer {
        Ok(_) => {
            return Item::finding(
                "token endpoint",
                format!("{endpoint} accepted a made-up code: it does not behave like TikTok"),
                "Set tiktok.api_base_url to TikTok's API origin, https://open.tiktokapis.com (the default).",
            )
        }
        Err(e) => e,
    };
    match &err {
        TikTokError::OAuth { error, .. } if error == "invalid_grant" => Item::ok(
            "client secret",
            "TikTok's token endpoint accepted the client key and secret (it refused the made-up code with \
             invalid_grant, as it should)",
        ),
        TikTokError::OAuth { error, .. } if error == "invalid_client" => match page {
            // The key was already reported: the secret cannot be judged without it.
            Verdict::Refused { param, .. } if param == "client_key" => Item::note(
                "client secret",
                "not checked: TikTok refuses the client key first (invalid_client)",
            ),
            Verdict::Accepted => Item::finding(
                "client secret",
                format!(
                    "TikTok refuses the client secret of client key \"{}\" (invalid_client)",
                    cfg.tiktok.client_key
                ),
                secret_fix(),
            ),
            _ => Item::finding(
                "client key",
                format!(
                    "TikTok refuses client key \"{}\" or its secret (invalid_client)",
                    cfg.tiktok.client_key
                ),
                format!("{} {}", key_fix(), secret_fix()),
            ),
        },
        TikTokError::OAuth {
            error, description, ..
        } if error == "invalid_request" && description.to_ascii_lowercase().contains("redirect") => Item::finding(
            "redirect URI",
            format!(
                "TikTok's token endpoint refuses the redirect URI {}: \"{}\"",
                cfg.redirect_uri(),
                quote(description)
            ),
            redirect_fix(&cfg.redirect_uri()),
        ),
        TikTokError::OAuth { error, .. } if error == "unauthorized_client" => Item::finding(
            "token endpoint",
            "TikTok says this app may not use the authorization code grant (unauthorized_client)",
            format!("{PORTAL}, add Login Kit (Web) to the app; for production, submit it for review."),
        ),
        e if e.is_transient() && !matches!(e, TikTokError::Timeout(_) | TikTokError::Transport(_)) => Item::finding(
            "token endpoint",
            format!(
                "{endpoint} is unavailable right now ({}): sign-ins fail while it is",
                quote(&e.metric_code())
            ),
            "Try again in a few minutes; nothing in this configuration causes it.",
        ),
        TikTokError::OAuth {
            error, description, ..
        } => Item::finding(
            "token endpoint",
            format!(
                "TikTok refuses a sign-in's code exchange with {}: \"{}\"",
                quote(error),
                quote(description)
            ),
            "A sign-in sends the same request: check tiktok.pkce and the redirect URI, or open the URL below \
             in a browser.",
        ),
        TikTokError::Api { code, message, .. } => Item::finding(
            "token endpoint",
            format!(
                "{endpoint} is not TikTok's token endpoint ({}: \"{}\")",
                quote(code),
                quote(message)
            ),
            "Set tiktok.api_base_url to TikTok's API origin, https://open.tiktokapis.com (the default), \
             without a path.",
        ),
        TikTokError::BadResponse { status } => Item::finding(
            "token endpoint",
            format!("unexpected answer from {endpoint} (HTTP {status}, not TikTok's JSON)"),
            "Check tiktok.api_base_url; a proxy or captive portal may be answering in TikTok's place.",
        ),
        TikTokError::Timeout(_) => Item::finding(
            "token endpoint",
            format!("{endpoint} did not answer within tiktok.timeout ({timeout}s): sign-ins would fail with TikTokUnavailable"),
            format!(
                "Allow outbound HTTPS from this machine to {host} (firewall, egress proxy, network policy); raise \
                 tiktok.timeout only if TikTok is merely slow from here."
            ),
        ),
        TikTokError::Transport(_) => Item::finding(
            "token endpoint",
            format!("cannot reach {endpoint}: {}", causes(&err)),
            format!("Check DNS and outbound HTTPS from this machine to {host}, and tiktok.api_base_url."),
        ),
        TikTokError::RetryAfter { .. } => Item::finding(
            "token endpoint",
            format!("{endpoint} asks to come back later: sign-ins fail while it does"),
            "Try again in a few minutes.",
        ),
    }
}

/// `theirs`: TikTok's `Date` and this machine's clock when the answer arrived.
fn clock_item(theirs: Option<(i64, i64)>) -> Item {
    let Some((tiktok, ours)) = theirs else {
        return Item::note("clock", "not compared: no answer from TikTok carried a Date");
    };
    let skew = ours - tiktok;
    if skew.abs() <= MAX_SKEW_SECS {
        return Item::ok(
            "clock",
            format!("this machine's clock is within {MAX_SKEW_SECS}s of TikTok's ({skew:+}s)"),
        );
    }
    let (amount, way) = (skew.abs(), if skew > 0 { "ahead of" } else { "behind" });
    Item::finding(
        "clock",
        format!("this machine's clock is {amount}s {way} TikTok's (by the Date of TikTok's answer)"),
        "Synchronise the clock with NTP (chrony or systemd-timesyncd: `timedatectl set-ntp true`, or the \
         cloud's time service). Beyond 5 minutes TikTok's webhook deliveries are refused, and apps on other \
         machines see X-Nini-Identity tokens as not yet valid or expired.",
    )
}

fn origin(u: &Url) -> String {
    u.origin().ascii_serialization()
}

fn host_port(u: &Url) -> String {
    format!(
        "{}:{}",
        u.host_str().unwrap_or(""),
        u.port_or_known_default().unwrap_or(443)
    )
}

/// An error and its causes on one line.
fn causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    quote(&s)
}

/// Text from TikTok or the network, fit to print: no control characters (a terminal would
/// obey escape sequences), bounded.
fn quote(s: &str) -> String {
    let clean: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if clean.chars().count() > MAX_QUOTE {
        format!("{}…", clean.chars().take(MAX_QUOTE).collect::<String>())
    } else {
        clean
    }
}

/// The client secret never reaches the report, whatever echoed it. Very short secrets are left
/// alone: blanking every "s" would garble the report, and such a secret is no real one.
fn scrub(text: &str, secret: &str) -> String {
    if secret.len() < 8 {
        return text.to_string();
    }
    text.replace(secret, "<redacted>")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(status: u16, location: Option<&str>, body: &str) -> PageAnswer {
        PageAnswer {
            status,
            location: location.map(str::to_string),
            body: body.to_string(),
            date: None,
        }
    }

    const CB: &str = "https://app.example.com/api/auth/callback/tiktok";

    #[test]
    fn tiktok_error_pages_name_the_parameter() {
        let mock = "<h1>We couldn't log in with TikTok</h1><p class=\"err\" id=\"error\" data-error=\"redirect_uri\">\
                    redirect_uri</p><p id=\"detail\">redirect_uri does not match &quot;x&quot;</p>";
        assert_eq!(
            read_page(&page(400, None, mock), CB),
            Verdict::Refused {
                param: "redirect_uri".into(),
                detail: Some("redirect_uri does not match \"x\"".into())
            }
        );
        // TikTok's own wording, without the mock's attributes.
        let real = "<div>We couldn’t log in with TikTok. This may be due to specific app settings. If you're a \
                    developer, correct the following and try again: code_challenge</div>";
        assert!(matches!(read_page(&page(200, None, real), CB),
            Verdict::Refused { param, .. } if param == "code_challenge"));
        let scope = "correct the following and try again:<br>scope";
        assert!(matches!(read_page(&page(200, None, scope), CB), Verdict::Refused { param, .. } if param == "scope"));
        assert_eq!(
            read_page(&page(200, None, "<h1>Log in to TikTok</h1>"), CB),
            Verdict::Accepted
        );
        assert!(matches!(read_page(&page(503, None, "busy"), CB), Verdict::Unclear(_)));
    }

    #[test]
    fn redirects_back_with_an_error_are_read_and_others_are_unclear() {
        let back = format!("{CB}?error=invalid_scope&error_description=nope%1b%5b31m&state=s");
        assert_eq!(
            read_page(&page(302, Some(&back), ""), CB),
            Verdict::ErrorRedirect {
                error: "invalid_scope".into(),
                description: Some("nope [31m".into())
            }
        );
        assert!(matches!(
            read_page(&page(302, Some("https://www.tiktok.com/login?x=1"), ""), CB),
            Verdict::Unclear(why) if why.contains("https://www.tiktok.com/login") && !why.contains("x=1")
        ));
    }

    #[test]
    fn the_clock_passes_within_a_minute_either_way() {
        assert_eq!(clock_item(Some((1_000, 1_060))).outcome, Outcome::Ok);
        assert_eq!(clock_item(Some((1_060, 1_000))).outcome, Outcome::Ok);
        let ahead = clock_item(Some((1_000, 1_061)));
        assert_eq!(ahead.outcome, Outcome::Finding);
        assert!(ahead.message.contains("61s ahead of"), "{}", ahead.message);
        assert!(clock_item(Some((5_000, 1_000))).message.contains("4000s behind"));
        assert_eq!(clock_item(None).outcome, Outcome::Note);
    }

    #[test]
    fn printed_text_has_no_secret_and_no_control_characters() {
        assert_eq!(scrub("a s3cr3t-value-123 b", "s3cr3t-value-123"), "a <redacted> b");
        assert_eq!(scrub("as is", "s"), "as is");
        assert_eq!(quote("a\u{1b}[2Jb\n"), "a [2Jb ");
        assert_eq!(quote(&"x".repeat(500)).chars().count(), MAX_QUOTE + 1);
    }

    #[test]
    fn one_scope_at_a_time() {
        let u = "https://www.tiktok.com/v2/auth/authorize/?client_key=k&scope=a%2Cb&state=s";
        let one = with_scope(u, "video.list").expect("url");
        let q: Vec<(String, String)> = Url::parse(&one).expect("url").query_pairs().into_owned().collect();
        assert!(q.contains(&("scope".into(), "video.list".into())));
        assert!(q.contains(&("client_key".into(), "k".into())) && q.len() == 3);
    }
}
