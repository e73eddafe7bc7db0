//! `[[routes.rules]]`: who may enter a path prefix, beyond being signed in. The raw TOML shape
//! (`RawRouteRule`, unknown keys are errors), the per-key check that names
//! `routes.rules[N].key`, and validation into `RouteRule`, reporting every problem at once:
//! empty lists, rules that require nothing, prefixes that are not plain paths, rules a rule
//! before them always wins over (shadowed), requirements the configured scopes cannot
//! provide. Evaluation lives in `auth::rules`.
//!
//! Rules are numbered from 0 in the order they appear in the file (`routes.rules[0]` is the
//! first `[[routes.rules]]`).

use serde::Deserialize;

use super::Problem;

/// The scope whose user-info fields `verified` and `usernames` read (`is_verified`, `username`).
pub const PROFILE_SCOPE: &str = "user.info.profile";
/// The scope whose user-info field `min_followers` reads (`follower_count`).
pub const STATS_SCOPE: &str = "user.info.stats";

/// One `[[routes.rules]]` table as the file spells it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawRouteRule {
    /// Label for metrics and logs; the prefix when absent.
    pub name: Option<String>,
    pub prefix: Option<String>,
    /// Any signed-in user (only a session is required): a way to exempt a narrower prefix
    /// from a broader rule that follows it.
    pub signed_in: Option<bool>,
    pub verified: Option<bool>,
    pub open_ids: Option<Vec<String>>,
    pub usernames: Option<Vec<String>>,
    pub min_followers: Option<u64>,
}

/// A validated rule: `prefix` in matching form (lowercase), requirements normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    /// `name`, or the prefix as written.
    pub name: String,
    /// As written (for `check` and messages).
    pub prefix: String,
    /// Only a session: no other requirement.
    pub signed_in_only: bool,
    pub verified: bool,
    /// Exact TikTok `open_id`s.
    pub open_ids: Vec<String>,
    /// Lowercased, without a leading `@`.
    pub usernames: Vec<String>,
    pub min_followers: Option<u64>,
}

/// The per-key check of `routes.rules` during parsing: every element must be a table, and
/// each of its keys is deserialised alone, so an unknown key or a wrong type is reported as
/// `routes.rules[N].key` for every key, not just the first in the file.
pub fn check_keys(value: &toml::Value) -> Vec<Problem> {
    let mut out = Vec::new();
    let problem = |key: String, message: String| Problem { key, message };
    let Some(items) = value.as_array() else {
        out.push(problem(
            "routes.rules".into(),
            "must be an array of tables: write each rule as [[routes.rules]]".into(),
        ));
        return out;
    };
    for (i, item) in items.iter().enumerate() {
        let Some(table) = item.as_table() else {
            out.push(problem(
                format!("routes.rules[{i}]"),
                "must be a table ([[routes.rules]] with prefix = ...)".into(),
            ));
            continue;
        };
        for (k, v) in table {
            let mut single = toml::Table::new();
            single.insert(k.clone(), v.clone());
            if let Err(e) = toml::Value::Table(single).try_into::<RawRouteRule>() {
                out.push(problem(
                    format!("routes.rules[{i}].{k}"),
                    e.message().trim().to_string(),
                ));
            }
        }
    }
    out
}

