use std::collections::HashMap;

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn key() -> String {
    crate::crypto::generate_key_base64().expect("key")
}

fn good_env() -> HashMap<String, String> {
    env(&[(ENV_CLIENT_KEY, "ck"), (ENV_CLIENT_SECRET, "cs"), (ENV_SECRET, &key())])
}

fn keys_of(err: ConfigError) -> Vec<String> {
    err.0.into_iter().map(|p| p.key).collect()
}

#[test]
fn defaults_with_secrets_from_env_validate() {
    let cfg = validate(RawConfig::default(), &good_env(), SecretsPolicy::Required).expect("valid");
    assert_eq!(cfg.listen.to_string(), "127.0.0.1:4180");
    assert_eq!(cfg.redirect_uri(), "http://localhost:4180/api/auth/callback/tiktok");
    assert_eq!(cfg.tiktok.scopes, vec!["user.info.basic", "video.list"]);
    assert_eq!(cfg.tiktok.pkce, Pkce::Off);
    assert_eq!(cfg.session_lifetime, Duration::from_secs(30 * 86400));
    assert_eq!(cfg.refresh_margin, Duration::from_secs(3600));
    assert_eq!(cfg.protected, vec!["/dashboard", "/profile", "/api/user"]);
    assert!(!cfg.secure_cookies());
    assert_eq!(cfg.tiktok.client_secret.expose(), "cs");
    assert!(!format!("{cfg:?}").contains("\"cs\""), "Debug must not show the secret");
}

#[test]
fn shipped_config_parses() {
    let text = include_str!("../../config.toml");
    let raw = parse(text).expect("config.toml parses");
    let cfg = validate(raw, &good_env(), SecretsPolicy::Required).expect("config.toml validates with env secrets");
    assert_eq!(cfg.upstream.url.as_str(), "http://127.0.0.1:3000/");
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let text = r#"
[server]
listen = "localhost"
public_url = "https://app.example.com/some/path"
threads = 0
shutdown_timeout = "soon"
[upstream]
url = "unix:/x"
[tiktok]
scopes = []
pkce = "S256"
authorize_url = "javascript:alert(1)"
api_base_url = "https://user:pw@open.tiktokapis.com"
timeout = "10 s"
[storage]
database = "/nonexistent-dir/x.db"
max_connections = 0
connect_timeout = "1ms"
statement_timeout = "forever"
cache_ttl = "2h"
cache_capacity = 5
[session]
lifetime = "30s"
refresh_margin = "1y"
[routes]
protected = ["/api/auth/session", "no-slash"]
"#;
    let raw = parse(text).expect("parses");
    let keys = keys_of(validate(raw, &env(&[]), SecretsPolicy::Required).expect_err("invalid"));
    for k in [
        "server.listen",
        "server.public_url",
        "server.threads",
        "server.shutdown_timeout",
        "upstream.url",
        "tiktok.client_key",
        "tiktok.client_secret",
        "tiktok.scopes",
        "tiktok.pkce",
        "tiktok.authorize_url",
        "tiktok.api_base_url",
        "tiktok.timeout",
        "storage.database",
        "storage.max_connections",
        "storage.connect_timeout",
        "storage.statement_timeout",
        "storage.cache_ttl",
        "storage.cache_capacity",
        "session.lifetime",
        "session.refresh_margin",
        "secrets.encryption_keys",
        "routes.protected",
    ] {
        assert!(keys.iter().any(|x| x == k), "no problem reported for {k}: {keys:?}");
    }
}

#[test]
fn unknown_keys_and_wrong_types_name_the_key() {
    let e = parse("[server]\nlisten = \"127.0.0.1:1\"\npublik_url = \"x\"\n").expect_err("unknown key");
    assert_eq!(e.0[0].key, "server.publik_url");
    assert!(e.0[0].message.contains("unknown field"));
    let e = parse("[tiktok]\nscopes = \"user.info.basic\"\n").expect_err("wrong type");
    assert_eq!(e.0[0].key, "tiktok.scopes");
    let e = parse("[nope]\n").expect_err("unknown section");
    assert_eq!(e.0[0].key, "nope");
    // Every unknown key and wrong type at once, not just the first.
    let e = parse("[server]\nlistn = 1\nthreads = \"two\"\n[tiktok]\nclient_id = \"x\"\n[extra]\n").expect_err("many");
    let keys = keys_of(e);
    for k in ["server.listn", "server.threads", "tiktok.client_id", "extra"] {
        assert!(keys.contains(&k.to_string()), "{k} missing from {keys:?}");
    }
    // Syntax errors name the line's key.
    let e = parse("[server]\nlisten = 127.0.0.1:4180\n").expect_err("syntax");
    assert_eq!(e.0[0].key, "server.listen");
}

