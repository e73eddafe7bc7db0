// How the browser tests launch Debian's Chromium headless (no browser download is possible
// here): the binary ($CHROMIUM_PATH or /usr/bin/chromium) and the flags that keep it from
// reaching the network on its own.
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
];
