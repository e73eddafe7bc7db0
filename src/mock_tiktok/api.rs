//! Display API side of the mock: `GET /v2/user/info/`, `POST /v2/video/list/` and
//! `POST /v2/video/query/`, with bearer auth, field/scope checks and the `error.code` envelope.

use axum::http::StatusCode;
use serde_json::{json, Map, Value};

use super::config::{MockVideo, ScopeErrorCode};
use super::ids;
use super::pages::escape;
use super::server::{api_error, api_ok, rate_limited, Inner, Reply, Req, RATE_LIMIT_MESSAGE};
use super::state::Grant;
use super::Endpoint;

const TOKEN_INVALID: &str = "Access token is invalid, please refresh token and retry";
const SCOPE_NOT_AUTHORIZED: &str = "The user did not authorize the scope required for completing this request.";
const VIDEO_SCOPE: &str = "video.list";
const MAX_PAGE: i64 = 20;
const DEFAULT_PAGE: i64 = 10;
/// TikTok's signed CDN links (covers) expire after about six hours.
const COVER_TTL_S: i64 = 6 * 3_600;

/// §5.1 field → scope map.
const USER_FIELDS: &[(&str, &str)] = &[
    ("open_id", "user.info.basic"),
    ("union_id", "user.info.basic"),
    ("avatar_url", "user.info.basic"),
    ("avatar_url_100", "user.info.basic"),
    ("avatar_large_url", "user.info.basic"),
    ("display_name", "user.info.basic"),
    ("bio_description", "user.info.profile"),
    ("profile_deep_link", "user.info.profile"),
    ("is_verified", "user.info.profile"),
    ("username", "user.info.profile"),
    ("follower_count", "user.info.stats"),
    ("following_count", "user.info.stats"),
    ("likes_count", "user.info.stats"),
    ("video_count", "user.info.stats"),
];

const VIDEO_FIELDS: &[&str] = &[
    "id",
    "create_time",
    "cover_image_url",
    "share_url",
    "video_description",
    "duration",
    "height",
    "width",
    "title",
    "embed_html",
    "embed_link",
    "like_count",
    "comment_count",
    "share_count",
    "view_count",
    "is_aigc",
];

type Outcome = Result<Reply, Reply>;

fn invalid_params(inner: &Inner, req: &Req, message: &str) -> Reply {
    api_error(inner, req, StatusCode::BAD_REQUEST, "invalid_params", message)
}

/// Any scheme other than Bearer (any case), or an unusable token, is `access_token_invalid`.
fn authenticate(inner: &Inner, req: &Req) -> Result<Grant, Reply> {
    let token = req
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty());
    let now = inner.now();
    let grant = token.and_then(|t| inner.state().authenticate(now, t));
    grant.ok_or_else(|| {
        api_error(
            inner,
            req,
            StatusCode::UNAUTHORIZED,
            "access_token_invalid",
            TOKEN_INVALID,
        )
    })
}

fn check_rate(inner: &Inner, req: &Req, endpoint: Endpoint, client_key: &str) -> Result<(), Reply> {
    let now_ms = inner.now_ms();
    let allowed = inner.state().rate_allow(now_ms, endpoint, client_key);
    if allowed {
        return Ok(());
    }
    Err(rate_limited(
        inner,
        api_error(
            inner,
            req,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            RATE_LIMIT_MESSAGE,
        ),
    ))
}

/// `fields` is required, comma-separated, and every name must be known to the endpoint.
fn parse_fields<'a>(inner: &Inner, req: &'a Req, known: impl Fn(&str) -> bool) -> Result<Vec<&'a str>, Reply> {
    let Some(raw) = req.query_first("fields").filter(|f| !f.is_empty()) else {
        return Err(invalid_params(inner, req, "The fields parameter is required."));
    };
    let mut fields: Vec<&str> = Vec::new();
    for name in raw.split(',') {
        if !known(name) {
            return Err(invalid_params(
                inner,
                req,
                &format!("Invalid field in fields: \"{name}\"."),
            ));
        }
        if !fields.contains(&name) {
            fields.push(name);
        }
    }
    Ok(fields)
}

fn has_scope(grant: &Grant, scope: &str) -> bool {
    grant.scopes.iter().any(|s| s == scope)
}

pub(crate) fn user_info(inner: &Inner, req: &Req) -> Reply {
    user_info_outcome(inner, req).unwrap_or_else(|r| r)
}

