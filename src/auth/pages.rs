//! The HTML the sidecar shows people: sign-in, sign-out confirmation, error and devices
//! pages, in Spanish and English. Every dynamic value goes through `escape`.

/// Page language: `?lang=` wins, then `Accept-Language` (first supported tag by q-value),
/// then Spanish, the NINI platform's home language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Es,
    En,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::Es => "es",
            Lang::En => "en",
        }
    }

    fn from_tag(tag: &str) -> Option<Lang> {
        let primary = tag.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        match primary.as_str() {
            "es" => Some(Lang::Es),
            "en" => Some(Lang::En),
            _ => None,
        }
    }
}

pub fn negotiate(lang_param: Option<&str>, accept_language: Option<&str>) -> Lang {
    if let Some(l) = lang_param.and_then(Lang::from_tag) {
        return l;
    }
    let mut best: Option<(f32, Lang)> = None;
    for part in accept_language.unwrap_or("").split(',') {
        let mut it = part.split(';');
        let tag = it.next().unwrap_or("");
        let q = it
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if let Some(l) = Lang::from_tag(tag) {
            if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, l));
            }
        }
    }
    best.map(|(_, l)| l).unwrap_or(Lang::Es)
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

struct Text {
    signin_title: &'static str,
    signin_lead: &'static str,
    continue_tiktok: &'static str,
    signout_title: &'static str,
    signout_lead: &'static str,
    signout_button: &'static str,
    cancel: &'static str,
    error_title: &'static str,
    request_id: &'static str,
    try_again: &'static str,
    home: &'static str,
    other_lang: &'static str,
    devices_title: &'static str,
    devices_lead: &'static str,
    this_device: &'static str,
    other_devices: &'static str,
    no_other_devices: &'static str,
    unknown_device: &'static str,
    end_session: &'static str,
    end_others: &'static str,
    signed_in_on: &'static str,
    active_now: &'static str,
    last_active: &'static str,
    never_seen: &'static str,
}

const ES: Text = Text {
    signin_title: "Inicia sesión",
    signin_lead: "Usa tu cuenta de TikTok para entrar en NINI.",
    continue_tiktok: "Continuar con TikTok",
    signout_title: "Cerrar sesión",
    signout_lead: "¿Cerrar la sesión en este dispositivo? Tus otros dispositivos siguen conectados; \
                   al cerrar la última sesión desconectamos tu cuenta de TikTok de esta aplicación.",
    signout_button: "Cerrar sesión",
    cancel: "Cancelar",
    error_title: "No se pudo completar el inicio de sesión",
    request_id: "Identificador de la solicitud",
    try_again: "Intentar de nuevo",
    home: "Ir al inicio",
    other_lang: "English",
    devices_title: "Tus dispositivos",
    devices_lead: "Estos son los dispositivos con una sesión abierta en tu cuenta. Si no reconoces alguno, \
                   cierra su sesión.",
    this_device: "Este dispositivo",
    other_devices: "Otros dispositivos",
    no_other_devices: "No hay sesiones abiertas en otros dispositivos.",
    unknown_device: "Dispositivo desconocido",
    end_session: "Cerrar esta sesión",
    end_others: "Cerrar sesión en todos los demás dispositivos",
    signed_in_on: "Sesión iniciada el",
    active_now: "Activo ahora",
    last_active: "Última actividad",
    never_seen: "Sin actividad desde que inició sesión",
};

const EN: Text = Text {
    signin_title: "Sign in",
    signin_lead: "Use your TikTok account to enter NINI.",
    continue_tiktok: "Continue with TikTok",
    signout_title: "Sign out",
    signout_lead: "Sign out on this device? Your other devices stay signed in; when your last session ends \
                   we also disconnect your TikTok account from this app.",
    signout_button: "Sign out",
    cancel: "Cancel",
    error_title: "Sign-in could not be completed",
    request_id: "Request ID",
    try_again: "Try again",
    home: "Go to the home page",
    other_lang: "Español",
    devices_title: "Your devices",
    devices_lead: "These devices have a session open on your account. If you do not recognise one, end its \
                   session.",
    this_device: "This device",
    other_devices: "Other devices",
    no_other_devices: "No other device is signed in.",
    unknown_device: "Unknown device",
    end_session: "End this session",
    end_others: "Sign out on all other devices",
    signed_in_on: "Signed in on",
    active_now: "Active now",
    last_active: "Last active",
    never_seen: "No activity since signing in",
};

