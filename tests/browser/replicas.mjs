// Real-browser sign-in, browsing and sign-out through nginx balancing several nini-auth
// replicas (round-robin), driven by tests/e2e/replicas_nginx.rs.
//
//   node tests/browser/replicas.mjs <front base URL> <reloads>
//
// Signs in on /dashboard (sign-in page -> mock TikTok consent -> dashboard), reloads the
// dashboard <reloads> times recording which replica answered (nginx's X-Upstream header) and
// the name shown, signs out through the sign-out page, and checks /dashboard asks for a
// sign-in again. Prints ONE JSON line:
//   {"signedIn", "reloads": [{"upstream", "status", "userName"}], "afterSignout"}
// Exit 0 on success; on a failure prints the error (with the page's URL) and exits 1.

import { chromium } from 'playwright-core';
import { ARGS, CHROMIUM } from '../chromium.mjs';

const STEP_TIMEOUT_MS = 15_000;

async function main() {
  const [baseArg, reloadsArg] = process.argv.slice(2);
  if (!baseArg || !reloadsArg) {
    console.error('usage: node replicas.mjs <front base URL> <reloads>');
    process.exit(2);
  }
  const base = baseArg.replace(/\/+$/, '');
  const dashboard = `${base}/dashboard`;
  let browser;
  let page;
  try {
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS, timeout: STEP_TIMEOUT_MS });
    const context = await browser.newContext({ locale: 'es-ES' });
    context.setDefaultTimeout(STEP_TIMEOUT_MS);
    context.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
    page = await context.newPage();

    await page.goto(dashboard, { waitUntil: 'load' });
    const button = page.locator('#signin-tiktok');
    await Promise.all([
      page.waitForURL((u) => u.pathname === '/v2/auth/authorize/', { waitUntil: 'load' }),
      button.click(),
    ]);
    await Promise.all([page.waitForURL(dashboard, { waitUntil: 'load' }), page.locator('#authorize').click()]);
    const signedIn = await page.locator('#user-name').textContent();

    // One request per reload (no favicon or other subresources), so nginx's round-robin
    // alternates the page loads themselves between the replicas.
    await page.route('**/*', (route) =>
      route.request().resourceType() === 'document' ? route.continue() : route.abort(),
    );
    const reloads = [];
    for (let i = 0; i < Number(reloadsArg); i++) {
      const resp = await page.reload({ waitUntil: 'load' });
      reloads.push({
        upstream: resp ? resp.headers()['x-upstream'] || null : null,
        status: resp ? resp.status() : 0,
        userName: await page.locator('#user-name').textContent().catch(() => null),
      });
    }

    await page.goto(`${base}/api/auth/signout`, { waitUntil: 'load' });
    await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.locator('#signout').click()]);
    await page.goto(dashboard, { waitUntil: 'load' });
    const afterSignout = new URL(page.url()).pathname;

    console.log(JSON.stringify({ signedIn, reloads, afterSignout }));
  } catch (err) {
    if (page) {
      const text = await page.locator('body').innerText({ timeout: 2_000 }).catch(() => '(page text unavailable)');
      console.error(`page URL at failure: ${page.url()}\npage text: ${text.slice(0, 2000)}`);
    }
    throw err;
  } finally {
    if (browser) await browser.close().catch((e) => console.error(`closing the browser failed: ${e}`));
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(`replicas.mjs failed: ${err && err.stack ? err.stack : err}`);
    process.exit(1);
  },
);
