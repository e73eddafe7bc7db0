//! `nini_auth::web::cookie_pairs`, `nini_auth::crypto::decode_token` and
//! `KeyRing::session_key`: no panic on any input; well-formed pairs parse back; a token decodes
//! only in its one canonical spelling; only session tokens the ring issued verify, and any
//! change to one makes it fail.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use nini_auth::crypto::{decode_token, KeyRing};
use nini_auth::web::cookie_pairs;
use proptest::prelude::*;

use crate::check;

/// RFC 6265 `token` characters for names, `cookie-octet` for values.
const NAME: &str = "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,16}";
const VALUE: &str = "[\\x21\\x23-\\x2B\\x2D-\\x3A\\x3C-\\x5B\\x5D-\\x7E]{0,40}";

#[test]
fn cookie_header_parsing_never_panics() {
    let header = prop_oneof![
        any::<String>(),
        prop::collection::vec(
            prop::sample::select(&[";", "=", " ", "\"", "a", "b=", ";;", "=;", "\t", "é"][..]),
            0..30
        )
        .prop_map(|p| p.concat()),
    ];
    check("cookies::cookie_header_parsing_never_panics", header, |h| {
        for (name, value) in cookie_pairs(&h) {
            prop_assert!(!name.is_empty() && name.trim() == name, "{h:?}: name {name:?}");
            prop_assert!(!name.contains([';', '=']), "{h:?}: name {name:?}");
            prop_assert!(!value.contains(';'), "{h:?}: value {value:?}");
        }
        Ok(())
    });
}

#[test]
fn well_formed_pairs_parse_back() {
    let pairs = prop::collection::vec((NAME, VALUE, any::<bool>(), "[ \t]{0,2}"), 0..8);
    check("cookies::well_formed_pairs_parse_back", pairs, |pairs| {
        let header = pairs
            .iter()
            .map(|(n, v, quoted, space)| {
                if *quoted {
                    format!("{space}{n}=\"{v}\"")
                } else {
                    format!("{space}{n}={v}")
                }
            })
            .collect::<Vec<_>>()
            .join(";");
        let parsed: Vec<(&str, &str)> = cookie_pairs(&header).collect();
        let want: Vec<(&str, &str)> = pairs.iter().map(|(n, v, _, _)| (n.as_str(), v.as_str())).collect();
        prop_assert_eq!(parsed, want, "header {:?}", header);
        Ok(())
    });
}

fn ring() -> KeyRing {
    KeyRing::generate().expect("a key ring")
}

#[test]
fn token_decoding_never_panics_and_is_canonical() {
    let input = prop_oneof![any::<String>(), "[A-Za-z0-9_=+/-]{40,46}", "[A-Za-z0-9_-]{43}",];
    check("cookies::token_decoding_never_panics_and_is_canonical", input, |s| {
        if let Some(bytes) = decode_token(&s) {
            // One value, one spelling.
            prop_assert_eq!(URL_SAFE_NO_PAD.encode(bytes), s.clone());
        }
        Ok(())
    });
}

#[test]
fn only_issued_session_tokens_verify() {
    let r = ring();
    let input = prop_oneof![any::<String>(), "[A-Za-z0-9_-]{64}", "[A-Za-z0-9_=+/-]{60,68}"];
    check("cookies::only_issued_session_tokens_verify", input, |s| {
        prop_assert_eq!(r.session_key(&s), None, "{:?} verified without being issued", s);
        Ok(())
    });
}

#[test]
fn session_tokens_round_trip_and_any_change_fails() {
    let r = ring();
    let other = ring();
    let edits = (0usize..64, any::<u8>());
    check(
        "cookies::session_tokens_round_trip_and_any_change_fails",
        edits,
        |(at, byte)| {
            let (token, key) = r.new_session_token().expect("token");
            prop_assert_eq!(r.session_key(&token), Some(key));
            prop_assert_eq!(other.session_key(&token), None, "another deployment's ring");
            let mut bytes = token.clone().into_bytes();
            bytes[at] = byte;
            if let Ok(changed) = String::from_utf8(bytes) {
                if changed != token {
                    prop_assert_eq!(r.session_key(&changed), None, "changed at {}: {:?}", at, changed);
                }
            }
            Ok(())
        },
    );
}
