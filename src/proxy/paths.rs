//! Owns the one canonicalisation policy for request paths: the proxy judges every request against
//! the canonical path and forwards exactly that canonical path upstream, so the protection decision
//! and the upstream can never disagree about which resource was asked for.
//!
//! # Policy
//!
//! Input is the request-target's path exactly as received, without the query (the caller passes
//! only the path of an absolute-form target, and the query never takes part in route matching).
//!
//! Rejected (the caller answers 400):
//!
//! * not starting with `/` ([`PathRejection::NotOriginForm`]); also a raw `?` (the caller must
//!   have split the query off) and a malformed escape (`%`, `%4`, `%zz`), which upstreams
//!   interpret inconsistently;
//! * an encoded slash `%2F`, or a Unicode slash look-alike after decoding (U+FF0F fullwidth
//!   solidus, U+2215, U+2044, U+29F8), which a Unicode- or best-fit-normalising upstream would
//!   turn into a separator ([`PathRejection::EncodedSlash`]);
//! * a backslash, raw or `%5C`, or a look-alike (U+FF3C, U+FE68, U+2216, U+29F5, U+29F9), since
//!   many servers treat it as `/` ([`PathRejection::Backslash`]);
//! * `%25`, i.e. any encoded percent: double encoding hides a second layer that an upstream
//!   decoding twice would see ([`PathRejection::DoubleEncoding`]);
//! * any control character, raw or encoded: C0 (including `%00`, TAB, CR, LF), DEL, and C1
//!   ([`PathRejection::ControlChar`]);
//! * `#` raw or `%23`: upstreams that treat it as the fragment delimiter would serve a different
//!   path than the one judged (GHSA-pxq7-h93f-9jrg) ([`PathRejection::Fragment`]);
//! * escapes that do not decode to UTF-8, e.g. overlong `%c0%af` ([`PathRejection::InvalidUtf8`]);
//! * more than 8192 bytes, raw or canonical ([`PathRejection::TooLong`]).
//!
//! Canonical form (`forward`, sent upstream):
//!
//! * percent-escapes of unreserved characters (ALPHA / DIGIT / `-._~`) are decoded
//!   (`/%64ashboard` → `/dashboard`); every other escape is kept, with UPPERCASE hex; characters
//!   not allowed in a path (space, `"`, `<`, `>`, `` ` ``, `{`, `}`, `|`, `^`, `[`, `]`,
//!   non-ASCII) are percent-encoded; literal sub-delims, `:` and `@` stay literal (RFC 3986
//!   §6.2.2: an encoded reserved character is not equivalent to the literal one);
//! * repeated slashes are merged (`//dashboard` → `/dashboard`); a trailing slash is kept;
//! * dot segments are resolved and never climb above `/`. A segment is a dot segment when its
//!   decoded text up to the first `;` (literal or `%3B`) is `.` or `..` — so `%2e%2e`, `.%2e` and
//!   `..;x` all count, the last because Tomcat/Spring-style upstreams treat `..;x` as `..`. Since
//!   the resolved path is what gets forwarded, the upstream never sees the ambiguous segment.
//!   Segments made only of Unicode full-stop look-alikes that NFKC maps to `.` (U+FF0E, U+FE52,
//!   U+2024, U+2025) count as dot segments for the same reason;
//! * `;params` are kept (the upstream gets what the client asked for, normalised).
//!
//! Matching form (`matching`, judged by [`ProtectedRoutes`]): the canonical segments fully
//! decoded, with `;params` (from the first literal or encoded `;`) removed from every segment,
//! segments left empty by that dropped, fullwidth ASCII forms folded to ASCII, and lowercased,
//! so `/ｄashboard`, `/dashboard;x=1`, `/public;/../dashboard`,
//! `/DASHBOARD` and `/Dashboard` all match `/dashboard`.
//!
//! Protection is a plain case-insensitive string prefix test on `matching`, so `/dashboard/`,
//! `/dashboard.`, `/dashboardx` and `/dashboard%20` are all protected: over-protection is the safe
//! side.

use std::fmt;

/// Longest accepted path, in bytes (raw and canonical).
pub const MAX_PATH_LEN: usize = 8192;

/// A request path in the one form that is both judged and forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath {
    /// What the upstream receives: RFC 3986-normalised, `;params` kept.
    pub forward: String,
    /// What protection is judged on: decoded, params stripped, lowercased.
    pub matching: String,
}