fn text(lang: Lang) -> &'static Text {
    match lang {
        Lang::Es => &ES,
        Lang::En => &EN,
    }
}

/// The user-facing explanation of an error code (next-auth's codes plus our own).
pub fn error_message(lang: Lang, code: &str) -> &'static str {
    match (lang, code) {
        (Lang::Es, "AccessDenied") => "Cancelaste el acceso en TikTok o no tienes permiso para entrar.",
        (Lang::En, "AccessDenied") => "You cancelled on TikTok, or you are not allowed to sign in.",
        (Lang::Es, "OAuthCallbackError" | "OAuthCallback" | "Callback") => {
            "El enlace de inicio de sesión no es válido, caducó o ya se usó. Vuelve a intentarlo desde el principio."
        }
        (Lang::En, "OAuthCallbackError" | "OAuthCallback" | "Callback") => {
            "The sign-in link is invalid, expired or was already used. Please start again."
        }
        (Lang::Es, "OAuthSignin") => "No se pudo iniciar el inicio de sesión con TikTok.",
        (Lang::En, "OAuthSignin") => "Could not start signing in with TikTok.",
        (Lang::Es, "MissingCSRF") => "El formulario caducó. Recarga la página y vuelve a intentarlo.",
        (Lang::En, "MissingCSRF") => "The form expired. Reload the page and try again.",
        (Lang::Es, "TikTokUnavailable") => "TikTok no respondió a tiempo. Inténtalo de nuevo en unos minutos.",
        (Lang::En, "TikTokUnavailable") => "TikTok did not answer in time. Please try again in a few minutes.",
        (Lang::Es, "Unavailable") => {
            "El servicio no está disponible en este momento. Inténtalo de nuevo en unos segundos."
        }
        (Lang::En, "Unavailable") => "The service is unavailable right now. Please try again in a few seconds.",
        (Lang::Es, "SessionRequired") => "Inicia sesión para ver esta página.",
        (Lang::En, "SessionRequired") => "Please sign in to see this page.",
        (Lang::Es, "RefreshAccessTokenError") => "Tu sesión de TikTok caducó. Vuelve a iniciar sesión.",
        (Lang::En, "RefreshAccessTokenError") => "Your TikTok session expired. Please sign in again.",
        (Lang::Es, "Configuration") => {
            "Hay un problema con la configuración del servidor. Avísanos con el identificador de abajo."
        }
        (Lang::En, "Configuration") => {
            "There is a problem with the server configuration. Let us know, quoting the ID below."
        }
        (Lang::Es, _) => "Algo salió mal. Vuelve a intentarlo.",
        (Lang::En, _) => "Something went wrong. Please try again.",
    }
}

const STYLE: &str = "*{box-sizing:border-box}body{margin:0;min-height:100vh;display:flex;align-items:center;\
justify-content:center;font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;background:#0f0f14;color:#f5f5f7}\
main{width:min(420px,92vw);background:#1b1b23;border-radius:18px;padding:40px 32px;box-shadow:0 20px 60px #0008;text-align:center}\
h1{font-size:1.6rem;margin:0 0 8px}p{color:#b8b8c6;line-height:1.5}.logo{display:inline-block;font-size:2.4rem;font-weight:800;letter-spacing:.08em;\
background:linear-gradient(90deg,#25f4ee,#fe2c55);-webkit-background-clip:text;background-clip:text;color:transparent;margin-bottom:16px}\
button,.btn{display:block;width:100%;padding:14px 18px;border:0;border-radius:12px;font-size:1rem;font-weight:600;cursor:pointer;\
text-decoration:none;margin-top:18px}.tiktok{background:#fe2c55;color:#fff}.tiktok:hover{background:#e0244a}\
.secondary{background:#2a2a36;color:#f5f5f7}.error{background:#3a1620;color:#ffb3c1;border-radius:10px;padding:12px;margin:16px 0}\
.rid{font-family:ui-monospace,monospace;font-size:.8rem;color:#8a8a99;margin-top:20px;word-break:break-all}\
.lang{margin-top:24px;font-size:.85rem}.lang a{color:#8ab4ff}";

/// What only the devices page needs on top of `STYLE`: left-aligned cards, smaller buttons.
const DEVICES_STYLE: &str = "h2{font-size:1rem;margin:28px 0 4px;text-align:left;color:#d8d8e2}\
.dev{text-align:left;background:#23232d;border-radius:12px;padding:14px 16px;margin-top:12px}\
.dev .name{font-weight:600}.dev .meta{color:#8a8a99;font-size:.85rem;margin-top:4px}\
.dev button,.dev .btn{padding:9px 12px;margin-top:10px;font-size:.9rem}.none{text-align:left}";

