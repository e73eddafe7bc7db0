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
