//! Random identifiers in TikTok's shapes (codes, tokens, log ids) and the URL encoding the mock
//! uses for redirects.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use ring::rand::{SecureRandom, SystemRandom};

/// TikTok escapes `*`, `!` and `,` in its redirects (`%2A0%21…`, `user.info.basic%2Cvideo.list`);
/// only RFC 3986 unreserved characters stay literal.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

pub(crate) fn random_bytes<const N: usize>(rng: &SystemRandom) -> [u8; N] {
    let mut buf = [0u8; N];
    // SystemRandom only fails when the OS has no entropy source at all; no request can cause
    // that and the mock has nothing sensible to answer with in that case.
    rng.fill(&mut buf).expect("operating system RNG unavailable");
    buf
}

fn four_digits(rng: &SystemRandom) -> u16 {
    let b = random_bytes::<2>(rng);
    u16::from_be_bytes(b) % 10_000
}

fn alnum(rng: &SystemRandom, len: usize) -> String {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in random_bytes::<32>(rng) {
            if out.len() == len {
                break;
            }
            out.push(char::from(ALNUM[usize::from(b) % ALNUM.len()]));
        }
    }
    out
}

/// `<120 url-safe chars>*0!<4 digits>.e1`: the `*` and `!` catch clients that decode the
/// callback twice or forward the raw percent-encoded value.
pub(crate) fn auth_code(rng: &SystemRandom) -> String {
    let body = URL_SAFE_NO_PAD.encode(random_bytes::<90>(rng));
    format!("{body}*0!{:04}.e1", four_digits(rng))
}

/// Tokens shaped like real ones (`act.…!1234.va`); the `!` must survive form encoding.
pub(crate) fn token(rng: &SystemRandom, prefix: &str) -> String {
    format!("{prefix}.{}!{:04}.va", alnum(rng, 64), four_digits(rng))
}

pub(crate) fn request_id(rng: &SystemRandom) -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<24>(rng))
}

/// `YYYYMMDDhhmmss` (UTC) followed by 20 uppercase hex characters.
pub(crate) fn log_id(rng: &SystemRandom, now: i64) -> String {
    let stamp = time::OffsetDateTime::from_unix_timestamp(now)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year][month][day][hour][minute][second]"
            ))
            .ok()
        })
        .unwrap_or_else(|| "19700101000000".to_owned());
    let mut hex = String::with_capacity(20);
    for b in random_bytes::<10>(rng) {
        hex.push_str(&format!("{b:02X}"));
    }
    format!("{stamp}{hex}")
}

pub(crate) fn encode_query_value(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// Builds `base?k=v&…` with every value escaped as TikTok does.
pub(crate) fn append_query(base: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = base.to_owned();
    for (i, (k, v)) in pairs.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(&encode_query_value(k));
        out.push('=');
        out.push_str(&encode_query_value(v));
    }
    out
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

pub(crate) fn lower_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

pub(crate) fn base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}