fn page(lang: Lang, title: &str, body: &str) -> String {
    page_styled(lang, title, "", body)
}

fn page_styled(lang: Lang, title: &str, extra_style: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"{}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{} · NINI</title><style>{STYLE}{extra_style}</style></head>\
         <body><main>{body}</main></body></html>\n",
        lang.code(),
        escape(title),
    )
}

fn lang_switch(lang: Lang, path_and_query_without_lang: &str) -> String {
    let other = match lang {
        Lang::Es => "en",
        Lang::En => "es",
    };
    let sep = if path_and_query_without_lang.contains('?') {
        '&'
    } else {
        '?'
    };
    format!(
        "<p class=\"lang\"><a href=\"{}{sep}lang={other}\">{}</a></p>",
        escape(path_and_query_without_lang),
        text(lang).other_lang
    )
}

/// The sign-in page: one form that POSTs to `action` with the CSRF token and callback URL.
pub fn signin(
    lang: Lang,
    action: &str,
    csrf_token: &str,
    callback_url: &str,
    error: Option<&str>,
    self_path: &str,
) -> String {
    let t = text(lang);
    let err = error
        .map(|code| {
            format!(
                "<div class=\"error\" role=\"alert\">{}</div>",
                escape(error_message(lang, code))
            )
        })
        .unwrap_or_default();
    let body = format!(
        "<div class=\"logo\">NINI</div><h1>{}</h1><p>{}</p>{err}\
         <form method=\"POST\" action=\"{}\">\
         <input type=\"hidden\" name=\"csrfToken\" value=\"{}\">\
         <input type=\"hidden\" name=\"callbackUrl\" value=\"{}\">\
         <button type=\"submit\" id=\"signin-tiktok\" class=\"tiktok\">{}</button></form>{}",
        t.signin_title,
        t.signin_lead,
        escape(action),
        escape(csrf_token),
        escape(callback_url),
        t.continue_tiktok,
        lang_switch(lang, self_path),
    );
    page(lang, t.signin_title, &body)
}

/// The sign-out confirmation page (GET); the form POSTs with the CSRF token.
pub fn signout(lang: Lang, action: &str, csrf_token: &str, callback_url: &str, home: &str, self_path: &str) -> String {
    let t = text(lang);
    let body = format!(
        "<div class=\"logo\">NINI</div><h1>{}</h1><p>{}</p>\
         <form method=\"POST\" action=\"{}\">\
         <input type=\"hidden\" name=\"csrfToken\" value=\"{}\">\
         <input type=\"hidden\" name=\"callbackUrl\" value=\"{}\">\
         <button type=\"submit\" id=\"signout\" class=\"tiktok\">{}</button></form>\
         <a class=\"btn secondary\" href=\"{}\">{}</a>{}",
        t.signout_title,
        t.signout_lead,
        escape(action),
        escape(csrf_token),
        escape(callback_url),
        t.signout_button,
        escape(home),
        t.cancel,
        lang_switch(lang, self_path),
    );
    page(lang, t.signout_title, &body)
}

/// An error page with the request id, so a user can quote it and an operator find the log.
pub fn error(lang: Lang, code: &str, request_id: &str, retry_url: &str, home: &str) -> String {
    let t = text(lang);
    let body = format!(
        "<div class=\"logo\">NINI</div><h1>{}</h1><div class=\"error\" role=\"alert\" data-error=\"{}\">{}</div>\
         <a class=\"btn tiktok\" href=\"{}\">{}</a><a class=\"btn secondary\" href=\"{}\">{}</a>\
         <p class=\"rid\">{}: <span id=\"request-id\">{}</span></p>",
        t.error_title,
        escape(code),
        escape(error_message(lang, code)),
        escape(retry_url),
        t.try_again,
        escape(home),
        t.home,
        t.request_id,
        escape(request_id),
    );
    page(lang, t.error_title, &body)
}

