//! Cryptography, all on `ring`: the key ring (AES-256-GCM sealing of TikTok tokens at rest,
//! HMAC-signed CSRF and session tokens, per-purpose keys for other layers), random tokens,
//! SHA-256 hashing and constant-time comparison. Nothing else in the crate touches key
//! material.
//!
//! Every purpose key and every key id is derived from the configured key with HKDF-SHA256
//! under its own label, so no two purposes share a key and a published key id (in sealed
//! values, JWKS) says nothing about the key. Values sealed before that (format `v1`, whose key
//! id was a prefix of SHA-256 of the raw key, sealed with the raw key) still open; `keys
//! rotate` re-seals them in the current format.

use std::fmt;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{hkdf, hmac};

/// Prefix of every value sealed now: HKDF-derived sealing key, HKDF-derived key id.
const SEALED_VERSION: &str = "v2";
/// Values sealed by earlier versions: the raw key seals, the id is a SHA-256 prefix.
const LEGACY_SEALED_VERSION: &str = "v1";
/// Random bytes and MAC bytes of a session token.
const SESSION_RANDOM: usize = 32;
const SESSION_TAG: usize = 16;
/// Length of a session cookie value: base64url of 48 bytes.
pub const SESSION_TOKEN_LEN: usize = 64;

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
    #[error("the system random generator failed")]
    Random,
}

struct Key {
    /// Derived id (HKDF): what new sealed values, CSRF and JWKS name.
    id: String,
    /// The id `v1` sealed values carry (SHA-256 prefix of the raw key).
    legacy_id: String,
    aead: LessSafeKey,
    /// The raw key as an AEAD key, only to open `v1` values.
    legacy_aead: LessSafeKey,
    csrf: hmac::Key,
    session: hmac::Key,
    /// Pseudo-random key for other layers' per-purpose keys (`derive`).
    prk: hkdf::Prk,
}

/// Encryption keys: the first seals and signs, all open and verify (rotation).
#[derive(Clone)]
pub struct KeyRing {
    keys: std::sync::Arc<Vec<Key>>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyRing({} key(s), ids {:?})", self.keys.len(), self.key_ids())
    }
}

