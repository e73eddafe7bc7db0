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
//! * an invisible character, which an upstream may delete before routing (`/dash%C2%ADboard`
//!   becomes `/dashboard` there): every character of general category Cf (format: U+00AD soft
//!   hyphen, U+200B–U+200F, U+202A–U+202E, U+2060–U+2064, U+FEFF, U+0600–U+0605, tags
//!   U+E0001–U+E007F, ...) and every other Default_Ignorable_Code_Point (U+034F, U+115F,
//!   U+1160, U+3164, U+FFA0, U+180B–U+180F, ...). The one exception is a variation selector
//!   (U+FE00–U+FE0F, U+E0100–U+E01EF) directly after a non-ASCII character, which picks an
//!   emoji or CJK glyph variant (`❤️` is U+2764 U+FE0F); dropping it leaves that non-ASCII
//!   character, so it cannot turn the path into an ASCII one. Zero-width joiner emoji sequences
//!   (U+200D) are refused with the rest of Cf ([`PathRejection::InvisibleChar`]);
//! * a non-ASCII character that some upstream reads as ASCII ([`PathRejection::UnicodeLookalike`]):
//!   - one whose NFKC form contains an ASCII character: fullwidth forms (`ｄ`), U+017F long s
//!     (`ſ` → `s`), mathematical letters (`𝐝`), ligatures (`ﬁ` → `fi`), modifier and subscript
//!     letters (`ᵈ`, `ₐ`), U+212A Kelvin sign, U+00A0 no-break space, `½`, `™`, U+FF0E and the
//!     other full-stop look-alikes. An NFKC-normalising upstream would serve
//!     `/da%C5%BFhboard` as `/dashboard`;
//!   - one whose single-character case mapping (lowercase, uppercase, or the one of the other,
//!     ignoring combining marks the mapping adds) is ASCII: U+0131 dotless `ı` (uppercase `I`),
//!     U+0130 `İ` (lowercase `i` + U+0307), U+212A Kelvin sign (lowercase `k`), and the rare
//!     letters whose uppercase is an ASCII letter plus a mark (`ǰ`, `ẖ`, `ẗ`, `ẘ`, `ẙ`). Java's
//!     `equalsIgnoreCase` and Spring's case-insensitive matching read `/profıle` as `/profile`.
//!     `ß` stays accepted: its uppercase is the two letters `SS`, which no per-character
//!     comparison equates with it.
//!
//!   Refusing rather than folding them to ASCII for matching (which fullwidth letters used to
//!   get): a folded path still reaches the upstream, its caches and its access rules as the
//!   look-alike, and each of them would have to apply exactly our folding to mean the same path;
//!   a refused path means nothing to anyone. NFKC composition never produces an ASCII
//!   character, so the ASCII a sequence yields comes from single characters' decompositions,
//!   which is why the check is made character by character;
//! * more than 8192 bytes, raw or canonical ([`PathRejection::TooLong`]).
//!
//! Every other non-ASCII character is accepted: `/perfil/josé` (precomposed, or `e` + U+0301),
//! `/straße`, `/ñandú`, `/日本語`, emoji.
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
//!   (Unicode full-stop look-alikes such as U+FF0E never get here: NFKC maps them to `.`, so
//!   they are refused above);
//! * `;params` are kept (the upstream gets what the client asked for, normalised).
//!
//! Matching form (`matching`, judged by [`ProtectedRoutes`]): the canonical segments fully
//! decoded, with `;params` (from the first literal or encoded `;`) removed from every segment,
//! segments left empty by that dropped, and lowercased, so `/dashboard;x=1`,
//! `/public;/../dashboard`, `/DASHBOARD` and `/Dashboard` all match `/dashboard`.
//!
//! Protection is a plain case-insensitive string prefix test on `matching`, so `/dashboard/`,
//! `/dashboard.`, `/dashboardx` and `/dashboard%20` are all protected: over-protection is the safe
//! side. A path with non-ASCII characters is protected when either `matching` or its NFKC form
//! (lowercased) starts with a protected prefix in either of those two forms, so `/cafe%CC%81`
//! (decomposed) is protected by `/café`, and `/ｶﾌｪ` (halfwidth) by `/カフェ`: an upstream that
//! normalises serves the protected page, one that does not still gets a path under the prefix.

