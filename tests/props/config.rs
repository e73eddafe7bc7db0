//! `nini_auth::config::{parse, validate}`: no panic on any text or environment, and every
//! problem names a key: one that is in the text, a known section or key, an environment
//! variable, or `config` for the file as a whole.

use std::collections::HashMap;

use nini_auth::config::{self, ConfigError, SecretsPolicy};
use proptest::prelude::*;
use proptest::sample::select;

use crate::check;

/// Every section and key of `RawConfig` (src/config/raw.rs).
const KEYS: &[(&str, &[&str])] = &[
    (
        "server",
        &[
            "listen",
            "public_url",
            "threads",
            "shutdown_timeout",
            "tls_cert",
            "tls_key",
            "http_redirect_listen",
            "hsts_max_age",
            "trusted_proxies",
            "max_request_body",
        ],
    ),
    (
        "upstream",
        &["url", "connect_timeout", "read_timeout", "forward_access_token"],
    ),
    (
        "tiktok",
        &[
            "client_key",
            "client_secret",
            "client_secret_file",
            "scopes",
            "pkce",
            "authorize_url",
            "api_base_url",
            "timeout",
        ],
    ),
    (
        "storage",
        &[
            "database",
            "max_connections",
            "connect_timeout",
            "statement_timeout",
            "cache_ttl",
            "cache_capacity",
        ],
    ),
    ("session", &["lifetime", "refresh_margin"]),
    ("secrets", &["encryption_keys", "encryption_keys_file"]),
    ("routes", &["protected"]),
    (
        "sync",
        &[
            "path",
            "cooldown",
            "timezone",
            "max_pages",
            "interval",
            "active_within",
            "batch",
            "requests_per_minute",
        ],
    ),
    ("admin", &["listen"]),
    ("log", &["format"]),
    ("identity", &["jwt", "audience", "ttl"]),
];

const ENV_NAMES: &[&str] = &[
    config::ENV_CLIENT_KEY,
    config::ENV_CLIENT_SECRET,
    config::ENV_DATABASE_URL,
    config::ENV_SECRET,
];

/// Values that reach every branch of validation without touching the network or a real file:
/// upstream hosts are IP literals (validation resolves them), file keys name missing files.
const VALUES: &[&str] = &[
    "\"\"",
    "\" \"",
    "\"127.0.0.1:4180\"",
    "\"[::1]:0\"",
    "\"localhost:4180\"",
    "\"http://127.0.0.1:3000\"",
    "\"https://[::1]:8443\"",
    "\"http://127.0.0.1:3000/path\"",
    "\"https://u:p@127.0.0.1/\"",
    "\"ftp://127.0.0.1\"",
    "\"http://\"",
    "\"https://127.0.0.1\"",
    "\"https://127.0.0.1/?q#f\"",
    "\"5s\"",
    "\"0s\"",
    "\"1m\"",
    "\"30d\"",
    "\"1.5h\"",
    "\"-1s\"",
    "\"99999999999999999999d\"",
    "\"5 minutes\"",
    "\"s256\"",
    "\"s256_hex\"",
    "\"off\"",
    "\"json\"",
    "\"text\"",
    "\"UTC\"",
    "\"Mars/Olympus\"",
    "\"user.info.basic\"",
    "[\"user.info.basic\", \"video.list\"]",
    "[\"video.list\"]",
    "[\"nope\"]",
    "[]",
    "[\"/dashboard\", \"/api/auth/x\", \"nope\", \"/a b\"]",
    "[\"10.0.0.0/8\", \"::1\", \"300.0.0.1\", \"1.2.3.4/33\"]",
    "[\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\", \"not base64\", \"AAAA\"]",
    "\"sqlite:/nonexistent-nini/x.db\"",
    "\"postgres://u:p@127.0.0.1:1/db\"",
    "\"postgres://\"",
    "\"mysql://h/db\"",
    "\":memory:\"",
    "\"/nonexistent-nini/file\"",
    "0",
    "1",
    "-1",
    "65536",
    "18446744073709551616",
    "true",
    "false",
    "1.5",
    "{ a = 1 }",
    "[1, \"a\"]",
];

