//! Cryptography, all on `ring`: the AES-256-GCM key ring that seals TikTok tokens at rest,
//! random tokens, SHA-256 hashing of session ids, HMAC-signed CSRF tokens and constant-time
//! comparison. Nothing else in the crate touches key material.

use std::fmt;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::digest::{digest, SHA256};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Prefix of every sealed value: format version, so a future format can coexist.
const SEALED_VERSION: &str = "v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("sealed value is malformed")]
    Malformed,
    #[error("sealed value uses unknown key id {0:?}")]
    UnknownKey(String),
    #[error("sealed value failed authentication (tampered, or bound to another user/column)")]
    Tampered,
    #[error("system random generator failed")]
    Random,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key #{index} is not valid base64")]
    NotBase64 { index: usize },
    #[error("key #{index} decodes to {len} bytes; a key is exactly 32 bytes (use `nini-auth keygen`)")]
    WrongLength { index: usize, len: usize },
    #[error("key #{index} duplicates an earlier key")]
    Duplicate { index: usize },
}

struct Key {
    id: String,
    aead: LessSafeKey,
    csrf: hmac::Key,
    /// Seed for derived keys (`derive`): never the raw key itself.
    derive_base: [u8; 32],
}

/// Encryption keys: the first seals, all open. Each key is known by a short id derived from
/// its SHA-256, stored in every sealed value so rotation can find the right key.
#[derive(Clone)]
pub struct KeyRing {
    keys: std::sync::Arc<Vec<Key>>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyRing({} key(s), ids {:?})", self.keys.len(), self.key_ids())
    }
}

impl KeyRing {
    /// Builds a ring from base64 (standard or URL-safe) 32-byte keys; the first one seals.
    pub fn from_base64(keys: &[String]) -> Result<KeyRing, KeyError> {
        let mut out: Vec<Key> = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            let index = i + 1;
            let bytes = STANDARD
                .decode(k.trim())
                .or_else(|_| URL_SAFE_NO_PAD.decode(k.trim().trim_end_matches('=')))
                .map_err(|_| KeyError::NotBase64 { index })?;
            if bytes.len() != 32 {
                return Err(KeyError::WrongLength {
                    index,
                    len: bytes.len(),
                });
            }
            let key = Key::from_bytes(&bytes).ok_or(KeyError::WrongLength {
                index,
                len: bytes.len(),
            })?;
            if out.iter().any(|o| o.id == key.id) {
                return Err(KeyError::Duplicate { index });
            }
            out.push(key);
        }
        Ok(KeyRing {
            keys: std::sync::Arc::new(out),
        })
    }

    /// A ring with one fresh random key (demo and tests only: nothing survives a restart).
    pub fn generate() -> KeyRing {
        let bytes = random_bytes::<32>().unwrap_or([7u8; 32]);
        match Key::from_bytes(&bytes) {
            Some(k) => KeyRing {
                keys: std::sync::Arc::new(vec![k]),
            },
            None => KeyRing {
                keys: std::sync::Arc::new(Vec::new()),
            },
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.id.clone()).collect()
    }

    /// The id of the key that seals new values.
    pub fn primary_id(&self) -> Option<&str> {
        self.keys.first().map(|k| k.id.as_str())
    }

    /// Seals `plaintext` with a random 96-bit nonce; `aad` binds it to its owner and column so
    /// a ciphertext copied to another row or column fails to open.
    /// Format: `v1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`.
    pub fn seal(&self, plaintext: &[u8], aad: &str) -> Result<String, CryptoError> {
        let key = self.keys.first().ok_or(CryptoError::UnknownKey(String::new()))?;
        let nonce_bytes = random_bytes::<NONCE_LEN>()?;
        let mut buf = plaintext.to_vec();
        key.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aad.as_bytes()),
                &mut buf,
            )
            .map_err(|_| CryptoError::Tampered)?;
        let mut blob = Vec::with_capacity(NONCE_LEN + buf.len());
        blob.extend_from_slice(&nonce_bytes);
        blob.extend_from_slice(&buf);
        Ok(format!("{SEALED_VERSION}.{}.{}", key.id, URL_SAFE_NO_PAD.encode(blob)))
    }

    /// Opens a value made by `seal` with the same `aad`.
    pub fn open(&self, sealed: &str, aad: &str) -> Result<Vec<u8>, CryptoError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(version), Some(kid), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CryptoError::Malformed);
        };
        if version != SEALED_VERSION {
            return Err(CryptoError::Malformed);
        }
        let key = self
            .keys
            .iter()
            .find(|k| k.id == kid)
            .ok_or_else(|| CryptoError::UnknownKey(kid.chars().take(16).collect()))?;
        let mut blob = URL_SAFE_NO_PAD.decode(body).map_err(|_| CryptoError::Malformed)?;
        if blob.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(CryptoError::Malformed);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&blob[..NONCE_LEN]);
        let plain = key
            .aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut blob[NONCE_LEN..],
            )
            .map_err(|_| CryptoError::Tampered)?;
        Ok(plain.to_vec())
    }

    /// 32 bytes per key for another purpose (`label`, e.g. the identity-JWT signing seed),
    /// in ring order (the first is the primary), with that key's id. HMAC-SHA256 keyed by a
    /// per-key derivation base: one secret to manage, unrelated keys per purpose, and rotating
    /// the encryption keys rotates the derived ones.
    pub fn derive(&self, label: &str) -> Vec<(String, [u8; 32])> {
        self.keys
            .iter()
            .map(|k| {
                let key = hmac::Key::new(hmac::HMAC_SHA256, &k.derive_base);
                let mut out = [0u8; 32];
                out.copy_from_slice(hmac::sign(&key, label.as_bytes()).as_ref());
                (k.id.clone(), out)
            })
            .collect()
    }

    /// Key id a sealed value was made with, if it parses.
    pub fn sealed_key_id(sealed: &str) -> Option<&str> {
        let mut parts = sealed.splitn(3, '.');
        match (parts.next(), parts.next()) {
            (Some(SEALED_VERSION), Some(kid)) => Some(kid),
            _ => None,
        }
    }

    /// A CSRF token: random value plus its HMAC under the primary key, `<token>.<mac>`.
    /// The browser keeps it in a cookie and echoes the token part in forms (double submit).
    /// The MAC means only tokens this deployment issued are accepted; it does not bind a token
    /// to one browser, so against a sibling subdomain planting a cookie it is the `__Host-`
    /// prefix (https deployments) that protects.
    pub fn new_csrf_cookie(&self) -> Result<(String, String), CryptoError> {
        let token = random_token()?;
        let key = self.keys.first().ok_or(CryptoError::UnknownKey(String::new()))?;
        let mac = hmac::sign(&key.csrf, token.as_bytes());
        Ok((
            token.clone(),
            format!("{token}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref())),
        ))
    }

    /// The token inside a CSRF cookie value, if its MAC verifies under any key.
    pub fn csrf_token_from_cookie<'a>(&self, cookie_value: &'a str) -> Option<&'a str> {
        let (token, mac) = cookie_value.split_once('.')?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        self.keys
            .iter()
            .any(|k| hmac::verify(&k.csrf, token.as_bytes(), &mac).is_ok())
            .then_some(token)
    }
}

