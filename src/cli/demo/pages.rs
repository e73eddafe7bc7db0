//! The demo app's pages, in Spanish and English (`?lang=`, then `Accept-Language`, like the
//! sidecar's own pages): the landing page, the dashboard (profile card, "Sync from TikTok",
//! videos and streak: filled in by `app.js` from the sidecar's endpoints), the signed-identity
//! page (checked on the server, `identity`), and two pages behind the demo's
//! `[[routes.rules]]`. Every page is built from the identity headers the sidecar injected;
//! every dynamic value is escaped. Everything is served locally: no CDN, no web fonts.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::app::{display_name, header as h};
use super::identity;
use crate::auth::pages::{escape, negotiate, Lang};

/// Behind the demo's `creators` rule (verified = true).
pub const CREATORS_PATH: &str = "/dashboard/creators";
/// Behind the demo's `team` rule (Diego's open_id only).
pub const TEAM_PATH: &str = "/dashboard/team";
/// The signed-identity check.
pub const IDENTITY_PATH: &str = "/dashboard/identity";

const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// The page's script and style (`/demo-assets/…`), answered whatever the `Accept` header.
pub fn asset(path: &str) -> Option<Response> {
    let (body, ctype) = match path {
        "/demo-assets/app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "/demo-assets/app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return None,
    };
    Some(
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, ctype), (header::CACHE_CONTROL, "no-cache")],
            body,
        )
            .into_response(),
    )
}

struct T {
    dashboard: &'static str,
    identity: &'static str,
    creators: &'static str,
    team: &'static str,
    profile: &'static str,
    devices: &'static str,
    signout: &'static str,
    verified: &'static str,
    followers: &'static str,
    likes: &'static str,
    videos: &'static str,
    streak: &'static str,
    sync: &'static str,
    your_videos: &'static str,
    not_synced: &'static str,
    landing_lead: &'static str,
    open_dashboard: &'static str,
    hello: &'static str,
    headers_note: &'static str,
    identity_lead: &'static str,
    identity_ok: &'static str,
    identity_bad: &'static str,
    claims: &'static str,
    creators_lead: &'static str,
    team_lead: &'static str,
    rule: &'static str,
    other_lang: &'static str,
}

const ES: T = T {
    dashboard: "Panel",
    identity: "Identidad firmada",
    creators: "Creadores",
    team: "Equipo",
    profile: "Perfil",
    devices: "Tus dispositivos",
    signout: "Cerrar sesión",
    verified: "Verificada",
    followers: "Seguidores",
    likes: "Me gusta",
    videos: "Videos",
    streak: "Racha",
    sync: "Sincronizar con TikTok",
    your_videos: "Tus videos de TikTok",
    not_synced: "Aún no has sincronizado tus datos de TikTok.",
    landing_lead: "Una app de ejemplo detrás de nini-auth: nunca ve un token, solo las cabeceras de identidad que nini-auth le envía.",
    open_dashboard: "Abrir tu panel",
    hello: "Hola",
    headers_note: "Este panel se construye con las cabeceras X-Nini-* que inyecta nini-auth; la app nunca ve un token de TikTok.",
    identity_lead: "La app verifica X-Nini-Identity (un JWT EdDSA) con las claves públicas de /api/auth/jwks.json, sin confiar en la red.",
    identity_ok: "Firma verificada con la clave",
    identity_bad: "No se pudo verificar",
    claims: "Claims",
    creators_lead: "Solo las cuentas verificadas de TikTok entran aquí.",
    team_lead: "Solo el equipo de NINI entra aquí (por open_id).",
    rule: "Regla",
    other_lang: "English",
};

