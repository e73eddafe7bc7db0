//! Per-route authorization: `[[routes.rules]]` decide which signed-in users may enter a path
//! prefix. Pure evaluation on the canonical path (the same case-insensitive matching as
//! `routes.protected`, NFKC forms included). A rule's prefix covers itself and what lies below
//! it (`/admin`: `/admin`, `/admin/x`); of those, the first rule in order decides. A prefix
//! that a path merely starts with (`/admin` for `/admin.` or `/administrator`) still binds:
//! the user must meet every such rule as well, so an earlier, looser rule for `/admin/help`
//! never opens `/admin/helpdesk`. A path no rule matches is left to `routes.protected`. A
//! path any rule matches needs a session. A trailing `/` in a prefix is ignored.
//!
//! Within a rule: the user must be named by `open_ids` or `usernames` (when either is set) and
//! must meet every other requirement set (`verified`, `min_followers`). `signed_in = true`
//! admits any signed-in user. Everything a rule reads is on the cached `Identity` (the hot
//! path never asks the database): the follower count is the one from the user's last sync.
//!
//! Also here: the 403 answers (a page for browsers, JSON for API clients) and the
//! forward-auth decision for `/api/auth/verify`.

use serde_json::json;

use super::pages::{self, Lang};
use super::BASE;
use crate::config::RouteRule;
use crate::metrics::Metrics;
use crate::proxy::paths::{canonicalize, CanonicalPath, PrefixMatch, ProtectedRoutes};
use crate::store::Identity;
use crate::web::Reply;

/// One rule, ready to match, with its denial counter.
pub struct Rule {
    pub rule: RouteRule,
    matcher: ProtectedRoutes,
    denials: prometheus::IntCounter,
}

impl Rule {
    pub fn name(&self) -> &str {
        &self.rule.name
    }

    /// Whether this signed-in user meets the rule.
    pub fn admits(&self, id: &Identity) -> bool {
        admits(&self.rule, id)
    }

    /// Counts one denial (`nini_auth_route_denials_total{rule}`).
    pub fn count_denial(&self) {
        self.denials.inc();
    }
}

/// Whether `id` meets `rule` (see the module docs for how requirements combine).
pub fn admits(rule: &RouteRule, id: &Identity) -> bool {
    if rule.signed_in_only {
        return true;
    }
    let listed = rule.open_ids.is_empty() && rule.usernames.is_empty()
        || rule.open_ids.contains(&id.open_id)
        || id
            .username
            .as_deref()
            .is_some_and(|u| rule.usernames.contains(&u.trim_start_matches('@').to_lowercase()));
    let verified = !rule.verified || id.verified;
    // Unknown (never synced, or the scope was not granted) counts as too few.
    let followers = rule
        .min_followers
        .is_none_or(|min| id.follower_count.is_some_and(|n| n >= 0 && n as u64 >= min));
    listed && verified && followers
}

/// A rule's prefix without a trailing `/` (`/admin/` covers `/admin` too); `/` stays.
fn normalized_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    }
}

/// Every configured rule, in order.
pub struct RouteRules {
    rules: Vec<Rule>,
}