fn user_info_outcome(inner: &Inner, req: &Req) -> Outcome {
    let grant = authenticate(inner, req)?;
    check_rate(inner, req, Endpoint::UserInfo, &grant.client_key)?;
    let scope_of = |field: &str| USER_FIELDS.iter().find(|(f, _)| *f == field).map(|(_, s)| *s);
    let fields = parse_fields(inner, req, |f| scope_of(f).is_some())?;
    let missing: Vec<&str> = fields
        .iter()
        .copied()
        .filter(|f| scope_of(f).is_some_and(|s| !has_scope(&grant, s)))
        .collect();
    if !missing.is_empty() {
        let mode = inner.state().config.scope_error_code_for_fields;
        return Err(match mode {
            ScopeErrorCode::ScopePermissionMissed => api_error(
                inner,
                req,
                StatusCode::BAD_REQUEST,
                "scope_permission_missed",
                &format!("Some fields need additional scopes: {}", missing.join(",")),
            ),
            ScopeErrorCode::ScopeNotAuthorized => api_error(
                inner,
                req,
                StatusCode::UNAUTHORIZED,
                "scope_not_authorized",
                SCOPE_NOT_AUTHORIZED,
            ),
        });
    }
    let user = inner.state().config.user(&grant.open_id).cloned();
    // The account is gone (set_user replaced the list): its tokens are worthless too.
    let Some(user) = user else {
        return Err(api_error(
            inner,
            req,
            StatusCode::UNAUTHORIZED,
            "access_token_invalid",
            TOKEN_INVALID,
        ));
    };
    let avatar = user
        .avatar_url
        .clone()
        .unwrap_or_else(|| inner.avatar_url(&user.open_id));
    let mut out = Map::new();
    for field in fields {
        let value = match field {
            "open_id" => json!(user.open_id),
            "union_id" => json!(user.union_id),
            "avatar_url" | "avatar_url_100" | "avatar_large_url" => json!(avatar),
            "display_name" => json!(user.display_name),
            "bio_description" => json!(user.bio_description),
            "profile_deep_link" => json!(user.profile_deep_link),
            "is_verified" => json!(user.is_verified),
            "username" => json!(user.username),
            "follower_count" => json!(user.follower_count),
            "following_count" => json!(user.following_count),
            "likes_count" => json!(user.likes_count),
            "video_count" => json!(user.video_count),
            _ => continue,
        };
        out.insert(field.to_owned(), value);
    }
    Ok(api_ok(req, json!({ "user": out })))
}

/// What the video endpoints share once the request passed every common check.
struct VideoRequest<'a> {
    grant: Grant,
    body: Map<String, Value>,
    fields: Vec<&'a str>,
}

/// Shared front half of the video endpoints: auth, rate limit, scope, JSON body, fields.
fn video_preamble<'a>(inner: &Inner, req: &'a Req, endpoint: Endpoint) -> Result<VideoRequest<'a>, Reply> {
    let grant = authenticate(inner, req)?;
    check_rate(inner, req, endpoint, &grant.client_key)?;
    if !has_scope(&grant, VIDEO_SCOPE) {
        return Err(api_error(
            inner,
            req,
            StatusCode::UNAUTHORIZED,
            "scope_not_authorized",
            SCOPE_NOT_AUTHORIZED,
        ));
    }
    if !req.content_type_is("application/json") {
        return Err(invalid_params(inner, req, "Content-Type must be application/json."));
    }
    let body = match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(map)) => map,
        _ => return Err(invalid_params(inner, req, "The request body must be a JSON object.")),
    };
    let fields = parse_fields(inner, req, |f| VIDEO_FIELDS.contains(&f))?;
    Ok(VideoRequest { grant, body, fields })
}

/// Absent and `null` mean "not sent"; anything but an integer is invalid.
fn optional_int(body: &Map<String, Value>, key: &str) -> Result<Option<i64>, ()> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or(()),
    }
}

/// Public videos of the grant's user, newest first (ties broken by id so paging is stable).
fn public_videos(inner: &Inner, grant: &Grant) -> Vec<MockVideo> {
    let st = inner.state();
    let mut videos: Vec<MockVideo> = st
        .config
        .user(&grant.open_id)
        .map(|u| u.videos.iter().filter(|v| v.is_public).cloned().collect())
        .unwrap_or_default();
    videos.sort_by(|a, b| b.create_time.cmp(&a.create_time).then_with(|| b.id.cmp(&a.id)));
    videos
}

pub(crate) fn video_list(inner: &Inner, req: &Req) -> Reply {
    video_list_outcome(inner, req).unwrap_or_else(|r| r)
}