/// Why a request path was refused (the caller answers 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRejection {
    NotOriginForm,
    EncodedSlash,
    Backslash,
    DoubleEncoding,
    ControlChar,
    InvalidUtf8,
    Fragment,
    TooLong,
}

impl fmt::Display for PathRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = match self {
            PathRejection::NotOriginForm => "path is not a valid origin-form path",
            PathRejection::EncodedSlash => "encoded slash in path",
            PathRejection::Backslash => "backslash in path",
            PathRejection::DoubleEncoding => "encoded percent (double encoding) in path",
            PathRejection::ControlChar => "control character in path",
            PathRejection::InvalidUtf8 => "percent-escapes in path are not valid UTF-8",
            PathRejection::Fragment => "fragment delimiter in path",
            PathRejection::TooLong => "path too long",
        };
        f.write_str(reason)
    }
}

/// One byte of the decoded path and whether it arrived percent-encoded; the distinction is kept
/// because an encoded reserved character must stay encoded in `forward`.
#[derive(Clone, Copy)]
struct Unit {
    byte: u8,
    encoded: bool,
}

/// Decoded characters that some upstream (Unicode NFKC, Windows best-fit) turns into `/`.
const SLASH_LOOKALIKES: &[char] = &['\u{FF0F}', '\u{2215}', '\u{2044}', '\u{29F8}'];
/// Decoded characters that some upstream turns into `\`.
const BACKSLASH_LOOKALIKES: &[char] = &['\u{FF3C}', '\u{FE68}', '\u{2216}', '\u{29F5}', '\u{29F9}'];

/// Maps fullwidth ASCII forms (U+FF01–U+FF5E, e.g. `ｄａｓｈｂｏａｒｄ`) to ASCII for matching only:
/// an upstream that applies NFKC would serve `/ｄａｓｈｂｏａｒｄ` as `/dashboard`, so it must be
/// judged as `/dashboard` too. The forwarded path keeps the characters as they came.
fn fold_fullwidth(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            _ => c,
        })
        .collect()
}

/// Canonicalises `raw`, the request-target's path component exactly as received (no query).
pub fn canonicalize(raw: &str) -> Result<CanonicalPath, PathRejection> {
    if raw.len() > MAX_PATH_LEN {
        return Err(PathRejection::TooLong);
    }
    if !raw.starts_with('/') {
        return Err(PathRejection::NotOriginForm);
    }

    let units = decode_units(raw)?;
    let decoded: Vec<u8> = units.iter().map(|u| u.byte).collect();
    let text = String::from_utf8(decoded).map_err(|_| PathRejection::InvalidUtf8)?;
    for c in text.chars() {
        if c.is_control() {
            return Err(PathRejection::ControlChar);
        }
        if SLASH_LOOKALIKES.contains(&c) {
            return Err(PathRejection::EncodedSlash);
        }
        if BACKSLASH_LOOKALIKES.contains(&c) {
            return Err(PathRejection::Backslash);
        }
    }

    // Split on literal '/' only (encoded ones were rejected). The first piece is the empty string
    // before the leading '/'.
    let pieces: Vec<&[Unit]> = units.split(|u| u.byte == b'/' && !u.encoded).skip(1).collect();
    let mut segments: Vec<&[Unit]> = Vec::with_capacity(pieces.len());
    let mut trailing_slash = false;
    let last_index = pieces.len().saturating_sub(1);
    for (i, piece) in pieces.iter().enumerate() {
        let is_last = i == last_index;
        // Every piece is valid UTF-8 on its own: the whole is, and '/' never splits a character.
        if piece.is_empty() {
            // Repeated slashes merge; a final empty piece is the trailing slash.
            trailing_slash = is_last;
            continue;
        }
        match dot_kind(&units_text(piece)) {
            // A final dot segment leaves a trailing slash (RFC 3986: `/a/b/..` → `/a/`).
            DotKind::Current => trailing_slash = is_last,
            DotKind::Parent => {
                segments.pop();
                trailing_slash = is_last;
            }
            DotKind::None => {
                segments.push(piece);
                trailing_slash = false;
            }
        }
    }

    let forward = join(segments.iter().map(|s| encode_forward(s)), trailing_slash);
    if forward.len() > MAX_PATH_LEN {
        return Err(PathRejection::TooLong);
    }

    let mut matching_segments: Vec<String> = Vec::with_capacity(segments.len());
    for segment in &segments {
        // A segment that was only params (`;x`) vanishes, like an empty segment would.
        let stripped = fold_fullwidth(strip_params(&units_text(segment))).to_lowercase();
        if !stripped.is_empty() {
            matching_segments.push(stripped);
        }
    }
    // The matching form ends in '/' where the forward form does, or where a final params-only
    // segment was dropped (`/dashboard/;x` matches as `/dashboard/`).
    let matching_trailing = trailing_slash || segments.last().is_some_and(|s| strip_params(&units_text(s)).is_empty());
    let matching = join(matching_segments.into_iter(), matching_trailing);

    Ok(CanonicalPath { forward, matching })
}

