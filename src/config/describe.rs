//! The effective configuration as TOML for `nini-auth check`: every section once, every key
//! with its effective value (environment overrides applied), every secret redacted. Unset
//! optional keys are shown commented out, so the text parses as a config file.

use super::{format_duration, Config, Database, LogFormat};

/// Accumulates `[section]` blocks of `key = value` lines.
struct Toml(String);

impl Toml {
    fn section(&mut self, name: &str) {
        if !self.0.is_empty() {
            self.0.push('\n');
        }
        self.0.push_str(&format!("[{name}]\n"));
    }

    fn raw(&mut self, key: &str, value: impl std::fmt::Display) {
        self.0.push_str(&format!("{key} = {value}\n"));
    }

    fn str(&mut self, key: &str, value: &str) {
        self.raw(key, format!("{value:?}"));
    }

    fn dur(&mut self, key: &str, d: std::time::Duration) {
        self.str(key, &format_duration(d));
    }

    fn list(&mut self, key: &str, items: &[String]) {
        let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
        self.raw(key, format!("[{}]", quoted.join(", ")));
    }

    fn comment(&mut self, line: &str) {
        self.0.push_str(&format!("# {line}\n"));
    }
}

impl Config {
    /// The effective configuration (`nini-auth check`).
    pub fn describe(&self) -> String {
        let mut t = Toml(String::new());
        let o = &self.ops;

        t.section("server");
        t.str("listen", &self.listen.to_string());
        t.str("public_url", self.public_url.as_str());
        t.raw("threads", self.threads);
        t.dur("shutdown_timeout", self.shutdown_timeout);
        match &o.tls {
            Some((cert, key)) => {
                t.str("tls_cert", &cert.display().to_string());
                t.str("tls_key", &key.display().to_string());
            }
            None => t.comment("tls_cert, tls_key: not set (plain HTTP on listen)"),
        }
        match o.http_redirect_listen {
            Some(a) => t.str("http_redirect_listen", &a.to_string()),
            None => t.comment("http_redirect_listen: not set"),
        }
        match o.hsts_max_age {
            Some(d) => t.dur("hsts_max_age", d),
            None if self.public_url.scheme() == "https" => t.str("hsts_max_age", "0s"),
            None => t.comment("hsts_max_age: not sent (public_url is not https)"),
        }
        let proxies: Vec<String> = o.trusted_proxies.iter().map(|c| c.to_string()).collect();
        t.list("trusted_proxies", &proxies);
        t.raw("max_request_body", o.max_request_body);
        t.dur("header_timeout", o.header_timeout);
        t.dur("keepalive_timeout", o.keepalive_timeout);
        t.dur("websocket_max_lifetime", o.websocket_max_lifetime);

        t.section("upstream");
        t.str("url", self.upstream.url.as_str());
        t.dur("connect_timeout", self.upstream.connect_timeout);
        t.dur("read_timeout", self.upstream.read_timeout);
        t.raw("forward_access_token", self.upstream.forward_access_token);

        t.section("tiktok");
        t.str("client_key", &self.tiktok.client_key);
        if self.tiktok.client_secret.expose().is_empty() {
            t.str("client_secret", "");
        } else {
            t.str("client_secret", "<redacted>");
        }
        t.list("scopes", &self.tiktok.scopes);
        t.str("pkce", &self.tiktok.pkce.to_string());
        t.str("authorize_url", self.tiktok.authorize_url.as_str());
        t.str("api_base_url", self.tiktok.api_base_url.as_str());
        t.dur("timeout", self.tiktok.timeout);

        t.section("storage");
        let st = &self.storage;
        match &st.database {
            Database::Sqlite(path) => t.str("database", &path.display().to_string()),
            Database::Postgres(url) => {
                if url.redacted() != url.expose() {
                    t.comment("database: the password is shown as *** (give the real URL through DATABASE_URL)");
                }
                t.str("database", url.redacted());
            }
        }
        t.raw("max_connections", st.max_connections);
        t.dur("connect_timeout", st.connect_timeout);
        t.dur("statement_timeout", st.statement_timeout);
        t.dur("cache_ttl", st.cache_ttl);
        t.raw("cache_capacity", st.cache_capacity);

        t.section("session");
        t.dur("lifetime", self.session_lifetime);
        t.dur("refresh_margin", self.refresh_margin);

        t.section("secrets");
        t.comment(&format!(
            "encryption_keys: {} key(s) loaded, ids {} (the first encrypts); values redacted",
            self.keys.len(),
            self.keys.key_ids().join(", ")
        ));

        t.section("routes");
        t.list("protected", &self.protected);
        if self.route_rules.is_empty() {
            t.comment("rules: none (every signed-in user may enter every protected path)");
        }
        for (i, r) in self.route_rules.iter().enumerate() {
            t.0.push_str(&format!("\n# routes.rules[{i}]: first match wins\n[[routes.rules]]\n"));
            t.str("name", &r.name);
            t.str("prefix", &r.prefix);
            if r.signed_in_only {
                t.raw("signed_in", true);
            }
            if r.verified {
                t.raw("verified", true);
            }
            if !r.open_ids.is_empty() {
                t.list("open_ids", &r.open_ids);
            }
            if !r.usernames.is_empty() {
                t.list("usernames", &r.usernames);
            }
            if let Some(n) = r.min_followers {
                t.raw("min_followers", n);
            }
        }

        t.section("sync");
        t.str("path", &self.sync.path);
        t.dur("cooldown", self.sync.cooldown);
        t.str("timezone", &self.sync.timezone_name);
        t.raw("max_pages", self.sync.max_pages);
        t.dur("interval", self.sync.interval);
        t.dur("active_within", self.sync.active_within);
        t.raw("batch", self.sync.batch);
        t.raw("requests_per_minute", self.sync.requests_per_minute);

        t.section("admin");
        t.str("listen", &o.admin_listen.map(|a| a.to_string()).unwrap_or_default());

        t.section("log");
        t.str(
            "format",
            match o.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            },
        );

