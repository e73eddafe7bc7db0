// Bundles page.jsx (the real next-auth/react, React, ReactDOM) with esbuild into
// <out dir>/bundle.js and copies index.html beside it; the demo upstream serves that directory
// under /static/ (tests/e2e/nextauth_client.rs builds into a temporary directory).
//
//   node tests/nextauth/build.mjs [out dir]      (default: tests/nextauth/dist, git-ignored)
//
// The browser has no `process`: NODE_ENV is defined at build time and a banner gives the client
// an empty process.env, so NEXTAUTH_URL is unset and the client calls the relative "/api/auth".

import { copyFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.resolve(process.argv[2] || path.join(here, 'dist'));

await mkdir(out, { recursive: true });
await build({
  entryPoints: [path.join(here, 'page.jsx')],
  outfile: path.join(out, 'bundle.js'),
  bundle: true,
  format: 'iife',
  platform: 'browser',
  target: 'es2020',
  jsx: 'automatic',
  define: { 'process.env.NODE_ENV': '"production"' },
  banner: { js: 'var process={env:{NODE_ENV:"production"}};' },
  logLevel: 'warning',
});
await copyFile(path.join(here, 'index.html'), path.join(out, 'index.html'));
console.log(JSON.stringify({ out, files: ['index.html', 'bundle.js'] }));
