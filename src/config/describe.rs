//! The effective configuration as TOML-like text for `nini-auth check`, every secret redacted.

use super::{format_duration, Config, LogFormat};

impl Config {
    /// The effective configuration as TOML-like text with every secret redacted (`check`).
    pub fn describe(&self) -> String {
        let q = |s: &str| format!("{s:?}");
        let list = |v: &[String]| format!("[{}]", v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", "));
        let redacted = |s: &str| {
            if s.is_empty() {
                "\"\" # not set".to_string()
            } else {
                "\"<redacted>\"".to_string()
            }
        };
        format!(
            "[server]\nlisten = {}\npublic_url = {}\nthreads = {}\nshutdown_timeout = {}\n\n\
             [upstream]\nurl = {}\nconnect_timeout = {}\nread_timeout = {}\nforward_access_token = {}\n\n\
             [tiktok]\nclient_key = {}\nclient_secret = {}\nscopes = {}\npkce = {}\nauthorize_url = {}\napi_base_url = {}\ntimeout = {}\n\n\
             [storage]\ndatabase = {}\n\n\
             [session]\nlifetime = {}\nrefresh_margin = {}\n\n\
             [secrets]\nencryption_keys = {} # {} key(s); key ids {}\n\n\
             [routes]\nprotected = {}\n\n\
             [sync]\npath = {}\ncooldown = {}\ntimezone = {}\nmax_pages = {}\ninterval = {}\nactive_within = {}\nbatch = {}\nrequests_per_minute = {}\n",
            q(&self.listen.to_string()),
            q(self.public_url.as_str()),
            self.threads,
            q(&format_duration(self.shutdown_timeout)),
            q(self.upstream.url.as_str()),
            q(&format_duration(self.upstream.connect_timeout)),
            q(&format_duration(self.upstream.read_timeout)),
            self.upstream.forward_access_token,
            q(&self.tiktok.client_key),
            redacted(self.tiktok.client_secret.expose()),
            list(&self.tiktok.scopes),
            q(&self.tiktok.pkce.to_string()),
            q(self.tiktok.authorize_url.as_str()),
            q(self.tiktok.api_base_url.as_str()),
            q(&format_duration(self.tiktok.timeout)),
            q(&self.database.display().to_string()),
            q(&format_duration(self.session_lifetime)),
            q(&format_duration(self.refresh_margin)),
            "[\"<redacted>\"]",
            self.keys.len(),
            self.keys.key_ids().join(","),
            list(&self.protected),
            q(&self.sync.path),
            q(&format_duration(self.sync.cooldown)),
            q(&self.sync.timezone_name),
            self.sync.max_pages,
            q(&format_duration(self.sync.interval)),
            q(&format_duration(self.sync.active_within)),
            self.sync.batch,
            self.sync.requests_per_minute,
        ) + &self.describe_ops()
    }

    fn describe_ops(&self) -> String {
        let o = &self.ops;
        let path = |p: &std::path::Path| format!("{:?}", p.display().to_string());
        let (cert, key) = match &o.tls {
            Some((c, k)) => (path(c), path(k)),
            None => ("\"\" # plain HTTP".into(), "\"\"".into()),
        };
        let proxies: Vec<String> = o.trusted_proxies.iter().map(|c| format!("\"{c}\"")).collect();
        format!(
            "\n[server] # operations\ntls_cert = {cert}\ntls_key = {key}\nhttp_redirect_listen = {}\nhsts_max_age = {}\n\
             trusted_proxies = [{}]\nmax_request_body = {}\n\n[admin]\nlisten = {}\n\n[log]\nformat = {:?}\n",
            o.http_redirect_listen.map(|a| format!("\"{a}\"")).unwrap_or_else(|| "\"\" # off".into()),
            o.hsts_max_age.map(|d| format!("\"{}\"", format_duration(d))).unwrap_or_else(|| "\"0s\" # off (not https)".into()),
            proxies.join(", "),
            o.max_request_body,
            o.admin_listen.map(|a| format!("\"{a}\"")).unwrap_or_else(|| "\"\" # off".into()),
            match o.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            },
        )
    }
}