impl RouteRules {
    /// Compiles the validated rules; each rule's denial counter exists (at 0) from the start.
    pub fn new(rules: &[RouteRule], metrics: &Metrics) -> RouteRules {
        RouteRules {
            rules: rules
                .iter()
                .map(|r| Rule {
                    matcher: ProtectedRoutes::new(&[normalized_prefix(&r.prefix)]),
                    denials: metrics.route_denials.with_label_values(&[r.name.as_str()]),
                    rule: r.clone(),
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any rule covers the path (it then needs a session).
    pub fn covers(&self, path: &CanonicalPath) -> bool {
        self.rules.iter().any(|r| r.matcher.match_kind(path).is_some())
    }

    /// The rule that refuses `id` on `path`, if one does: the first rule covering the path at
    /// a segment boundary decides, and every rule the path merely starts with binds too.
    pub fn refusing(&self, path: &CanonicalPath, id: &Identity) -> Option<&Rule> {
        let mut decided = false;
        for r in &self.rules {
            let binds = match r.matcher.match_kind(path) {
                Some(PrefixMatch::Boundary) => !std::mem::replace(&mut decided, true),
                Some(PrefixMatch::Loose) => true,
                None => false,
            };
            if binds && !r.admits(id) {
                return Some(r);
            }
        }
        None
    }

    /// Forward-auth: the rule that refuses `id` on the original request, if one does. The
    /// original path is `original` (a path, maybe with a query); when it is unknown or not a
    /// valid path, any rule might be the one that applies, so the first rule `id` fails
    /// refuses.
    pub fn refusing_original(&self, original: Option<&str>, id: &Identity) -> Option<&Rule> {
        if self.rules.is_empty() {
            return None;
        }
        let path = original
            .map(|o| o.split(['?', '#']).next().unwrap_or(""))
            .and_then(|p| canonicalize(p).ok());
        match path {
            Some(p) => self.refusing(&p, id),
            None => self.rules.iter().find(|r| !r.admits(id)),
        }
    }
}

/// The 403 for a signed-in user a rule refuses: a page for browser navigations (who is signed
/// in, "sign in with another account", home, the request id), JSON for everything else. `path`
/// is where the user wanted to go (canonical, without the query): the other account's
/// sign-in returns there.
pub fn forbidden(origin: &str, navigation: bool, lang: Lang, id: &Identity, path: &str, request_id: &str) -> Reply {
    if navigation {
        let signin = format!(
            "{BASE}/signin?{}",
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("callbackUrl", path)
                .finish()
        );
        let switch = format!(
            "{origin}{BASE}/signout?{}",
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("callbackUrl", &signin)
                .finish()
        );
        let who = match (&id.display_name, &id.username) {
            (Some(n), Some(u)) if !u.is_empty() => format!("{n} (@{u})"),
            (Some(n), _) => n.clone(),
            (None, Some(u)) => format!("@{u}"),
            (None, None) => id.open_id.clone(),
        };
        Reply::html(
            403,
            pages::forbidden(lang, &who, request_id, &switch, &format!("{origin}/")),
        )
    } else {
        Reply::json(403, &json!({ "error": "forbidden", "requestId": request_id }))
    }
}

/// Logs and counts a denial.
pub fn note_denial(rule: &Rule, id: &Identity, path: &str, request_id: &str) {
    rule.count_denial();
    log::info!(
        "route rule {:?} refused user {} on {path} request_id={request_id}",
        rule.name(),
        id.user_id
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(open_id: &str, username: Option<&str>, verified: bool, followers: Option<i64>) -> Identity {
        Identity {
            user_id: format!("u-{open_id}"),
            session_id: "s".into(),
            open_id: open_id.into(),
            display_name: Some("Ana".into()),
            username: username.map(String::from),
            avatar: None,
            verified,
            videos: 0,
            streak: 0,
            nini_score: 0,
            follower_count: followers,
            session_expires: i64::MAX,
            grant_error: None,
            derived: Default::default(),
        }
    }

    fn rule(prefix: &str) -> RouteRule {
        RouteRule {
            name: prefix.into(),
            prefix: prefix.into(),
            signed_in_only: false,
            verified: false,
            open_ids: vec![],
            usernames: vec![],
            min_followers: None,
        }
    }

    fn path(p: &str) -> CanonicalPath {
        canonicalize(p).expect("canonical")
    }

    #[test]
    fn requirements_combine_names_or_and_conditions_and() {
        let team = RouteRule {
            open_ids: vec!["oid-a".into()],
            usernames: vec!["bea".into()],
            ..rule("/admin")
        };
        assert!(admits(&team, &identity("oid-a", None, false, None)));
        assert!(
            admits(&team, &identity("oid-z", Some("@Bea"), false, None)),
            "usernames ignore case and @"
        );
        assert!(!admits(&team, &identity("oid-z", Some("carl"), true, Some(10))));
        let verified_team = RouteRule { verified: true, ..team };
        assert!(!admits(&verified_team, &identity("oid-a", None, false, None)));
        assert!(admits(&verified_team, &identity("oid-a", None, true, None)));

        let pro = RouteRule {
            min_followers: Some(1000),
            ..rule("/pro")
        };
        assert!(admits(&pro, &identity("x", None, false, Some(1000))));
        assert!(!admits(&pro, &identity("x", None, false, Some(999))));
        assert!(
            !admits(&pro, &identity("x", None, false, None)),
            "unknown follower count is too few"
        );
        let anyone = RouteRule {
            signed_in_only: true,
            ..rule("/help")
        };
        assert!(admits(&anyone, &identity("x", None, false, None)));
    }

    #[test]
    fn first_match_wins_on_the_canonical_path() {
        let metrics = Metrics::new();
        let rules = RouteRules::new(
            &[
                RouteRule {
                    signed_in_only: true,
                    ..rule("/admin/help")
                },
                RouteRule {
                    open_ids: vec!["boss".into()],
                    ..rule("/admin")
                },
                RouteRule {
                    verified: true,
                    ..rule("/creators")
                },
            ],
            &metrics,
        );
        let nobody = identity("x", None, false, None);
        let boss = identity("boss", None, false, None);
        assert!(rules.covers(&path("/admin/help/faq")));
        assert!(rules.refusing(&path("/admin/help/faq"), &nobody).is_none());
        assert!(rules.refusing(&path("/admin/help"), &nobody).is_none());
        // The looser rule's prefix is a string prefix of these, not a segment of them: the
        // /admin rule decides.
        for p in [
            "/admin",
            "/ADMIN/x",
            "/Admin;x=1",
            "/public/../admin",
            "/%61dmin",
            "/adminx",
            "/admin.",
            "/admin/helpdesk",
            "/admin/help-internal",
            "/admin/help.",
        ] {
            assert_eq!(rules.refusing(&path(p), &nobody).map(Rule::name), Some("/admin"), "{p}");
            assert!(rules.refusing(&path(p), &boss).is_none(), "{p}");
        }
        assert!(!rules.covers(&path("/public")));
        assert_eq!(
            rules.refusing(&path("/creators/x"), &boss).map(Rule::name),
            Some("/creators")
        );
    }

    #[test]
    fn a_trailing_slash_in_a_prefix_still_covers_the_prefix_itself() {
        let metrics = Metrics::new();
        let rules = RouteRules::new(
            &[RouteRule {
                open_ids: vec!["boss".into()],
                ..rule("/admin/")
            }],
            &metrics,
        );
        let nobody = identity("x", None, false, None);
        for p in ["/admin", "/admin/", "/admin/x", "/administrator"] {
            assert!(rules.covers(&path(p)), "{p}");
            assert!(rules.refusing(&path(p), &nobody).is_some(), "{p}");
        }
        assert!(!rules.covers(&path("/adm")));
    }

    #[test]
    fn forward_auth_without_a_known_path_needs_every_rule() {
        let metrics = Metrics::new();
        let rules = RouteRules::new(
            &[
                RouteRule {
                    open_ids: vec!["boss".into()],
                    ..rule("/admin")
                },
                RouteRule {
                    verified: true,
                    ..rule("/creators")
                },
            ],
            &metrics,
        );
        let boss = identity("boss", None, false, None);
        assert!(rules.refusing_original(Some("/public?x=1"), &boss).is_none());
        assert!(rules.refusing_original(Some("/admin?x=1"), &boss).is_none());
        assert_eq!(
            rules.refusing_original(Some("/creators"), &boss).map(Rule::name),
            Some("/creators")
        );
        assert_eq!(rules.refusing_original(None, &boss).map(Rule::name), Some("/creators"));
        assert_eq!(
            rules
                .refusing_original(Some("/a/%2e%2e%2fadmin"), &boss)
                .map(Rule::name),
            Some("/creators")
        );
        let both = identity("boss", None, true, None);
        assert!(rules.refusing_original(None, &both).is_none());
        assert!(RouteRules::new(&[], &metrics).refusing_original(None, &boss).is_none());
    }

    #[test]
    fn the_403_is_a_page_for_browsers_and_json_for_api_clients() {
        let id = identity("x", Some("bea"), false, None);
        let page = forbidden("http://app", true, Lang::En, &id, "/admin", "rid-7");
        assert_eq!(page.status, 403);
        let html = String::from_utf8_lossy(&page.body).into_owned();
        assert!(
            html.contains("rid-7") && html.contains("Sign in with another account"),
            "{html}"
        );
        assert!(html.contains("Ana (@bea)"));
        assert!(
            html.contains("http://app/api/auth/signout?callbackUrl=%2Fapi%2Fauth%2Fsignin%3FcallbackUrl%3D%252Fadmin"),
            "{html}"
        );
        let es = forbidden("http://app", true, Lang::Es, &id, "/admin", "rid-7");
        assert!(String::from_utf8_lossy(&es.body).contains("No tienes acceso"));
        let api = forbidden("http://app", false, Lang::En, &id, "/admin", "rid-7");
        assert_eq!(api.status, 403);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&api.body).expect("json"),
            json!({"error": "forbidden", "requestId": "rid-7"})
        );
    }
}