use std::fmt;

use icu_normalizer::ComposingNormalizerBorrowed;
use icu_properties::props::{DefaultIgnorableCodePoint, GeneralCategory, GeneralCategoryGroup};
use icu_properties::{CodePointMapData, CodePointSetData};

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
    /// A format (Cf) or other default-ignorable character, which an upstream may delete.
    InvisibleChar {
        ch: char,
    },
    /// A character whose NFKC form or case mapping is ASCII.
    UnicodeLookalike {
        ch: char,
    },
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
            // The code point, never the character: it may be invisible or reorder the log line.
            PathRejection::InvisibleChar { ch } => {
                return write!(f, "invisible character U+{:04X} in path", u32::from(*ch));
            }
            PathRejection::UnicodeLookalike { ch } => {
                return write!(f, "Unicode look-alike of ASCII U+{:04X} in path", u32::from(*ch));
            }
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

/// The Unicode policy for one decoded non-ASCII character (see the module doc); `prev` is the
/// character before it, if any.
fn check_non_ascii(c: char, prev: Option<char>) -> Result<(), PathRejection> {
    let category = CodePointMapData::<GeneralCategory>::new().get(c);
    let invisible =
        category == GeneralCategory::Format || CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c);
    if invisible && !(is_variation_selector(c) && prev.is_some_and(|p| !p.is_ascii())) {
        return Err(PathRejection::InvisibleChar { ch: c });
    }
    let mut buf = [0u8; 4];
    if nfkc(c.encode_utf8(&mut buf)).bytes().any(|b| b.is_ascii()) || case_maps_to_ascii(c) {
        return Err(PathRejection::UnicodeLookalike { ch: c });
    }
    Ok(())
}

fn is_variation_selector(c: char) -> bool {
    matches!(c, '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}')
}

fn nfkc(s: &str) -> std::borrow::Cow<'_, str> {
    ComposingNormalizerBorrowed::new_nfkc().normalize(s)
}

/// Whether a case mapping of `c` is a single ASCII character once the combining marks it adds
/// are dropped (`İ` lowercases to `i` + U+0307). The mappings of the mappings are included so
/// that a comparison through upper- then lowercase (Java's `equalsIgnoreCase`) is covered too.
fn case_maps_to_ascii(c: char) -> bool {
    let lower: String = c.to_lowercase().collect();
    let upper: String = c.to_uppercase().collect();
    let lower_upper: String = upper.to_lowercase();
    let upper_lower: String = lower.to_uppercase();
    [lower, upper, lower_upper, upper_lower].iter().any(|mapped| {
        let mut base = mapped.chars().filter(|m| !is_mark(*m));
        matches!((base.next(), base.next()), (Some(b), None) if b.is_ascii())
    })
}

fn is_mark(c: char) -> bool {
    GeneralCategoryGroup::Mark.contains(CodePointMapData::<GeneralCategory>::new().get(c))
}

/// The NFKC form of a lowercased matching form, lowercased again (NFKC can produce capitals,
/// `ϒ` → `Υ`), when it differs; `None` for ASCII, which NFKC leaves alone.
fn nfkc_matching(matching: &str) -> Option<String> {
    if matching.is_ascii() {
        return None;
    }
    let folded = nfkc(&nfkc(matching).to_lowercase()).into_owned();
    (folded != matching).then_some(folded)
}

/// Whether a request-target as received is one we route: origin-form (`/path?query`) or
/// absolute-form with an http(s) scheme. pingora accepts others (`GET dashboard`, `GET *x`,
/// `GET foo:bar`), records them as `/` and would send the original bytes upstream, so a
/// decision made on `/` would let an upstream that reads `dashboard` as `/dashboard` serve it.
pub fn is_routable_target(raw: &[u8]) -> bool {
    let starts = |prefix: &[u8]| raw.len() >= prefix.len() && raw[..prefix.len()].eq_ignore_ascii_case(prefix);
    raw.first() == Some(&b'/') || starts(b"http://") || starts(b"https://")
}

