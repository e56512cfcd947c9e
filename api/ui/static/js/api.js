// The agent's API as the UI uses it. Requests go to the page's own origin,
// carry the token (if any) in the Authorization header, and send bodies as
// application/json. The token lives in sessionStorage: it is gone when the
// tab closes and is never written into a URL.

const TOKEN_KEY = 'beacon.token';

export function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }
export function setToken(t) { if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY); }

// ApiError is an answer with an error status: the API's {error, code, field}.
export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
  toString() { return `${this.status} ${this.code}: ${this.message}${this.field ? ` (field ${this.field})` : ''}`; }
}

// NetworkError means the agent could not be reached at all.
export class NetworkError extends Error {}

// api sends one request. It resolves to {data, index} or throws ApiError,
// NetworkError, or the AbortError of its signal.
export async function api(method, path, { body, signal } = {}) {
  const headers = { Accept: 'application/json' };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  const init = { method, headers, signal, credentials: 'same-origin', mode: 'same-origin', cache: 'no-store', redirect: 'error' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new NetworkError(`cannot reach the agent: ${e.message}`);
  }
  let text;
  try {
    text = await resp.text();
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new NetworkError(`connection lost while reading: ${e.message}`);
  }
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON: keep the text */ }
  if (!resp.ok) {
    throw new ApiError(resp.status, data?.code ?? `http_${resp.status}`, data?.error ?? (text || resp.statusText), data?.field);
  }
  return { data, index: Number(resp.headers.get('X-Beacon-Index') || 0) };
}

// path joins escaped segments: path('v1', 'services', name) -> /v1/services/NAME.
export function path(...segments) {
  return '/' + segments.map(encodeURIComponent).join('/');
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === '') continue;
    for (const one of Array.isArray(v) ? v : [v]) q.append(k, one);
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}