        t.section("headers");
        t.list("strip_also", &self.strip_also);

        t.section("limits");
        t.raw("signin_starts_per_minute", self.limits.signin_starts_per_minute);
        t.raw("connections_per_client", self.limits.connections_per_client);

        t.section("identity");
        t.raw("jwt", self.identity.jwt);
        t.str("audience", &self.identity.audience);
        t.dur("ttl", self.identity.ttl);
        t.0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::{parse, validate, RawConfig, SecretsPolicy};

    #[test]
    fn describe_parses_back_to_the_same_config_without_secrets() {
        let key = crate::crypto::generate_key_base64().expect("key");
        let env: HashMap<String, String> = [
            ("TIKTOK_CLIENT_KEY", "ck"),
            ("TIKTOK_CLIENT_SECRET", "very-secret"),
            ("NINI_AUTH_SECRET", key.as_str()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut raw = RawConfig::default();
        raw.server.public_url = "https://app.example.com".into();
        raw.server.trusted_proxies = vec!["10.0.0.0/8".into()];
        raw.tiktok.scopes = vec![
            "user.info.basic".into(),
            "user.info.profile".into(),
            "user.info.stats".into(),
        ];
        raw.routes.rules = vec![
            crate::config::RawRouteRule {
                name: Some("team".into()),
                prefix: Some("/admin".into()),
                open_ids: Some(vec!["oid-1".into(), "oid-2".into()]),
                usernames: Some(vec!["@Nini".into()]),
                ..Default::default()
            },
            crate::config::RawRouteRule {
                prefix: Some("/creators".into()),
                verified: Some(true),
                min_followers: Some(1000),
                ..Default::default()
            },
            crate::config::RawRouteRule {
                prefix: Some("/help".into()),
                signed_in: Some(true),
                ..Default::default()
            },
        ];
        let cfg = validate(raw, &env, SecretsPolicy::Required).expect("valid");
        let text = cfg.describe();
        assert!(!text.contains("very-secret") && !text.contains(&key), "{text}");
        assert_eq!(text.matches("[server]").count(), 1);
        assert!(text.contains("[identity]") && text.contains("hsts_max_age = \"365d\""));
        assert_eq!(text.matches("[[routes.rules]]").count(), 3, "{text}");
        assert!(text.contains("usernames = [\"nini\"]") && text.contains("min_followers = 1000"));
        let back = parse(&text).expect("describe output parses as config");
        let again = validate(back, &env, SecretsPolicy::Required).expect("and validates");
        assert_eq!(again.describe(), text, "round trip");
    }
}
