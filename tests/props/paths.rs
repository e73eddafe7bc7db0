//! `nini_auth::proxy::paths::canonicalize`: never panics; the forwarded form is canonical and
//! idempotent; every ASCII spelling of a protected path is protected or refused; every Unicode
//! look-alike of one is refused.

use nini_auth::proxy::paths::{canonicalize, canonicalize_full, PathRejection, ProtectedRoutes, MAX_PATH_LEN};
use proptest::prelude::*;
use proptest::sample::{select, Index};

use crate::check;
use crate::unicode;

const PROTECTED: &[&str] = &["/dashboard", "/profile", "/api/user"];

fn routes() -> ProtectedRoutes {
    ProtectedRoutes::new(&PROTECTED.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>())
}

/// Pieces that exercise every rule: separators, dots, params, escapes of reserved and
/// forbidden bytes, malformed escapes, look-alikes, invisible characters.
const SOUP: &[&str] = &[
    "/",
    "//",
    ".",
    "..",
    "%2e",
    "%2E",
    "%2e%2e",
    ".%2e",
    ";",
    "%3b",
    "%3B",
    ";x=1",
    "%2f",
    "%2F",
    "%5c",
    "\\",
    "%25",
    "%",
    "%4",
    "%zz",
    "%00",
    "%0a",
    "%7f",
    "%c2%85",
    "%c0%af",
    "%ff",
    "%e2%80",
    "?",
    "#",
    "%23",
    "a",
    "Z",
    "~",
    "-",
    "_",
    "%41",
    "%7e",
    " ",
    "%20",
    "é",
    "%C3%A9",
    "e\u{301}",
    "ß",
    "日本",
    "😀",
    "\u{2764}\u{fe0f}",
    "ſ",
    "%C5%BF",
    "ı",
    "İ",
    "\u{212a}",
    "ｄ",
    "%EF%BD%84",
    "\u{ff0e}",
    "\u{2025}",
    "\u{ff0f}",
    "\u{2215}",
    "\u{200b}",
    "%E2%80%8B",
    "\u{ad}",
    "\u{feff}",
    "\u{34f}",
    "\u{fe0f}",
    "\u{3164}",
    "dashboard",
    "DASHBOARD",
    "profile",
    "api",
    "user",
    "public",
];

/// Strings that look like request paths: mostly soup, plus any escape and any character.
fn path_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => select(SOUP).prop_map(str::to_owned),
        1 => any::<u8>().prop_map(|b| format!("%{b:02x}")),
        1 => any::<u8>().prop_map(|b| format!("%{b:02X}")),
        1 => any::<char>().prop_map(String::from),
    ];
    (any::<bool>(), prop::collection::vec(piece, 0..24)).prop_map(|(slash, pieces)| {
        let body = pieces.concat();
        if slash {
            format!("/{body}")
        } else {
            body
        }
    })
}

fn any_input() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => path_like(),
        1 => any::<String>(),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

/// Paths made of what the fast path accepts, and near misses: dots, empty segments, case.
fn plain_like() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => "[a-zA-Z0-9_~-]{1,8}",
            1 => Just(".".to_string()),
            1 => Just("..".to_string()),
            1 => Just("...".to_string()),
            1 => Just(String::new()),
            1 => "[a-z.]{1,4}",
        ],
        0..6,
    )
    .prop_map(|segments| format!("/{}", segments.join("/")))
}

#[test]
fn the_fast_path_agrees_with_the_full_canonicalisation() {
    check(
        "paths::the_fast_path_agrees_with_the_full_canonicalisation",
        prop_oneof![3 => plain_like(), 1 => any_input()],
        |raw| {
            prop_assert_eq!(canonicalize(&raw), canonicalize_full(&raw), "for {:?}", raw);
            Ok(())
        },
    );
}

#[test]
fn canonical_form_is_idempotent_and_never_panics() {
    check(
        "paths::canonical_form_is_idempotent_and_never_panics",
        any_input(),
        |raw| {
            let Ok(c) = canonicalize(&raw) else {
                return Ok(());
            };
            prop_assert!(c.forward.starts_with('/'), "{c:?}");
            prop_assert!(c.forward.is_ascii(), "{c:?}");
            prop_assert!(c.forward.len() <= MAX_PATH_LEN);
            prop_assert!(!c.forward.contains("//"), "{c:?}");
            prop_assert!(
                c.forward.split('/').all(|s| s != "." && s != ".."),
                "dot segment left in {c:?}"
            );
            prop_assert!(c.matching.starts_with('/'), "{c:?}");
            prop_assert_eq!(canonicalize(&c.forward), Ok(c.clone()), "not idempotent for {:?}", raw);
            for ch in c.matching.chars() {
                prop_assert!(!unicode::must_refuse(ch), "U+{:04X} accepted in {c:?}", u32::from(ch));
            }
            Ok(())
        },
    );
}

