// The real `next-auth/react` client (next-auth 5.0.0-beta.32) from Node against nini-auth,
// driven by tests/e2e/nextauth_client.rs.
//
//   node tests/nextauth/node-client.mjs <sidecar base URL>
//
// Node's fetch keeps no cookies, so a small cookie jar wraps globalThis.fetch (for the sidecar's
// origin only) before next-auth/react is imported; NEXTAUTH_URL must be set before that import
// too (the client reads it once). Steps, each checked:
//   getCsrfToken() twice (same non-empty token), getProviders() (tiktok, absolute URLs),
//   getSession() -> null; signIn("tiktok") with the CSRF cookie withheld -> {error:"MissingCSRF"};
//   signIn("tiktok", {redirect:false, redirectTo:"<base>/dashboard"}) -> {url: mock authorize URL};
//   the mock decides at once (mock_auto=authorize) -> the sidecar's callback -> 302 <base>/dashboard
//   with a session cookie; getSession() -> the user; signOut({redirect:false, redirectTo:"<base>/"})
//   -> {url:"<base>/"}; getSession() -> null.
// Prints ONE JSON line (the summary, also on failure with "ok": false and "failure") and exits 0
// only when every check passed. Every request is bounded by REQUEST_TIMEOUT_MS. The process exits
// explicitly: next-auth's BroadcastChannel would keep Node alive.

const REQUEST_TIMEOUT_MS = 10_000;

const baseArg = process.argv[2];
if (!baseArg) {
  console.error('usage: node node-client.mjs <sidecar base URL>');
  process.exit(2);
}
const base = baseArg.replace(/\/+$/, '');
const origin = new URL(base).origin;
process.env.NEXTAUTH_URL = `${base}/api/auth`;

// --- cookie jar + request log around fetch (installed before next-auth/react is imported) ---
const jar = new Map();
const requests = [];
let withholdCookiesOnPost = false;
const realFetch = globalThis.fetch;

function storeCookies(res) {
  for (const sc of res.headers.getSetCookie()) {
    const kv = sc.split(';')[0];
    const i = kv.indexOf('=');
    if (i <= 0) continue;
    const name = kv.slice(0, i).trim();
    if (/;\s*max-age=0/i.test(sc)) jar.delete(name);
    else jar.set(name, kv.slice(i + 1));
  }
}

