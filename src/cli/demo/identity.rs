//! The identity page's check, done the way an app behind nini-auth would do it (see
//! docs/upstream.md#verifying-x-nini-identity): split the `X-Nini-Identity` JWT, fetch the
//! sidecar's `/api/auth/jwks.json`, find the key by `kid`, verify the Ed25519 signature over
//! `header.payload`, then check `iss`, `aud`, `nbf` and `exp`. Nothing here uses the
//! sidecar's own code: only HTTP, JSON and ring.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

/// What the page shows.
pub struct Checked {
    /// `Ok(kid)` when every check passed, else why not.
    pub result: Result<String, String>,
    /// The decoded JOSE header and claims, when the token could be decoded at all.
    pub header: Option<Value>,
    pub claims: Option<Value>,
}

/// Fetches the JWKS at `jwks_url` and checks `token` against it.
pub async fn check(token: Option<&str>, jwks_url: &str, issuer: &str, audience: &str, now: i64) -> Checked {
    let Some(token) = token else {
        return Checked {
            result: Err("no X-Nini-Identity header arrived (identity.jwt is off?)".into()),
            header: None,
            claims: None,
        };
    };
    let jwks = fetch_jwks(jwks_url).await;
    let (header, claims) = decode(token).map_or((None, None), |(h, c)| (Some(h), Some(c)));
    let result = match jwks {
        Ok(jwks) => verify(token, &jwks, issuer, audience, now),
        Err(e) => Err(format!("cannot fetch {jwks_url}: {e}")),
    };
    Checked { result, header, claims }
}

async fn fetch_jwks(url: &str) -> Result<Value, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    resp.json::<Value>().await.map_err(|e| e.to_string())
}

fn b64_json(part: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The JOSE header and the claims, unverified.
fn decode(token: &str) -> Option<(Value, Value)> {
    let mut parts = token.split('.');
    let (h, c) = (parts.next()?, parts.next()?);
    Some((b64_json(h)?, b64_json(c)?))
}

/// Every check an app must make; `Ok(kid)` when all pass.
pub fn verify(token: &str, jwks: &Value, issuer: &str, audience: &str, now: i64) -> Result<String, String> {
    let parts: Vec<&str> = token.split('.').collect();
    let [h, c, s] = parts[..] else {
        return Err("not a JWT (three dot-separated parts)".into());
    };
    let header = b64_json(h).ok_or("the header is not base64url JSON")?;
    if header["alg"] != "EdDSA" {
        return Err(format!("unexpected alg {}", header["alg"]));
    }
    let kid = header["kid"].as_str().ok_or("no kid in the header")?;
    let key = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == kid))
        .ok_or_else(|| format!("no key {kid} in the JWKS"))?;
    if key["kty"] != "OKP" || key["crv"] != "Ed25519" {
        return Err(format!("key {kid} is not an Ed25519 key"));
    }
    let x = key["x"]
        .as_str()
        .and_then(|x| URL_SAFE_NO_PAD.decode(x).ok())
        .ok_or("the key's x is not base64url")?;
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| "the signature is not base64url")?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &x)
        .verify(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|_| format!("the signature does not verify with key {kid}"))?;
    let claims = b64_json(c).ok_or("the claims are not base64url JSON")?;
    if claims["iss"] != issuer {
        return Err(format!("iss is {}, expected {issuer:?}", claims["iss"]));
    }
    if claims["aud"] != audience {
        return Err(format!("aud is {}, expected {audience:?}", claims["aud"]));
    }
    let exp = claims["exp"].as_i64().ok_or("no exp")?;
    let nbf = claims["nbf"].as_i64().unwrap_or(0);
    if now >= exp {
        return Err(format!("expired {}s ago", now - exp));
    }
    if now < nbf {
        return Err(format!("not valid for another {}s", nbf - now));
    }
    Ok(kid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::KeyPair;

    fn token(pair: &ring::signature::Ed25519KeyPair, kid: &str, claims: &Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}).to_string());
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        let sig = pair.sign(format!("{h}.{c}").as_bytes());
        format!("{h}.{c}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    #[test]
    fn every_check_an_app_makes() {
        let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).expect("key");
        let jwks = serde_json::json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "kid": "k1",
            "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        }]});
        let claims = serde_json::json!({"iss": "http://app", "aud": "nini-app", "sub": "u", "nbf": 90, "exp": 200});
        let good = token(&pair, "k1", &claims);
        assert_eq!(verify(&good, &jwks, "http://app", "nini-app", 100), Ok("k1".into()));
        assert!(verify(&good, &jwks, "http://app", "nini-app", 200).is_err(), "expired");
        assert!(verify(&good, &jwks, "http://app", "nini-app", 80).is_err(), "not yet");
        assert!(verify(&good, &jwks, "http://other", "nini-app", 100).is_err(), "issuer");
        assert!(verify(&good, &jwks, "http://app", "other", 100).is_err(), "audience");
        assert!(verify(&token(&pair, "k2", &claims), &jwks, "http://app", "nini-app", 100).is_err());
        let mut forged: Vec<&str> = good.split('.').collect();
        let other = URL_SAFE_NO_PAD.encode(
            serde_json::json!({"iss": "http://app", "aud": "nini-app", "sub": "admin", "exp": 200}).to_string(),
        );
        forged[1] = &other;
        assert!(
            verify(&forged.join("."), &jwks, "http://app", "nini-app", 100).is_err(),
            "forged claims"
        );
    }
}