fn key_for(section: &'static str) -> impl Strategy<Value = String> {
    let known: Vec<&'static str> = KEYS
        .iter()
        .find(|(s, _)| *s == section)
        .map(|(_, k)| k.to_vec())
        .unwrap_or_default();
    prop_oneof![
        4 => select(if known.is_empty() { vec!["x"] } else { known }).prop_map(str::to_owned),
        1 => "[a-z_]{1,8}",
        1 => "\"[a-z .]{0,6}\"",
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(VALUES).prop_map(str::to_owned),
        // No `:` or `/`: a random string never becomes a URL with a host to resolve or a path.
        2 => "\"[a-zA-Z0-9 ._@-]{0,12}\"",
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => "[\\[\\]{}\"'=,.a-z0-9 ]{0,8}",
    ]
}

fn section_name() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        6 => select(KEYS.iter().map(|(s, _)| *s).collect::<Vec<_>>()),
        1 => Just("unknown"),
        1 => Just("server.inner"),
    ]
}

/// A section header and some `key = value` lines, or a line of junk.
fn block() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => section_name().prop_flat_map(|section| {
            let header = prop_oneof![
                6 => Just(format!("[{section}]")),
                1 => Just(format!("[[{section}]]")),
                1 => Just(format!("[ {section} ]")),
            ];
            (header, prop::collection::vec((key_for(section), value()), 0..5)).prop_map(|(h, kv)| {
                let lines: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{h}\n{}", lines.join("\n"))
            })
        }),
        1 => (key_for("server"), value()).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => "[^\\n]{0,20}",
        1 => Just("# comment".to_owned()),
    ]
}

fn toml_ish() -> impl Strategy<Value = String> {
    prop::collection::vec(block(), 0..8).prop_map(|b| b.join("\n"))
}

fn names_a_key(key: &str, text: &str) -> bool {
    if key == "config" || ENV_NAMES.contains(&key) || text.contains(key) {
        return true;
    }
    let (section, rest) = key.split_once('.').unwrap_or((key, ""));
    let known_section = KEYS.iter().find(|(s, _)| *s == section);
    let section_ok = known_section.is_some() || text.contains(section);
    // `[server.inner]` + `x` is reported as `server.inner.x`: each part is in the text.
    let rest_ok = rest.is_empty()
        || known_section.is_some_and(|(_, keys)| keys.contains(&rest))
        || rest.split('.').all(|part| text.contains(part));
    section_ok && rest_ok
}

fn check_problems(e: &ConfigError, text: &str) -> Result<(), TestCaseError> {
    prop_assert!(!e.0.is_empty(), "an error without problems");
    for p in &e.0 {
        prop_assert!(names_a_key(&p.key, text), "problem {p} names no key of:\n{text}");
        prop_assert!(!p.message.trim().is_empty(), "problem {p} has no message");
    }
    Ok(())
}

#[test]
fn parse_never_panics_and_errors_name_keys() {
    let text = prop_oneof![3 => toml_ish(), 1 => any::<String>()];
    check("config::parse_never_panics_and_errors_name_keys", text, |text| {
        if let Err(e) = config::parse(&text) {
            check_problems(&e, &text)?;
        }
        Ok(())
    });
}

fn env() -> impl Strategy<Value = HashMap<String, String>> {
    let var = (
        select(ENV_NAMES),
        prop_oneof![
            select(
                &[
                    "",
                    "key",
                    "a b",
                    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                    "x,,y",
                    "postgres://u@127.0.0.1/db",
                    "nini.db",
                    "sqlite:"
                ][..]
            )
            .prop_map(str::to_owned),
            "[a-zA-Z0-9 ,=._-]{0,12}",
        ],
    );
    prop::collection::vec(var, 0..4).prop_map(|v| v.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

#[test]
fn validate_never_panics_and_errors_name_keys() {
    let input = (toml_ish(), env(), any::<bool>());
    check(
        "config::validate_never_panics_and_errors_name_keys",
        input,
        |(text, env, required)| {
            let Ok(raw) = config::parse(&text) else {
                return Ok(());
            };
            let policy = if required {
                SecretsPolicy::Required
            } else {
                SecretsPolicy::Generate
            };
            if let Err(e) = config::validate(raw, &env, policy) {
                check_problems(&e, &text)?;
            }
            Ok(())
        },
    );
}
