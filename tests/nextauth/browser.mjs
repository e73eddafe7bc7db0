// The real next-auth/react client in headless Chromium against nini-auth, driven by
// tests/e2e/nextauth_client.rs.
//
//   node tests/nextauth/browser.mjs <sidecar base URL> <test page URL>
//
// The page (page.jsx, bundled by build.mjs, served by the demo upstream under /static/ through
// the sidecar) renders <SessionProvider> and useSession(). Steps, each checked:
//   load -> #status "unauthenticated"; click "Sign in" (signIn("tiktok", {callbackUrl})) -> the
//   mock TikTok consent page; click #authorize -> back on the page -> "authenticated" with the
//   user's name; update(data) once (GET /csrf + POST /session) -> the server's session, unchanged;
//   click "Sign out" (signOut({callbackUrl})) -> the page reloads -> "unauthenticated".
// Prints ONE JSON line (also on failure, with "ok": false and "failure") and exits 0 only when
// every check passed. Every wait is bounded by STEP_TIMEOUT_MS; no sleeps; the browser is
// always closed. Chromium: Debian's /usr/bin/chromium, or $CHROMIUM_PATH.

import { chromium } from 'playwright-core';
import { ARGS, CHROMIUM } from '../chromium.mjs';

const STEP_TIMEOUT_MS = 15_000;
const USER_NAME = 'María José 🌮';

const [baseArg, pageArg] = process.argv.slice(2);
if (!baseArg || !pageArg) {
  console.error('usage: node browser.mjs <sidecar base URL> <test page URL>');
  process.exit(2);
}
const base = baseArg.replace(/\/+$/, '');
const pageUrl = new URL(pageArg, base).toString();

const summary = { ok: false, base, pageUrl, statuses: [] };
const authRequests = [];
const consoleErrors = [];

function check(cond, what, got) {
  if (!cond) throw new Error(`${what}; got ${JSON.stringify(got)}`);
}

async function waitForStatus(page, want) {
  await page.waitForFunction(
    (s) => document.querySelector('#status')?.textContent === s,
    want,
    { timeout: STEP_TIMEOUT_MS },
  );
  summary.statuses.push(want);
}

async function text(page, sel) {
  return page.locator(sel).textContent({ timeout: STEP_TIMEOUT_MS });
}