#[test]
fn env_overrides_and_secret_files() {
    let dir = tempfile::tempdir().expect("dir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "from-file\n").expect("write");
    let keys = dir.path().join("keys");
    let (k1, k2) = (key(), key());
    std::fs::write(&keys, format!("# rotation\n{k1}\n\n{k2}\n")).expect("write");
    let mut raw = RawConfig::default();
    raw.tiktok.client_key = "file-key".into();
    raw.tiktok.client_secret_file = Some(secret);
    raw.secrets.encryption_keys_file = Some(keys);
    let db = format!("sqlite://{}/a.db", dir.path().display());
    let cfg = validate(raw, &env(&[(ENV_DATABASE_URL, &db)]), SecretsPolicy::Required).expect("valid");
    assert_eq!(cfg.tiktok.client_key, "file-key");
    assert_eq!(cfg.tiktok.client_secret.expose(), "from-file");
    assert_eq!(cfg.keys.len(), 2);
    assert!(matches!(&cfg.storage.database, Database::Sqlite(p) if *p == dir.path().join("a.db")));

    let mut raw = RawConfig::default();
    raw.tiktok.client_key = "file-key".into();
    let cfg = validate(
        raw,
        &env(&[
            (ENV_CLIENT_KEY, "env-key"),
            (ENV_CLIENT_SECRET, "s"),
            (ENV_SECRET, &format!("{k1}, {k2}")),
        ]),
        SecretsPolicy::Required,
    )
    .expect("valid");
    assert_eq!(cfg.tiktok.client_key, "env-key");
    assert_eq!(cfg.keys.len(), 2);
    let cfg = validate(
        RawConfig::default(),
        &env(&[(ENV_DATABASE_URL, "postgres://x/y")]),
        SecretsPolicy::Generate,
    )
    .expect("a PostgreSQL URL in DATABASE_URL");
    assert!(matches!(cfg.storage.database, Database::Postgres(_)));
    let e = validate(
        RawConfig::default(),
        &env(&[(ENV_DATABASE_URL, "postgres:///y")]),
        SecretsPolicy::Generate,
    )
    .expect_err("no host");
    assert!(keys_of(e).contains(&ENV_DATABASE_URL.to_string()));
}

#[test]
fn missing_secret_file_and_bad_keys_are_reported() {
    let mut raw = RawConfig::default();
    raw.tiktok.client_key = "k".into();
    raw.tiktok.client_secret_file = Some("/nonexistent/secret".into());
    raw.secrets.encryption_keys = vec!["dG9vIHNob3J0".into()];
    let e = validate(raw, &env(&[]), SecretsPolicy::Required).expect_err("invalid");
    let text = e.report();
    assert!(
        text.contains("tiktok.client_secret_file: cannot read /nonexistent/secret"),
        "{text}"
    );
    assert!(
        text.contains("secrets.encryption_keys: key #1 decodes to 9 bytes"),
        "{text}"
    );
}

#[test]
fn demo_policy_generates_keys() {
    let cfg = validate(RawConfig::default(), &env(&[]), SecretsPolicy::Generate).expect("demo config");
    assert_eq!(cfg.keys.len(), 1);
}

#[test]
fn https_public_url_means_secure_cookies() {
    let mut raw = RawConfig::default();
    raw.server.public_url = "https://app.example.com".into();
    let cfg = validate(raw, &good_env(), SecretsPolicy::Required).expect("valid");
    assert!(cfg.secure_cookies());
    assert_eq!(cfg.redirect_uri(), "https://app.example.com/api/auth/callback/tiktok");
    assert!(cfg.describe().contains("<redacted>"));
    assert!(!cfg.describe().contains("\"cs\""));
}

#[test]
fn durations() {
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
    assert_eq!(parse_duration("2w"), Some(Duration::from_secs(14 * 86400)));
    for bad in ["", "10", "1y", "h", "-1s", "1.5h", "99999999999999999999d"] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
    assert_eq!(format_duration(Duration::from_secs(86400 * 30)), "30d");
    assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
}

#[test]
fn postgres_urls_are_accepted_and_never_shown_with_their_password() {
    let mut raw = RawConfig::default();
    raw.tiktok.client_key = "k".into();
    raw.tiktok.client_secret = "s".into();
    raw.secrets.encryption_keys = vec![crate::crypto::generate_key_base64().expect("key")];
    raw.storage.database = "sqlite:ignored.db".into();
    raw.storage.max_connections = 7;
    let url = "postgres://nini:hunter2@db.internal:5432/nini?sslmode=disable&password=hunter2";
    let cfg = validate(raw, &env(&[(ENV_DATABASE_URL, url)]), SecretsPolicy::Required).expect("valid");
    let Database::Postgres(pg) = &cfg.storage.database else {
        panic!("DATABASE_URL selects PostgreSQL: {:?}", cfg.storage.database);
    };
    assert_eq!(pg.expose(), url);
    assert_eq!(cfg.storage.max_connections, 7);
    let shown = format!("{} {:?} {:?} {}", pg.redacted(), pg, cfg, cfg.describe());
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("db.internal"), "{shown}");

    for (bad, why) in [
        ("postgres:///nini", "names no host"),
        ("postgresql://nini:hunter2@db.internal", "names no database"),
        ("mysql://x@y/z", "unsupported database"),
    ] {
        let mut raw = RawConfig::default();
        raw.storage.database = bad.into();
        let e = validate(raw, &env(&[]), SecretsPolicy::Generate).expect_err(bad);
        let p = e.0.iter().find(|p| p.key == "storage.database").expect("names the key");
        assert!(p.message.contains(why), "{bad}: {}", p.message);
        assert!(!p.message.contains("hunter2"), "{}", p.message);
    }
}

#[test]
fn the_effective_configuration_loads_back_as_itself() {
    let mut raw = parse(include_str!("../../config.toml")).expect("config.toml parses");
    raw.server.trusted_proxies = vec!["10.0.0.0/8".into()];
    raw.limits.connections_per_client = 7;
    raw.headers.strip_also = vec!["X-Employee-Id".into()];
    let cfg = validate(raw, &good_env(), SecretsPolicy::Required).expect("valid");
    let shown = cfg.describe();
    // Secrets are redacted in the output; the environment supplies them again.
    let text = shown
        .replace("client_secret = \"<redacted>\"", "")
        .replace("encryption_keys = [\"<redacted>\"]", "");
    let again = validate(
        parse(&text).expect("describe() output parses"),
        &good_env(),
        SecretsPolicy::Required,
    )
    .expect("describe() output validates");
    let strip_keys = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with("encryption_keys") && !l.starts_with("# "))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(strip_keys(&again.describe()), strip_keys(&shown));
}
