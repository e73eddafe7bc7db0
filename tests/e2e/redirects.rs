//! Open-redirect vectors (attack-vectors.md A–C, plus oauth2-proxy's corpus when
//! ../shared is present) are refused as `callbackUrl` on sign-in and sign-out alike: the
//! user lands on `/`.

use crate::support::*;

/// Sections A–C of the attack-vector list, as Rust string literals.
const VECTORS: &[&str] = &[
    "",
    "//redirect",
    "/\\evil.com",
    "/ /evil.com",
    "/ \\evil.com",
    "/\t/evil.com",
    "/\t\\evil.com",
    "/\u{0b}/evil.com",
    "/\u{0b}\\evil.com",
    "/\n/evil.com",
    "/\n\\evil.com",
    "/\r/evil.com",
    "/\r\\evil.com",
    "/\t/\t\\evil.com",
    "/\t\t/\t/evil.com",
    "/\t\t\\\t/evil.com",
    "/\t\t/\t\t\\evil.com",
    "/\t\t\\\t\t/evil.com",
    "/./\\evil.com",
    "/./../../\\evil.com",
    "foo.bar/redirect",
    "proxy.wildcard.bar/redirect",
    "http://foo.bar.evil.corp/redirect",
    "https://evil.corp/redirect?rd=foo.bar",
    "http://foo.bar:3838/redirect",
    "http://baz.foo.bar/redirect",
    "/%09/google.com",
    "/%2f%2fgoogle.com",
    "/%5cgoogle.com",
    "//%09/google.com",
    "//%2fxgoogle.com",
    "//%5cgoogle.com",
    "////%09/google.com",
    "/////google.com/",
    "////\\;@example.com",
    "//;@google.com",
    "//example.com+&@google.com#+@example.com/",
    "//example.com@google.com/",
    "//google.com",
    "//google.com:80#@example.com/",
    "//google.com:80?@example.com/",
    "//google.com\\@example.com",
    "/\\/google.com/",
    "/http://google.com",
    "/https:/%5cgoogle.com/",
    "/x:1/:///%01javascript:alert(document.cookie)/",
    "<>//google.com",
    "@google.com",
    "\\/\\/google.com/",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgiWFNTIik8L3NjcmlwdD4=",
    "http://3627734734",
    "http://[::ffff:216.58.214.206]",
    "http://example.com%2egoogle.com/",
    "http://example.com:80%40google.com/",
    "http://google.com%23.example.com/",
    "http://google.com%2f%2f.example.com/",
    "http:0xd83ad6ce",
    "java%0ascript:alert(1)",
    "javascript:alert(1)",
    "〱google.com",
    "〵google.com",
    "ゝgoogle.com",
    "ーgoogle.com",
    "ｰgoogle.com",
    "//evil.com",
    "/\\\\evil.com",
    "https:evil.com",
    "http:/evil.com",
    "\\\\\\\\evil.com",
    "/%5c%5cevil.com",
    "/%252f%252fevil.com",
    "/\\\\/evil.com",
    "https://app.example.com.evil.com/",
    "https://app.example.com@evil.com/",
    "https://evil.com#app.example.com",
    "https://evil.com\\\\@app.example.com",
    "https://evil-example.com/",
    "https://app.example.com%2eevil.com/",
    "//app.example.com%2f%2fevil.com",
    "／／evil.com",
    "/\u{3000}/evil.com",
    "evil。com",
    "/%E3%80%82evil.com",
    "/%0d%0aLocation:%20https://evil.com",
    "/%E2%80%AE/moc.live//",
    "HTTPS://EVIL.COM",
    "hTTps://evil.com",
    "https://[::1]@evil.com",
    "https://evil.com:443@app.example.com",
];

/// Targets on our origin whose query carries a URL: an in-app handler that redirects to
/// `next` would follow it (`new URL('https:/evil.com', base)` is `https://evil.com/`).
const QUERY_CHAINS: &[&str] = &[
    "/go?next=https:/evil.com",
    "/go?next=https:evil.com",
    "/go?next=http:evil.com",
    "/go?next=HTTPS:/evil.com",
    "/go?next=https%3A/evil.com",
    "/go?next=https%3Aevil.com",
    "/go?next=https%253Aevil.com",
    "/go?next=%20https:evil.com",
    "/go?next=javascript:alert(1)",
    "/go?next=JavaScript%3Aalert(1)",
    "/go?next=data:text/html,x",
    "/go?next=vbscript:x",
    "/go?next=file:/etc/passwd",
    "/go?next=ftp:evil.com",
    "/go?next=ws:evil.com",
    "/go?next=wss:evil.com",
    "/go?next=blob:https:evil.com",
    "/go?next=x-app:/evil.com",
    "/go?a=1&next=https:evil.com",
    "/go?https:evil.com",
    "https://APP/go?next=https:evil.com",
];

/// Queries with a colon that are not URLs: they must keep working.
const COLON_QUERIES: &[&str] = &["/search?q=a:b", "/x?t=12:30", "/x?ratio=1:2", "/x?at=T12:30&q=a%3Ab"];