const EN: T = T {
    dashboard: "Dashboard",
    identity: "Signed identity",
    creators: "Creators",
    team: "Team",
    profile: "Profile",
    devices: "Your devices",
    signout: "Sign out",
    verified: "Verified",
    followers: "Followers",
    likes: "Likes",
    videos: "Videos",
    streak: "Streak",
    sync: "Sync from TikTok",
    your_videos: "Your TikTok videos",
    not_synced: "You have not synced your TikTok data yet.",
    landing_lead: "A sample app behind nini-auth: it never sees a token, only the identity headers nini-auth sends it.",
    open_dashboard: "Open your dashboard",
    hello: "Hi",
    headers_note: "This dashboard is built from the X-Nini-* headers nini-auth injects; the app never sees a TikTok token.",
    identity_lead: "The app verifies X-Nini-Identity (an EdDSA JWT) with the public keys at /api/auth/jwks.json instead of trusting the network.",
    identity_ok: "Signature verified with key",
    identity_bad: "Could not verify",
    claims: "Claims",
    creators_lead: "Only verified TikTok accounts get in here.",
    team_lead: "Only the NINI team gets in here (by open_id).",
    rule: "Rule",
    other_lang: "Español",
};

/// Strings `app.js` needs, per language.
fn script_strings(lang: Lang) -> serde_json::Value {
    match lang {
        Lang::Es => json!({
            "lang": "es", "syncing": "Sincronizando…", "synced": "Sincronizado: {n} videos.",
            "cooldown": "Acabas de sincronizar; inténtalo de nuevo en {s} s.", "failed": "La sincronización falló ({e}).",
            "lastSynced": "Última sincronización: {t}", "views": "{n} vistas", "days": "{n} días seguidos publicando",
            "noVideos": "Sin videos públicos.", "never": "Aún no has sincronizado tus datos de TikTok."
        }),
        Lang::En => json!({
            "lang": "en", "syncing": "Syncing…", "synced": "Synced: {n} videos.",
            "cooldown": "You just synced; try again in {s} s.", "failed": "The sync failed ({e}).",
            "lastSynced": "Last synced: {t}", "views": "{n} views", "days": "{n}-day posting streak",
            "noVideos": "No public videos.", "never": "You have not synced your TikTok data yet."
        }),
    }
}

fn text(lang: Lang) -> &'static T {
    match lang {
        Lang::Es => &ES,
        Lang::En => &EN,
    }
}

/// What the identity headers say about the signed-in user.
struct User {
    name: String,
    avatar: Option<String>,
    verified: bool,
}

fn user(headers: &HeaderMap) -> Option<User> {
    h(headers, "x-nini-user-id")?;
    Some(User {
        name: display_name(headers).unwrap_or_default(),
        avatar: h(headers, "x-nini-avatar-url").map(String::from),
        verified: h(headers, "x-nini-verified") == Some("true"),
    })
}

/// The page for a browser GET of `path`, or None when the app has no such page (the caller
/// echoes the request instead).
pub async fn page(path: &str, query: Option<&str>, headers: &HeaderMap) -> Option<Response> {
    let lang_param = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "lang")
            .map(|(_, v)| v.into_owned())
    });
    let lang = negotiate(lang_param.as_deref(), h(headers, "accept-language"));
    let t = text(lang);
    let who = user(headers);
    let (title, body) = match (path, &who) {
        ("/", None) => (
            "NINI".to_string(),
            format!(
                "<section class=\"hero card\"><div class=\"logo big\">NINI</div><p>{}</p>\
                 <a class=\"btn primary\" id=\"go-dashboard\" href=\"/dashboard\">{}</a></section>",
                t.landing_lead, t.open_dashboard
            ),
        ),
        ("/", Some(u)) => (
            "NINI".to_string(),
            format!(
                "<section class=\"hero card\"><div class=\"logo big\">NINI</div><p>{} <b>{}</b>.</p>\
                 <a class=\"btn primary\" id=\"go-dashboard\" href=\"/dashboard\">{}</a></section>",
                t.hello,
                escape(&u.name),
                t.open_dashboard
            ),
        ),
        ("/dashboard" | "/profile", Some(u)) => (t.dashboard.to_string(), dashboard(t, u)),
        (IDENTITY_PATH, Some(_)) => (t.identity.to_string(), identity_page(t, headers).await),
        (CREATORS_PATH, Some(_)) => (
            t.creators.to_string(),
            locked(t, "🌟", t.creators, t.creators_lead, "creators", "verified = true"),
        ),
        (TEAM_PATH, Some(_)) => (
            t.team.to_string(),
            locked(t, "🛠️", t.team, t.team_lead, "team", "open_ids = [\"…\"]"),
        ),
        ("/dashboard" | "/profile" | IDENTITY_PATH | CREATORS_PATH | TEAM_PATH, None) => (
            "NINI".to_string(),
            "<section class=\"card\"><h1>Not signed in</h1><p>nini-auth should never let this page through \
             without a session.</p></section>"
                .to_string(),
        ),
        _ => return None,
    };
    let html = layout(lang, path, &title, who.as_ref(), &body);
    Some(
        (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "private, no-store"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: http: https:; \
                     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
                ),
            ],
            html,
        )
            .into_response(),
    )
}

