//! The signed identity for zero-trust upstreams: a short-lived EdDSA (Ed25519) JWT in
//! `X-Nini-Identity` on every forwarded request of a signed-in user, and the public keys at
//! `/api/auth/jwks.json`.
//!
//! The signing keys are not configured separately: each encryption key in `secrets` yields one
//! Ed25519 seed through `KeyRing::derive(SIGNING_LABEL)`. So every sidecar that shares the
//! encryption keys signs with the same key, and rotating the encryption keys (new key first,
//! old ones kept) rotates the signing key while the old public keys stay in the JWKS, which is
//! what lets tokens minted just before a rotation (or by a sidecar not yet restarted) verify.
//! The key id (`kid`) is the encryption key's id, as `nini-auth check` lists it.
//!
//! Signing costs far more than a proxy hop should, so each session's token is kept beside its
//! cached identity (`headers::Ready`) and reused while more than half of its lifetime
//! remains: most requests clone it. It goes when the cached identity goes, and a changed
//! profile is a new identity, so no token outlives what it says.
//!
//! Claims: `iss`, `aud`, `sub` (user id), `sid` (the session's id, so an app can refuse a
//! token whose session it saw end), `open_id`, `name`, `iat`, `nbf` (30 s before `iat`, for
//! verifiers whose clock runs behind) and `exp` (at most `identity.ttl`, never after the
//! session's own end).

use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::Serialize;

use super::headers::Ready;
use crate::config::{Config, IdentityConfig};
use crate::crypto::KeyRing;
use crate::store::Identity;

/// Derivation label of the signing seeds; changing it changes every published key.
pub const SIGNING_LABEL: &str = "identity-jwt/ed25519";

/// How far `nbf` is set before `iat`: a verifier whose clock lags a little still accepts.
const NOT_BEFORE_SKEW: i64 = 30;

/// The claims, in the order they are serialised.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    sid: &'a str,
    open_id: &'a str,
    /// Display name; `null` when TikTok gave none (verifiers should not need to special-case
    /// a missing claim).
    name: Option<&'a str>,
    iat: i64,
    nbf: i64,
    exp: i64,
}

/// Where one identity keeps its current token (in its `headers::Ready`).
#[derive(Default)]
pub struct TokenSlot(Mutex<Option<Token>>);

struct Token {
    /// As the header value the proxy sends (cloning it is a reference count).
    value: http::HeaderValue,
    iat: i64,
    exp: i64,
}

struct Signer {
    kid: String,
    pair: Ed25519KeyPair,
    /// base64url of the JOSE header: the same for every token of this key.
    header_b64: String,
    issuer: String,
    audience: String,
    ttl: i64,
}

pub struct IdentitySigner {
    /// None when `identity.jwt` is off (or no key could be made): no header at all.
    signer: Option<Signer>,
    /// Precomputed: the key set only changes with a restart.
    jwks: serde_json::Value,
}

impl IdentitySigner {
    pub fn new(config: &Config) -> IdentitySigner {
        IdentitySigner::build(&config.keys, &config.origin(), &config.identity)
    }