/// The 403 page of a `[[routes.rules]]` denial: who is signed in, a way to sign in with
/// another account (`switch_account`: the sign-out page, which then goes to sign-in) and home,
/// with the request id.
pub fn forbidden(lang: Lang, who: &str, request_id: &str, switch_account: &str, home: &str) -> String {
    let (title, lead, signed_in_as, switch, home_label) = match lang {
        Lang::Es => (
            "No tienes acceso a esta página",
            "Tu cuenta de TikTok no tiene permiso para entrar aquí. Si tienes otra cuenta con acceso, \
             inicia sesión con ella.",
            "Sesión iniciada como",
            "Iniciar sesión con otra cuenta",
            ES.home,
        ),
        Lang::En => (
            "You can't open this page",
            "Your TikTok account is not allowed in here. If you have another account with access, sign in \
             with it.",
            "Signed in as",
            "Sign in with another account",
            EN.home,
        ),
    };
    let t = text(lang);
    let body = format!(
        "<div class=\"logo\">NINI</div><h1>{title}</h1>\
         <div class=\"error\" role=\"alert\" data-error=\"Forbidden\">{lead}</div>\
         <p>{signed_in_as} <b id=\"who\">{}</b></p>\
         <a class=\"btn tiktok\" id=\"switch-account\" href=\"{}\">{switch}</a>\
         <a class=\"btn secondary\" id=\"home\" href=\"{}\">{home_label}</a>\
         <p class=\"rid\">{}: <span id=\"request-id\">{}</span></p>",
        escape(who),
        escape(switch_account),
        escape(home),
        t.request_id,
        escape(request_id),
    );
    page(lang, title, &body)
}

/// What the devices page shows.
pub struct DevicesView<'a> {
    /// The clock's now (unix seconds), for "3 min ago".
    pub now: i64,
    /// Where the forms POST (`/api/auth/sessions/revoke`).
    pub action: &'a str,
    pub csrf_token: &'a str,
    /// The sign-out page, for this device.
    pub signout: &'a str,
    /// Newest first; one of them is the current device.
    pub devices: &'a [super::devices::Device],
    pub self_path: &'a str,
}

/// The devices page: this device (with a sign-out link), then every other device with a
/// button that ends it, and one that ends them all. No script: plain forms with the CSRF token.
pub fn devices(lang: Lang, v: &DevicesView<'_>) -> String {
    let t = text(lang);
    let lang_field = format!("<input type=\"hidden\" name=\"lang\" value=\"{}\">", lang.code());
    let csrf_field = format!(
        "<input type=\"hidden\" name=\"csrfToken\" value=\"{}\">",
        escape(v.csrf_token)
    );
    let card = |d: &super::devices::Device, actions: &str| {
        let name = d.label.as_deref().unwrap_or(t.unknown_device);
        let seen = match d.last_seen_at {
            Some(at) if d.current || v.now - at < 120 => t.active_now.to_string(),
            Some(at) => format!("{} {}", t.last_active, escape(&ago(lang, v.now - at))),
            None => t.never_seen.to_string(),
        };
        format!(
            "<div class=\"dev{}\" id=\"device-{}\"><div class=\"name\">{}</div>\
             <div class=\"meta\">{} <time datetime=\"{}\">{}</time> · {seen}</div>{actions}</div>",
            if d.current { " current" } else { "" },
            escape(&d.id),
            escape(name),
            t.signed_in_on,
            escape(&iso_datetime(d.created_at)),
            escape(&day(d.created_at)),
        )
    };
    let mut body = format!(
        "<div class=\"logo\">NINI</div><h1>{}</h1><p>{}</p><h2>{}</h2>",
        t.devices_title, t.devices_lead, t.this_device
    );
    for d in v.devices.iter().filter(|d| d.current) {
        let actions = format!(
            "<a class=\"btn secondary\" id=\"signout\" href=\"{}\">{}</a>",
            escape(v.signout),
            t.signout_button
        );
        body.push_str(&card(d, &actions));
    }
    body.push_str(&format!("<h2>{}</h2>", t.other_devices));
    let others: Vec<&super::devices::Device> = v.devices.iter().filter(|d| !d.current).collect();
    if others.is_empty() {
        body.push_str(&format!("<p class=\"none\">{}</p>", t.no_other_devices));
    }
    for d in &others {
        let actions = format!(
            "<form method=\"POST\" action=\"{}\">{csrf_field}{lang_field}\
             <input type=\"hidden\" name=\"id\" value=\"{}\">\
             <button type=\"submit\" class=\"secondary\" id=\"end-{}\">{}</button></form>",
            escape(v.action),
            escape(&d.id),
            escape(&d.id),
            t.end_session
        );
        body.push_str(&card(d, &actions));
    }
    if !others.is_empty() {
        body.push_str(&format!(
            "<form method=\"POST\" action=\"{}\">{csrf_field}{lang_field}\
             <input type=\"hidden\" name=\"others\" value=\"true\">\
             <button type=\"submit\" class=\"tiktok\" id=\"end-others\">{}</button></form>",
            escape(v.action),
            t.end_others
        ));
    }
    body.push_str(&lang_switch(lang, v.self_path));
    page_styled(lang, t.devices_title, DEVICES_STYLE, &body)
}

