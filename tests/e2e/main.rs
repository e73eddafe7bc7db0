//! End-to-end tests: real mock TikTok, real upstream, real sidecar, real HTTP on loopback.

// Harness: servers on ephemeral ports and a cookie-keeping client.
mod support;
// A real PostgreSQL: given, local, or a throwaway cluster started for the test run.
mod pg;
// One conformance suite for both store backends (SQLite always, PostgreSQL when available).
mod store_conformance;
// Defects a security review found: methods, sign-in floods, forged cookies, sign-out scope.
mod hardening;
// Faults: TikTok garbage and stalls, kill -9 mid sign-in, a full disk.
mod faults;
// Several real replicas on one PostgreSQL: sign-ins, revocation, refresh, failures, migration.
mod replicas;

// The whole sign-in, cookie attributes and what the upstream sees.
mod login;
// State and code handling: wrong, missing, expired, replayed; denial; fixation.
mod state;
// Spoofed identity headers and our cookies never reach the upstream.
mod headers;
// Open-redirect vectors on sign-in and sign-out.
mod redirects;
// Path canonicalisation: no variant of a protected path slips through.
mod paths;
// What lands on disk, restarts, tampering.
mod storage;
// Sign-out: revoke, cookie death, CSRF.
mod signout;
// Per-route authorization: [[routes.rules]] in the proxy and /api/auth/verify, 403 es/en/JSON.
mod rules;
// Your devices: the sessions list, ending one or all others, the es/en page.
mod devices;
// next-auth REST surface: csrf, providers, session, JSON redirects.
mod nextauth;
// The real next-auth/react client (npm) from Node and in headless Chromium.
mod nextauth_client;
// Token lifecycle: single-flight refresh, rotation, dead grants, two processes.
mod tokens;
// WebSockets end with their session (sign-out, dead grant, deauthorization) and their lifetime.
mod websockets;
// Connections: request-head deadline and size cap while arriving, keep-alive idle, per-client bound.
mod connections;
// Operations: health, readiness, metrics, JSON logs, drain, proxies, limits, failures.
mod ops;
// Forward-auth with a real nginx, /api/auth/verify, TikTok's deauthorization webhook.
mod forward_auth;
// The binary: config errors, check, keygen, signals.
mod cli;
// `check --online` against the mock TikTok, every operator mistake injected.
mod check_online;
// A real browser (headless Chromium via playwright-core) signs in and sees the dashboard.
mod browser;
// TikTok data sync: video paging, counts and streak, retries, cool-down, scopes, read endpoints.
mod sync;
// examples/kubernetes and the Dockerfile: ports, probes, Secret env, mounts, the embedded config.toml.
mod manifests;
// TLS: login over https with a dev-cert certificate, reload without restart, http -> https redirect.
mod tls;
// Signed identity: X-Nini-Identity verified with ring and the jose npm package; JWKS; rotation.
mod identity_jwt;
// The admin CLI on a running sidecar's database: users, sessions, revocation, key rotation, purge.
mod admin_cli;
