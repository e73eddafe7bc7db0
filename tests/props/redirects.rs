//! `nini_auth::auth::redirect::{validate, or_home}`: never panic; an accepted target is an
//! absolute URL on the configured origin, and no value in its query resolves, against that
//! origin, to another host or to a script URL (a chain into an in-app redirect). Seeded with
//! oauth2-proxy's open-redirect corpus when `../shared/data/openredirects.txt` exists.

use nini_auth::auth::redirect::{or_home, validate};
use percent_encoding::percent_decode_str;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use url::Url;

use crate::{check, shared_file};

const ORIGINS: &[&str] = &[
    "https://app.example.com",
    "http://localhost:4180",
    "https://www.whitelisteddomain.tld",
];

/// Pieces of open-redirect payloads: schemes, slashes, encodings, hosts, query keys.
const SOUP: &[&str] = &[
    "/",
    "//",
    "\\",
    "/\\",
    "%2f",
    "%2F",
    "%5c",
    "%252f",
    "%09",
    "%0a",
    "%0d",
    "%00",
    "%20",
    " ",
    "\t",
    "+",
    "@",
    ":",
    "%3a",
    "%3A",
    "%253A",
    ";",
    ".",
    "..",
    "#",
    "%23",
    "?",
    "&",
    "=",
    "http:",
    "https:",
    "HTTPS:",
    "javascript:",
    "data:",
    "vbscript:",
    "file:",
    "ftp:",
    "ws:",
    "blob:",
    "x-app:",
    "tel:",
    "1",
    "12:30",
    "http://",
    "https://",
    "evil.com",
    "google.com",
    "app.example.com",
    "localhost:4180",
    "www.whitelisteddomain.tld",
    "example.com",
    "/go?next=",
    "?next=",
    "&url=",
    "redirect",
    "%E3%80%82",
    "。",
    "／",
    "\u{3000}",
    "%E2%80%AE",
    "[::1]",
    "0x7f000001",
    "alert(1)",
];

/// Built-in seeds, used as well as the corpus (and alone when it is absent).
const SEEDS: &[&str] = &[
    "/",
    "/dashboard?tab=1",
    "/go?next=https:/evil.com",
    "//evil.com",
    "/\\evil.com",
    "https://app.example.com/x?y=z",
    "http://localhost:4180/a?b=c:d",
    "/search?q=a:b",
];

fn corpus() -> Vec<String> {
    match shared_file("data/openredirects.txt").and_then(|p| std::fs::read_to_string(p).ok()) {
        Some(text) => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect(),
        None => {
            println!("props: skipping corpus seeding: ../shared/data/openredirects.txt not found");
            Vec::new()
        }
    }
}

/// Seeds, mutated: pieces inserted, characters deleted or replaced, a decode applied.
#[derive(Debug, Clone)]
enum Mutation {
    Insert(Index, &'static str),
    Delete(Index),
    Replace(Index, char),
    DecodeOnce,
}

fn seeded(seeds: Vec<String>) -> impl Strategy<Value = String> {
    let mutation = prop_oneof![
        3 => (any::<Index>(), select(SOUP)).prop_map(|(i, s)| Mutation::Insert(i, s)),
        1 => any::<Index>().prop_map(Mutation::Delete),
        1 => (any::<Index>(), any::<char>()).prop_map(|(i, c)| Mutation::Replace(i, c)),
        1 => Just(Mutation::DecodeOnce),
    ];
    (select(seeds), prop::collection::vec(mutation, 0..5)).prop_map(|(seed, mutations)| {
        let mut chars: Vec<char> = seed.chars().collect();
        for m in &mutations {
            match m {
                Mutation::Insert(i, s) => {
                    let at = i.index(chars.len() + 1);
                    chars.splice(at..at, s.chars());
                }
                Mutation::Delete(i) if !chars.is_empty() => {
                    chars.remove(i.index(chars.len()));
                }
                Mutation::Replace(i, c) if !chars.is_empty() => {
                    let at = i.index(chars.len());
                    chars[at] = *c;
                }
                Mutation::DecodeOnce => {
                    let s: String = chars.iter().collect();
                    chars = percent_decode_str(&s).decode_utf8_lossy().chars().collect();
                }
                _ => {}
            }
        }
        chars.into_iter().collect()
    })
}

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(select(SOUP), 0..12).prop_map(|p| p.concat())
}