/// One token of a segment: a character as written, or an escape.
#[derive(Debug, Clone)]
enum Tok {
    Raw(char),
    Esc(u8, bool),
}

fn render(segments: &[Vec<Tok>]) -> String {
    let mut out = String::new();
    for seg in segments {
        out.push('/');
        for t in seg {
            match t {
                Tok::Raw(c) => out.push(*c),
                Tok::Esc(b, true) => out.push_str(&format!("%{b:02X}")),
                Tok::Esc(b, false) => out.push_str(&format!("%{b:02x}")),
            }
        }
    }
    out
}

fn toks(s: &str) -> Vec<Tok> {
    s.chars().map(Tok::Raw).collect()
}

/// A re-spelling of a path that RFC 3986 or a common upstream treats as the same path.
#[derive(Debug, Clone)]
enum Respell {
    /// Percent-encode a character (upper or lower hex).
    Encode(Index, Index, bool),
    /// Flip the case of a letter (or of an escape's hex digits).
    Flip(Index, Index),
    /// An empty segment (a doubled slash) before a segment.
    DoubleSlash(Index),
    /// A detour before a segment: `.`, or a segment followed by `..`, spelled in some way.
    Detour(Index, &'static str, &'static str),
    /// `;params` at the end of a segment, with a literal or encoded `;`.
    Param(Index, String, bool),
    /// `..` above the root at the start.
    Climb,
    /// A trailing slash.
    Trailing,
}

fn respell() -> impl Strategy<Value = Respell> {
    prop_oneof![
        3 => (any::<Index>(), any::<Index>(), any::<bool>()).prop_map(|(s, c, u)| Respell::Encode(s, c, u)),
        3 => (any::<Index>(), any::<Index>()).prop_map(|(s, c)| Respell::Flip(s, c)),
        1 => any::<Index>().prop_map(Respell::DoubleSlash),
        2 => (
            any::<Index>(),
            select(&[".", "%2e", "%2E", "x", "public", "%70ublic", "x;p", ""][..]),
            select(&["", "..", "%2e%2e", ".%2E", "%2E.", "..;", "..;x=1", "%2e%2e%3bx"][..]),
        )
            .prop_map(|(i, a, b)| Respell::Detour(i, a, b)),
        2 => (any::<Index>(), "[a-z0-9=.,]{0,6}", any::<bool>()).prop_map(|(i, p, e)| Respell::Param(i, p, e)),
        1 => Just(Respell::Climb),
        1 => Just(Respell::Trailing),
    ]
}

fn apply(segments: &mut Vec<Vec<Tok>>, op: &Respell) {
    match op {
        Respell::Encode(s, c, upper) => {
            let n = segments.len();
            let seg = &mut segments[s.index(n)];
            if seg.is_empty() {
                return;
            }
            let i = c.index(seg.len());
            if let Tok::Raw(ch) = seg[i] {
                if ch.is_ascii() {
                    seg[i] = Tok::Esc(ch as u8, *upper);
                }
            }
        }
        Respell::Flip(s, c) => {
            let n = segments.len();
            let seg = &mut segments[s.index(n)];
            if seg.is_empty() {
                return;
            }
            let i = c.index(seg.len());
            seg[i] = match seg[i] {
                Tok::Raw(ch) if ch.is_ascii_lowercase() => Tok::Raw(ch.to_ascii_uppercase()),
                Tok::Raw(ch) => Tok::Raw(ch.to_ascii_lowercase()),
                Tok::Esc(b, upper) => Tok::Esc(b, !upper),
            };
        }
        Respell::DoubleSlash(i) => {
            let at = i.index(segments.len() + 1);
            segments.insert(at, Vec::new());
        }
        Respell::Detour(i, first, second) => {
            let at = i.index(segments.len() + 1);
            // A `.` stays put on its own; any other segment needs its `..` to climb back out.
            let detour: Vec<&str> = match (*first, *second) {
                ("." | "%2e" | "%2E", _) => vec![first],
                ("", _) | (_, "") => return,
                _ => vec![first, second],
            };
            for (k, s) in detour.iter().enumerate() {
                segments.insert(at + k, parse_escaped(s));
            }
        }
        Respell::Param(i, text, encoded) => {
            let n = segments.len();
            let seg = &mut segments[i.index(n)];
            // `;x` alone is a segment of its own, not a doubled slash: `/a/;/../b` is `/a/b`.
            if seg.is_empty() {
                return;
            }
            if *encoded {
                seg.push(Tok::Esc(b';', true));
            } else {
                seg.push(Tok::Raw(';'));
            }
            seg.extend(toks(text));
        }
        Respell::Climb => segments.insert(0, toks("..")),
        Respell::Trailing => segments.push(Vec::new()),
    }
}

