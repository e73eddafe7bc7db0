//! The signed identity as an upstream sees it: `X-Nini-Identity` on forwarded requests of a
//! signed-in user, verified against `GET /api/auth/jwks.json` twice over: by a small verifier
//! here (ring, from the JWKS alone) and by the `jose` npm package (`tests/jose/verify.mjs`), a
//! standard JWT library that shares no code with the sidecar.
//!
//! The jose checks need `node` and `tests/jose/node_modules/jose` (`npm ci` in tests/jose;
//! `scripts/setup` does it). Without them each test prints `skipping: ...` for those checks and
//! still runs the Rust ones, unless `NINI_AUTH_REQUIRE_BROWSER=1` (set by `scripts/test`, hence
//! CI), which makes it fail.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{UnparsedPublicKey, ED25519};
use serde_json::Value;

use crate::support::{
    node_or_skip, node_output, primary_key_id, unix_now, upstream_header, Browser, TestEnv, DEMO_USER_NAME,
};

/// One `node verify.mjs` run: start-up, one JWKS fetch, one verification.
const NODE_TIMEOUT: Duration = Duration::from_secs(30);
const AUDIENCE: &str = "nini-app";
/// The same allowance verify.mjs and docs/upstream.md use.
const CLOCK_SKEW: i64 = 5;
const VERIFY_SCRIPT: &str = "tests/jose/verify.mjs";

/// Whether this test runs its jose checks: the same rule as the browser tests.
fn jose_available(test: &str) -> bool {
    node_or_skip(&format!("jose checks of {test}"), "tests/jose", &["jose"], false)
}

/// `node tests/jose/verify.mjs`: the verified payload, or jose's reason for refusing.
async fn jose_verify(jwks_url: &str, token: &str, issuer: &str, audience: &str) -> Result<Value, String> {
    let out = node_output(VERIFY_SCRIPT, &[jwks_url, token, issuer, audience], NODE_TIMEOUT).await;
    if out.code != 0 {
        assert_eq!(
            out.code, 1,
            "verify.mjs crashed:\n{}\n--- stderr\n{}",
            out.stdout, out.stderr
        );
        return Err(out.stderr);
    }
    Ok(out.json_line(VERIFY_SCRIPT))
}

fn b64json(part: &str) -> Result<Value, String> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|e| format!("base64url: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("JSON: {e}"))
}

/// What any upstream must check, written from the JWKS alone (no sidecar code): algorithm,
/// key, signature, issuer, audience, times. Returns (header, claims).
fn rust_verify(token: &str, jwks: &Value, issuer: &str, audience: &str) -> Result<(Value, Value), String> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err("not a compact JWS".into());
    };
    let header = b64json(h)?;
    if header["alg"] != "EdDSA" {
        return Err(format!("unexpected alg {}", header["alg"]));
    }
    let jwk = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == header["kid"]))
        .ok_or("kid not in the JWKS")?;
    if jwk["kty"] != "OKP" || jwk["crv"] != "Ed25519" {
        return Err(format!("not an Ed25519 key: {jwk}"));
    }
    let x = URL_SAFE_NO_PAD
        .decode(jwk["x"].as_str().ok_or("no x")?)
        .map_err(|e| format!("x: {e}"))?;
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|e| format!("signature: {e}"))?;
    UnparsedPublicKey::new(&ED25519, x)
        .verify(format!("{h}.{p}").as_bytes(), &sig)
        .map_err(|_| "bad signature".to_string())?;
    let claims = b64json(p)?;
    if claims["iss"] != issuer {
        return Err(format!("iss {} is not {issuer}", claims["iss"]));
    }
    if claims["aud"] != audience {
        return Err(format!("aud {} is not {audience}", claims["aud"]));
    }
    let now = unix_now();
    let (Some(nbf), Some(exp)) = (claims["nbf"].as_i64(), claims["exp"].as_i64()) else {
        return Err("nbf/exp missing".into());
    };
    if nbf > now + CLOCK_SKEW || exp <= now - CLOCK_SKEW {
        return Err(format!("outside its validity ({nbf}..{exp}, now {now})"));
    }
    Ok((header, claims))
}

fn issuer(env: &TestEnv) -> String {
    env.url("").trim_end_matches('/').to_string()
}

