//! Oracles from `unicode-normalization` and `unicode-properties`, an implementation independent
//! of the ICU4X data the path policy uses: which characters NFKC or case mapping turn into
//! ASCII letters, and which are format characters (Cf).

use std::sync::OnceLock;

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};

/// Scanned planes: the BMP and the SMP hold every compatibility letter and format character
/// apart from the tags (U+E0000 block), which are added by range.
const SCAN_END: u32 = 0x2_0000;

/// Non-ASCII characters that some upstream reads as an ASCII text, with that text lowercased:
/// their NFKC form is ASCII letters (`ſ` → "s", `ﬁ` → "fi", `ｄ` → "d"), or a case mapping
/// without its combining marks is one ASCII letter (`ı` → "i", `K` → "k").
pub fn lookalikes() -> &'static [(String, char)] {
    static TABLE: OnceLock<Vec<(String, char)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut out = Vec::new();
        for cp in 0x80..SCAN_END {
            let Some(c) = char::from_u32(cp) else {
                continue;
            };
            let nfkc: String = c.to_string().nfkc().collect();
            if !nfkc.is_empty() && nfkc.len() <= 3 && nfkc.bytes().all(|b| b.is_ascii_alphabetic()) {
                out.push((nfkc.to_ascii_lowercase(), c));
            } else if let Some(letter) = case_letter(c) {
                out.push((letter.to_string(), c));
            }
        }
        out
    })
}

/// The ASCII letter (lowercased) one of `c`'s case mappings is, marks dropped.
fn case_letter(c: char) -> Option<char> {
    let lower: String = c.to_lowercase().collect();
    let upper: String = c.to_uppercase().collect();
    [lower, upper].iter().find_map(|m| {
        let mut base = m.chars().filter(|x| !is_mark(*x));
        match (base.next(), base.next()) {
            (Some(b), None) if b.is_ascii_alphabetic() => Some(b.to_ascii_lowercase()),
            _ => None,
        }
    })
}

fn is_mark(c: char) -> bool {
    matches!(c.general_category_group(), GeneralCategoryGroup::Mark)
}

/// Every assigned format character (general category Cf).
pub fn format_chars() -> &'static [char] {
    static TABLE: OnceLock<Vec<char>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0x80..SCAN_END)
            .chain(0xE_0000..0xE_0080)
            .filter_map(char::from_u32)
            .filter(|c| c.general_category() == GeneralCategory::Format)
            .collect()
    })
}

/// Whether `c` is refused by the policy according to this oracle: Cf, or NFKC yields ASCII, or
/// a case mapping is one ASCII letter. (The policy refuses more: other default-ignorables.)
pub fn must_refuse(c: char) -> bool {
    if c.is_ascii() {
        return false;
    }
    c.general_category() == GeneralCategory::Format
        || c.to_string().nfkc().any(|n| n.is_ascii())
        || case_letter(c).is_some()
}
