// Real-browser sign-in through nini-auth and the mock TikTok, driven by tests/e2e/browser.rs.
//
//   node tests/browser/login.mjs <sidecar base URL> <screenshot path>
//
// Opens <base>/dashboard in headless Chromium (Debian's, /usr/bin/chromium, or $CHROMIUM_PATH),
// expects the sign-in page, screenshots it (full page) to <screenshot path>, clicks
// "Continue with TikTok", authorizes on the mock consent page, waits for <base>/dashboard and
// prints ONE JSON line:
//   {"signinUrl", "consentUrl", "finalUrl", "userName", "cookies": [{name, httpOnly, sameSite, secure}]}
// Exit 0 on success; on any failure prints the error (with the page's URL) to stderr and exits 1.
// Every step is bounded by STEP_TIMEOUT_MS; the browser is always closed.

import { chromium } from 'playwright-core';
import { ARGS, CHROMIUM } from '../chromium.mjs';

const STEP_TIMEOUT_MS = 15_000;
// The sign-in page negotiates its language from Accept-Language; pin it so the screenshot is
// reproducible. Spanish is the NINI platform's home language (and the page's own default).
const LOCALE = process.env.NINI_AUTH_BROWSER_LOCALE || 'es-ES';

function usage() {
  console.error('usage: node login.mjs <sidecar base URL> <screenshot path>');
  process.exit(2);
}

async function main() {
  const [baseArg, shotPath] = process.argv.slice(2);
  if (!baseArg || !shotPath) usage();
  const base = baseArg.replace(/\/+$/, '');
  const dashboard = `${base}/dashboard`;

  let browser;
  let page;
  // Console errors explain blocked navigations (e.g. a Content-Security-Policy violation).
  const consoleErrors = [];
  try {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ARGS,
      timeout: STEP_TIMEOUT_MS,
    });
    const context = await browser.newContext({
      locale: LOCALE,
      viewport: { width: 1280, height: 800 },
    });
    context.setDefaultTimeout(STEP_TIMEOUT_MS);
    context.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
    page = await context.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });

    // 1. A protected page sends a signed-out browser to the sign-in page.
    await page.goto(dashboard, { waitUntil: 'load' });
    const signinUrl = page.url();
    if (new URL(signinUrl).pathname !== '/api/auth/signin') {
      throw new Error(`expected the sign-in page after GET /dashboard, got ${signinUrl}`);
    }
    const button = page.locator('#signin-tiktok');
    await button.waitFor({ state: 'visible' });
    await page.screenshot({ path: shotPath, fullPage: true, timeout: STEP_TIMEOUT_MS });

    // 2. "Continue with TikTok" POSTs the form; the sidecar redirects to TikTok's consent page.
    await Promise.all([
      page.waitForURL((u) => u.pathname === '/v2/auth/authorize/', { waitUntil: 'load' }),
      button.click(),
    ]);
    const consentUrl = page.url();
    const authorize = page.locator('#authorize');
    await authorize.waitFor({ state: 'visible' });

    // 3. Authorize: mock TikTok -> sidecar callback -> back to the page we asked for.
    await Promise.all([
      page.waitForURL(dashboard, { waitUntil: 'load' }),
      authorize.click(),
    ]);
    const finalUrl = page.url();
    const userName = await page.locator('#user-name').textContent({ timeout: STEP_TIMEOUT_MS });

    const cookies = (await context.cookies([base])).map((c) => ({
      name: c.name,
      httpOnly: c.httpOnly,
      sameSite: c.sameSite,
      secure: c.secure,
    }));
    console.log(JSON.stringify({ signinUrl, consentUrl, finalUrl, userName, cookies }));
  } catch (err) {
    // Say where the browser was, and what it showed, before the browser goes away.
    if (page) {
      const url = page.url();
      const text = await page
        .locator('body')
        .innerText({ timeout: 2_000 })
        .catch(() => '(page text unavailable)');
      console.error(`page URL at failure: ${url}\npage text: ${text.slice(0, 2000)}`);
    }
    for (const e of consoleErrors) console.error(`browser console error: ${e}`);
    throw err;
  } finally {
    if (browser) {
      await browser.close().catch((e) => console.error(`closing the browser failed: ${e}`));
    }
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(`login.mjs failed: ${err && err.stack ? err.stack : err}`);
    process.exit(1);
  },
);