impl Key {
    fn from_bytes(bytes: &[u8]) -> Option<Key> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).ok()?;
        let id = hex(&digest(&SHA256, bytes).as_ref()[..4]);
        let mut csrf_material = b"nini-auth/csrf/v1".to_vec();
        csrf_material.extend_from_slice(bytes);
        let csrf = hmac::Key::new(hmac::HMAC_SHA256, digest(&SHA256, &csrf_material).as_ref());
        let mut base_material = b"nini-auth/derive/v1".to_vec();
        base_material.extend_from_slice(bytes);
        let mut derive_base = [0u8; 32];
        derive_base.copy_from_slice(digest(&SHA256, &base_material).as_ref());
        Some(Key {
            id,
            aead: LessSafeKey::new(unbound),
            csrf,
            derive_base,
        })
    }
}

fn rng() -> &'static SystemRandom {
    static RNG: std::sync::OnceLock<SystemRandom> = std::sync::OnceLock::new();
    RNG.get_or_init(SystemRandom::new)
}

pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut b = [0u8; N];
    rng().fill(&mut b).map_err(|_| CryptoError::Random)?;
    Ok(b)
}

/// 256 random bits, base64url without padding (43 chars): session ids, state, CSRF tokens.
pub fn random_token() -> Result<String, CryptoError> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}

/// A fresh 32-byte key, standard base64, as `nini-auth keygen` prints it.
pub fn generate_key_base64() -> Result<String, CryptoError> {
    Ok(STANDARD.encode(random_bytes::<32>()?))
}

/// Lowercase hex SHA-256: how session tokens and state values are stored.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(digest(&SHA256, data).as_ref())
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, data).as_ref());
    out
}

/// Decodes a token made by `random_token`; anything else is not ours.
pub fn decode_token(s: &str) -> Option<[u8; 32]> {
    if s.len() != 43 {
        return None;
    }
    let v = URL_SAFE_NO_PAD.decode(s).ok()?;
    v.try_into().ok()
}

pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 0xf) as usize] as char);
    }
    s
}