/// Whether the target as received is exactly `path` plus `?query`, so the upstream can be
/// sent the bytes pingora holds without rebuilding the URI.
pub fn target_is(raw: &[u8], path: &str, query: Option<&str>) -> bool {
    let path = path.as_bytes();
    match query {
        None => raw == path,
        Some(q) => {
            raw.len() == path.len() + 1 + q.len()
                && raw.starts_with(path)
                && raw[path.len()] == b'?'
                && raw.ends_with(q.as_bytes())
        }
    }
}

/// Canonicalises `raw`, the request-target's path component exactly as received (no query).
pub fn canonicalize(raw: &str) -> Result<CanonicalPath, PathRejection> {
    if raw.len() > MAX_PATH_LEN {
        return Err(PathRejection::TooLong);
    }
    if !raw.starts_with('/') {
        return Err(PathRejection::NotOriginForm);
    }
    if let Some(plain) = plain_path(raw) {
        return Ok(plain);
    }
    canonicalize_full(raw)
}

/// The common case, without decoding: a path of unreserved ASCII characters and single
/// slashes, with no dot segment, is already canonical (the full algorithm would give the
/// same, which `tests/props` checks).
fn plain_path(raw: &str) -> Option<CanonicalPath> {
    let bytes = raw.as_bytes();
    if !bytes.iter().all(|&b| b == b'/' || is_unreserved(b)) {
        return None;
    }
    let mut segments = raw[1..].split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if (seg.is_empty() && !last) || seg == "." || seg == ".." {
            return None;
        }
    }
    Some(CanonicalPath {
        forward: raw.to_string(),
        matching: raw.to_ascii_lowercase(),
    })
}

