// Walks the `nini-auth demo` dashboard in headless Chromium, driven by tests/e2e/browser.rs.
//
//   node tests/browser/demo.mjs <sidecar base URL> <artifacts dir>
//
// Signs in (landing -> dashboard -> sign-in page -> mock TikTok consent -> dashboard), opens the
// account dropdown, syncs from TikTok and waits for the videos, opens "Your devices" from the
// dropdown, checks the signed-identity page, opens the creators page (allowed) and the team page
// (403 from a [[routes.rules]] rule), and signs out from the dropdown. Screenshots of each step
// go to <artifacts dir>/NN-name.png. Prints ONE JSON line with what it saw; exit 1 (with the
// page's URL and text on stderr) on any failure. Every step is bounded by STEP_TIMEOUT_MS.

import { chromium } from 'playwright-core';
import { ARGS, CHROMIUM } from '../chromium.mjs';

const STEP_TIMEOUT_MS = 15_000;
const LOCALE = process.env.NINI_AUTH_BROWSER_LOCALE || 'es-ES';

async function main() {
  const [baseArg, dir] = process.argv.slice(2);
  if (!baseArg || !dir) {
    console.error('usage: node demo.mjs <sidecar base URL> <artifacts dir>');
    process.exit(2);
  }
  const base = baseArg.replace(/\/+$/, '');
  const out = { screenshots: [] };
  let browser;
  let page;
  const consoleErrors = [];
  const shot = async (name) => {
    const path = `${dir}/${name}.png`;
    await page.screenshot({ path, fullPage: true, timeout: STEP_TIMEOUT_MS });
    out.screenshots.push(path);
  };
  try {
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS, timeout: STEP_TIMEOUT_MS });
    const context = await browser.newContext({ locale: LOCALE, viewport: { width: 1280, height: 860 } });
    context.setDefaultTimeout(STEP_TIMEOUT_MS);
    context.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
    page = await context.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
    // Every answer >= 400 the page received (the team page's 403 is expected, nothing else).
    // Chromium's own favicon requests are left out: whether one is made before a page is
    // left is a matter of timing (the mock TikTok answers them 404).
    out.errorResponses = [];
    page.on('response', (r) => {
      const path = new URL(r.url()).pathname;
      if (r.status() >= 400 && path !== '/favicon.ico') out.errorResponses.push(`${r.status()} ${path}`);
    });

    // 1. Sign in: landing -> "open your dashboard" -> sign-in page -> consent -> dashboard.
    await page.goto(`${base}/`, { waitUntil: 'load' });
    await Promise.all([page.waitForURL((u) => u.pathname === '/api/auth/signin'), page.locator('#go-dashboard').click()]);
    await shot('01-signin');
    await Promise.all([
      page.waitForURL((u) => u.pathname === '/v2/auth/authorize/', { waitUntil: 'load' }),
      page.locator('#signin-tiktok').click(),
    ]);
    await Promise.all([page.waitForURL(`${base}/dashboard`, { waitUntil: 'load' }), page.locator('#authorize').click()]);
    out.userName = await page.locator('#user-name').textContent();
    out.verifiedBadge = await page.locator('#verified-badge').isVisible();

    // 2. The account dropdown: closed, then open with its three items.
    out.menuHiddenBefore = await page.locator('#menu').isHidden();
    await page.locator('#avatar-button').click();
    await page.locator('#menu').waitFor({ state: 'visible' });
    out.menuItems = await page.locator('#menu [role=menuitem]').evaluateAll((els) => els.map((e) => e.id));
    await shot('02-menu');
    await page.keyboard.press('Escape');
    await page.locator('#menu').waitFor({ state: 'hidden' });

    // 3. Sync from TikTok: the videos (cover, title, views), the streak and the counts appear.
    await page.locator('#sync').click();
    await page.locator('body[data-synced=true]').waitFor();
    await page.waitForFunction(() => {
      const imgs = [...document.querySelectorAll('.video img')];
      return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0);
    });
    out.videos = await page.locator('.video').evaluateAll((els) =>
      els.map((e) => ({
        title: e.querySelector('h3').textContent,
        views: e.querySelector('.views').textContent,
        cover: e.querySelector('img').naturalWidth > 0,
      })),
    );
    out.streak = await page.locator('#streak-text').textContent();
    out.followers = await page.locator('#stat-followers').textContent();
    out.username = await page.locator('#username').textContent();
    out.syncStatus = await page.locator('#sync-status').textContent();
    await shot('03-dashboard');

    // 4. "Your devices" from the dropdown.
    await page.locator('#avatar-button').click();
    await Promise.all([
      page.waitForURL((u) => u.pathname === '/api/auth/devices', { waitUntil: 'load' }),
      page.locator('#menu-devices').click(),
    ]);
    out.devicesTitle = await page.locator('h1').textContent();
    out.devices = await page.locator('.dev').count();
    await shot('04-devices');

    // 5. The signed identity, verified by the app against the JWKS.
    await page.goto(`${base}/dashboard/identity`, { waitUntil: 'load' });
    out.jwtOk = await page.locator('#jwt-status').getAttribute('data-ok');
    out.jwtStatus = await page.locator('#jwt-status').textContent();
    out.claims = Object.fromEntries(
      await page.locator('#claims td').evaluateAll((tds) => tds.map((td) => [td.dataset.claim, td.textContent])),
    );
    await shot('05-identity');

    // 6. A page a rule lets this user into, and one it does not (403 from the sidecar).
    const creators = await page.goto(`${base}/dashboard/creators`, { waitUntil: 'load' });
    out.creatorsStatus = creators.status();
    out.creatorsLocked = await page.locator('#locked-page').count();
    const team = await page.goto(`${base}/dashboard/team`, { waitUntil: 'load' });
    out.teamStatus = team.status();
    out.teamRequestId = await page.locator('#request-id').textContent();
    out.teamRequestIdHeader = team.headers()['x-request-id'] || null;
    out.teamSwitchHref = await page.locator('#switch-account').getAttribute('href');
    out.teamTitle = await page.locator('h1').textContent();
    await shot('06-forbidden');

    // 7. Sign out from the dropdown (CSRF token + POST), then the dashboard asks to sign in.
    await page.goto(`${base}/dashboard`, { waitUntil: 'load' });
    await page.locator('#avatar-button').click();
    await Promise.all([page.waitForURL(`${base}/`, { waitUntil: 'load' }), page.locator('#menu-signout').click()]);
    await page.goto(`${base}/dashboard`, { waitUntil: 'load' });
    out.afterSignout = new URL(page.url()).pathname;
    console.log(JSON.stringify(out));
  } catch (err) {
    if (page) {
      const text = await page.locator('body').innerText({ timeout: 2_000 }).catch(() => '(page text unavailable)');
      console.error(`page URL at failure: ${page.url()}\npage text: ${text.slice(0, 2000)}`);
    }
    if (consoleErrors.length) console.error(`console errors: ${consoleErrors.join('\n')}`);
    throw err;
  } finally {
    if (browser) await browser.close().catch((e) => console.error(`closing the browser failed: ${e}`));
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(`demo.mjs failed: ${err && err.stack ? err.stack : err}`);
    process.exit(1);
  },
);