/// Decodes percent-escapes into bytes, rejecting every forbidden byte raw or encoded.
fn decode_units(raw: &str) -> Result<Vec<Unit>, PathRejection> {
    let bytes = raw.as_bytes();
    let mut units = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let value = match (bytes.get(i + 1), bytes.get(i + 2)) {
                (Some(&hi), Some(&lo)) => match (hex_value(hi), hex_value(lo)) {
                    (Some(hi), Some(lo)) => hi << 4 | lo,
                    _ => return Err(PathRejection::NotOriginForm),
                },
                _ => return Err(PathRejection::NotOriginForm),
            };
            match value {
                b'/' => return Err(PathRejection::EncodedSlash),
                b'\\' => return Err(PathRejection::Backslash),
                b'%' => return Err(PathRejection::DoubleEncoding),
                b'#' => return Err(PathRejection::Fragment),
                v if v < 0x20 || v == 0x7f => return Err(PathRejection::ControlChar),
                v => units.push(Unit { byte: v, encoded: true }),
            }
            i += 3;
        } else {
            match b {
                b'\\' => return Err(PathRejection::Backslash),
                b'#' => return Err(PathRejection::Fragment),
                b'?' => return Err(PathRejection::NotOriginForm),
                v if v < 0x20 || v == 0x7f => return Err(PathRejection::ControlChar),
                v => units.push(Unit {
                    byte: v,
                    encoded: false,
                }),
            }
            i += 1;
        }
    }
    Ok(units)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The decoded text of a segment. The whole path was verified to be UTF-8 and segments are cut
/// at ASCII '/', so this is lossless; `from_utf8_lossy` merely avoids a panic path.
fn units_text(units: &[Unit]) -> String {
    let bytes: Vec<u8> = units.iter().map(|u| u.byte).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[derive(PartialEq, Eq)]
enum DotKind {
    None,
    Current,
    Parent,
}

/// Whether a decoded segment is `.` or `..`, ignoring `;params` and counting the NFKC full-stop
/// look-alikes (U+2025 TWO DOT LEADER counts as two dots).
fn dot_kind(segment: &str) -> DotKind {
    let name = strip_params(segment);
    let mut dots = 0usize;
    for c in name.chars() {
        dots += match c {
            '.' | '\u{FF0E}' | '\u{FE52}' | '\u{2024}' => 1,
            '\u{2025}' => 2,
            _ => return DotKind::None,
        };
    }
    match dots {
        1 => DotKind::Current,
        2 => DotKind::Parent,
        _ => DotKind::None,
    }
}

/// The decoded segment up to its first `;` (path parameters, RFC 3986 §3.3).
fn strip_params(segment: &str) -> &str {
    segment.split(';').next().unwrap_or_default()
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters allowed literally in a path segment besides unreserved ones (RFC 3986 `pchar`).
fn is_literal_pchar(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@'
    )
}

/// RFC 3986 §6.2.2 normalisation of one segment.
fn encode_forward(units: &[Unit]) -> String {
    let mut out = String::with_capacity(units.len());
    for u in units {
        if is_unreserved(u.byte) || (!u.encoded && is_literal_pchar(u.byte)) {
            out.push(char::from(u.byte));
        } else {
            out.push_str(&format!("%{:02X}", u.byte));
        }
    }
    out
}

fn join(segments: impl Iterator<Item = String>, trailing_slash: bool) -> String {
    let mut out = String::from("/");
    let mut any = false;
    for segment in segments {
        if any {
            out.push('/');
        }
        out.push_str(&segment);
        any = true;
    }
    if any && trailing_slash {
        out.push('/');
    }
    out
}

/// Path prefixes that require a session, matched against [`CanonicalPath::matching`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedRoutes {
    /// Prefixes in matching form (decoded, params stripped, lowercased).
    prefixes: Vec<String>,
}

