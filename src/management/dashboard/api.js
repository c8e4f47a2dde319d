// The dashboard's only way to the broker: the management HTTP API (/api/...), with
// HTTP basic auth. The credentials are kept in sessionStorage, so they last as long
// as the tab and never reach a cookie the broker would have to trust.

const KEY = 'haremq.session';

/** A failed API call: the HTTP status (0 when the broker could not be reached) and
 *  RabbitMQ's `reason`. */
export class ApiError extends Error {
  constructor(status, reason) {
    super(reason);
    this.status = status;
  }
}

let unauthorized = () => {};

/** Called with the reason whenever a call gets 401: the credentials stopped working
 *  (password changed, user deleted), so the app goes back to the login form. */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

/** `{auth, user, tags}` of the logged-in user, or null. */
export function session() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY));
  } catch {
    return null;
  }
}

export function logout() {
  sessionStorage.removeItem(KEY);
}

function basicAuth(user, password) {
  // btoa takes Latin-1 only: encode the UTF-8 bytes one character each.
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  return 'Basic ' + btoa(String.fromCharCode(...bytes));
}

/** Checks the credentials against /api/whoami and keeps them for the session. */
export async function login(user, password) {
  const auth = basicAuth(user, password);
  const me = await request('GET', '/whoami', undefined, { auth, quiet: true });
  const tags = Array.isArray(me.tags) ? me.tags : String(me.tags || '').split(',').filter(Boolean);
  sessionStorage.setItem(KEY, JSON.stringify({ auth, user: me.name, tags }));
  return me;
}

/** `/a/b` from raw path segments, each percent-encoded (the vhost `/` is `%2F`). */
export function path(...segments) {
  return '/' + segments.map(encodeURIComponent).join('/');
}

/**
 * One API call. Options: `auth` (instead of the session's), `quiet` (no logout on
 * 401), `optional` (a 404 or 405 answers null: an endpoint this broker may not have),
 * `headers`, `raw` (resolve to {status, body} whatever the status).
 */
export async function request(method, apiPath, body, opts = {}) {
  const auth = opts.auth ?? session()?.auth;
  const headers = { accept: 'application/json', ...(opts.headers || {}) };
  if (auth) headers.authorization = auth;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res;
  try {
    res = await fetch('/api' + apiPath, {
      method,
      headers,
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      // 'omit' keeps the browser out of authentication: no login pop-up on 401,
      // no cached credentials; the authorization header above is all it sends.
      credentials: 'omit',
      cache: 'no-store',
    });
  } catch {
    throw new ApiError(0, 'the broker cannot be reached');
  }
  const text = await res.text();
  let json = null;
  if (text) {
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
  }
  if (opts.raw) return { status: res.status, body: json };
  if (res.status === 401 && !opts.quiet) unauthorized(json?.reason || 'Login failed');
  if (opts.optional && (res.status === 404 || res.status === 405)) return null;
  if (!res.ok) {
    const reason = json?.reason || json?.error || `${res.status} ${res.statusText}`;
    throw new ApiError(res.status, typeof reason === 'string' ? reason : JSON.stringify(reason));
  }
  return json ?? {};
}

export const get = (p, opts) => request('GET', p, undefined, opts);
export const put = (p, body, opts) => request('PUT', p, body ?? {}, opts);
export const post = (p, body, opts) => request('POST', p, body ?? {}, opts);
export const del = (p, opts) => request('DELETE', p, undefined, opts);

/** The API's name of an exchange: the default exchange `""` is `amq.default` in paths. */
export function exchangePathName(name) {
  return name === '' ? 'amq.default' : name;
}

/** Lists a collection, optionally within one vhost: `/queues` or `/queues/{vhost}`. */
export function list(collection, vhost, opts) {
  return get(vhost ? path(collection, vhost) : path(collection), opts);
}
