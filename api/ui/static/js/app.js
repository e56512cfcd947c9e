// The UI's entry point: routing on the URL fragment (#/services/web), the
// header (token, theme), the live watch and the connection banner.

import { api, token, setToken, ApiError, NetworkError } from './api.js';
import { h, replace, tick } from './dom.js';
import { Live, Refresher } from './live.js';
import { overview } from './views/overview.js';
import { services } from './views/services.js';
import { service } from './views/service.js';
import { instance } from './views/instance.js';
import { lbs } from './views/lbs.js';

const main = document.getElementById('main');
const banner = document.getElementById('banner');
let current = null; // {view, refresher, timer}
let whoami = null;

// route turns the fragment into a view: #/, #/services, #/services/NAME,
// #/services/NAME/ID, #/lbs (each with optional ?filters).
function route() {
  const [p, q] = (location.hash.replace(/^#/, '') || '/').split('?');
  const params = new URLSearchParams(q ?? '');
  const parts = p.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] === 'services' && parts.length === 3) return { nav: 'services', view: instance(parts[1], parts[2]) };
  if (parts[0] === 'services' && parts.length === 2) return { nav: 'services', view: service(parts[1], params) };
  if (parts[0] === 'services') return { nav: 'services', view: services(params) };
  if (parts[0] === 'lbs') return { nav: 'lbs', view: lbs() };
  return { nav: 'overview', view: overview() };
}

function show() {
  if (current) { current.refresher.cancel(); clearInterval(current.timer); }
  const { nav, view } = route();
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === nav) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  document.title = `${view.title} · Beacon`;
  const refresher = new Refresher(() => load(view));
  current = { view, refresher, timer: view.every ? setInterval(() => refresher.request(), view.every) : null };
  main.replaceChildren(view.root);
  refresher.request();
}

// load runs a view's refresh; a failure is shown in the page, in place of
// nothing or below what the view last showed.
async function load(view) {
  const old = main.querySelector(':scope > .load-error');
  try {
    await view.refresh();
    old?.remove();
  } catch (e) {
    const msg = e instanceof ApiError && (e.status === 401 || e.status === 403)
      ? [`${e.toString()}. `, h('button', { type: 'button', class: 'small', onclick: openToken }, 'Enter a token')]
      : e instanceof NetworkError ? 'The agent cannot be reached; this page shows what it last read.' : `Cannot load: ${e.toString?.() ?? e}`;
    const box = h('p', { class: 'notice load-error', role: 'alert' }, msg);
    // The token in use was revoked: the header must not keep naming it.
    if (e instanceof ApiError && e.code === 'invalid_token') refreshWhoami();
    if (old) old.replaceWith(box); else main.prepend(box);
  }
}

function refreshNow() { current?.refresher.request(); }

// --- connection banner -------------------------------------------------------

function onConnection(ok, err) {
  if (ok) {
    banner.hidden = true;
    refreshNow();
  } else {
    replace(banner, 'Connection to the agent lost — retrying', err?.message ? ` (${err.message})` : '', '. The page shows what it last read.');
    banner.hidden = false;
  }
}

// --- token -------------------------------------------------------------------

const tokenDialog = document.getElementById('token-dialog');
const tokenInput = document.getElementById('token-input');
const tokenError = document.getElementById('token-error');

function openToken() {
  tokenInput.value = '';
  tokenError.hidden = true;
  document.getElementById('token-why').textContent = !whoami?.auth
    ? 'This agent does not check tokens: everyone may read and act.'
    : whoami.anonymous_read
      ? 'Anyone may read; actions need a token with write access to the service (or the management token).'
      : 'This agent needs a token to read or act.';
  if (!tokenDialog.open) tokenDialog.showModal();
  tokenInput.focus();
}

document.getElementById('token-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const previous = token();
  setToken(tokenInput.value.trim());
  await refreshWhoami();
  if (whoami?.error) {
    tokenError.textContent = `Refused: ${whoami.error}`;
    tokenError.hidden = false;
    setToken(previous);
    await refreshWhoami();
    return;
  }
  tokenDialog.close();
  live.restart();
  refreshNow();
});
document.getElementById('token-cancel').addEventListener('click', () => tokenDialog.close());
document.getElementById('token-forget').addEventListener('click', async () => {
  setToken('');
  tokenDialog.close();
  await refreshWhoami();
  live.restart();
  refreshNow();
});
document.getElementById('auth-button').addEventListener('click', openToken);

async function refreshWhoami() {
  const button = document.getElementById('auth-button');
  try {
    whoami = (await api('GET', '/v1/ui/whoami')).data;
  } catch (e) {
    button.textContent = 'Token: ?';
    return;
  }
  document.getElementById('node').textContent = `agent ${whoami.node}`;
  if (!whoami.auth) button.textContent = 'Auth off';
  else if (whoami.error) button.textContent = 'Token refused';
  else if (whoami.policy) button.textContent = `Token: ${whoami.accessor === 'management' ? 'management' : `${whoami.policy} (${whoami.accessor.slice(0, 8)})`}`;
  else button.textContent = whoami.anonymous_read ? 'Read-only: enter a token' : 'Enter a token';
}

// --- theme -------------------------------------------------------------------

const THEMES = ['auto', 'light', 'dark'];
function applyTheme(t) {
  if (t === 'auto') document.documentElement.removeAttribute('data-theme');
  else document.documentElement.setAttribute('data-theme', t);
  document.getElementById('theme-button').textContent = `Theme: ${t}`;
}
document.getElementById('theme-button').addEventListener('click', () => {
  const t = THEMES[(THEMES.indexOf(localStorage.getItem('beacon.theme') ?? 'auto') + 1) % THEMES.length];
  localStorage.setItem('beacon.theme', t);
  applyTheme(t);
});
applyTheme(localStorage.getItem('beacon.theme') ?? 'auto');

// "/" focuses the search box of a list, as in many consoles.
document.addEventListener('keydown', (e) => {
  if (e.key === '/' && !e.ctrlKey && !e.metaKey && !['INPUT', 'SELECT', 'TEXTAREA'].includes(document.activeElement?.tagName) && !document.querySelector('dialog[open]')) {
    const box = main.querySelector('input[type="search"]');
    if (box) { e.preventDefault(); box.focus(); }
  }
});

// --- start -------------------------------------------------------------------

const live = new Live({ onChange: refreshNow, onConnection });
// Relative times move without catalog writes: every second, rewrite them
// from what the page already holds, without a read.
setInterval(() => tick(main), 1000);
window.addEventListener('hashchange', () => { show(); main.focus({ preventScroll: true }); });
await refreshWhoami();
show();
live.start();
if (whoami?.auth && !whoami.anonymous_read && !whoami.policy) openToken();