/// Tokens of a segment written with escapes (`%2e%2e` → two escaped dots).
fn parse_escaped(s: &str) -> Vec<Tok> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = &s[i + 1..i + 3];
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(Tok::Esc(v, hex.chars().any(|c| c.is_ascii_uppercase())));
                i += 3;
                continue;
            }
        }
        out.push(Tok::Raw(char::from(b[i])));
        i += 1;
    }
    out
}

/// A protected path, an optional tail, and a list of re-spellings.
fn respelled() -> impl Strategy<Value = (String, String)> {
    (
        select(PROTECTED),
        prop::collection::vec("[a-z0-9]{1,5}", 0..3),
        prop::collection::vec(respell(), 0..8),
    )
        .prop_map(|(base, tail, ops)| {
            let mut segments: Vec<Vec<Tok>> = base.split('/').skip(1).map(toks).collect();
            segments.extend(tail.iter().map(|t| toks(t)));
            for op in &ops {
                apply(&mut segments, op);
            }
            (base.to_owned(), render(&segments))
        })
}

#[test]
fn every_spelling_of_a_protected_path_is_protected_or_refused() {
    let routes = routes();
    check(
        "paths::every_spelling_of_a_protected_path_is_protected_or_refused",
        respelled(),
        |(base, raw)| {
            if let Ok(c) = canonicalize(&raw) {
                prop_assert!(
                    routes.is_protected(&c),
                    "{raw:?} (a spelling of {base}) judged public: {c:?}"
                );
            }
            Ok(())
        },
    );
}

/// A change that some upstream undoes: a letter (or `fi`, `ff`, ...) replaced by a look-alike,
/// or an invisible character inserted.
#[derive(Debug, Clone)]
enum Disguise {
    Lookalike(Index, Index),
    Invisible(Index, Index),
}

fn disguised() -> impl Strategy<Value = String> {
    let disguise = prop_oneof![
        3 => (any::<Index>(), any::<Index>()).prop_map(|(at, which)| Disguise::Lookalike(at, which)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(at, which)| Disguise::Invisible(at, which)),
    ];
    (
        select(PROTECTED),
        prop::collection::vec(disguise, 1..4),
        prop::collection::vec(any::<bool>(), 16),
        any::<bool>(),
    )
        .prop_map(|(base, disguises, encode, upper)| {
            let table = unicode::lookalikes();
            let invisible = unicode::format_chars();
            let mut text: Vec<String> = base.chars().map(String::from).collect();
            let mut changed = false;
            for d in &disguises {
                match d {
                    Disguise::Lookalike(at, which) => {
                        // Letters only (never the slashes), and a look-alike of the text there.
                        let at = at.index(text.len());
                        let here: String = text[at..].concat().to_ascii_lowercase();
                        let fits: Vec<&(String, char)> = table
                            .iter()
                            .filter(|(ascii, _)| here.starts_with(ascii.as_str()))
                            .collect();
                        if fits.is_empty() {
                            continue;
                        }
                        let (ascii, c) = fits[which.index(fits.len())];
                        let n = ascii.chars().count();
                        if text[at..at + n].iter().any(|t| t == "/") {
                            continue;
                        }
                        text.splice(at..at + n, [c.to_string()]);
                        changed = true;
                    }
                    Disguise::Invisible(at, which) => {
                        let at = at.index(text.len()) + 1;
                        text.insert(at, invisible[which.index(invisible.len())].to_string());
                        changed = true;
                    }
                }
            }
            if !changed {
                // No look-alike fitted: an invisible character always does.
                text.insert(1, '\u{200B}'.to_string());
            }
            // Some characters go percent-encoded (UTF-8), some raw.
            text.iter()
                .enumerate()
                .map(|(i, t)| {
                    if t != "/" && !t.is_ascii() && encode[i % encode.len()] {
                        t.bytes()
                            .map(|b| {
                                if upper {
                                    format!("%{b:02X}")
                                } else {
                                    format!("%{b:02x}")
                                }
                            })
                            .collect()
                    } else {
                        t.clone()
                    }
                })
                .collect()
        })
}

#[test]
fn every_unicode_lookalike_of_a_protected_path_is_refused() {
    check(
        "paths::every_unicode_lookalike_of_a_protected_path_is_refused",
        disguised(),
        |raw| {
            match canonicalize(&raw) {
                Err(PathRejection::UnicodeLookalike { .. } | PathRejection::InvisibleChar { .. }) => {}
                other => prop_assert!(false, "{raw:?}: {other:?}"),
            }
            Ok(())
        },
    );
}