/// Constant-time equality for secrets (CSRF tokens, state bindings).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// PKCE: a 43-char verifier and its challenge, base64url (RFC 7636) or TikTok Desktop's hex.
pub fn pkce_challenge(verifier: &str, hex_form: bool) -> String {
    let d = digest(&SHA256, verifier.as_bytes());
    if hex_form {
        hex(d.as_ref())
    } else {
        URL_SAFE_NO_PAD.encode(d.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize) -> KeyRing {
        let keys: Vec<String> = (0..n).map(|_| generate_key_base64().expect("rng")).collect();
        KeyRing::from_base64(&keys).expect("valid keys")
    }

    #[test]
    fn seal_open_round_trip_with_random_nonces() {
        let r = ring(1);
        let a = r.seal(b"act.secret", "users.access_token:u1").expect("seal");
        let b = r.seal(b"act.secret", "users.access_token:u1").expect("seal");
        assert_ne!(a, b, "nonce must differ per encryption");
        assert!(!a.contains("act.secret"));
        assert_eq!(r.open(&a, "users.access_token:u1").expect("open"), b"act.secret");
    }

    #[test]
    fn aad_binds_row_and_column() {
        let r = ring(1);
        let s = r.seal(b"tok", "users.access_token:u1").expect("seal");
        assert_eq!(r.open(&s, "users.access_token:u2"), Err(CryptoError::Tampered));
        assert_eq!(r.open(&s, "users.refresh_token:u1"), Err(CryptoError::Tampered));
    }

    #[test]
    fn tampering_and_garbage_are_errors_not_panics() {
        let r = ring(1);
        let s = r.seal(b"tok", "a").expect("seal");
        let mut bytes = s.clone().into_bytes();
        // A character inside the ciphertext (not the final one, whose padding bits would make
        // it a base64 error rather than an authentication failure).
        let at = bytes.len() - 10;
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(bytes).expect("ascii");
        assert_eq!(r.open(&flipped, "a"), Err(CryptoError::Tampered));
        // Truncation: either the base64 no longer decodes or the tag no longer verifies.
        for cut in 1..12 {
            let res = r.open(&s[..s.len() - cut], "a");
            assert!(
                matches!(res, Err(CryptoError::Tampered | CryptoError::Malformed)),
                "cut {cut}: {res:?}"
            );
        }
        for junk in [
            "",
            "v1",
            "v1.x",
            "v1.zz.",
            "v2.abc.def",
            "v1..",
            "v1.a.b.c.d",
            "v1.00000000.!!!",
        ] {
            assert!(r.open(junk, "a").is_err(), "{junk:?}");
        }
    }

    #[test]
    fn unknown_key_id_is_refused_and_rotation_keeps_old_keys_readable() {
        let old = ring(1);
        let sealed = old.seal(b"tok", "a").expect("seal");
        let other = ring(1);
        assert!(matches!(other.open(&sealed, "a"), Err(CryptoError::UnknownKey(_))));
        let old_b64 = generate_key_base64().expect("rng");
        let new_b64 = generate_key_base64().expect("rng");
        let before = KeyRing::from_base64(std::slice::from_ref(&old_b64)).expect("ring");
        let sealed = before.seal(b"tok", "a").expect("seal");
        let after = KeyRing::from_base64(&[new_b64, old_b64]).expect("ring");
        assert_eq!(after.open(&sealed, "a").expect("old key still opens"), b"tok");
        assert_ne!(
            KeyRing::sealed_key_id(&after.seal(b"x", "a").expect("seal")),
            KeyRing::sealed_key_id(&sealed)
        );
    }

    #[test]
    fn key_parsing_errors_name_the_key() {
        assert!(matches!(
            KeyRing::from_base64(&["not base64!".into()]),
            Err(KeyError::NotBase64 { index: 1 })
        ));
        let short = STANDARD.encode([1u8; 16]);
        let ok = generate_key_base64().expect("rng");
        assert!(matches!(
            KeyRing::from_base64(&[ok.clone(), short]),
            Err(KeyError::WrongLength { index: 2, len: 16 })
        ));
        assert!(matches!(
            KeyRing::from_base64(&[ok.clone(), ok]),
            Err(KeyError::Duplicate { index: 2 })
        ));
    }

    #[test]
    fn derived_keys_are_stable_per_label_and_key() {
        let k = generate_key_base64().expect("rng");
        let a = KeyRing::from_base64(std::slice::from_ref(&k)).expect("ring");
        let b = KeyRing::from_base64(&[k]).expect("ring");
        assert_eq!(a.derive("jwt"), b.derive("jwt"), "same key, same derivation");
        assert_ne!(a.derive("jwt")[0].1, a.derive("other")[0].1);
        assert_ne!(a.derive("jwt")[0].1, ring(1).derive("jwt")[0].1);
    }

    #[test]
    fn csrf_cookie_verifies_and_rejects_forgeries() {
        let r = ring(1);
        let (token, cookie) = r.new_csrf_cookie().expect("csrf");
        assert_eq!(r.csrf_token_from_cookie(&cookie), Some(token.as_str()));
        let forged = format!("{token}.AAAA");
        assert_eq!(r.csrf_token_from_cookie(&forged), None);
        assert_eq!(ring(1).csrf_token_from_cookie(&cookie), None);
        assert_eq!(r.csrf_token_from_cookie("nodot"), None);
    }

    #[test]
    fn helpers() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        let t = random_token().expect("rng");
        assert_eq!(t.len(), 43);
        assert!(decode_token(&t).is_some());
        assert!(decode_token("short").is_none());
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // RFC 7636 appendix B
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", false),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(pkce_challenge("abc", true).len(), 64);
    }
}