    /// `issuer` is the public origin without a trailing slash (`Config::origin`).
    fn build(keys: &KeyRing, issuer: &str, identity: &IdentityConfig) -> IdentitySigner {
        let disabled = IdentitySigner {
            signer: None,
            jwks: serde_json::json!({ "keys": [] }),
        };
        if !identity.jwt {
            return disabled;
        }
        let mut pairs: Vec<(String, Ed25519KeyPair)> = Vec::new();
        for (kid, seed) in keys.derive(SIGNING_LABEL) {
            // A 32-byte seed is always accepted; the error arm is ring's API, not a real case.
            match Ed25519KeyPair::from_seed_unchecked(&seed) {
                Ok(pair) => pairs.push((kid, pair)),
                Err(e) => log::error!("identity JWT: cannot make the Ed25519 key for key id {kid}: {e}"),
            }
        }
        let jwks_keys: Vec<serde_json::Value> = pairs
            .iter()
            .map(|(kid, pair)| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
                    "kid": kid,
                    "use": "sig",
                    "alg": "EdDSA",
                })
            })
            .collect();
        // Ring order: the first key is the primary, the one that signs.
        let Some((kid, pair)) = pairs.into_iter().next() else {
            log::error!("identity JWT: no signing key (no encryption keys); X-Nini-Identity is not sent");
            return disabled;
        };
        let header = serde_json::json!({ "alg": "EdDSA", "typ": "JWT", "kid": kid });
        let header_b64 = URL_SAFE_NO_PAD.encode(header.to_string());
        IdentitySigner {
            signer: Some(Signer {
                kid,
                pair,
                header_b64,
                issuer: issuer.trim_end_matches('/').to_string(),
                audience: identity.audience.clone(),
                ttl: i64::try_from(identity.ttl.as_secs()).unwrap_or(300).clamp(1, 300),
            }),
            jwks: serde_json::json!({ "keys": jwks_keys }),
        }
    }

    /// The `X-Nini-Identity` value for this user at `now` (None when disabled).
    pub fn header_value(&self, id: &Identity, now: i64) -> Option<String> {
        self.header(id, &super::headers::ready(id), now)
            .and_then(|v| v.to_str().ok().map(String::from))
    }

    /// `header_value` as a header value, for the proxy, which has the identity's `Ready`
    /// values at hand already.
    pub fn header(&self, id: &Identity, ready: &Ready, now: i64) -> Option<http::HeaderValue> {
        let signer = self.signer.as_ref()?;
        let slot = || ready.token.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = slot().as_ref().filter(|t| signer.fresh(t, now)) {
            return Some(t.value.clone());
        }
        // Signed without holding the lock (a proxy thread never waits on another's
        // signature); two requests of a session may both sign once, and either token is good.
        let (token, exp) = signer.sign(id, now)?;
        // A JWT is base64url and dots: always a valid header value.
        let value = http::HeaderValue::try_from(token).ok()?;
        *slot() = Some(Token {
            value: value.clone(),
            iat: now,
            exp,
        });
        Some(value)
    }

    /// The JWKS document (`{"keys":[...]}`): every key of the ring, primary first.
    pub fn jwks(&self) -> serde_json::Value {
        self.jwks.clone()
    }

    /// The key id new tokens are signed with (None when disabled).
    pub fn signing_kid(&self) -> Option<&str> {
        self.signer.as_ref().map(|s| s.kid.as_str())
    }
}

impl Signer {
    /// Reused while more than half the lifetime remains, so an upstream always gets at least
    /// ttl/2 of validity to work with (e.g. to pass the token on to another service).
    fn fresh(&self, t: &Token, now: i64) -> bool {
        // `now < iat` (the clock stepped back) would hand out a token that is not yet valid.
        t.iat <= now && t.exp.saturating_sub(now) > self.ttl / 2
    }