/// Validates the rules against the configured scopes; problems name `routes.rules[N].key`.
pub fn validate(raw: &[RawRouteRule], scopes: &[String]) -> (Vec<RouteRule>, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut rules = Vec::new();
    let has_scope = |s: &str| scopes.iter().any(|x| x == s);
    // (index, matching prefix) of every rule with a usable prefix, for the shadowing check.
    let mut seen: Vec<(usize, String, String)> = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let mut add = |key: &str, message: String| {
            let key = if key.is_empty() {
                format!("routes.rules[{i}]")
            } else {
                format!("routes.rules[{i}].{key}")
            };
            problems.push(Problem { key, message });
        };
        let mut bad = false;

        let prefix = match r.prefix.as_deref() {
            None => {
                add(
                    "prefix",
                    "missing: every rule needs a path prefix, e.g. prefix = \"/admin\"".into(),
                );
                bad = true;
                String::new()
            }
            Some(p) => match prefix_problem(p) {
                Some(why) => {
                    add("prefix", format!("{p:?} {why}"));
                    bad = true;
                    p.to_string()
                }
                None => p.to_string(),
            },
        };
        let matching = prefix.to_lowercase();
        if !bad {
            if let Some((j, earlier, _)) = seen.iter().find(|(_, m, _)| matching.starts_with(m.as_str())) {
                add(
                    "prefix",
                    format!(
                        "{prefix:?} can never match: routes.rules[{j}] ({earlier:?}) comes first and covers every \
                         path it does (first match wins); put the more specific rule first"
                    ),
                );
                bad = true;
            }
        }

        let name = match &r.name {
            Some(n) if n.trim().is_empty() || n.len() > 64 || n.chars().any(|c| c.is_control()) => {
                add("name", format!("{n:?} must be 1 to 64 printable characters"));
                bad = true;
                String::new()
            }
            Some(n) => n.clone(),
            None => prefix.clone(),
        };

        let list = |key: &str, items: &Option<Vec<String>>, add: &mut dyn FnMut(&str, String)| -> Vec<String> {
            let Some(items) = items else {
                return Vec::new();
            };
            if items.is_empty() {
                add(
                    key,
                    "is an empty list: it would let nobody in; list someone or remove the key".into(),
                );
            }
            for item in items {
                if item.trim().is_empty() || item.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    add(key, format!("{item:?} is not a TikTok {}", key.trim_end_matches('s')));
                }
            }
            items.clone()
        };
        let open_ids = list("open_ids", &r.open_ids, &mut add);
        let usernames: Vec<String> = list("usernames", &r.usernames, &mut add)
            .iter()
            .map(|u| u.trim_start_matches('@').to_lowercase())
            .collect();
        if r.usernames.as_ref().is_some_and(|u| !u.is_empty()) && !has_scope(PROFILE_SCOPE) {
            add(
                "usernames",
                format!("needs {PROFILE_SCOPE:?} in tiktok.scopes: TikTok gives the username only with that scope"),
            );
        }
        if r.verified == Some(true) && !has_scope(PROFILE_SCOPE) {
            add(
                "verified",
                format!(
                    "needs {PROFILE_SCOPE:?} in tiktok.scopes: TikTok gives the verified badge only with that scope"
                ),
            );
        }
        if r.verified == Some(false) {
            add(
                "verified",
                "false requires nothing: only verified = true is a requirement; remove the key".into(),
            );
        }
        if r.signed_in == Some(false) {
            add(
                "signed_in",
                "false is not allowed: a rule always requires a session; remove the key".into(),
            );
        }
        if r.min_followers.is_some() && !has_scope(STATS_SCOPE) {
            add(
                "min_followers",
                format!("needs {STATS_SCOPE:?} in tiktok.scopes: follower counts come only with that scope"),
            );
        }
        let requirements = usize::from(r.verified == Some(true))
            + usize::from(r.open_ids.is_some())
            + usize::from(r.usernames.is_some())
            + usize::from(r.min_followers.is_some());
        let signed_in_only = r.signed_in == Some(true);
        if signed_in_only && requirements > 0 {
            add(
                "signed_in",
                "cannot be combined with verified, open_ids, usernames or min_followers: those already \
                 require a session"
                    .into(),
            );
        }
        if !signed_in_only && requirements == 0 && r.verified.is_none() && r.signed_in.is_none() {
            add(
                "",
                "requires nothing: set verified = true, open_ids, usernames, min_followers, or signed_in = true \
                 (any signed-in user)"
                    .into(),
            );
        }
        if !bad {
            seen.push((i, matching.clone(), prefix.clone()));
        }
        rules.push(RouteRule {
            name,
            prefix,
            signed_in_only,
            verified: r.verified == Some(true),
            open_ids,
            usernames,
            min_followers: r.min_followers,
        });
    }
    (rules, problems)
}