/// The full canonicalisation (see `canonicalize`); public for the property tests that hold
/// the fast path to it.
pub fn canonicalize_full(raw: &str) -> Result<CanonicalPath, PathRejection> {
    if raw.len() > MAX_PATH_LEN {
        return Err(PathRejection::TooLong);
    }
    if !raw.starts_with('/') {
        return Err(PathRejection::NotOriginForm);
    }

    let units = decode_units(raw)?;
    let decoded: Vec<u8> = units.iter().map(|u| u.byte).collect();
    let text = String::from_utf8(decoded).map_err(|_| PathRejection::InvalidUtf8)?;
    let mut prev = None;
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
        if !c.is_ascii() {
            check_non_ascii(c, prev)?;
        }
        prev = Some(c);
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
        let stripped = strip_params(&units_text(segment)).to_lowercase();
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

/// Whether a decoded segment is `.` or `..`, ignoring `;params`.
fn dot_kind(segment: &str) -> DotKind {
    match strip_params(segment) {
        "." => DotKind::Current,
        ".." => DotKind::Parent,
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
    /// Prefixes in matching form (decoded, params stripped, lowercased), plus the NFKC form of
    /// each non-ASCII one.
    prefixes: Vec<String>,
}

impl ProtectedRoutes {
    /// `prefixes` were validated by the config to start with `/`. Each is put through the same
    /// canonicalisation as requests (so `/Dashboard` or `/%64ashboard` in config still work);
    /// one that canonicalisation rejects is kept lowercased as written, which can only widen
    /// protection.
    pub fn new(prefixes: &[String]) -> Self {
        let mut out: Vec<String> = Vec::with_capacity(prefixes.len());
        for p in prefixes {
            let matching = match canonicalize(p) {
                Ok(c) => c.matching,
                Err(_) => p.to_lowercase(),
            };
            out.extend(nfkc_matching(&matching));
            out.push(matching);
        }
        out.sort();
        out.dedup();
        ProtectedRoutes { prefixes: out }
    }

    /// Plain string prefix test on the matching form (already lowercased), so `/dashboard`
    /// protects `/dashboard/x`, `/dashboard.` and `/dashboardx` alike. A non-ASCII path is also
    /// tried in its NFKC form (the only per-request Unicode work, and only for such paths).
    pub fn is_protected(&self, path: &CanonicalPath) -> bool {
        let hit = |m: &str| self.prefixes.iter().any(|p| m.starts_with(p.as_str()));
        hit(&path.matching) || nfkc_matching(&path.matching).is_some_and(|n| hit(&n))
    }

    /// How a prefix matches: `Some(Boundary)` when the path is a prefix or lies below one
    /// (`/admin` for `/admin` and `/admin/x`), `Some(Loose)` when it only starts with one
    /// (`/admin` for `/admin.` or `/administrator`), `None` otherwise. Route rules use the
    /// difference (`auth::rules`).
    pub fn match_kind(&self, path: &CanonicalPath) -> Option<PrefixMatch> {
        let kind = |m: &str| {
            self.prefixes
                .iter()
                .filter(|p| m.starts_with(p.as_str()))
                .map(|p| {
                    let at_boundary = p.ends_with('/') || m.len() == p.len() || m.as_bytes()[p.len()] == b'/';
                    if at_boundary {
                        PrefixMatch::Boundary
                    } else {
                        PrefixMatch::Loose
                    }
                })
                .max()
        };
        let direct = kind(&path.matching);
        let folded = nfkc_matching(&path.matching).and_then(|n| kind(&n));
        direct.max(folded)
    }
}

/// See `ProtectedRoutes::match_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PrefixMatch {
    Loose,
    Boundary,
}

#[cfg(test)]
mod tests {
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
        (
            "/public/%EF%BC%8E%EF%BC%8E/dashboard",
            Rejected(PathRejection::UnicodeLookalike { ch: '\u{FF0E}' }),
        ),
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
            PathRejection::InvisibleChar { ch: '\u{E0062}' },
            PathRejection::UnicodeLookalike { ch: '\u{1D41D}' },
        ] {
            let s = r.to_string();
            assert!(!s.is_empty() && s.len() < 60, "{s}");
        }
    }

    /// Issue 9 item 5, issue 10 item 3: one representative per class, and the code point named.
    const LOOKALIKES: &[(&str, char)] = &[
        ("/da%C5%BFhboard", '\u{17F}'),         // long s, NFKC s
        ("/%F0%9D%90%9Dashboard", '\u{1D41D}'), // mathematical bold d
        ("/%F0%9D%93%AD", '\u{1D4ED}'),         // mathematical bold script d
        ("/pro%EF%AC%81le", '\u{FB01}'),        // ligature fi
        ("/%EF%AC%80", '\u{FB00}'),             // ligature ff
        ("/%E1%B5%88ashboard", '\u{1D48}'),     // modifier letter small d
        ("/d%E2%82%90shboard", '\u{2090}'),     // subscript a
        ("/%C2%AA", '\u{AA}'),                  // feminine ordinal, NFKC a
        ("/prof%C4%B1le", '\u{131}'),           // dotless i, uppercase I
        ("/prof\u{131}le", '\u{131}'),          // the same, raw
        ("/prof%C4%B0le", '\u{130}'),           // I with dot, lowercase i + U+0307
        ("/%E2%84%AAey", '\u{212A}'),           // Kelvin sign
        ("/%C7%B0", '\u{1F0}'),                 // j with caron, uppercase J + U+030C
        ("/%EF%BD%84ashboard", '\u{FF44}'),     // fullwidth d
        ("/ｄａｓｈｂｏａｒｄ/x", '\u{FF44}'),  // fullwidth, raw
        ("/%EF%BC%A4ASHBOARD", '\u{FF24}'),     // fullwidth D
        ("/dash%C2%A0board", '\u{A0}'),         // no-break space
        ("/%E3%80%80", '\u{3000}'),             // ideographic space
        ("/%C2%BD", '\u{BD}'),                  // one half, NFKC 1⁄2
        ("/%E2%84%A2", '\u{2122}'),             // trade mark, NFKC TM
        ("/%E2%91%A0", '\u{2460}'),             // circled digit one
        ("/a/%E2%80%A5/dashboard", '\u{2025}'), // two dot leader, NFKC ..
        ("/a/%EF%B9%92/dashboard", '\u{FE52}'), // small full stop
        ("/a/%E2%80%A4/dashboard", '\u{2024}'), // one dot leader
    ];

    const INVISIBLE: &[(&str, char)] = &[
        ("/%E2%80%8Bdashboard", '\u{200B}'),                // zero width space
        ("/dash%C2%ADboard", '\u{AD}'),                     // soft hyphen
        ("/dash%E2%80%8Cboard", '\u{200C}'),                // zero width non-joiner
        ("/dash%E2%80%8Dboard", '\u{200D}'),                // zero width joiner
        ("/%F0%9F%91%A8%E2%80%8D%F0%9F%91%A9", '\u{200D}'), // ZWJ emoji sequence
        ("/dash%E2%80%8Eboard", '\u{200E}'),                // left-to-right mark
        ("/dash%E2%80%AEboard", '\u{202E}'),                // right-to-left override
        ("/dash%E2%81%A0board", '\u{2060}'),                // word joiner
        ("/dash%E2%81%A4board", '\u{2064}'),                // invisible plus
        ("/%EF%BB%BFdashboard", '\u{FEFF}'),                // byte order mark
        ("/%D8%80", '\u{600}'),                             // Arabic number sign (Cf, not ignorable)
        ("/%D8%9C", '\u{61C}'),                             // Arabic letter mark
        ("/dash%F3%A0%81%A2oard", '\u{E0062}'),             // tag b
        ("/%EF%BF%B9", '\u{FFF9}'),                         // interlinear annotation anchor
        ("/dash%CD%8Fboard", '\u{34F}'),                    // combining grapheme joiner (Mn, ignorable)
        ("/dash%EF%B8%8Fboard", '\u{FE0F}'),                // variation selector after ASCII
        ("/%EF%B8%80", '\u{FE00}'),                         // variation selector at the start
        ("/dash%E3%85%A4board", '\u{3164}'),                // Hangul filler (Lo, ignorable)
        ("/dash%E1%A0%8Bboard", '\u{180B}'),                // Mongolian free variation selector
    ];

    #[test]
    fn unicode_lookalikes_refused() {
        for (raw, ch) in LOOKALIKES {
            assert_eq!(
                canonicalize(raw),
                Err(PathRejection::UnicodeLookalike { ch: *ch }),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn invisible_characters_refused() {
        for (raw, ch) in INVISIBLE {
            assert_eq!(
                canonicalize(raw),
                Err(PathRejection::InvisibleChar { ch: *ch }),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn rejections_name_the_code_point() {
        assert_eq!(
            canonicalize("/da%C5%BFhboard").map_err(|e| e.to_string()),
            Err("Unicode look-alike of ASCII U+017F in path".to_owned())
        );
        assert_eq!(
            canonicalize("/%E2%80%8Bx").map_err(|e| e.to_string()),
            Err("invisible character U+200B in path".to_owned())
        );
        assert_eq!(
            canonicalize("/%F0%9D%90%9D").map_err(|e| e.to_string()),
            Err("Unicode look-alike of ASCII U+1D41D in path".to_owned())
        );
    }

    #[test]
    fn ordinary_non_ascii_accepted() {
        let routes = routes();
        let cases: &[(&str, &str, &str)] = &[
            ("/perfil/josé", "/perfil/jos%C3%A9", "/perfil/josé"),
            ("/perfil/jose\u{301}", "/perfil/jose%CC%81", "/perfil/jose\u{301}"),
            ("/perfil/jose%cc%81", "/perfil/jose%CC%81", "/perfil/jose\u{301}"),
            ("/straße", "/stra%C3%9Fe", "/straße"),
            ("/STRA%C3%9FE", "/STRA%C3%9FE", "/straße"),
            ("/ñandú", "/%C3%B1and%C3%BA", "/ñandú"),
            ("/日本語", "/%E6%97%A5%E6%9C%AC%E8%AA%9E", "/日本語"),
            ("/😀", "/%F0%9F%98%80", "/😀"),
            // A variation selector after a non-ASCII character selects the emoji glyph.
            ("/\u{2764}\u{FE0F}", "/%E2%9D%A4%EF%B8%8F", "/\u{2764}\u{FE0F}"),
            ("/%E8%BE%BB%F3%A0%84%80", "/%E8%BE%BB%F3%A0%84%80", "/\u{8FBB}\u{E0100}"),
            // NFKC changes these, but not into ASCII.
            ("/\u{212B}", "/%E2%84%AB", "/\u{E5}"),
            ("/\u{FF71}", "/%EF%BD%B1", "/\u{FF71}"),
            ("/\u{337F}", "/%E3%8D%BF", "/\u{337F}"),
            ("/ÅNGSTRÖM", "/%C3%85NGSTR%C3%96M", "/ångström"),
            ("/ẞ", "/%E1%BA%9E", "/ß"),
        ];
        for (raw, forward, matching) in cases {
            let Ok(c) = canonicalize(raw) else {
                panic!("{raw:?} rejected: {:?}", canonicalize(raw));
            };
            assert_eq!(
                (c.forward.as_str(), c.matching.as_str()),
                (*forward, *matching),
                "{raw:?}"
            );
            assert!(!routes.is_protected(&c), "{raw:?}");
            assert_eq!(canonicalize(&c.forward), Ok(c.clone()), "idempotent {raw:?}");
        }
    }

    /// A non-ASCII prefix protects every spelling an NFKC-normalising upstream equates with it,
    /// while the literal test still covers the un-normalised spelling.
    #[test]
    fn non_ascii_prefixes_judged_on_nfkc_too() {
        let routes = ProtectedRoutes::new(&[
            "/perfil/josé".to_owned(),
            "/cafe\u{301}".to_owned(),
            "/カフェ".to_owned(),
            "/profile".to_owned(),
        ]);
        for raw in [
            "/perfil/jos%C3%A9",
            "/perfil/jose%CC%81",
            "/PERFIL/JOS%C3%89/x",
            "/PERFIL/JOSE%CC%81",
            "/caf%C3%A9",
            "/cafe%CC%81",
            "/CAF%C3%89",
            "/%E3%82%AB%E3%83%95%E3%82%A7",
            "/%EF%BD%B6%EF%BE%8C%EF%BD%AA",
            "/profile%CC%81",
        ] {
            let Ok(c) = canonicalize(raw) else {
                panic!("{raw:?} rejected");
            };
            assert!(routes.is_protected(&c), "{raw:?} unprotected: {c:?}");
        }
        for raw in ["/perfil/jose", "/cafe", "/caf", "/%E3%82%AB"] {
            let Ok(c) = canonicalize(raw) else {
                panic!("{raw:?} rejected");
            };
            assert!(!routes.is_protected(&c), "{raw:?} protected");
        }
    }

    #[test]
    fn only_origin_and_absolute_form_targets_are_routed() {
        for ok in ["/", "/dashboard?x=1", "http://h/x", "HTTPS://h/x"] {
            assert!(is_routable_target(ok.as_bytes()), "{ok}");
        }
        for bad in ["dashboard", "*dashboard", "*", "foo:bar", "ftp://h/x", "", "http:/x"] {
            assert!(!is_routable_target(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn the_target_is_compared_byte_for_byte_with_path_and_query() {
        assert!(target_is(b"/a", "/a", None));
        assert!(target_is(b"/a?b=c", "/a", Some("b=c")));
        assert!(!target_is(b"/a?b=c", "/a", None));
        assert!(!target_is(b"dashboard", "/", None));
        assert!(!target_is(b"/a?b=c", "/a", Some("b=d")));
        assert!(!target_is(b"/ab=c", "/a", Some("b=c")));
        assert!(!target_is(b"http://h/a", "/a", None));
    }
}