async fn jwks(env: &TestEnv) -> Value {
    let r = Browser::api().get(&env.url("/api/auth/jwks.json")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json()
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .map(|keys| {
            keys.iter()
                .filter_map(|k| k["kid"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The `X-Nini-Identity` values the upstream received for `path`, and the echo.
async fn upstream_tokens(b: &Browser, env: &TestEnv, path: &str, headers: &[(&str, &str)]) -> (Vec<String>, Value) {
    let r = b.echo(&env.url(path), headers).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let e = r.json();
    (upstream_header(&e, "x-nini-identity"), e)
}

async fn signed_in(env: &TestEnv) -> (Browser, String, Value) {
    let b = Browser::new();
    let r = b.login(env, "/dashboard").await;
    assert_eq!(r.status, 302, "{}", r.body);
    let (tokens, e) = upstream_tokens(&b, env, "/dashboard/data", &[]).await;
    assert_eq!(tokens.len(), 1, "exactly one X-Nini-Identity: {e}");
    (b, tokens[0].clone(), e)
}

/// The same token with its claims changed and the original signature kept.
fn forge_claims(token: &str, change: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = b64json(parts[1]).expect("claims");
    change(&mut claims);
    format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    )
}

/// The same token with one signature character changed (not the last, whose spare bits may
/// not survive a round trip through base64).
fn flip_signature(token: &str) -> String {
    let mut bytes = token.as_bytes().to_vec();
    let at = bytes.len() - 10;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("ascii")
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_gets_a_token_that_jose_and_ring_verify() {
    let env = TestEnv::start().await;
    let (b, token, echo) = signed_in(&env).await;
    let iss = issuer(&env);
    let keys = jwks(&env).await;
    assert_eq!(kids(&keys), vec![primary_key_id(&env.keys)], "{keys}");

    let (header, claims) = rust_verify(&token, &keys, &iss, AUDIENCE).unwrap_or_else(|e| panic!("{e}: {token}"));
    assert_eq!(header["typ"], "JWT");
    let uid = upstream_header(&echo, "x-nini-user-id");
    assert_eq!(claims["sub"], uid[0], "{claims}");
    assert_eq!(claims["open_id"], nini_auth::mock_tiktok::DEMO_OPEN_ID, "{claims}");
    assert_eq!(claims["name"], DEMO_USER_NAME, "{claims}");
    let iat = claims["iat"].as_i64().expect("iat");
    assert!((iat - unix_now()).abs() <= CLOCK_SKEW, "{claims}");
    assert_eq!(claims["nbf"], iat - 30, "30 s of slack for verifiers whose clock lags");
    assert_eq!(claims["exp"], iat + 300, "default identity.ttl is 5m");
    assert_eq!(
        claims["sid"].as_str().map(str::len),
        Some(32),
        "the session's id: {claims}"
    );

    // The next request reuses the cached token instead of signing again.
    let (again, _) = upstream_tokens(&b, &env, "/public/other", &[]).await;
    assert_eq!(again, vec![token.clone()]);

    let forged = forge_claims(&token, |c| c["sub"] = "00000000000000000000000000000000".into());
    let flipped = flip_signature(&token);
    for bad in [&forged, &flipped] {
        assert_eq!(
            rust_verify(bad, &keys, &iss, AUDIENCE).err().as_deref(),
            Some("bad signature")
        );
    }

    if !jose_available("upstream_gets_a_token_that_jose_and_ring_verify") {
        return;
    }
    let jwks_url = env.url("/api/auth/jwks.json");
    let payload = jose_verify(&jwks_url, &token, &iss, AUDIENCE)
        .await
        .unwrap_or_else(|e| panic!("jose refused the sidecar's token: {e}\n{token}"));
    assert_eq!(payload, claims, "jose sees the same claims");
    for bad in [&forged, &flipped] {
        let err = jose_verify(&jwks_url, bad, &iss, AUDIENCE)
            .await
            .expect_err("a tampered token must not verify");
        assert!(err.contains("ERR_JWS_SIGNATURE_VERIFICATION_FAILED"), "{err}");
    }
    let err = jose_verify(&jwks_url, &token, &iss, "another-app")
        .await
        .expect_err("wrong audience");
    assert!(err.contains("ERR_JWT_CLAIM_VALIDATION_FAILED"), "{err}");
    let err = jose_verify(&jwks_url, &token, "https://evil.example", AUDIENCE)
        .await
        .expect_err("wrong issuer");
    assert!(err.contains("ERR_JWT_CLAIM_VALIDATION_FAILED"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_sent_identity_tokens_never_reach_the_upstream() {
    let env = TestEnv::start().await;
    let (b, token, _) = signed_in(&env).await;
    let spoofs = [
        ("X-Nini-Identity", token.as_str()),
        ("x-nini-identity", "forged.by.client"),
        ("X_NINI_IDENTITY", "forged.by.client"),
    ];

    // Anonymous, replaying a real user's token: the upstream sees no token at all.
    for (name, value) in spoofs {
        let (tokens, e) = upstream_tokens(&Browser::api(), &env, "/public/page", &[(name, value)]).await;
        assert!(tokens.is_empty(), "{name} reached the upstream: {e}");
        assert!(upstream_header(&e, "x-nini-user-id").is_empty(), "{e}");
        let names = crate::support::upstream_header_names(&e);
        assert!(!names.iter().any(|n| n.contains("identity")), "{names:?}");
    }

    // Signed in, sending a forged one: only the sidecar's own token arrives.
    let (tokens, e) = upstream_tokens(&b, &env, "/dashboard", &[("X-Nini-Identity", "forged.by.client")]).await;
    assert_eq!(tokens, vec![token], "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_publishes_both_keys_and_earlier_tokens_still_verify() {
    let mut env = TestEnv::start().await;
    let (b, old_token, _) = signed_in(&env).await;
    let old_iss = issuer(&env);
    let old_keys = env.keys.clone();
    let old_kid = primary_key_id(&old_keys);

    let new_key = nini_auth::crypto::generate_key_base64().expect("key");
    let rotated = vec![new_key, old_keys[0].clone()];
    let new_kid = primary_key_id(&rotated);
    assert_ne!(new_kid, old_kid);
    env.restart_with_keys(rotated).await;

    let keys = jwks(&env).await;
    assert_eq!(
        kids(&keys),
        vec![new_kid.clone(), old_kid.clone()],
        "primary first: {keys}"
    );
    // A token minted before the restart (the restarted sidecar listens on another port, hence
    // the old issuer) still verifies against the new key set.
    let (header, _) = rust_verify(&old_token, &keys, &old_iss, AUDIENCE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(header["kid"], old_kid);

    // The session survived the restart; its new token is signed with the new primary key.
    let (tokens, e) = upstream_tokens(&b, &env, "/dashboard", &[]).await;
    assert_eq!(tokens.len(), 1, "{e}");
    let new_token = tokens[0].clone();
    let (header, claims) =
        rust_verify(&new_token, &keys, &issuer(&env), AUDIENCE).unwrap_or_else(|e| panic!("{e}: {new_token}"));
    assert_eq!(header["kid"], new_kid);
    assert_eq!(claims["name"], DEMO_USER_NAME);

    if !jose_available("rotation_publishes_both_keys_and_earlier_tokens_still_verify") {
        return;
    }
    let jwks_url = env.url("/api/auth/jwks.json");
    let payload = jose_verify(&jwks_url, &old_token, &old_iss, AUDIENCE)
        .await
        .unwrap_or_else(|e| panic!("jose refused a pre-rotation token: {e}"));
    assert_eq!(payload["name"], DEMO_USER_NAME);
    let payload = jose_verify(&jwks_url, &new_token, &issuer(&env), AUDIENCE)
        .await
        .unwrap_or_else(|e| panic!("jose refused the post-rotation token: {e}"));
    assert_eq!(payload["sub"], claims["sub"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn disabled_sends_no_token_and_publishes_no_key() {
    let env = TestEnv::builder().raw(|r| r.identity.jwt = false).start().await;
    let b = Browser::new();
    let r = b.login(&env, "/dashboard").await;
    assert_eq!(r.status, 302, "{}", r.body);
    let (tokens, e) = upstream_tokens(&b, &env, "/dashboard", &[("X-Nini-Identity", "forged.by.client")]).await;
    assert!(tokens.is_empty(), "{e}");
    assert_eq!(
        upstream_header(&e, "x-nini-user-id").len(),
        1,
        "plain headers still sent: {e}"
    );
    assert_eq!(jwks(&env).await, serde_json::json!({ "keys": [] }));
}
