//! Section D of the attack vectors: no spelling of a protected path reaches the upstream
//! without a session. Requests are written byte for byte (HTTP clients would normalise them).

use crate::support::*;

const VARIANTS: &[&str] = &[
    "/dashboard",
    "/dashboard/../dashboard",
    "/public/../dashboard",
    "/public/..%2fdashboard",
    "/public/%2e%2e/dashboard",
    "/public/%2e%2e%2fdashboard",
    "/public/%252e%252e/dashboard",
    "/public/..%5cdashboard",
    "/public\\..\\dashboard",
    "/%64ashboard",
    "/%44ASHBOARD",
    "//dashboard",
    "///dashboard",
    "/DASHBOARD",
    "/Dashboard",
    "/dashboard;x=1",
    "/dashboard;/",
    "/public;/../dashboard",
    "/dashboard%2f",
    "/dashboard/",
    "/dashboard.",
    "/dashboard%00",
    "/dashboard%20",
    "/dashboard%09",
    "/dashboard%c0%af",
    "/dashboard%ef%bc%8f",
    "/%EF%BD%84ashboard",
    "/%EF%BD%84%EF%BD%81shboard/x",
    "/public%23/../dashboard",
    "/./dashboard",
    "/a/b/../../dashboard",
    "/profile/../api/user",
    "/API/USER",
    "/api/user;.css",
];