fn avatar(u: &User, class: &str) -> String {
    match &u.avatar {
        Some(a) => format!("<img class=\"{class}\" src=\"{}\" alt=\"\">", escape(a)),
        None => format!(
            "<span class=\"{class} initials\">{}</span>",
            escape(&u.name.chars().next().map(String::from).unwrap_or_default())
        ),
    }
}

fn layout(lang: Lang, path: &str, title: &str, who: Option<&User>, body: &str) -> String {
    let t = text(lang);
    let nav_link = |href: &str, label: &str, id: &str| {
        let current = if href == path { " aria-current=\"page\"" } else { "" };
        format!("<a id=\"{id}\" href=\"{href}\"{current}>{label}</a>")
    };
    let account = match who {
        Some(u) => format!(
            "<nav class=\"links\">{}{}{}{}</nav>\
             <div class=\"account\"><button id=\"avatar-button\" aria-haspopup=\"menu\" aria-expanded=\"false\">{}\
             <span class=\"chev\">▾</span></button>\
             <div id=\"menu\" role=\"menu\" hidden><div class=\"menu-head\"><b>{}</b></div>\
             <a role=\"menuitem\" id=\"menu-profile\" href=\"/dashboard#profile\">{}</a>\
             <a role=\"menuitem\" id=\"menu-devices\" href=\"/api/auth/devices?lang={}\">{}</a>\
             <a role=\"menuitem\" id=\"menu-signout\" href=\"/api/auth/signout\">{}</a></div></div>",
            nav_link("/dashboard", t.dashboard, "nav-dashboard"),
            nav_link(IDENTITY_PATH, t.identity, "nav-identity"),
            nav_link(CREATORS_PATH, &format!("🌟 {}", t.creators), "nav-creators"),
            nav_link(TEAM_PATH, &format!("🔒 {}", t.team), "nav-team"),
            avatar(u, "avatar"),
            escape(&u.name),
            t.profile,
            lang.code(),
            t.devices,
            t.signout,
        ),
        None => String::new(),
    };
    let other = match lang {
        Lang::Es => "en",
        Lang::En => "es",
    };
    format!(
        "<!doctype html>\n<html lang=\"{}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{} · NINI demo</title><link rel=\"stylesheet\" href=\"/demo-assets/app.css\">\
         <script id=\"i18n\" type=\"application/json\">{}</script>\
         <script src=\"/demo-assets/app.js\" defer></script></head>\
         <body><header class=\"top\"><a class=\"logo\" href=\"/\">NINI</a>{account}</header>\
         <main>{body}</main><footer><a href=\"?lang={other}\">{}</a> · nini-auth demo</footer></body></html>\n",
        lang.code(),
        escape(title),
        // `</` cannot appear in serde_json output of these fixed strings; escape it anyway.
        script_strings(lang).to_string().replace("</", "<\\/"),
        t.other_lang,
    )
}