/// `len` bytes of HKDF output (ring's `KeyType` for a plain byte length).
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand<const N: usize>(prk: &hkdf::Prk, label: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    // Expanding at most 255 hash lengths cannot fail; N is 32 or less here.
    if let Ok(okm) = prk.expand(&[label], Len(N)) {
        let _ = okm.fill(&mut out);
    }
    out
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
    /// Fails when the system random generator does: never a predictable key.
    pub fn generate() -> Result<KeyRing, KeyError> {
        let key = generate_key_base64().map_err(|_| KeyError::Random)?;
        KeyRing::from_base64(&[key])
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
    /// Format: `v2.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`.
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

    /// Opens a value made by `seal` (or by an earlier version's) with the same `aad`.
    pub fn open(&self, sealed: &str, aad: &str) -> Result<Vec<u8>, CryptoError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(version), Some(kid), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CryptoError::Malformed);
        };
        let unknown = || CryptoError::UnknownKey(kid.chars().take(16).collect());
        let aead = match version {
            SEALED_VERSION => &self.keys.iter().find(|k| k.id == kid).ok_or_else(unknown)?.aead,
            LEGACY_SEALED_VERSION => {
                &self
                    .keys
                    .iter()
                    .find(|k| k.legacy_id == kid)
                    .ok_or_else(unknown)?
                    .legacy_aead
            }
            _ => return Err(CryptoError::Malformed),
        };
        let mut blob = URL_SAFE_NO_PAD.decode(body).map_err(|_| CryptoError::Malformed)?;
        if blob.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(CryptoError::Malformed);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&blob[..NONCE_LEN]);
        let plain = aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut blob[NONCE_LEN..],
            )
            .map_err(|_| CryptoError::Tampered)?;
        Ok(plain.to_vec())
    }

    /// 32 bytes per key for another purpose (`label`, e.g. the identity-JWT signing seed),
    /// in ring order (the first is the primary), with that key's id. HKDF under the label:
    /// one secret to manage, unrelated keys per purpose, and rotating the encryption keys
    /// rotates the derived ones.
    pub fn derive(&self, label: &str) -> Vec<(String, [u8; 32])> {
        let info = format!("nini-auth/v2/derive/{label}");
        self.keys
            .iter()
            .map(|k| (k.id.clone(), expand::<32>(&k.prk, info.as_bytes())))
            .collect()
    }

    /// Key id a sealed value was made with, if it parses.
    pub fn sealed_key_id(sealed: &str) -> Option<&str> {
        let mut parts = sealed.splitn(3, '.');
        match (parts.next(), parts.next()) {
            (Some(SEALED_VERSION | LEGACY_SEALED_VERSION), Some(kid)) => Some(kid),
            _ => None,
        }
    }

    /// Whether a sealed value is in the current format under the primary key (rotation
    /// skips those; only the id is compared, no decryption).
    pub fn is_current(&self, sealed: &str) -> bool {
        let mut parts = sealed.splitn(3, '.');
        parts.next() == Some(SEALED_VERSION) && parts.next() == self.primary_id()
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

    /// A new session cookie value: 32 random bytes and a 16-byte HMAC of them under the
    /// primary key, base64url (64 characters). Returns it with its session key (what the
    /// store and the cache know the session by).
    pub fn new_session_token(&self) -> Result<(String, [u8; 32]), CryptoError> {
        let key = self.keys.first().ok_or(CryptoError::UnknownKey(String::new()))?;
        let mut raw = [0u8; SESSION_RANDOM + SESSION_TAG];
        raw[..SESSION_RANDOM].copy_from_slice(&random_bytes::<SESSION_RANDOM>()?);
        let tag = hmac::sign(&key.session, &raw[..SESSION_RANDOM]);
        raw[SESSION_RANDOM..].copy_from_slice(&tag.as_ref()[..SESSION_TAG]);
        Ok((URL_SAFE_NO_PAD.encode(raw), sha256(&raw)))
    }

    /// The session key of a cookie value, only if it is one this deployment issued (its MAC
    /// verifies under a key of the ring): forged values are refused here, in memory, before
    /// any cache or database lookup.
    pub fn session_key(&self, cookie_value: &str) -> Option<[u8; 32]> {
        if cookie_value.len() != SESSION_TOKEN_LEN {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(cookie_value).ok()?;
        if raw.len() != SESSION_RANDOM + SESSION_TAG {
            return None;
        }
        let (random, tag) = raw.split_at(SESSION_RANDOM);
        self.keys
            .iter()
            .any(|k| {
                let want = hmac::sign(&k.session, random);
                ct_eq(&want.as_ref()[..SESSION_TAG], tag)
            })
            .then(|| sha256(&raw))
    }
}

impl Key {
    fn from_bytes(bytes: &[u8]) -> Option<Key> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"nini-auth key ring").extract(bytes);
        let seal = expand::<32>(&prk, b"nini-auth/v2/seal");
        let id = hex(&expand::<4>(&prk, b"nini-auth/v2/key-id"));
        Some(Key {
            id,
            legacy_id: hex(&digest(&SHA256, bytes).as_ref()[..4]),
            aead: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &seal).ok()?),
            legacy_aead: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).ok()?),
            csrf: hmac::Key::new(hmac::HMAC_SHA256, &expand::<32>(&prk, b"nini-auth/v2/csrf")),
            session: hmac::Key::new(hmac::HMAC_SHA256, &expand::<32>(&prk, b"nini-auth/v2/session")),
            prk,
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
    fn key_ids_are_derived_not_a_hash_of_the_key() {
        let k = generate_key_base64().expect("rng");
        let raw = STANDARD.decode(&k).expect("b64");
        let r = KeyRing::from_base64(std::slice::from_ref(&k)).expect("ring");
        let id = r.primary_id().expect("id").to_string();
        assert_eq!(id.len(), 8);
        assert!(
            !sha256_hex(&raw).starts_with(&id),
            "the id publishes no fingerprint of the key"
        );
        let sealed = r.seal(b"x", "a").expect("seal");
        assert!(sealed.starts_with(&format!("v2.{id}.")));
        assert!(r.is_current(&sealed));
    }

    #[test]
    fn values_sealed_by_earlier_versions_still_open() {
        // A v1 value: the raw key seals, the id is the SHA-256 prefix of the raw key.
        let k = generate_key_base64().expect("rng");
        let raw = STANDARD.decode(&k).expect("b64");
        let legacy = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &raw).expect("key"));
        let nonce = [3u8; NONCE_LEN];
        let mut buf = b"rft.old".to_vec();
        legacy
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(b"aad".as_slice()),
                &mut buf,
            )
            .expect("seal");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&buf);
        let v1 = format!("v1.{}.{}", &sha256_hex(&raw)[..8], URL_SAFE_NO_PAD.encode(blob));
        let r = KeyRing::from_base64(&[k]).expect("ring");
        assert_eq!(r.open(&v1, "aad").expect("opens"), b"rft.old");
        assert!(!r.is_current(&v1), "rotation re-seals it");
        assert_eq!(r.open(&v1, "other"), Err(CryptoError::Tampered));
    }

    #[test]
    fn session_tokens_carry_a_mac_checked_before_any_lookup() {
        let r = ring(1);
        let (cookie, key) = r.new_session_token().expect("token");
        assert_eq!(cookie.len(), SESSION_TOKEN_LEN);
        assert_eq!(r.session_key(&cookie), Some(key));
        // Any other value of the right shape is refused without touching a store.
        let mut forged = cookie.clone().into_bytes();
        forged[10] = if forged[10] == b'A' { b'B' } else { b'A' };
        assert_eq!(r.session_key(&String::from_utf8(forged).expect("ascii")), None);
        assert_eq!(r.session_key(&"A".repeat(SESSION_TOKEN_LEN)), None);
        assert_eq!(ring(1).session_key(&cookie), None, "another deployment's key");
        assert_eq!(r.session_key(&random_token().expect("rng")), None, "old 43-char format");
        assert_eq!(r.session_key(""), None);
        // Rotation: a token issued under the old primary still verifies while the key is in the ring.
        let old = generate_key_base64().expect("rng");
        let before = KeyRing::from_base64(std::slice::from_ref(&old)).expect("ring");
        let (c, k) = before.new_session_token().expect("token");
        let after = KeyRing::from_base64(&[generate_key_base64().expect("rng"), old]).expect("ring");
        assert_eq!(after.session_key(&c), Some(k));
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
