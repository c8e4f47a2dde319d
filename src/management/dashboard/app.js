// The dashboard's shell: login, the header and tabs, hash routing (#/queues/%2F/q)
// and the 5-second refresh. Pages live in pages/*.js; each `mount`s into <main> and
// returns `{refresh}`, which the shell calls at once and then every 5 s.

import * as api from './api.js';
import { clearErrors, fill, h, notify } from './dom.js';
import * as overview from './pages/overview.js';
import * as connections from './pages/connections.js';
import * as exchanges from './pages/exchanges.js';
import * as queues from './pages/queues.js';
import * as admin from './pages/admin.js';

const REFRESH_MS = 5000;

const pages = {
  overview: overview.mount,
  connections: connections.mountConnections,
  channels: connections.mountChannels,
  exchanges: exchanges.mount,
  queues: queues.mount,
  vhosts: admin.mountVhosts,
  users: admin.mountUsers,
  definitions: admin.mountDefinitions,
};

const $ = (id) => document.getElementById(id);

/** What every page may read: the vhost filter, the known vhosts, the user. */
const ctx = {
  vhost: sessionStorage.getItem('haremq.vhost') || '',
  vhosts: [],
  user: null,
  isAdmin: false,
  /** Re-reads the vhost list (after a vhost is added or deleted). */
  reloadVhosts,
};

let current = null; // {name, refresh}
let refreshing = false;

function showLogin(message) {
  stopTicker();
  current = null;
  $('app').hidden = true;
  $('login').hidden = false;
  const err = $('login-error');
  err.hidden = !message;
  err.textContent = message || '';
  $('login-password').value = '';
  (message ? $('login-password') : $('login-user')).focus();
}

async function showApp() {
  const s = api.session();
  ctx.user = s.user;
  ctx.isAdmin = s.tags.includes('administrator');
  $('login').hidden = true;
  $('app').hidden = false;
  fill($('whoami'), h('span', { title: (s.tags || []).join(', ') || 'no tags' }, s.user));
  await reloadVhosts();
  try {
    const o = await api.get('/overview');
    fill($('node-info'), h('span', { title: 'API version ' + (o.management_version || '') }, `${o.product_name || 'HareMQ'} ${o.product_version || ''} · ${o.node || ''}`));
  } catch {
    // Not worth a notice: the overview page says what is wrong.
  }
  route();
  startTicker();
}

async function reloadVhosts() {
  try {
    const list = await api.get('/vhosts');
    ctx.vhosts = list.map((v) => v.name).sort();
  } catch {
    ctx.vhosts = ctx.vhosts.length ? ctx.vhosts : ['/'];
  }
  if (ctx.vhost && !ctx.vhosts.includes(ctx.vhost)) setVhost('');
  const select = $('vhost-filter');
  fill(select, h('option', { value: '' }, 'All'), ctx.vhosts.map((v) => h('option', { value: v, selected: v === ctx.vhost }, v)));
}

function setVhost(v) {
  ctx.vhost = v;
  sessionStorage.setItem('haremq.vhost', v);
}

/** `#/queues/%2F/name` → ['queues', '/', 'name']. */
function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const parts = raw ? raw.split('/').map((s) => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  }) : [];
  return { name: parts[0] || 'overview', params: parts.slice(1) };
}

function route() {
  if (!api.session()) return;
  const { name, params } = parseHash();
  const mount = pages[name];
  for (const a of document.querySelectorAll('#tabs a')) a.classList.toggle('active', a.dataset.page === name);
  clearErrors();
  const root = fill($('page'));
  if (!mount) {
    root.append(h('section', { class: 'panel' }, h('h2', {}, 'Not found'), h('p', {}, `No page "${name}". `, h('a', { href: '#/' }, 'Overview'))));
    current = null;
    return;
  }
  const page = mount(root, params, ctx) || {};
  current = { name, refresh: page.refresh };
  document.title = `HareMQ · ${page.title || name}`;
  refresh();
}

/** Refreshes the current page (one refresh at a time; a slow API is not piled on). */
async function refresh() {
  const page = current;
  if (!page || !page.refresh || refreshing) return;
  refreshing = true;
  const status = $('last-update');
  try {
    await page.refresh();
    status.classList.remove('stale');
    status.textContent = 'updated ' + new Date().toLocaleTimeString('en-GB');
  } catch (err) {
    if (err.status !== 401) {
      status.classList.add('stale');
      status.textContent = 'update failed: ' + err.message;
    }
  } finally {
    refreshing = false;
  }
}

let ticker = null;

function startTicker() {
  stopTicker();
  ticker = setInterval(() => {
    // The overview's graphs keep sampling whatever page is shown; on the overview,
    // its refresh takes the sample.
    const onOverview = current?.name === 'overview';
    if (!onOverview) overview.sample().catch(() => {});
    if (onOverview || $('auto-refresh').checked) refresh();
  }, REFRESH_MS);
}

function stopTicker() {
  if (ticker) clearInterval(ticker);
  ticker = null;
}

function init() {
  api.onUnauthorized((reason) => {
    api.logout();
    showLogin(reason === 'Login failed' ? 'Your credentials were refused; log in again.' : reason);
  });
  $('login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const button = $('login-submit');
    button.disabled = true;
    try {
      await api.login($('login-user').value.trim(), $('login-password').value);
      await showApp();
    } catch (err) {
      const reason = err.status === 401 ? (err.message === 'Login failed' ? 'Login failed: wrong username or password.' : `Login refused: ${err.message}.`) : `Login failed: ${err.message}.`;
      showLogin(reason);
    } finally {
      button.disabled = false;
    }
  });
  $('logout').addEventListener('click', () => {
    api.logout();
    overview.reset();
    showLogin();
  });
  $('refresh-now').addEventListener('click', () => refresh());
  $('vhost-filter').addEventListener('change', (e) => {
    setVhost(e.target.value);
    route();
  });
  window.addEventListener('hashchange', route);
  window.addEventListener('unhandledrejection', (e) => {
    if (e.reason?.status !== 401) notify(e.reason?.message || String(e.reason), 'error');
  });
  if (api.session()) showApp();
  else showLogin();
}

init();