/// Why `p` is not a plain path prefix, if it is not. Prefixes are matched like request paths
/// are (canonical, lowercased), so only the canonical spelling is accepted: no `%`-escapes
/// (write `/café`, not `/caf%C3%A9`), no `;` parameters, no empty or dot segments.
fn prefix_problem(p: &str) -> Option<&'static str> {
    if !p.starts_with('/') {
        return Some("must start with '/'");
    }
    if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("must not contain spaces or control characters");
    }
    if p.contains(['?', '#']) {
        return Some("must be a path only: no query or fragment");
    }
    if p.contains(['\\', '%', ';']) {
        return Some("must be written plainly: no backslash, %-escapes or ; parameters");
    }
    if p.contains("//") || p.split('/').any(|s| s == "." || s == "..") {
        return Some("must not contain empty, . or .. segments");
    }
    let lower = p.to_ascii_lowercase();
    if lower == "/api/auth" || lower.starts_with("/api/auth/") {
        return Some("overlaps the sidecar's own /api/auth endpoints");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    fn all_scopes() -> Vec<String> {
        scopes(&["user.info.basic", PROFILE_SCOPE, STATS_SCOPE])
    }

    fn rule(prefix: &str) -> RawRouteRule {
        RawRouteRule {
            prefix: Some(prefix.into()),
            ..Default::default()
        }
    }

    fn keys(p: &[Problem]) -> Vec<&str> {
        p.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn a_valid_set_validates_with_names_and_normalised_usernames() {
        let raw = vec![
            RawRouteRule {
                name: Some("team".into()),
                open_ids: Some(vec!["oid-1".into()]),
                ..rule("/admin")
            },
            RawRouteRule {
                usernames: Some(vec!["@MariaJose".into()]),
                verified: Some(true),
                ..rule("/creators")
            },
            RawRouteRule {
                min_followers: Some(1000),
                ..rule("/Pro")
            },
        ];
        let (rules, p) = validate(&raw, &all_scopes());
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(rules[0].name, "team");
        assert_eq!(rules[1].name, "/creators");
        assert_eq!(rules[1].usernames, vec!["mariajose"]);
        assert!(rules[1].verified);
        assert_eq!(rules[2].min_followers, Some(1000));
    }

    #[test]
    fn every_problem_is_reported_by_key() {
        let raw = vec![
            RawRouteRule {
                open_ids: Some(vec![]),
                ..rule("/admin")
            },
            rule("/nothing"),
            RawRouteRule {
                verified: Some(true),
                ..rule("admin")
            },
            RawRouteRule {
                verified: Some(true),
                ..rule("/admin/users")
            },
            RawRouteRule {
                verified: Some(true),
                ..rule("/ADMIN")
            },
            RawRouteRule {
                min_followers: Some(5),
                usernames: Some(vec!["a b".into()]),
                ..rule("/stats")
            },
            RawRouteRule {
                verified: Some(true),
                ..Default::default()
            },
            RawRouteRule {
                signed_in: Some(true),
                verified: Some(true),
                ..rule("/x/%41")
            },
            RawRouteRule {
                verified: Some(false),
                ..rule("/api/auth/session")
            },
        ];
        let (_, p) = validate(&raw, &scopes(&["user.info.basic"]));
        let k = keys(&p);
        for want in [
            "routes.rules[0].open_ids",
            "routes.rules[1]",
            "routes.rules[2].prefix",
            "routes.rules[3].prefix",
            "routes.rules[4].prefix",
            "routes.rules[5].min_followers",
            "routes.rules[5].usernames",
            "routes.rules[6].prefix",
            "routes.rules[7].prefix",
            "routes.rules[7].signed_in",
            "routes.rules[8].prefix",
            "routes.rules[8].verified",
        ] {
            assert!(k.contains(&want), "{want} missing from {p:#?}");
        }
        let shadow = p.iter().find(|x| x.key == "routes.rules[3].prefix").expect("shadowed");
        assert!(shadow.message.contains("routes.rules[0]"), "{shadow}");
        // The scope problems name the scope to add.
        let stats = p
            .iter()
            .find(|x| x.key == "routes.rules[5].min_followers")
            .expect("stats");
        assert!(stats.message.contains(STATS_SCOPE), "{stats}");
    }

    #[test]
    fn parsing_a_file_names_the_rule_and_key() {
        let e = crate::config::parse("[[routes.rules]]\nprefix = \"/a\"\nverifed = true\n").expect_err("typo");
        assert_eq!(keys(&e.0), vec!["routes.rules[0].verifed"]);
        let raw = crate::config::parse(
            "[routes]\nprotected = []\n[[routes.rules]]\nprefix = \"/a\"\nverified = true\n[[routes.rules]]\nprefix = \"/b\"\nsigned_in = true\n",
        )
        .expect("parses");
        assert_eq!(raw.routes.rules.len(), 2);
        assert_eq!(raw.routes.rules[1].signed_in, Some(true));
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_rule_and_key() {
        let v: toml::Table = toml::from_str(
            "[[rules]]\nprefix = \"/a\"\nopen_id = [\"x\"]\n[[rules]]\nprefix = \"/b\"\nmin_followers = \"many\"\n",
        )
        .expect("toml");
        let p = check_keys(&v["rules"]);
        assert_eq!(
            keys(&p),
            vec!["routes.rules[0].open_id", "routes.rules[1].min_followers"]
        );
        assert!(p[0].message.contains("unknown field"), "{:?}", p[0]);
        let p = check_keys(&toml::Value::String("x".into()));
        assert_eq!(keys(&p), vec!["routes.rules"]);
    }
}
