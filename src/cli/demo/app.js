// The NINI demo dashboard's script: the account dropdown, sign-out through the next-auth
// endpoint (CSRF token, then POST), the profile card and videos from the sidecar's
// /api/auth/tiktok/* endpoints, and "Sync from TikTok" (POST /api/user/sync-tiktok).
// Same-origin requests only: the session cookie goes with them, no token is ever handled here.
'use strict';

const $ = (sel) => document.querySelector(sel);
const T = JSON.parse(document.getElementById('i18n').textContent);
const fmt = (s, vars) => s.replace(/\{(\w+)\}/g, (_, k) => String(vars[k]));
const num = (n) => new Intl.NumberFormat(T.lang).format(n);

// === account menu ===
const button = $('#avatar-button');
const menu = $('#menu');
if (button && menu) {
  const close = () => {
    menu.hidden = true;
    button.setAttribute('aria-expanded', 'false');
  };
  button.addEventListener('click', (e) => {
    e.stopPropagation();
    const open = menu.hidden;
    menu.hidden = !open;
    button.setAttribute('aria-expanded', String(open));
  });
  document.addEventListener('click', (e) => {
    if (!menu.contains(e.target)) close();
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') close();
  });
}

// Sign out the way next-auth/react does: a CSRF token, then POST /api/auth/signout; the
// answer names where to go. Without script the link opens the sidecar's sign-out page.
const signout = $('#menu-signout');
if (signout) {
  signout.addEventListener('click', async (e) => {
    e.preventDefault();
    try {
      const { csrfToken } = await (await fetch('/api/auth/csrf')).json();
      const r = await fetch('/api/auth/signout', {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded', 'X-Auth-Return-Redirect': '1' },
        body: new URLSearchParams({ csrfToken, callbackUrl: '/' }),
      });
      const { url } = await r.json();
      window.location.href = url || '/';
    } catch (_) {
      window.location.href = '/api/auth/signout';
    }
  });
}

// === profile card, videos, sync ===
function showProfile(p) {
  if (!p) return;
  if (p.username) $('#username').textContent = '@' + p.username;
  if (p.verified) $('#verified-badge').hidden = false;
  const set = (id, v) => {
    const el = $(id);
    if (el) el.textContent = v === null || v === undefined ? '—' : num(v);
  };
  set('#stat-followers', p.followerCount);
  set('#stat-likes', p.likesCount);
  set('#stat-videos', p.lastSyncedAt ? p.videos : null);
  set('#stat-streak', p.lastSyncedAt ? p.streak : null);
  if (p.lastSyncedAt) {
    $('#streak').hidden = false;
    $('#streak-text').textContent = fmt(T.days, { n: p.streak });
  }
}

function showVideos(list) {
  const grid = $('#videos');
  grid.replaceChildren();
  if (!list.length) {
    const p = document.createElement('p');
    p.className = 'muted';
    p.textContent = T.noVideos;
    grid.append(p);
    return;
  }
  for (const v of list) {
    const card = document.createElement('article');
    card.className = 'video';
    card.dataset.videoId = v.id;
    const img = document.createElement('img');
    img.alt = '';
    img.loading = 'lazy';
    if (v.coverImageUrl) img.src = v.coverImageUrl;
    const title = document.createElement('h3');
    title.textContent = v.title || '—';
    const views = document.createElement('p');
    views.className = 'views';
    views.textContent = fmt(T.views, { n: num(v.viewCount || 0) });
    card.append(img, title, views);
    grid.append(card);
  }
}

async function loadVideos() {
  const r = await fetch('/api/auth/tiktok/videos?limit=12');
  if (r.ok) showVideos((await r.json()).videos);
}

async function loadProfile() {
  const r = await fetch('/api/auth/tiktok/profile');
  if (!r.ok) return;
  const { profile } = await r.json();
  showProfile(profile);
  if (profile.lastSyncedAt) {
    $('#sync-status').textContent = fmt(T.lastSynced, { t: new Date(profile.lastSyncedAt).toLocaleString(T.lang) });
    await loadVideos();
  }
}

const sync = $('#sync');
if (sync) {
  loadProfile();
  sync.addEventListener('click', async () => {
    const status = $('#sync-status');
    sync.disabled = true;
    status.textContent = T.syncing;
    try {
      const r = await fetch('/api/user/sync-tiktok', { method: 'POST' });
      const body = await r.json().catch(() => ({}));
      if (r.ok) {
        showProfile(body.user);
        await loadVideos();
        status.textContent = fmt(T.synced, { n: body.user.videos });
        document.body.dataset.synced = 'true';
      } else if (body.error === 'cooldown') {
        status.textContent = fmt(T.cooldown, { s: body.retryAfter });
      } else {
        status.textContent = fmt(T.failed, { e: body.error || r.status });
      }
    } catch (e) {
      status.textContent = fmt(T.failed, { e: e.message });
    } finally {
      sync.disabled = false;
    }
  });
}