fn dashboard(t: &T, u: &User) -> String {
    let stat = |id: &str, label: &str| format!("<div><dt>{label}</dt><dd id=\"{id}\">—</dd></div>");
    format!(
        "<section class=\"card profile\" id=\"profile\">{}<div class=\"who\"><h1 id=\"user-name\">{}</h1>\
         <p class=\"muted\"><span id=\"username\"></span> <span id=\"verified-badge\" class=\"badge\"{}>✓ {}</span></p>\
         <p class=\"muted small\">{}</p></div>\
         <dl class=\"stats\">{}{}{}{}</dl></section>\
         <section class=\"card\"><div class=\"row\"><h2>{}</h2>\
         <button id=\"sync\" class=\"btn primary\">{}</button></div>\
         <p id=\"sync-status\" class=\"muted\" role=\"status\">{}</p>\
         <p id=\"streak\" class=\"streak\" hidden>🔥 <span id=\"streak-text\"></span></p>\
         <div id=\"videos\" class=\"grid\"></div></section>",
        avatar(u, "avatar-lg"),
        escape(&u.name),
        if u.verified { "" } else { " hidden" },
        t.verified,
        t.headers_note,
        stat("stat-followers", t.followers),
        stat("stat-likes", t.likes),
        stat("stat-videos", t.videos),
        stat("stat-streak", t.streak),
        t.your_videos,
        t.sync,
        t.not_synced,
    )
}

async fn identity_page(t: &T, headers: &HeaderMap) -> String {
    // The demo reads the issuer and the key URL from the sidecar's X-Forwarded-Proto/Host
    // because its port is only known at start and it listens on loopback behind the sidecar
    // (which replaces client copies of both). A real app configures them (docs/upstream.md):
    // taken from request headers, an app reached directly would fetch keys from, and accept
    // tokens issued by, any host a client names.
    let proto = h(headers, "x-forwarded-proto").unwrap_or("http");
    let host = h(headers, "x-forwarded-host").unwrap_or("localhost");
    let origin = format!("{proto}://{host}");
    let jwks_url = format!("{origin}/api/auth/jwks.json");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let checked = identity::check(h(headers, "x-nini-identity"), &jwks_url, &origin, "nini-app", now).await;
    let status = match &checked.result {
        Ok(kid) => format!(
            "<p id=\"jwt-status\" class=\"ok\" data-ok=\"true\">✓ {} <code id=\"jwt-kid\">{}</code></p>",
            t.identity_ok,
            escape(kid)
        ),
        Err(why) => format!(
            "<p id=\"jwt-status\" class=\"bad\" data-ok=\"false\">✗ {}: {}</p>",
            t.identity_bad,
            escape(why)
        ),
    };
    let rows = |v: &Option<serde_json::Value>| -> String {
        v.as_ref()
            .and_then(|v| v.as_object())
            .map(|o| {
                o.iter()
                    .map(|(k, v)| {
                        let shown = match (k.as_str(), v.as_i64()) {
                            ("iat" | "nbf" | "exp", Some(n)) => time::OffsetDateTime::from_unix_timestamp(n)
                                .ok()
                                .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
                                .map(|d| format!("{n} ({d})"))
                                .unwrap_or_else(|| v.to_string()),
                            _ => v.as_str().map(String::from).unwrap_or_else(|| v.to_string()),
                        };
                        format!(
                            "<tr><th>{}</th><td data-claim=\"{}\">{}</td></tr>",
                            escape(k),
                            escape(k),
                            escape(&shown)
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    format!(
        "<section class=\"card\"><h1>{}</h1><p class=\"muted\">{}</p>{status}\
         <p class=\"small muted\">JWKS: <code>{}</code></p>\
         <h2>{}</h2><table class=\"claims\" id=\"claims\">{}</table>\
         <h2>JOSE</h2><table class=\"claims\">{}</table></section>",
        t.identity,
        t.identity_lead,
        escape(&jwks_url),
        t.claims,
        rows(&checked.claims),
        rows(&checked.header),
    )
}

fn locked(t: &T, icon: &str, title: &str, lead: &str, rule: &str, requirement: &str) -> String {
    format!(
        "<section class=\"card hero\" id=\"locked-page\"><div class=\"icon\">{icon}</div><h1>{}</h1><p>{}</p>\
         <p class=\"small muted\">{}: <code>{}</code> · <code>{}</code></p></section>",
        escape(title),
        escape(lead),
        t.rule,
        escape(rule),
        escape(requirement)
    )
}
