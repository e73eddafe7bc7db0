// The test page for tests/nextauth/browser.mjs: the real next-auth/react client, bundled by
// build.mjs and served by the demo upstream under /static/, so /api/auth is same-origin (the
// browser client always calls the relative basePath "/api/auth").
//
// Uses the client exactly as the NINI frontend does (contexts/auth-context.tsx):
//   signIn("tiktok", {callbackUrl}), signOut({callbackUrl}), useSession().
// Renders #status (loading | authenticated | unauthenticated), #user-name, #user-tiktok-id and
// the #signin / #signout buttons, and exposes window.NA for the test to call and inspect.
import * as React from 'react';
import { createRoot } from 'react-dom/client';
import { SessionProvider, getCsrfToken, getProviders, getSession, signIn, signOut, useSession } from 'next-auth/react';

const HERE = '/static/index.html';

window.NA = { signIn, signOut, getSession, getCsrfToken, getProviders, renders: 0 };

function Status() {
  const { data, status, update } = useSession();
  window.NA.update = update;
  window.NA.session = data;
  window.NA.status = status;
  window.NA.renders += 1;
  const user = (data && data.user) || {};
  return (
    <main>
      <h1>next-auth/react against nini-auth</h1>
      <p>
        status: <b id="status">{status}</b>
      </p>
      <p>
        name: <b id="user-name">{user.name || ''}</b>
      </p>
      <p>
        tiktokId: <code id="user-tiktok-id">{user.tiktokId || ''}</code>
      </p>
      <button id="signin" type="button" onClick={() => signIn('tiktok', { callbackUrl: HERE })}>
        Sign in
      </button>{' '}
      <button id="signout" type="button" onClick={() => signOut({ callbackUrl: HERE })}>
        Sign out
      </button>
    </main>
  );
}

createRoot(document.getElementById('root')).render(
  <SessionProvider>
    <Status />
  </SessionProvider>,
);