/// The same vectors aimed at the sidecar's own origin tricks.
fn own_origin_tricks(origin: &str) -> Vec<String> {
    let host = origin.trim_start_matches("http://");
    vec![
        format!("http://{host}.evil.com/"),
        format!("http://{host}@evil.com/"),
        format!("http://evil.com#{host}"),
        format!("http://evil.com\\@{host}"),
        format!("http://{host}%2eevil.com/"),
        format!("//{host}%2f%2fevil.com"),
        format!("https://{host}/"),
    ]
}

async fn signin_page_target(b: &Browser, env: &TestEnv, v: &str) -> String {
    let url = format!("{}?callbackUrl={}", env.url("/api/auth/signin"), urlencode(v));
    let r = b.get(&url).await;
    assert_eq!(r.status, 200, "{v:?}");
    extract_value(&r.body, "callbackUrl").expect("callbackUrl field")
}

async fn signout_target(b: &Browser, env: &TestEnv, csrf: &str, v: &str) -> String {
    let r = b
        .post_v5(
            &env.url("/api/auth/signout"),
            &[("csrfToken", csrf), ("callbackUrl", v)],
        )
        .await;
    assert_eq!(r.status, 200, "{v:?}: {}", r.body);
    r.json()["url"].as_str().expect("url").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_vector_is_refused_on_signin_and_signout() {
    let env = TestEnv::start().await;
    let home = env.url("/");
    let b = Browser::new();
    let csrf = b.csrf(&env).await;
    let mut all: Vec<String> = VECTORS.iter().map(|s| s.to_string()).collect();
    all.extend(own_origin_tricks(&env.url("")));
    for v in &all {
        assert_eq!(signin_page_target(&b, &env, v).await, home, "sign-in page kept {v:?}");
        assert_eq!(
            signout_target(&b, &env, &csrf, v).await,
            home,
            "sign-out followed {v:?}"
        );
    }
    // Legitimate targets survive.
    for v in COLON_QUERIES {
        assert_eq!(signin_page_target(&b, &env, v).await, env.url(v), "{v}");
        assert_eq!(signout_target(&b, &env, &csrf, v).await, env.url(v), "{v}");
    }
    for (v, want) in [
        ("/dashboard?tab=1", "/dashboard?tab=1"),
        ("/profile", "/profile"),
        (&env.url("/x?y=z") as &str, "/x?y=z"),
    ] {
        assert_eq!(signin_page_target(&b, &env, v).await, env.url(want), "{v}");
        assert_eq!(signout_target(&b, &env, &csrf, v).await, env.url(want), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn completed_logins_never_redirect_off_site() {
    let env = TestEnv::start().await;
    let home = env.url("/");
    for v in VECTORS
        .iter()
        .step_by(3)
        .chain(["//evil.com", "https://evil.com", "/\\evil.com"].iter())
    {
        let b = Browser::new();
        let csrf = b.csrf(&env).await;
        // The next-auth v5 way: POST with X-Auth-Return-Redirect.
        let r = b
            .post_v5(
                &env.url("/api/auth/signin/tiktok"),
                &[("csrfToken", csrf.as_str()), ("callbackUrl", v)],
            )
            .await;
        assert_eq!(r.status, 200);
        let authorize = r.json()["url"].as_str().expect("url").to_string();
        let cb = b.consent(&authorize, "authorize").await;
        let done = b.get(&cb).await;
        assert_eq!(done.status, 302);
        assert_eq!(done.location(), Some(home.as_str()), "{v:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn oauth2_proxy_corpus_is_refused() {
    let Some(path) = shared_file("data/openredirects.txt") else {
        eprintln!("skipping: ../shared/data/openredirects.txt not found");
        return;
    };
    let text = std::fs::read_to_string(path).expect("corpus readable");
    let env = TestEnv::start().await;
    let home = env.url("/");
    let b = Browser::new();
    let csrf = b.csrf(&env).await;
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // oauth2-proxy's test URL-decodes each line once before validating.
        let v = percent_encoding::percent_decode_str(line)
            .decode_utf8_lossy()
            .into_owned();
        assert_eq!(signin_page_target(&b, &env, &v).await, home, "sign-in kept {line:?}");
        assert_eq!(
            signout_target(&b, &env, &csrf, &v).await,
            home,
            "sign-out followed {line:?}"
        );
        n += 1;
    }
    assert!(n >= 500, "corpus read: {n} lines");
}

#[tokio::test(flavor = "multi_thread")]
async fn query_urls_never_chain_from_signin_or_signout() {
    let env = TestEnv::start().await;
    let home = env.url("/");
    let origin = env.url("");
    let b = Browser::new();
    let csrf = b.csrf(&env).await;
    let mut kept = Vec::new();
    for v in QUERY_CHAINS {
        // The absolute spelling is aimed at the sidecar's own origin.
        let v = v.replace("https://APP", &origin);
        let signin = signin_page_target(&b, &env, &v).await;
        let signout = signout_target(&b, &env, &csrf, &v).await;
        if signin != home || signout != home {
            kept.push(format!("{v:?}: sign-in {signin}, sign-out {signout}"));
        }
    }
    assert!(kept.is_empty(), "URL in the query accepted:\n{}", kept.join("\n"));
}