impl ProtectedRoutes {
    /// `prefixes` were validated by the config to start with `/`. Each is put through the same
    /// canonicalisation as requests (so `/Dashboard` or `/%64ashboard` in config still work);
    /// one that canonicalisation rejects is kept lowercased as written, which can only widen
    /// protection.
    pub fn new(prefixes: &[String]) -> Self {
        let prefixes = prefixes
            .iter()
            .map(|p| match canonicalize(p) {
                Ok(c) => c.matching,
                Err(_) => p.to_lowercase(),
            })
            .collect();
        ProtectedRoutes { prefixes }
    }

    /// Plain string prefix test on the matching form (already lowercased), so `/dashboard`
    /// protects `/dashboard/x`, `/dashboard.` and `/dashboardx` alike.
    pub fn is_protected(&self, path: &CanonicalPath) -> bool {
        self.prefixes.iter().any(|p| path.matching.starts_with(p.as_str()))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn fullwidth_letters_match_like_ascii() {
        let routes = ProtectedRoutes::new(&["/dashboard".to_string()]);
        let c = canonicalize("/%EF%BD%84ashboard").expect("valid utf-8");
        assert!(routes.is_protected(&c), "{c:?}");
        assert_eq!(c.forward, "/%EF%BD%84ashboard", "forwarded as sent");
        let c = canonicalize("/ｄａｓｈｂｏａｒｄ/x").expect("valid");
        assert!(routes.is_protected(&c));
    }
    use super::*;

    fn routes() -> ProtectedRoutes {
        ProtectedRoutes::new(&["/dashboard".to_owned(), "/profile".to_owned(), "/api/user".to_owned()])
    }

    enum Want {
        Rejected(PathRejection),
        /// Canonicalised to this `forward` and protected.
        Protected(&'static str),
    }
    use Want::{Protected, Rejected};

    /// Section D of attack-vectors.md (path-level items), plus close variants.
    const SECTION_D: &[(&str, Want)] = &[
        ("/dashboard/../dashboard", Protected("/dashboard")),
        ("/public/../dashboard", Protected("/dashboard")),
        ("/public/..%2fdashboard", Rejected(PathRejection::EncodedSlash)),
        ("/public/%2e%2e/dashboard", Protected("/dashboard")),
        ("/public/%2e%2e%2fdashboard", Rejected(PathRejection::EncodedSlash)),
        ("/public/%252e%252e/dashboard", Rejected(PathRejection::DoubleEncoding)),
        ("/public/..%5cdashboard", Rejected(PathRejection::Backslash)),
        ("/public\\..\\dashboard", Rejected(PathRejection::Backslash)),
        ("/%64ashboard", Protected("/dashboard")),
        ("/%44ASHBOARD", Protected("/DASHBOARD")),
        ("//dashboard", Protected("/dashboard")),
        ("///dashboard", Protected("/dashboard")),
        ("/DASHBOARD", Protected("/DASHBOARD")),
        ("/Dashboard", Protected("/Dashboard")),
        ("/dashboard;x=1", Protected("/dashboard;x=1")),
        ("/dashboard;/", Protected("/dashboard;/")),
        ("/public;/../dashboard", Protected("/dashboard")),
        ("/dashboard%2f", Rejected(PathRejection::EncodedSlash)),
        ("/dashboard/", Protected("/dashboard/")),
        ("/dashboard.", Protected("/dashboard.")),
        ("/dashboard%00", Rejected(PathRejection::ControlChar)),
        ("/dashboard%20", Protected("/dashboard%20")),
        ("/dashboard%09", Rejected(PathRejection::ControlChar)),
        ("/dashboard%c0%af", Rejected(PathRejection::InvalidUtf8)),
        ("/dashboard%ef%bc%8f", Rejected(PathRejection::EncodedSlash)),
        ("/public#/../dashboard", Rejected(PathRejection::Fragment)),
        ("/public%23/../dashboard", Rejected(PathRejection::Fragment)),
        // Variants: params on dot segments, mixed-encoded dots, look-alike dots, params-only
        // segments, encoded `;`, climbing above the root, other control characters.
        ("/public/..;/dashboard", Protected("/dashboard")),
        ("/public/..;x=1/dashboard", Protected("/dashboard")),
        ("/public/.%2e/dashboard", Protected("/dashboard")),
        ("/public/%2E./dashboard", Protected("/dashboard")),
        ("/public/%2e%2e%3bx/dashboard", Protected("/dashboard")),
        ("/public/%EF%BC%8E%EF%BC%8E/dashboard", Protected("/dashboard")),
        ("/public/./../dashboard", Protected("/dashboard")),
        ("/../../dashboard", Protected("/dashboard")),
        ("/;x/dashboard", Protected("/;x/dashboard")),
        ("/dashboard%3Bx", Protected("/dashboard%3Bx")),
        ("/dashboard/;x", Protected("/dashboard/;x")),
        ("/dashboardx", Protected("/dashboardx")),
        ("/dashboard%7f", Rejected(PathRejection::ControlChar)),
        ("/dashboard%0d%0a", Rejected(PathRejection::ControlChar)),
        ("/dashboard\r\n", Rejected(PathRejection::ControlChar)),
        ("/dashboard%c2%85", Rejected(PathRejection::ControlChar)),
        ("/dashboard%e2%88%95x", Rejected(PathRejection::EncodedSlash)),
        ("/dashboard%ef%bc%bcx", Rejected(PathRejection::Backslash)),
        ("/dashboard%zz", Rejected(PathRejection::NotOriginForm)),
        ("/dashboard%2", Rejected(PathRejection::NotOriginForm)),
        ("/dashboard?x=1", Rejected(PathRejection::NotOriginForm)),
        ("http://evil/dashboard", Rejected(PathRejection::NotOriginForm)),
        ("dashboard", Rejected(PathRejection::NotOriginForm)),
        ("", Rejected(PathRejection::NotOriginForm)),
        ("*", Rejected(PathRejection::NotOriginForm)),
    ];

    #[test]
    fn section_d_vectors() {
        let routes = routes();
        for (raw, want) in SECTION_D {
            let got = canonicalize(raw);
            match want {
                Rejected(kind) => assert_eq!(got, Err(*kind), "{raw:?}"),
                Protected(forward) => {
                    let Ok(c) = got else {
                        panic!("{raw:?} rejected: {got:?}");
                    };
                    assert_eq!(c.forward, *forward, "{raw:?}");
                    assert!(routes.is_protected(&c), "{raw:?} unprotected: {c:?}");
                }
            }
        }
    }

    #[test]
    fn specific_matching_forms() {
        let cases: &[(&str, &str, &str)] = &[
            ("/dashboard;x=1", "/dashboard;x=1", "/dashboard"),
            ("/dashboard;/", "/dashboard;/", "/dashboard/"),
            ("/%44ASHBOARD", "/DASHBOARD", "/dashboard"),
            ("/dashboard%20", "/dashboard%20", "/dashboard "),
            ("/;x/dashboard", "/;x/dashboard", "/dashboard"),
            ("/dashboard/;x", "/dashboard/;x", "/dashboard/"),
            ("/dashboard/..;/public", "/public", "/public"),
            ("/caf%C3%A9", "/caf%C3%A9", "/café"),
            ("/caf%c3%a9", "/caf%C3%A9", "/café"),
            ("/café", "/caf%C3%A9", "/café"),
            ("/CAF%C3%89", "/CAF%C3%89", "/café"),
            ("/a b", "/a%20b", "/a b"),
            ("/a%3a%3F%40", "/a%3A%3F%40", "/a:?@"),
            ("/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,="),
            ("/%7E%41%2D%5F", "/~A-_", "/~a-_"),
            ("/a/b/..", "/a/", "/a/"),
            ("/a/b/.", "/a/b/", "/a/b/"),
            ("/..", "/", "/"),
            ("//", "/", "/"),
            ("/a//b//", "/a/b/", "/a/b/"),
            ("/...", "/...", "/..."),
        ];
        for (raw, forward, matching) in cases {
            let c = canonicalize(raw);
            assert_eq!(
                c,
                Ok(CanonicalPath {
                    forward: (*forward).to_owned(),
                    matching: (*matching).to_owned(),
                }),
                "{raw:?}"
            );
        }
    }

    /// The query never reaches canonicalisation: the caller passes `/api/private/secret` for
    /// `/api/private/secret?x=/status`, and `#`/`%23` are rejected (GHSA-7rh7, GHSA-pxq7).
    #[test]
    fn query_and_fragment_never_feed_matching() {
        let c = canonicalize("/api/private/secret");
        assert_eq!(c.as_ref().map(|c| c.matching.as_str()), Ok("/api/private/secret"));
        assert_eq!(
            canonicalize("/api/private/secret?x=/status"),
            Err(PathRejection::NotOriginForm)
        );
        assert_eq!(
            canonicalize("/api/private/secret#/status"),
            Err(PathRejection::Fragment)
        );
        assert_eq!(
            canonicalize("/api/private/secret%23/status"),
            Err(PathRejection::Fragment)
        );
    }

    #[test]
    fn normal_paths() {
        let routes = routes();
        let cases: &[(&str, &str, bool)] = &[
            ("/", "/", false),
            ("/public/page", "/public/page", false),
            ("/_next/static/x.js", "/_next/static/x.js", false),
            ("/api/users", "/api/users", true),
            ("/api/user/42", "/api/user/42", true),
            ("/API/User", "/API/User", true),
            ("/api", "/api", false),
            ("/profile", "/profile", true),
            ("/caf%C3%A9", "/caf%C3%A9", false),
            ("/dash", "/dash", false),
            ("/public/dashboard", "/public/dashboard", false),
        ];
        for (raw, forward, protected) in cases {
            let Ok(c) = canonicalize(raw) else {
                panic!("{raw:?} rejected");
            };
            assert_eq!(c.forward, *forward, "{raw:?}");
            assert_eq!(routes.is_protected(&c), *protected, "{raw:?}");
        }
    }

    #[test]
    fn idempotent() {
        let inputs = SECTION_D.iter().map(|(raw, _)| *raw).chain([
            "/",
            "/public/page",
            "/_next/static/x.js",
            "/api/users",
            "/caf%C3%A9",
            "/caf%c3%a9",
            "/café",
            "/a b",
            "/a%3a%3F%40",
            "/a:b@c!$&'()*+,=",
            "/a/b/..",
            "/x/%5B%5D\"<>`{}|^[]",
            "/dashboard/..;/public",
        ]);
        for raw in inputs {
            if let Ok(first) = canonicalize(raw) {
                let second = canonicalize(&first.forward);
                assert_eq!(second.as_ref(), Ok(&first), "{raw:?}");
            }
        }
    }

    #[test]
    fn length_limit() {
        let at_limit = format!("/{}", "a".repeat(MAX_PATH_LEN - 1));
        assert!(canonicalize(&at_limit).is_ok());
        let over = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert_eq!(canonicalize(&over), Err(PathRejection::TooLong));
        // Within the raw limit but longer once non-ASCII is percent-encoded.
        let expands = format!("/{}", "é".repeat(MAX_PATH_LEN / 2 - 1));
        assert_eq!(canonicalize(&expands), Err(PathRejection::TooLong));
    }

    #[test]
    fn prefixes_are_canonicalised() {
        let routes = ProtectedRoutes::new(&["/Dash%62oard".to_owned(), "/Admin;v=1".to_owned()]);
        for raw in ["/dashboard", "/DASHBOARD/x", "/admin", "/ADMIN/users"] {
            let Ok(c) = canonicalize(raw) else {
                panic!("{raw:?} rejected");
            };
            assert!(routes.is_protected(&c), "{raw:?}");
        }
        let Ok(public) = canonicalize("/public") else {
            panic!("/public rejected");
        };
        assert!(!routes.is_protected(&public));
    }

    #[test]
    fn display_is_short() {
        for r in [
            PathRejection::NotOriginForm,
            PathRejection::EncodedSlash,
            PathRejection::Backslash,
            PathRejection::DoubleEncoding,
            PathRejection::ControlChar,
            PathRejection::InvalidUtf8,
            PathRejection::Fragment,
            PathRejection::TooLong,
        ] {
            let s = r.to_string();
            assert!(!s.is_empty() && s.len() < 60, "{s}");
        }
    }
}