fn video_list_outcome(inner: &Inner, req: &Req) -> Outcome {
    let VideoRequest { grant, body, fields } = video_preamble(inner, req, Endpoint::VideoList)?;
    let clamp = inner.state().config.clamp_max_count;
    let max_count = match optional_int(&body, "max_count") {
        Ok(None) => DEFAULT_PAGE,
        Ok(Some(n)) if (1..=MAX_PAGE).contains(&n) => n,
        Ok(Some(n)) if clamp => n.clamp(1, MAX_PAGE),
        _ => {
            return Err(invalid_params(
                inner,
                req,
                "max_count must be an integer between 1 and 20.",
            ))
        }
    };
    let Ok(cursor) = optional_int(&body, "cursor") else {
        return Err(invalid_params(
            inner,
            req,
            "cursor must be a UTC Unix timestamp in milliseconds.",
        ));
    };
    let older: Vec<MockVideo> = public_videos(inner, &grant)
        .into_iter()
        .filter(|v| cursor.is_none_or(|c| v.create_time.saturating_mul(1000) < c))
        .collect();
    let take = usize::try_from(max_count).unwrap_or(0);
    let has_more = older.len() > take;
    let page: Vec<&MockVideo> = older.iter().take(take).collect();
    let next_cursor = page
        .last()
        .map(|v| v.create_time.saturating_mul(1000))
        .or(cursor)
        .unwrap_or(0);
    let now = inner.now();
    let videos: Vec<Value> = page.iter().map(|v| video_json(inner, v, &fields, now)).collect();
    Ok(api_ok(
        req,
        json!({ "videos": videos, "cursor": next_cursor, "has_more": has_more }),
    ))
}

pub(crate) fn video_query(inner: &Inner, req: &Req) -> Reply {
    video_query_outcome(inner, req).unwrap_or_else(|r| r)
}

fn video_query_outcome(inner: &Inner, req: &Req) -> Outcome {
    let VideoRequest { grant, body, fields } = video_preamble(inner, req, Endpoint::VideoQuery)?;
    let ids: Option<Vec<&str>> = body
        .get("filters")
        .and_then(|f| f.get("video_ids"))
        .and_then(Value::as_array)
        .and_then(|list| list.iter().map(Value::as_str).collect());
    let Some(wanted) = ids.filter(|l| (1..=MAX_PAGE as usize).contains(&l.len())) else {
        return Err(invalid_params(
            inner,
            req,
            "filters.video_ids must be a list of 1 to 20 video id strings.",
        ));
    };
    let now = inner.now();
    let videos: Vec<Value> = public_videos(inner, &grant)
        .iter()
        .filter(|v| wanted.contains(&v.id.as_str()))
        .map(|v| video_json(inner, v, &fields, now))
        .collect();
    Ok(api_ok(req, json!({ "videos": videos })))
}

fn video_json(inner: &Inner, video: &MockVideo, fields: &[&str], now: i64) -> Value {
    let mut out = Map::new();
    for field in fields {
        let value = match *field {
            "id" => json!(video.id),
            "create_time" => json!(video.create_time),
            "cover_image_url" => json!(video
                .cover_image_url
                .clone()
                .unwrap_or_else(|| cover_url(inner, &video.id, now))),
            "share_url" => json!(video.share_url),
            "video_description" => json!(video.video_description),
            "duration" => json!(video.duration),
            "height" => json!(1920),
            "width" => json!(1080),
            "title" => json!(video.title),
            "embed_html" => json!(embed_html(video)),
            "embed_link" => json!(video.embed_link),
            "like_count" => json!(video.like_count),
            "comment_count" => json!(video.comment_count),
            "share_count" => json!(video.share_count),
            "view_count" => json!(video.view_count),
            "is_aigc" => json!(false),
            _ => continue,
        };
        out.insert((*field).to_owned(), value);
    }
    Value::Object(out)
}

fn cover_url(inner: &Inner, id: &str, now: i64) -> String {
    let expires = now + COVER_TTL_S;
    let digest = ids::sha256(format!("{id}:{expires}").as_bytes());
    let signature = ids::base64url(&digest[..18]);
    format!(
        "{}/__mock/cover/{}.svg?x-expires={expires}&x-signature={signature}",
        inner.base_url,
        ids::encode_query_value(id)
    )
}

fn embed_html(video: &MockVideo) -> String {
    format!(
        "<blockquote class=\"tiktok-embed\" cite=\"{url}\" data-video-id=\"{id}\" \
         style=\"max-width: 605px;min-width: 325px;\"><section><a target=\"_blank\" \
         href=\"{url}\">{title}</a></section></blockquote>\
         <script async src=\"https://www.tiktok.com/embed.js\"></script>",
        url = escape(&video.share_url),
        id = escape(&video.id),
        title = escape(&video.title),
    )
}
