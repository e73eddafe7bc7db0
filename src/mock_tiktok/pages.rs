//! HTML and SVG the mock renders for browsers: the consent page, the pre-consent error page,
//! generated avatars and video covers (so demos work without internet access).

use std::fmt::Write as _;

use super::config::MockUser;
use super::ids;

/// One account offered in the consent page's user picker.
pub(crate) struct PickerUser {
    pub open_id: String,
    pub display_name: String,
    pub username: String,
    pub avatar_url: String,
}

pub(crate) struct ConsentView<'a> {
    pub request_id: &'a str,
    pub client_key: &'a str,
    pub redirect_uri: &'a str,
    pub scopes: &'a [String],
    pub users: &'a [PickerUser],
    pub selected_open_id: &'a str,
}

const STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;font-family:"Helvetica Neue",Arial,sans-serif;background:#f1f1f2;color:#161823}
header{background:#000;color:#fff;padding:14px 24px;font-weight:700;font-size:20px;letter-spacing:.5px}
header span{color:#25f4ee}header b{color:#fe2c55}
main{max-width:440px;margin:32px auto;background:#fff;border-radius:8px;padding:28px 32px;box-shadow:0 2px 12px rgba(0,0,0,.08)}
h1{font-size:22px;margin:0 0 8px}
p{line-height:1.45;color:#555}
.app{font-weight:700;color:#161823}
.who{display:flex;align-items:center;gap:12px;margin:18px 0}
.who img{width:48px;height:48px;border-radius:50%;background:#eee}
select{flex:1;padding:8px;border:1px solid #ddd;border-radius:4px;font-size:15px}
ul{list-style:none;padding:0;margin:16px 0;border-top:1px solid #eee}
li{padding:10px 0;border-bottom:1px solid #eee;display:flex;gap:10px;align-items:flex-start}
li small{display:block;color:#888;font-size:12px;margin-top:2px}
.buttons{display:flex;gap:12px;margin-top:20px}
button{flex:1;padding:12px;border-radius:4px;font-size:16px;font-weight:600;cursor:pointer}
#authorize{background:#fe2c55;color:#fff;border:none}
#cancel{background:#fff;color:#161823;border:1px solid #ddd}
.err{color:#fe2c55;font-family:monospace;font-size:16px;background:#fff0f3;padding:8px 12px;border-radius:4px}
footer{text-align:center;color:#999;font-size:12px;margin:12px}
"#;

pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n<title>{}</title>\n<style>{STYLE}</style>\n\
         </head>\n<body>\n<header><span>Tik</span><b>Tok</b> · mock</header>\n<main>\n{body}\n</main>\n\
         <footer>Mock TikTok for development and tests. Not affiliated with TikTok.</footer>\n</body>\n</html>\n",
        escape(title)
    )
}

fn scope_description(scope: &str) -> &'static str {
    match scope {
        "user.info.basic" => "Read your profile info (avatar, display name)",
        "user.info.profile" => "Read your additional profile info (bio, profile link, verification)",
        "user.info.stats" => "Read your profile stats (likes, followers, following, videos)",
        "video.list" => "Read your public videos on TikTok",
        _ => "Additional permission requested by the app",
    }
}

/// TikTok shows these before consent and never redirects back to the app; the wording
/// mirrors the real page so error-page greps written against TikTok keep working.
pub(crate) fn error_page(param: &str, detail: &str) -> String {
    let body = format!(
        "<h1>We couldn't log in with TikTok</h1>\n\
         <p>This may be due to specific app settings.</p>\n\
         <p>If you're a developer, correct the following and try again:</p>\n\
         <p class=\"err\" id=\"error\" data-error=\"{p}\">{p}</p>\n\
         <p id=\"detail\">{d}</p>",
        p = escape(param),
        d = escape(detail),
    );
    layout("TikTok - Authorization error", &body)
}

pub(crate) fn consent_page(view: &ConsentView<'_>) -> String {
    let mut body = String::new();
    let selected_avatar = view
        .users
        .iter()
        .find(|u| u.open_id == view.selected_open_id)
        .or_else(|| view.users.first())
        .map(|u| u.avatar_url.as_str())
        .unwrap_or("");
    let host = url::Url::parse(view.redirect_uri)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let _ = write!(
        body,
        "<h1><span class=\"app\">{app}</span> would like to access your TikTok account</h1>\n\
         <p>After you authorize, you will be redirected to <b>{host}</b>.</p>\n\
         <form method=\"post\" action=\"/v2/auth/authorize/\" id=\"consent\">\n\
         <input type=\"hidden\" name=\"request_id\" value=\"{rid}\">\n\
         <div class=\"who\"><img id=\"avatar\" alt=\"\" src=\"{avatar}\">\n\
         <label for=\"open_id\" hidden>Account</label>\n<select name=\"open_id\" id=\"open_id\">\n",
        app = escape(view.client_key),
        host = escape(&host),
        rid = escape(view.request_id),
        avatar = escape(selected_avatar),
    );
    for user in view.users {
        let selected = if user.open_id == view.selected_open_id {
            " selected"
        } else {
            ""
        };
        let _ = writeln!(
            body,
            "<option value=\"{}\"{selected}>{} (@{})</option>",
            escape(&user.open_id),
            escape(&user.display_name),
            escape(&user.username),
        );
    }
    body.push_str("</select></div>\n<p>This app will be able to:</p>\n<ul>\n");
    for scope in view.scopes {
        // A disabled checkbox is not submitted; the server grants user.info.basic regardless.
        let disabled = if scope == "user.info.basic" { " disabled" } else { "" };
        let _ = writeln!(
            body,
            "<li><input type=\"checkbox\" name=\"scope\" id=\"scope-{s}\" value=\"{s}\" checked{disabled}>\
             <label for=\"scope-{s}\">{s}<small>{d}</small></label></li>",
            s = escape(scope),
            d = escape(scope_description(scope)),
        );
    }
    body.push_str(
        "</ul>\n<div class=\"buttons\">\n\
         <button type=\"submit\" id=\"cancel\" name=\"action\" value=\"cancel\">Cancel</button>\n\
         <button type=\"submit\" id=\"authorize\" name=\"action\" value=\"authorize\">Authorize</button>\n\
         </div>\n</form>",
    );
    layout("TikTok - Authorize", &body)
}

fn palette(seed: &str) -> (&'static str, &'static str) {
    const COLORS: &[(&str, &str)] = &[
        ("#fe2c55", "#ffffff"),
        ("#25f4ee", "#161823"),
        ("#161823", "#ffffff"),
        ("#7b61ff", "#ffffff"),
        ("#ffb400", "#161823"),
    ];
    let idx = usize::from(ids::sha256(seed.as_bytes())[0]) % COLORS.len();
    COLORS[idx]
}

/// Initials of the display name (first letter of up to two words), falling back to the handle.
fn initials(user: &MockUser) -> String {
    let from_name: String = user
        .display_name
        .split_whitespace()
        .filter_map(|w| w.chars().find(|c| c.is_alphanumeric()))
        .take(2)
        .flat_map(char::to_uppercase)
        .collect();
    if from_name.is_empty() {
        user.username.chars().take(1).flat_map(char::to_uppercase).collect()
    } else {
        from_name
    }
}

pub(crate) fn avatar_svg(user: &MockUser) -> String {
    let (bg, fg) = palette(&user.open_id);
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"168\" height=\"168\" viewBox=\"0 0 168 168\">\
         <circle cx=\"84\" cy=\"84\" r=\"84\" fill=\"{bg}\"/>\
         <text x=\"84\" y=\"84\" dy=\".35em\" text-anchor=\"middle\" font-family=\"Helvetica,Arial,sans-serif\" \
         font-size=\"64\" font-weight=\"700\" fill=\"{fg}\">{}</text></svg>",
        escape(&initials(user))
    )
}

pub(crate) fn cover_svg(video_id: &str) -> String {
    let (bg, fg) = palette(video_id);
    let tail: String = video_id
        .chars()
        .rev()
        .take(6)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"360\" height=\"640\" viewBox=\"0 0 360 640\">\
         <rect width=\"360\" height=\"640\" fill=\"{bg}\"/>\
         <polygon points=\"150,280 150,360 215,320\" fill=\"{fg}\" opacity=\".85\"/>\
         <text x=\"180\" y=\"600\" text-anchor=\"middle\" font-family=\"Helvetica,Arial,sans-serif\" \
         font-size=\"22\" fill=\"{fg}\">#{}</text></svg>",
        escape(&tail)
    )
}
