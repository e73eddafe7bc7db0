//! TikTok's answers (`nini_auth::tiktok::client::parse_*`): token, revoke, user info and video
//! list bodies never panic whatever the bytes or JSON, and a success needs a 2xx status and
//! what the caller relies on (an access token; the envelope's `ok`).

use nini_auth::tiktok::client::{
    parse_envelope, parse_revoke_response, parse_token_response, parse_user_info, parse_video_page, TikTokError,
};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Number, Value};

use crate::check;

/// Keys TikTok's bodies use, so that generated objects come close to real ones.
const KEYS: &[&str] = &[
    "data",
    "error",
    "code",
    "message",
    "log_id",
    "user",
    "open_id",
    "union_id",
    "display_name",
    "avatar_url",
    "is_verified",
    "follower_count",
    "videos",
    "id",
    "create_time",
    "title",
    "duration",
    "view_count",
    "cursor",
    "has_more",
    "access_token",
    "refresh_token",
    "expires_in",
    "refresh_expires_in",
    "scope",
    "error_description",
    "ok",
];

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        select(KEYS).prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((select(KEYS), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect::<Map<_, _>>())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => json().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        1 => prop::collection::vec(any::<u8>(), 0..256),
        1 => json().prop_flat_map(|v| {
            // A real body cut short, as a dropped connection leaves it.
            let bytes = serde_json::to_vec(&v).unwrap_or_default();
            let len = bytes.len();
            (Just(bytes), 0..=len).prop_map(|(b, cut)| b[..cut].to_vec())
        }),
    ]
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => select(&[200u16, 201, 204, 400, 401, 403, 404, 429, 500, 502, 503][..]),
        1 => any::<u16>(),
    ]
}

fn is_2xx(status: u16) -> bool {
    (200..300).contains(&status)
}

/// Errors these parsers may give: never a transport error or a timeout, and TikTok's own code
/// is never reported as a failure when it is `ok`.
fn plausible(e: &TikTokError, status: u16) -> Result<(), TestCaseError> {
    match e {
        TikTokError::Api { code, status: s, .. } => {
            prop_assert!(code != "ok", "an `ok` envelope reported as error");
            prop_assert_eq!(*s, status);
        }
        TikTokError::OAuth { status: s, .. } | TikTokError::BadResponse { status: s } => prop_assert_eq!(*s, status),
        other => prop_assert!(false, "unexpected error from a parser: {other:?}"),
    }
    Ok(())
}

#[test]
fn answers_never_panic_and_success_needs_2xx() {
    check(
        "tiktok::answers_never_panic_and_success_needs_2xx",
        (status(), body()),
        |(status, body)| {
            match parse_token_response(status, &body) {
                Ok(t) => {
                    prop_assert!(is_2xx(status));
                    prop_assert!(!t.access_token.is_empty());
                }
                Err(e) => plausible(&e, status)?,
            }
            match parse_revoke_response(status, &body) {
                Ok(()) => prop_assert!(is_2xx(status)),
                Err(e) => plausible(&e, status)?,
            }
            match parse_user_info(status, &body) {
                Ok(_) => prop_assert!(is_2xx(status)),
                Err(e) => plausible(&e, status)?,
            }
            match parse_video_page(status, &body) {
                Ok(page) => {
                    prop_assert!(is_2xx(status));
                    prop_assert!(page.videos.len() <= body.len());
                }
                Err(e) => plausible(&e, status)?,
            }
            match parse_envelope::<Value>(status, &body) {
                Ok(_) => prop_assert!(is_2xx(status)),
                Err(e) => plausible(&e, status)?,
            }
            Ok(())
        },
    );
}

/// Well-formed envelopes around generated data: `ok` gives the data back on a 2xx.
#[test]
fn ok_envelopes_give_their_data() {
    check(
        "tiktok::ok_envelopes_give_their_data",
        (json(), status()),
        |(data, status)| {
            let body = serde_json::json!({"data": data, "error": {"code": "ok", "message": "", "log_id": "x"}});
            let bytes = serde_json::to_vec(&body).unwrap_or_default();
            // What JSON can carry: serde_json's float parsing may differ in the last digit.
            let data = serde_json::from_slice::<Value>(&bytes).map_or(Value::Null, |v| v["data"].clone());
            match parse_envelope::<Value>(status, &bytes) {
                Ok(v) => {
                    prop_assert!(is_2xx(status));
                    prop_assert_eq!(v, data);
                }
                // `data: null` is no data; anything else only fails off a 2xx.
                Err(TikTokError::BadResponse { .. }) => prop_assert!(!is_2xx(status) || data.is_null()),
                Err(e) => prop_assert!(false, "{e:?}"),
            }
            Ok(())
        },
    );
}