#[tokio::test(flavor = "multi_thread")]
async fn no_variant_of_a_protected_path_reaches_upstream() {
    let env = TestEnv::start().await;
    let addr = env.sidecar().addr;
    for v in VARIANTS {
        let (status, body) = raw_request(
            addr,
            &format!("GET {v} HTTP/1.1\r\nHost: app.example.com\r\nAccept: application/json"),
        )
        .await;
        assert!(status == 400 || status == 401, "{v}: status {status} body {body}");
        assert!(!body.contains("\"headers\""), "{v}: upstream answered: {body}");
    }
    // A raw fragment never reaches routing: the target ends at '#', the upstream gets
    // exactly the judged path, `/public`.
    let (status, body) = raw_request(addr, "GET /public#/../dashboard HTTP/1.1\r\nHost: x").await;
    assert!(
        status == 400 || (status == 200 && body.contains("\"path\":\"/public\"")),
        "{status} {body}"
    );
    // Absolute-form target, forged forwarding headers, health-check user agent, OPTIONS.
    for head in [
        "GET http://evil/dashboard HTTP/1.1\r\nHost: app.example.com",
        "GET /dashboard HTTP/1.1\r\nHost: app.example.com\r\nX-Forwarded-Uri: /public\r\nX-Original-URI: /public",
        "GET /dashboard HTTP/1.1\r\nHost: app.example.com\r\nUser-Agent: GoogleHC/1.0",
        "GET /dashboard HTTP/1.1\r\nHost: app.example.com\r\nUser-Agent: kube-probe/1.29",
        "OPTIONS /dashboard HTTP/1.1\r\nHost: app.example.com\r\nX-Forwarded-User: admin",
        "HEAD /dashboard HTTP/1.1\r\nHost: APP.example.com.",
        "POST /api/user HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 0",
    ] {
        let (status, body) = raw_request(addr, head).await;
        assert!(status == 400 || status == 401, "{head:?}: {status} {body}");
        assert!(!body.contains("\"headers\""), "{head:?}: upstream answered");
    }
    // Targets that are neither origin- nor absolute-form: pingora files them under `/` and
    // keeps the original bytes; judged as `/` they must not be sent on as they came.
    for head in [
        "GET dashboard HTTP/1.1\r\nHost: app.example.com",
        "GET *dashboard HTTP/1.1\r\nHost: app.example.com",
        "GET foo:bar HTTP/1.1\r\nHost: app.example.com",
        "GET public/x HTTP/1.1\r\nHost: app.example.com",
        "GET dashboard/ws HTTP/1.1\r\nHost: app.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    ] {
        let (status, body) = raw_request(addr, head).await;
        assert_eq!(status, 400, "{head:?}: {body}");
        assert!(!body.contains("\"headers\""), "{head:?}: upstream answered");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_gets_the_canonical_path_it_was_judged_on() {
    let env = TestEnv::start().await;
    let addr = env.sidecar().addr;
    for (sent, forwarded) in [
        ("/public/./a/../b", "/public/b"),
        ("//public///x", "/public/x"),
        ("/%70ublic/%7Euser", "/public/~user"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/public;v=1/page", "/public;v=1/page"),
    ] {
        let (status, body) = raw_request(addr, &format!("GET {sent} HTTP/1.1\r\nHost: x")).await;
        assert_eq!(status, 200, "{sent}: {body}");
        // The body may be chunked: take the JSON object inside it.
        let (start, end) = (body.find('{').expect("json"), body.rfind('}').expect("json"));
        let echo: serde_json::Value = serde_json::from_str(&body[start..=end]).expect("json body");
        assert_eq!(echo["path"], forwarded, "{sent}");
    }
    // Encoded slashes and double encoding are refused outright, even on public paths.
    for sent in ["/public/a%2fb", "/public/%252e", "/public/a%5cb", "/public/%00"] {
        let (status, _) = raw_request(addr, &format!("GET {sent} HTTP/1.1\r\nHost: x")).await;
        assert_eq!(status, 400, "{sent}");
    }
}

/// Characters an NFKC-normalising or Unicode-case-insensitive upstream reads as ASCII, and
/// invisible ones it may drop: every class of the Unicode policy in `src/proxy/paths.rs`.
/// Most spell a protected path that the sidecar's own matching would judge public, so they
/// must be refused, not proxied.
const UNICODE_REFUSED: &[&str] = &[
    "/da%C5%BFhboard",              // U+017F LATIN SMALL LETTER LONG S (NFKC: s)
    "/%F0%9D%90%9Dashboard",        // U+1D41D MATHEMATICAL BOLD SMALL D
    "/pro%EF%AC%81le",              // U+FB01 LATIN SMALL LIGATURE FI
    "/%E1%B5%88ashboard",           // U+1D48 MODIFIER LETTER SMALL D
    "/d%E2%82%90shboard",           // U+2090 LATIN SUBSCRIPT SMALL LETTER A
    "/prof%C4%B1le",                // U+0131 dotless i (uppercase: I)
    "/prof\u{131}le",               // the same, as raw UTF-8 on the wire
    "/prof%C4%B0le",                // U+0130 capital I with dot (lowercase: i + U+0307)
    "/%E2%84%AAeys",                // U+212A KELVIN SIGN (NFKC: K, lowercase: k)
    "/%EF%BD%84ashboard",           // U+FF44 FULLWIDTH d
    "/%EF%BD%84%EF%BD%81shboard/x", // fullwidth da
    "/dash%C2%A0board",             // U+00A0 NO-BREAK SPACE (NFKC: space)
    "/%C2%BD",                      // U+00BD ½ (NFKC: 1⁄2)
    "/%E2%80%8Bdashboard",          // U+200B ZERO WIDTH SPACE (Cf)
    "/dash%C2%ADboard",             // U+00AD SOFT HYPHEN (Cf)
    "/dash%E2%80%8Cboard",          // U+200C ZERO WIDTH NON-JOINER (Cf)
    "/dash%E2%80%8Dboard",          // U+200D ZERO WIDTH JOINER (Cf)
    "/dash%E2%81%A0board",          // U+2060 WORD JOINER (Cf)
    "/%EF%BB%BFdashboard",          // U+FEFF BYTE ORDER MARK (Cf)
    "/dash%E2%80%AEboard",          // U+202E RIGHT-TO-LEFT OVERRIDE (Cf)
    "/dash%F3%A0%81%A2oard",        // U+E0062 TAG LATIN SMALL LETTER B (Cf)
    "/%D8%80",                      // U+0600 ARABIC NUMBER SIGN (Cf)
    "/dash%CD%8Fboard",             // U+034F COMBINING GRAPHEME JOINER (default-ignorable)
    "/dash%EF%B8%8Fboard",          // U+FE0F VARIATION SELECTOR-16 after an ASCII letter
    "/dash%E3%85%A4board",          // U+3164 HANGUL FILLER (default-ignorable)
];

#[tokio::test(flavor = "multi_thread")]
async fn unicode_lookalikes_and_invisible_characters_are_refused() {
    let env = TestEnv::start().await;
    let addr = env.sidecar().addr;
    let mut wrong = Vec::new();
    for v in UNICODE_REFUSED {
        let (status, body) = raw_request(
            addr,
            &format!("GET {v} HTTP/1.1\r\nHost: app.example.com\r\nAccept: application/json"),
        )
        .await;
        if status != 400 || body.contains("\"headers\"") {
            wrong.push(format!("{v}: {status} {}", body.chars().take(120).collect::<String>()));
        }
    }
    assert!(wrong.is_empty(), "not refused with 400:\n{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn ordinary_non_ascii_paths_are_proxied_in_canonical_form() {
    let env = TestEnv::builder()
        .raw(|r| r.routes.protected.push("/privado/jos\u{e9}".into()))
        .start()
        .await;
    let addr = env.sidecar().addr;
    let mut wrong = Vec::new();
    // A non-ASCII prefix protects every spelling that NFKC equates with it.
    for sent in [
        "/privado/jos%C3%A9",
        "/privado/jose%CC%81",
        "/PRIVADO/JOS%C3%89",
        "/privado/JOSE%CC%81/x",
    ] {
        let (status, body) = raw_request(
            addr,
            &format!("GET {sent} HTTP/1.1\r\nHost: x\r\nAccept: application/json"),
        )
        .await;
        if status != 401 || body.contains("\"headers\"") {
            wrong.push(format!("{sent}: {status}, want 401"));
        }
    }
    for (sent, forwarded) in [
        ("/perfil/jos%C3%A9", "/perfil/jos%C3%A9"),
        ("/perfil/jos\u{e9}", "/perfil/jos%C3%A9"),
        ("/perfil/jose%CC%81", "/perfil/jose%CC%81"),
        ("/perfil/jose\u{301}", "/perfil/jose%CC%81"),
        ("/stra%C3%9Fe", "/stra%C3%9Fe"),
        ("/%C3%B1and%C3%BA", "/%C3%B1and%C3%BA"),
        ("/%E6%97%A5%E6%9C%AC%E8%AA%9E", "/%E6%97%A5%E6%9C%AC%E8%AA%9E"),
        ("/\u{65e5}\u{672c}\u{8a9e}/x", "/%E6%97%A5%E6%9C%AC%E8%AA%9E/x"),
        ("/%F0%9F%98%80", "/%F0%9F%98%80"),
        ("/%E2%9D%A4%EF%B8%8F", "/%E2%9D%A4%EF%B8%8F"),
        ("/%e2%84%ab", "/%E2%84%AB"),
    ] {
        let (status, body) = raw_request(addr, &format!("GET {sent} HTTP/1.1\r\nHost: x")).await;
        let echoed = match (body.find('{'), body.rfind('}')) {
            (Some(start), Some(end)) if status == 200 => serde_json::from_str::<serde_json::Value>(&body[start..=end])
                .ok()
                .and_then(|v| v["path"].as_str().map(String::from)),
            _ => None,
        };
        if echoed.as_deref() != Some(forwarded) {
            wrong.push(format!("{sent}: {status} forwarded {echoed:?}, want {forwarded}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "ordinary non-ASCII paths broken:\n{}",
        wrong.join("\n")
    );
}