/// What an in-app handler that redirects to `value` would reach: another host, or a URL that
/// runs script or shows content of its own.
fn leaves_origin(value: &str, origin: &Url) -> bool {
    match origin.join(value) {
        Ok(u) => {
            let off_host = u.has_host() && u.origin() != origin.origin();
            off_host || matches!(u.scheme(), "javascript" | "data" | "vbscript" | "blob" | "file")
        }
        Err(_) => false,
    }
}

/// The query, each parameter and each value, raw and decoded up to three times both ways an
/// app might decode (`%XX` only, and form decoding where `+` is a space).
fn query_values(query: &str) -> Vec<String> {
    let mut raw: Vec<String> = vec![query.to_owned()];
    for part in query.split('&') {
        raw.push(part.to_owned());
        if let Some((_, v)) = part.split_once('=') {
            raw.push(v.to_owned());
        }
    }
    let mut all = Vec::new();
    for v in raw {
        let mut plain = v.clone();
        let mut form = v.clone();
        all.push(v);
        for _ in 0..3 {
            plain = percent_decode_str(&plain).decode_utf8_lossy().into_owned();
            form = percent_decode_str(&form.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned();
            all.push(plain.clone());
            all.push(form.clone());
        }
    }
    all
}

fn assert_safe(raw: &str, origin: &Url) -> Result<(), TestCaseError> {
    let home = or_home(Some(raw), origin);
    let parsed = Url::parse(&home);
    prop_assert!(parsed.is_ok(), "or_home({raw:?}) = {home:?} does not parse");
    let Ok(target) = validate(raw, origin) else {
        return Ok(());
    };
    prop_assert_eq!(&home, &target);
    let url = match Url::parse(&target) {
        Ok(u) => u,
        Err(e) => return Err(TestCaseError::fail(format!("{raw:?} -> {target:?}: {e}"))),
    };
    prop_assert_eq!(url.origin(), origin.origin(), "{:?} -> {:?}", raw, target);
    prop_assert!(
        url.username().is_empty() && url.password().is_none(),
        "{raw:?} -> {target:?}"
    );
    prop_assert!(url.fragment().is_none(), "{raw:?} -> {target:?}");
    prop_assert!(!url.path().starts_with("//"), "{raw:?} -> {target:?}");
    prop_assert!(
        target.chars().all(|c| c.is_ascii_graphic()),
        "{raw:?} -> {target:?}: control, space or non-ASCII"
    );
    if let Some(query) = url.query() {
        for v in query_values(query) {
            prop_assert!(
                !leaves_origin(&v, origin),
                "{raw:?} -> {target:?}: query value {v:?} leaves the origin"
            );
        }
    }
    Ok(())
}

fn origins() -> Vec<Url> {
    ORIGINS.iter().filter_map(|o| Url::parse(o).ok()).collect()
}

#[test]
fn accepted_targets_stay_on_the_origin() {
    let mut seeds: Vec<String> = SEEDS.iter().map(|s| (*s).to_owned()).collect();
    seeds.extend(corpus());
    let input = prop_oneof![
        3 => seeded(seeds),
        2 => soup(),
        1 => any::<String>(),
    ];
    check(
        "redirects::accepted_targets_stay_on_the_origin",
        (select(origins()), input),
        |(origin, raw)| assert_safe(&raw, &origin),
    );
}

/// Every corpus line, as written and decoded once (how oauth2-proxy's test reads it), against
/// every origin: the property above, exhaustively.
#[test]
fn corpus_lines_stay_on_the_origin() {
    let lines = corpus();
    for origin in origins() {
        for line in &lines {
            let decoded = percent_decode_str(line).decode_utf8_lossy().into_owned();
            for raw in [line.as_str(), decoded.as_str()] {
                if let Err(e) = assert_safe(raw, &origin) {
                    panic!("{e}");
                }
            }
        }
    }
}