    /// A token for `id` at `now`, and its expiry.
    fn sign(&self, id: &Identity, now: i64) -> Option<(String, i64)> {
        let exp = now.saturating_add(self.ttl).min(id.session_expires);
        let claims = Claims {
            iss: &self.issuer,
            aud: &self.audience,
            sub: &id.user_id,
            sid: &id.session_id,
            open_id: &id.open_id,
            name: id.display_name.as_deref(),
            iat: now,
            nbf: now.saturating_sub(NOT_BEFORE_SKEW),
            exp,
        };
        let payload = match serde_json::to_vec(&claims) {
            Ok(p) => p,
            Err(e) => {
                log::error!("identity JWT: cannot serialise the claims: {e}");
                return None;
            }
        };
        let mut token = String::with_capacity(self.header_b64.len() + payload.len() * 4 / 3 + 92);
        token.push_str(&self.header_b64);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let signature = self.pair.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        Some((token, exp))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ring::signature::{UnparsedPublicKey, ED25519};
    use serde_json::Value;

    use super::*;
    use crate::crypto::generate_key_base64;

    const ISSUER: &str = "https://app.example.com";

    fn identity_config(jwt: bool) -> IdentityConfig {
        IdentityConfig {
            jwt,
            audience: "nini-app".into(),
            ttl: Duration::from_secs(300),
        }
    }

    fn ring_of(keys: &[String]) -> KeyRing {
        KeyRing::from_base64(keys).expect("valid keys")
    }

    fn user(name: Option<&str>) -> Identity {
        Identity {
            user_id: "9f2c4e0b7a1d4c3e8f6a5b2d1c0e9f87".into(),
            session_id: "5e5510a1d0000000000000000000000a".into(),
            open_id: "-000abcDEF123".into(),
            display_name: name.map(String::from),
            username: None,
            avatar: None,
            verified: false,
            videos: 0,
            streak: 0,
            nini_score: 0,
            follower_count: None,
            session_expires: 2_000_000_000,
            grant_error: None,
            derived: Default::default(),
        }
    }

    fn b64json(part: &str) -> Value {
        let bytes = URL_SAFE_NO_PAD.decode(part).expect("base64url without padding");
        serde_json::from_slice(&bytes).expect("JSON")
    }

    /// Verifies like an upstream would, from the JWKS alone: (header, claims) or an error.
    fn verify(token: &str, jwks: &Value) -> Result<(Value, Value), String> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err("not three parts".into());
        };
        let header = b64json(h);
        let kid = header["kid"].as_str().ok_or("no kid")?;
        let jwk = jwks["keys"]
            .as_array()
            .and_then(|keys| keys.iter().find(|k| k["kid"] == kid))
            .ok_or("kid not in JWKS")?;
        let x = URL_SAFE_NO_PAD
            .decode(jwk["x"].as_str().ok_or("no x")?)
            .map_err(|e| e.to_string())?;
        let sig = URL_SAFE_NO_PAD.decode(s).map_err(|e| e.to_string())?;
        UnparsedPublicKey::new(&ED25519, x)
            .verify(format!("{h}.{p}").as_bytes(), &sig)
            .map_err(|_| "bad signature".to_string())?;
        Ok((header, b64json(p)))
    }

    #[test]
    fn token_verifies_against_the_jwks_with_the_promised_claims() {
        let keys = ring_of(&[generate_key_base64().expect("rng")]);
        let s = IdentitySigner::build(&keys, ISSUER, &identity_config(true));
        let now = 1_750_000_000;
        let token = s.header_value(&user(Some("María José 🌮")), now).expect("token");
        assert!(!token.contains('='), "no padding: {token}");
        let jwks = s.jwks();
        let (header, claims) = verify(&token, &jwks).expect("verifies");
        let kid = keys.primary_id().expect("primary");
        assert_eq!(header, serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}));
        assert_eq!(
            claims,
            serde_json::json!({
                "iss": ISSUER, "aud": "nini-app", "sub": "9f2c4e0b7a1d4c3e8f6a5b2d1c0e9f87",
                "sid": "5e5510a1d0000000000000000000000a",
                "open_id": "-000abcDEF123", "name": "María José 🌮",
                "iat": now, "nbf": now - 30, "exp": now + 300,
            })
        );
        let jwk = &jwks["keys"][0];
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["alg"], "EdDSA");
        assert_eq!(jwk["kid"], kid);
        assert_eq!(jwk["x"].as_str().map(str::len), Some(43), "32 bytes, base64url");
        assert_eq!(s.signing_kid(), Some(kid));
    }

    #[test]
    fn missing_name_is_null_and_ttl_is_the_configured_one() {
        let keys = ring_of(&[generate_key_base64().expect("rng")]);
        let mut cfg = identity_config(true);
        cfg.ttl = Duration::from_secs(60);
        let s = IdentitySigner::build(&keys, "http://localhost:4180/", &cfg);
        let (_, claims) = verify(&s.header_value(&user(None), 100).expect("token"), &s.jwks()).expect("verifies");
        assert_eq!(claims["name"], Value::Null);
        assert_eq!(claims["iss"], "http://localhost:4180", "no trailing slash");
        assert_eq!(claims["exp"], 160);
    }

    #[test]
    fn tampering_is_detected() {
        let keys = ring_of(&[generate_key_base64().expect("rng")]);
        let s = IdentitySigner::build(&keys, ISSUER, &identity_config(true));
        let token = s.header_value(&user(Some("a")), 1000).expect("token");
        let parts: Vec<&str> = token.split('.').collect();
        let mut claims = b64json(parts[1]);
        claims["sub"] = "someone-else".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            parts[2]
        );
        assert_eq!(verify(&forged, &s.jwks()).err().as_deref(), Some("bad signature"));
        let other = IdentitySigner::build(
            &ring_of(&[generate_key_base64().expect("rng")]),
            ISSUER,
            &identity_config(true),
        );
        assert!(
            verify(&token, &other.jwks()).is_err(),
            "another ring's keys do not verify it"
        );
    }

    #[test]
    fn tokens_are_reused_for_half_their_life_then_renewed() {
        let keys = ring_of(&[generate_key_base64().expect("rng")]);
        let s = IdentitySigner::build(&keys, ISSUER, &identity_config(true));
        let u = user(Some("a"));
        let first = s.header_value(&u, 1000).expect("token");
        assert_eq!(s.header_value(&u, 1000).as_deref(), Some(first.as_str()));
        assert_eq!(s.header_value(&u, 1149).as_deref(), Some(first.as_str()), "151 s left");
        let renewed = s.header_value(&u, 1150).expect("token");
        assert_ne!(renewed, first, "only half the lifetime left: a new token");
        let (_, claims) = verify(&renewed, &s.jwks()).expect("verifies");
        assert_eq!(
            (claims["iat"].as_i64(), claims["exp"].as_i64()),
            (Some(1150), Some(1450))
        );
        // A changed profile is a new identity (re-read from the store): never the old name.
        let renamed = s.header_value(&user(Some("b")), 1151).expect("token");
        assert_eq!(verify(&renamed, &s.jwks()).expect("verifies").1["name"], "b");
        // A clock that stepped back does not get a token from its future.
        let back = s.header_value(&u, 1100).expect("token");
        assert_eq!(verify(&back, &s.jwks()).expect("verifies").1["iat"], 1100);
        // Other sessions have their own tokens.
        let mut other = user(Some("b"));
        other.user_id = "00000000000000000000000000000001".into();
        other.session_id = "00000000000000000000000000000002".into();
        let theirs = s.header_value(&other, 1100).expect("token");
        let claims = verify(&theirs, &s.jwks()).expect("verifies").1;
        assert_eq!(
            (claims["sub"].clone(), claims["sid"].clone()),
            (other.user_id.clone().into(), other.session_id.clone().into())
        );
    }

    #[test]
    fn a_token_never_outlives_its_session() {
        let keys = ring_of(&[generate_key_base64().expect("rng")]);
        let s = IdentitySigner::build(&keys, ISSUER, &identity_config(true));
        let mut u = user(None);
        u.session_expires = 1100;
        let (_, claims) = verify(&s.header_value(&u, 1000).expect("token"), &s.jwks()).expect("verifies");
        assert_eq!(claims["exp"], 1100, "capped at the session's end, not iat + ttl");
        // Near the end, a cached token is not reused past its half-life: a fresh one is made.
        let again = s.header_value(&u, 1060).expect("token");
        assert_eq!(verify(&again, &s.jwks()).expect("verifies").1["iat"], 1060);
    }

    #[test]
    fn the_token_lives_with_the_identity_it_was_made_for() {
        let keys = ring_of(&[generate_key_base64().expect("rng")]);
        let s = IdentitySigner::build(&keys, ISSUER, &identity_config(true));
        let u = user(Some("a"));
        let first = s.header_value(&u, 1000).expect("token");
        // The same session read again from the store (cache expiry, eviction) signs anew.
        let reread = user(Some("a"));
        let second = s.header_value(&reread, 1001).expect("token");
        assert_ne!(first, second);
        assert_eq!(s.header_value(&u, 1002).as_deref(), Some(first.as_str()));
        assert_eq!(s.header_value(&reread, 1002).as_deref(), Some(second.as_str()));
    }

    #[test]
    fn rotation_publishes_old_and_new_and_signs_with_new() {
        let old_b64 = generate_key_base64().expect("rng");
        let new_b64 = generate_key_base64().expect("rng");
        let before = IdentitySigner::build(&ring_of(std::slice::from_ref(&old_b64)), ISSUER, &identity_config(true));
        let old_token = before.header_value(&user(Some("a")), 1000).expect("token");
        let rotated = ring_of(&[new_b64, old_b64]);
        let after = IdentitySigner::build(&rotated, ISSUER, &identity_config(true));
        let jwks = after.jwks();
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .filter_map(|k| k["kid"].as_str())
            .collect();
        assert_eq!(kids, rotated.key_ids(), "every key, primary first");
        // The old key's public half is unchanged by the rotation.
        assert_eq!(jwks["keys"][1], before.jwks()["keys"][0]);
        let (header, _) = verify(&old_token, &jwks).expect("a pre-rotation token still verifies");
        assert_eq!(header["kid"], rotated.key_ids()[1]);
        let new_token = after.header_value(&user(Some("a")), 1000).expect("token");
        let (header, _) = verify(&new_token, &jwks).expect("verifies");
        assert_eq!(header["kid"], rotated.key_ids()[0], "signed with the new primary");
        assert!(verify(&new_token, &before.jwks()).is_err());
    }

    #[test]
    fn same_keys_same_signing_key_on_every_sidecar() {
        let k = generate_key_base64().expect("rng");
        let a = IdentitySigner::build(&ring_of(std::slice::from_ref(&k)), ISSUER, &identity_config(true));
        let b = IdentitySigner::build(&ring_of(&[k]), ISSUER, &identity_config(true));
        assert_eq!(a.jwks(), b.jwks());
        let token = a.header_value(&user(None), 5).expect("token");
        assert!(verify(&token, &b.jwks()).is_ok());
    }

    #[test]
    fn disabled_sends_nothing_and_publishes_no_key() {
        let keys = ring_of(&[generate_key_base64().expect("rng")]);
        let s = IdentitySigner::build(&keys, ISSUER, &identity_config(false));
        assert_eq!(s.header_value(&user(Some("a")), 1000), None);
        assert_eq!(s.jwks(), serde_json::json!({ "keys": [] }));
        assert_eq!(s.signing_kid(), None);
        let empty = IdentitySigner::build(&ring_of(&[]), ISSUER, &identity_config(true));
        assert_eq!(empty.header_value(&user(None), 1000), None);
        assert_eq!(empty.jwks(), serde_json::json!({ "keys": [] }));
    }

    #[test]
    fn new_reads_issuer_audience_and_ttl_from_the_config() {
        let mut raw = crate::cli::demo::raw_config(
            "127.0.0.1:4180".parse().expect("addr"),
            "http://127.0.0.1:1",
            "127.0.0.1:3000".parse().expect("addr"),
            std::path::Path::new("unused.db"),
        );
        raw.server.public_url = "https://app.example.com/".into();
        raw.secrets.encryption_keys = vec![generate_key_base64().expect("rng")];
        raw.identity.audience = "my-api".into();
        raw.identity.ttl = "2m".into();
        let env = std::collections::HashMap::<String, String>::new();
        let config = crate::config::validate(raw, &env, crate::config::SecretsPolicy::Required).expect("valid");
        let s = IdentitySigner::new(&config);
        let (_, claims) = verify(&s.header_value(&user(None), 0).expect("token"), &s.jwks()).expect("verifies");
        assert_eq!(claims["iss"], "https://app.example.com");
        assert_eq!(claims["aud"], "my-api");
        assert_eq!(claims["exp"], 120);
    }
}
