// The admin API as the console calls it. The token lives in sessionStorage
// (gone when the tab closes) and only ever travels in the Authorization
// header, never in a URL.

const KEY = 'spine-scheduler.token';

// The API is mounted at the console's parent: `<base>/ui/` -> `<base>/`, so
// a reverse proxy that serves the replica under a prefix works too.
const BASE = new URL('..', document.baseURI);

export function savedToken() {
  return sessionStorage.getItem(KEY);
}

export function saveToken(token) {
  sessionStorage.setItem(KEY, token);
}

export function forgetToken() {
  sessionStorage.removeItem(KEY);
}

// An answer other than 2xx, in the API's words ({"error": {code, message, field}}).
export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

// Listeners told when the token stops working (401), so the app can ask again.
const onUnauthorized = new Set();
export function whenUnauthorized(fn) {
  onUnauthorized.add(fn);
  return () => onUnauthorized.delete(fn);
}

// Calls `path` (e.g. "v1/schedules") with the saved token (or `token`);
// resolves to the JSON body, rejects with an ApiError.
export async function call(method, path, { body, query, token } = {}) {
  const url = new URL(path, BASE);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, v);
  }
  const headers = { Accept: 'application/json' };
  const bearer = token || savedToken();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const init = { method, headers, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (e) {
    throw new ApiError(0, 'network', `The replica did not answer (${e.message}).`, null);
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (_) {
    json = null;
  }
  if (!response.ok) {
    const e = (json && json.error) || {};
    const err = new ApiError(
      response.status,
      e.code || 'http_' + response.status,
      e.message || `${response.status} ${response.statusText}`,
      e.field || null,
    );
    // Only a saved token can stop working; a token being tried is the caller's.
    if (response.status === 401 && !token && bearer) onUnauthorized.forEach((fn) => fn(err));
    throw err;
  }
  return json;
}

export const get = (path, query) => call('GET', path, { query });
export const post = (path, body) => call('POST', path, { body });

// Path segment of a schedule name (names are `A-Z a-z 0-9 . _ -`, but be exact).
export const seg = (s) => encodeURIComponent(s);