/// "5 min ago" / "hace 5 min" for a positive number of seconds.
fn ago(lang: Lang, secs: i64) -> String {
    let secs = secs.max(0);
    let (n, unit_es, unit_en) = if secs < 3_600 {
        (secs / 60, "min", "min")
    } else if secs < 2 * 86_400 {
        (secs / 3_600, "h", "h")
    } else {
        (secs / 86_400, if secs / 86_400 == 1 { "día" } else { "días" }, "days")
    };
    match lang {
        Lang::Es => format!("hace {n} {unit_es}"),
        Lang::En => format!("{n} {unit_en} ago"),
    }
}

/// The calendar day (UTC) of a unix time: no script runs to learn the reader's time zone.
fn day(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .map(|d| format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()))
        .unwrap_or_default()
}

fn iso_datetime(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_negotiation() {
        assert_eq!(negotiate(Some("en"), Some("es")), Lang::En);
        assert_eq!(negotiate(Some("xx"), Some("en-US,en;q=0.9")), Lang::En);
        assert_eq!(negotiate(None, Some("fr-FR, en;q=0.5, es;q=0.8")), Lang::Es);
        assert_eq!(negotiate(None, Some("de")), Lang::Es);
        assert_eq!(negotiate(None, None), Lang::Es);
        assert_eq!(negotiate(None, Some("en;q=0")), Lang::Es);
    }

    #[test]
    fn pages_escape_everything_dynamic() {
        let html = signin(
            Lang::En,
            "/api/auth/signin/tiktok",
            "tok\"en",
            "/x?a=<script>",
            Some("AccessDenied"),
            "/api/auth/signin",
        );
        assert!(html.contains("Continue with TikTok"));
        assert!(!html.contains("<script>"));
        assert!(html.contains("tok&quot;en"));
        let es = signin(Lang::Es, "/a", "t", "/", None, "/api/auth/signin?callbackUrl=%2F");
        assert!(es.contains("Continuar con TikTok") && es.contains("lang=en"));
        let e = error(Lang::Es, "<b>", "rid-1", "/api/auth/signin", "/");
        assert!(e.contains("rid-1") && !e.contains("<b>"));
    }

    #[test]
    fn the_devices_page_escapes_and_offers_one_button_per_other_device() {
        use super::super::devices::Device;
        let d = |id: &str, current: bool, label: Option<&str>, seen: Option<i64>| Device {
            id: id.into(),
            current,
            label: label.map(str::to_string),
            created_at: 86_400,
            last_seen_at: seen,
            expires: 10_000_000,
        };
        let list = [
            d("cur", true, Some("Chrome · Android"), Some(1_000_000)),
            d("o\"1", false, Some("<b>x</b>"), Some(1_000_000 - 600)),
            d("o2", false, None, None),
        ];
        let view = DevicesView {
            now: 1_000_000,
            action: "/api/auth/sessions/revoke",
            csrf_token: "tok\"en",
            signout: "/api/auth/signout",
            devices: &list,
            self_path: "/api/auth/devices",
        };
        let en = devices(Lang::En, &view);
        assert!(en.contains("Your devices") && en.contains("Chrome · Android"));
        assert!(!en.contains("<b>x</b>") && en.contains("&lt;b&gt;x&lt;/b&gt;"));
        assert!(en.contains("o&quot;1") && en.contains("tok&quot;en"));
        assert!(en.contains("10 min ago") && en.contains("Unknown device"));
        assert_eq!(en.matches("name=\"id\"").count(), 2, "one button per other device");
        assert!(
            !en.contains("id=\"end-cur\""),
            "the current device is signed out, not ended"
        );
        assert!(en.contains("id=\"end-others\"") && en.contains("1970-01-02"));
        let es = devices(Lang::Es, &view);
        assert!(es.contains("Tus dispositivos") && es.contains("hace 10 min") && es.contains("lang=en"));
        let alone = devices(
            Lang::Es,
            &DevicesView {
                devices: &list[..1],
                ..view
            },
        );
        assert!(alone.contains("No hay sesiones abiertas") && !alone.contains("end-others"));
    }
}
