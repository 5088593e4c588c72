// The API client: the bearer token (sessionStorage), JSON requests to /api/v1, errors as
// ApiError, and authenticated downloads (fetch with the token, then a blob URL).

const KEY = 'trainyard.token';
export const BASE = '/api/v1';

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

/** An error answer of the API: {error: {code, message, details}}, or a network failure. */
export class ApiError extends Error {
  constructor(status, code, message, details = [], headers = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.details = details;
    this.headers = headers;
  }
}

/** The token is missing, expired or revoked: the app goes back to the login view. */
export function unauthorized(message) {
  setToken(null);
  window.dispatchEvent(new CustomEvent('trainyard:unauthorized', { detail: { message } }));
}

export function authHeaders(extra = {}) {
  const t = token();
  return { ...(t ? { Authorization: `Bearer ${t}` } : {}), ...extra };
}

export function url(path, query = {}) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') params.set(key, value);
  }
  const qs = params.toString();
  return `${BASE}${path}${qs ? `?${qs}` : ''}`;
}

/** Throw an ApiError for a non-2xx answer (and log the user out on a 401). */
export async function check(resp) {
  if (resp.ok) return resp;
  let body = null;
  try {
    body = await resp.json();
  } catch {
    body = null;
  }
  const err = body?.error || {};
  const message = err.message || `${resp.status} ${resp.statusText}`;
  if (resp.status === 401) unauthorized(message);
  throw new ApiError(resp.status, err.code || 'http_error', message, err.details || [], resp.headers);
}

/** api('/jobs', {query, method, body, signal}) -> parsed JSON (null for a 204). */
export async function api(path, { query, method = 'GET', body, signal, headers = {} } = {}) {
  const init = { method, signal, headers: authHeaders({ Accept: 'application/json', ...headers }) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  let resp;
  try {
    resp = await fetch(url(path, query), init);
  } catch (exc) {
    if (exc.name === 'AbortError') throw exc;
    throw new ApiError(0, 'network', `the API did not answer (${exc.message})`);
  }
  await check(resp);
  return resp.status === 204 ? null : resp.json();
}

/** Download an authenticated binary answer as a file named by Content-Disposition. */
export async function download(path, fallbackName) {
  const resp = await check(await fetch(url(path), { headers: authHeaders() }));
  const blob = await resp.blob();
  const disposition = resp.headers.get('Content-Disposition') || '';
  const name = /filename="([^"]+)"/.exec(disposition)?.[1] || fallbackName;
  const link = document.createElement('a');
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  return { name, size: blob.size };
}

/** Ignore an aborted request (the page was left); rethrow anything else. */
export function unlessAborted(fn) {
  return (exc) => {
    if (exc?.name !== 'AbortError') fn(exc);
  };
}