async function jarFetch(input, init = {}) {
  const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
  const method = (init.method || 'GET').toUpperCase();
  const headers = new Headers(init.headers);
  const ours = url.origin === origin;
  const withhold = withholdCookiesOnPost && method === 'POST';
  if (ours && jar.size && !withhold) {
    headers.set('cookie', [...jar].map(([k, v]) => `${k}=${v}`).join('; '));
  }
  const res = await realFetch(url, {
    ...init,
    headers,
    redirect: 'manual',
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  if (ours) storeCookies(res);
  requests.push({
    method,
    path: url.pathname + url.search,
    status: res.status,
    returnRedirect: headers.get('x-auth-return-redirect'),
    contentType: headers.get('content-type'),
  });
  return res;
}
globalThis.fetch = jarFetch;

// next-auth logs fetch failures (and turns them into null / ""): collect them, they are failures.
const clientErrors = [];
const realConsoleError = console.error;
console.error = (...args) => {
  clientErrors.push(args.map((a) => (a && a.stack ? a.stack : String(a))).join(' '));
  realConsoleError(...args);
};

const summary = { ok: false, base };

function check(cond, what, got) {
  if (!cond) {
    throw new Error(`${what}; got ${JSON.stringify(got)}`);
  }
}

async function main() {
  const { getCsrfToken, getProviders, getSession, signIn, signOut } = await import('next-auth/react');

  // 1. CSRF token: a non-empty string, the same on a second call (the cookie is reused).
  const csrf1 = await getCsrfToken();
  const csrf2 = await getCsrfToken();
  check(typeof csrf1 === 'string' && csrf1.length > 0, 'getCsrfToken() must return a non-empty string', csrf1);
  check(csrf1 === csrf2, 'getCsrfToken() must return the same token for the same cookie', [csrf1, csrf2]);
  summary.csrfTokenLength = csrf1.length;

  // 2. Providers: the TikTok entry, absolute URLs on the sidecar's origin.
  const providers = await getProviders();
  summary.providers = providers;
  const t = providers && providers.tiktok;
  check(t && t.id === 'tiktok' && t.name === 'TikTok' && t.type === 'oauth', 'getProviders().tiktok', providers);
  check(t.signinUrl === `${base}/api/auth/signin/tiktok`, 'tiktok.signinUrl must be absolute', t.signinUrl);
  check(t.callbackUrl === `${base}/api/auth/callback/tiktok`, 'tiktok.callbackUrl must be absolute', t.callbackUrl);

  // 3. No session yet: the literal null.
  const before = await getSession({ broadcast: false });
  summary.sessionBefore = before;
  check(before === null, 'getSession() before sign-in must be null', before);

  // 4. The error contract: without the CSRF cookie the sidecar answers 200 {url: ...?error=MissingCSRF}
  //    and the client turns it into {error}.
  withholdCookiesOnPost = true;
  let refused;
  try {
    refused = await signIn('tiktok', { redirect: false, redirectTo: `${base}/dashboard` });
  } finally {
    withholdCookiesOnPost = false;
  }
  summary.signInWithoutCsrfCookie = refused;
  check(
    refused && refused.error === 'MissingCSRF' && refused.url === null && refused.status === 200,
    'signIn() without the CSRF cookie must give {error:"MissingCSRF", url:null, status:200}',
    refused,
  );

  // 5. signIn: the sidecar answers {url} = the (mock) TikTok authorize URL.
  const started = await signIn('tiktok', { redirect: false, redirectTo: `${base}/dashboard` });
  summary.signIn = started;
  check(
    started && started.ok === true && started.status === 200 && !started.error && typeof started.url === 'string',
    'signIn("tiktok", {redirect:false}) must give {ok:true, status:200, url}',
    started,
  );
  const authorize = new URL(started.url);
  check(authorize.pathname === '/v2/auth/authorize/', 'signIn url must be the authorize endpoint', started.url);
  summary.authorizeUrl = started.url;

  // 6. The mock decides at once (like a person clicking "Authorize") and redirects to our callback.
  authorize.searchParams.set('mock_auto', 'authorize');
  const decided = await jarFetch(authorize.toString());
  const callback = decided.headers.get('location');
  check(decided.status === 302 && callback, 'mock authorize (mock_auto=authorize) must redirect', decided.status);
  const cb = new URL(callback, authorize);
  check(cb.origin === origin && cb.pathname === '/api/auth/callback/tiktok', 'mock must redirect to our callback', callback);
  summary.callbackUrl = cb.toString();

  // 7. The callback sets the session cookie and returns to redirectTo.
  const done = await jarFetch(cb.toString(), { headers: { accept: 'text/html' } });
  const landing = done.headers.get('location');
  summary.callbackStatus = done.status;
  summary.landing = landing && new URL(landing, base).toString();
  check(done.status === 302, 'callback must answer 302', done.status);
  check(summary.landing === `${base}/dashboard`, 'callback must return to redirectTo', landing);

  // 8. Signed in: the user, as the sidecar serves it.
  const session = await getSession({ broadcast: false });
  summary.session = session;
  check(session && session.user, 'getSession() after sign-in must return a session with user', session);
  check(session.user.name === 'María José 🌮', 'session.user.name', session.user.name);
  check(typeof session.user.tiktokId === 'string' && session.user.tiktokId.length > 0, 'session.user.tiktokId', session.user);
  check(typeof session.expires === 'string' && !Number.isNaN(Date.parse(session.expires)), 'session.expires', session.expires);

  // 9. signOut: {url: redirectTo}; the session is gone.
  const out = await signOut({ redirect: false, redirectTo: `${base}/` });
  summary.signOut = out;
  check(out && out.url === `${base}/`, 'signOut({redirect:false}) must give {url: redirectTo}', out);
  const after = await getSession({ broadcast: false });
  summary.sessionAfter = after;
  check(after === null, 'getSession() after sign-out must be null', after);

  check(clientErrors.length === 0, 'next-auth logged errors', clientErrors);
  summary.ok = true;
}

main()
  .catch((err) => {
    summary.failure = String(err && err.message ? err.message : err);
    realConsoleError(`node-client.mjs failed: ${err && err.stack ? err.stack : err}`);
  })
  .finally(() => {
    summary.requests = requests;
    summary.clientErrors = clientErrors;
    process.stdout.write(`${JSON.stringify(summary)}\n`, () => process.exit(summary.ok ? 0 : 1));
  });