async function main() {
  let browser;
  let page;
  try {
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS, timeout: STEP_TIMEOUT_MS });
    const context = await browser.newContext({ viewport: { width: 1024, height: 700 } });
    context.setDefaultTimeout(STEP_TIMEOUT_MS);
    context.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
    // What the sidecar answered to the client's POSTs, read before the client navigates away
    // (the client awaits res.json() first) and kept in sessionStorage across page loads.
    await context.addInitScript(() => {
      const realFetch = window.fetch;
      window.fetch = async (...args) => {
        const res = await realFetch(...args);
        const req = new Request(...args);
        const u = new URL(req.url, location.href);
        if (req.method === 'POST' && u.origin === location.origin && u.pathname.startsWith('/api/auth/')) {
          const body = await res.clone().text();
          const log = JSON.parse(sessionStorage.getItem('na-answers') || '[]');
          log.push({ path: u.pathname, status: res.status, body });
          sessionStorage.setItem('na-answers', JSON.stringify(log));
        }
        return res;
      };
    });
    page = await context.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push({ text: m.text(), url: m.location().url || page.url() });
    });
    page.on('pageerror', (e) => consoleErrors.push({ text: `pageerror: ${e && e.stack ? e.stack : e}`, url: page.url() }));
    // Every /api/auth request the client makes, with what it sent that the contract cares about.
    page.on('requestfinished', async (req) => {
      const u = new URL(req.url());
      if (u.origin !== new URL(base).origin || !u.pathname.startsWith('/api/auth/')) return;
      const res = await req.response().catch(() => null);
      const h = req.headers();
      authRequests.push({
        method: req.method(),
        path: u.pathname + u.search,
        status: res ? res.status() : null,
        type: req.resourceType(),
        returnRedirect: h['x-auth-return-redirect'] ?? null,
        contentType: h['content-type'] ?? null,
        body: req.method() === 'POST' ? redact(req.postData()) : undefined,
      });
    });

    // 1. Signed out: SessionProvider fetches /session, gets null.
    await page.goto(pageUrl, { waitUntil: 'load' });
    await waitForStatus(page, 'unauthenticated');
    check((await text(page, '#user-name')) === '', 'no user name while signed out', await text(page, '#user-name'));

    // 2. "Sign in": signIn("tiktok", {callbackUrl}) -> POST /signin/tiktok -> {url} -> the consent page.
    await Promise.all([
      page.waitForURL((u) => u.pathname === '/v2/auth/authorize/', { waitUntil: 'load' }),
      page.locator('#signin').click(),
    ]);
    summary.consentUrl = page.url();
    const authorize = page.locator('#authorize');
    await authorize.waitFor({ state: 'visible' });

    // 3. Authorize: mock -> sidecar callback -> back to callbackUrl, signed in.
    await Promise.all([page.waitForURL(pageUrl, { waitUntil: 'load' }), authorize.click()]);
    summary.returnUrl = page.url();
    await waitForStatus(page, 'authenticated');
    summary.userName = await text(page, '#user-name');
    summary.tiktokId = await text(page, '#user-tiktok-id');
    check(summary.userName === USER_NAME, 'user name after sign-in', summary.userName);
    summary.session = await page.evaluate(() => window.NA.session);

    // 4. update(data): GET /csrf + POST /session (JSON {csrfToken, data}); the session is
    //    server-owned, so the answer is the same user.
    summary.updated = await page.evaluate(() => window.NA.update({ name: 'Renamed by the client' }));
    check(summary.updated && summary.updated.user, 'update() must resolve to the session', summary.updated);
    check(summary.updated.user.name === USER_NAME, 'update() must not let the client rename the user', summary.updated);
    await waitForStatus(page, 'authenticated');
    summary.userNameAfterUpdate = await text(page, '#user-name');
    check(summary.userNameAfterUpdate === USER_NAME, 'user name after update()', summary.userNameAfterUpdate);

    // 5. "Sign out": signOut({callbackUrl}) -> POST /signout -> {url} -> the page loads again.
    await page.evaluate(() => {
      window.__beforeSignout = true;
    });
    await Promise.all([page.waitForEvent('load'), page.locator('#signout').click()]);
    await waitForStatus(page, 'unauthenticated');
    summary.postAnswers = await page.evaluate(() => JSON.parse(sessionStorage.getItem('na-answers') || '[]'));
    const signout = summary.postAnswers.find((a) => a.path === '/api/auth/signout');
    check(signout && signout.status === 200, 'POST /api/auth/signout must answer 200', summary.postAnswers);
    summary.signOutAnswer = JSON.parse(signout.body);
    check(
      (await page.evaluate(() => window.__beforeSignout === undefined)) === true,
      'signOut() must navigate (a fresh page)',
      page.url(),
    );
    summary.finalUrl = page.url();
    summary.cookiesAfterSignout = (await context.cookies([base])).map((c) => c.name);

    // Errors on the page under test fail; the mock TikTok's own (its favicon 404) do not.
    const ours = consoleErrors.filter((e) => sameOrigin(e.url, base));
    check(ours.length === 0, 'no errors in the browser console on the test page', ours);
    summary.ok = true;
  } catch (err) {
    summary.failure = String(err && err.message ? err.message : err);
    if (page) {
      summary.failureUrl = page.url();
      summary.failurePageText = (
        await page
          .locator('body')
          .innerText({ timeout: 2_000 })
          .catch(() => '(page text unavailable)')
      ).slice(0, 2000);
    }
    console.error(`browser.mjs failed: ${err && err.stack ? err.stack : err}`);
  } finally {
    if (browser) await browser.close().catch((e) => console.error(`closing the browser failed: ${e}`));
  }
}

function sameOrigin(a, b) {
  try {
    return new URL(a).origin === new URL(b).origin;
  } catch {
    return true;
  }
}

// The CSRF token is a secret of this run; keep its length only.
function redact(body) {
  if (body == null) return null;
  return body.replace(/("?csrfToken"?[=:]"?)([^&"]*)/g, (_, k, v) => `${k}<${v.length}>`);
}

main().finally(() => {
  summary.authRequests = authRequests;
  summary.consoleErrors = consoleErrors;
  process.stdout.write(`${JSON.stringify(summary)}\n`, () => process.exit(summary.ok ? 0 : 1));
});
