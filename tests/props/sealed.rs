//! `nini_auth::crypto::KeyRing::{seal, open}`: what is sealed opens to itself under the same
//! AAD, and any single change (a flipped bit, a replaced, removed or added character, a cut, an
//! extension, another AAD, another key) is an error: never a panic, never a success.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use nini_auth::crypto::KeyRing;
use proptest::prelude::*;
use proptest::sample::Index;

use crate::check;

fn ring(keys: &[[u8; 32]]) -> Option<KeyRing> {
    KeyRing::from_base64(&keys.iter().map(|k| STANDARD.encode(k)).collect::<Vec<_>>()).ok()
}

/// One change to a sealed string.
#[derive(Debug, Clone)]
enum Mutation {
    /// XOR one byte with a mask below 0x80, so the string stays ASCII (the value always is).
    FlipBits(Index, u8),
    Replace(Index, char),
    Remove(Index),
    Insert(Index, char),
    Truncate(Index),
    Extend(String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 1u8..0x80).prop_map(|(i, m)| Mutation::FlipBits(i, m)),
        2 => (any::<Index>(), any::<char>()).prop_map(|(i, c)| Mutation::Replace(i, c)),
        1 => any::<Index>().prop_map(Mutation::Remove),
        1 => (any::<Index>(), any::<char>()).prop_map(|(i, c)| Mutation::Insert(i, c)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => "[A-Za-z0-9_.=-]{1,8}".prop_map(Mutation::Extend),
    ]
}

fn mutate(sealed: &str, m: &Mutation) -> String {
    let mut chars: Vec<char> = sealed.chars().collect();
    match m {
        Mutation::FlipBits(i, mask) => {
            let at = i.index(chars.len());
            chars[at] = char::from((chars[at] as u8) ^ mask);
        }
        Mutation::Replace(i, c) => {
            let at = i.index(chars.len());
            chars[at] = *c;
        }
        Mutation::Remove(i) => {
            chars.remove(i.index(chars.len()));
        }
        Mutation::Insert(i, c) => chars.insert(i.index(chars.len() + 1), *c),
        Mutation::Truncate(i) => chars.truncate(i.index(chars.len())),
        Mutation::Extend(s) => chars.extend(s.chars()),
    }
    chars.into_iter().collect()
}

#[test]
fn sealed_values_round_trip() {
    let input = (any::<[u8; 32]>(), prop::collection::vec(any::<u8>(), 0..512), ".{0,40}");
    check("sealed::sealed_values_round_trip", input, |(key, plain, aad)| {
        let Some(ring) = ring(&[key]) else {
            return Err(TestCaseError::fail("a 32-byte key was refused"));
        };
        let sealed = ring.seal(&plain, &aad);
        prop_assert!(sealed.is_ok(), "{sealed:?}");
        let sealed = sealed.unwrap_or_default();
        prop_assert!(sealed.is_ascii());
        prop_assert_eq!(ring.open(&sealed, &aad), Ok(plain));
        Ok(())
    });
}

#[test]
fn any_mutation_fails_to_open() {
    let input = (
        (any::<[u8; 32]>(), any::<[u8; 32]>()),
        prop::collection::vec(any::<u8>(), 0..64),
        "[a-z0-9:/_-]{0,24}",
        mutation(),
        ".{0,8}",
    );
    check(
        "sealed::any_mutation_fails_to_open",
        input,
        |((key, other), plain, aad, m, other_aad)| {
            prop_assume!(key != other);
            let (Some(ring), Some(other_ring), Some(both)) = (ring(&[key]), ring(&[other]), ring(&[other, key])) else {
                return Err(TestCaseError::fail("a 32-byte key was refused"));
            };
            let Ok(sealed) = ring.seal(&plain, &aad) else {
                return Err(TestCaseError::fail("seal failed"));
            };
            // A ring that holds the key among others opens it; nothing else does.
            prop_assert_eq!(both.open(&sealed, &aad), Ok(plain.clone()));
            prop_assert!(other_ring.open(&sealed, &aad).is_err(), "opened with another key");
            if other_aad != aad {
                prop_assert!(ring.open(&sealed, &other_aad).is_err(), "opened with AAD {other_aad:?}");
            }
            let changed = mutate(&sealed, &m);
            if changed != sealed {
                prop_assert!(
                    ring.open(&changed, &aad).is_err() && both.open(&changed, &aad).is_err(),
                    "{m:?} turned {sealed:?} into {changed:?}, which opens"
                );
            }
            Ok(())
        },
    );
}

#[test]
fn opening_anything_never_panics() {
    check(
        "sealed::opening_anything_never_panics",
        (
            any::<[u8; 32]>(),
            prop_oneof![any::<String>(), "v1\\.[0-9a-f]{8}\\.[A-Za-z0-9_-]{0,80}"],
            ".{0,8}",
        ),
        |(key, s, aad)| {
            if let Some(ring) = ring(&[key]) {
                // Success is possible only for a value sealed under this key, which a random
                // string is not (2^-128 per try).
                prop_assert!(ring.open(&s, &aad).is_err(), "{s:?} opened");
            }
            Ok(())
        },
    );
}
