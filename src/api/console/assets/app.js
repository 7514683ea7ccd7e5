// The console's shell: sign-in with a token (kept in sessionStorage), the
// role it has (GET /v1/whoami), navigation and the hash router.
//
// Routes: #/schedules, #/schedules/NAME, #/runs?filters, #/runs/ID, #/cluster.

import { html, render, useState, useEffect, useRef, useCallback } from './vendor/htm-preact-standalone.module.js';
import { call, savedToken, saveToken, forgetToken, whenUnauthorized } from './api.js';
import { Role, Notify, ErrorNote } from './widgets.js';
import { viewerZone } from './format.js';
import { SchedulesPage } from './schedules.js';
import { SchedulePage } from './schedule.js';
import { RunsPage, RunPage } from './runs.js';
import { ClusterPage } from './cluster.js';

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, qs] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  return { parts, params: new URLSearchParams(qs || '') };
}

function useRoute() {
  const [route, setRoute] = useState(parseHash);
  useEffect(() => {
    const change = () => setRoute(parseHash());
    window.addEventListener('hashchange', change);
    return () => window.removeEventListener('hashchange', change);
  }, []);
  return route;
}

function Login({ onSignedIn, reason }) {
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const input = useRef(null);
  useEffect(() => input.current && input.current.focus(), []);
  const submit = async (e) => {
    e.preventDefault();
    const token = new FormData(e.target).get('token').trim();
    if (!token) {
      setError(new Error('Enter a token.'));
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const me = await call('GET', 'v1/whoami', { token });
      saveToken(token);
      onSignedIn(me);
    } catch (err) {
      setBusy(false);
      setError(err.status === 401 ? new Error('That token is not accepted by this replica.') : err);
    }
  };
  return html`<main class="login" id="main">
    <h1>spine-scheduler</h1>
    <form onSubmit=${submit}>
      ${reason ? html`<p class="error" role="alert">${reason}</p>` : ''}
      <label for="token">API token</label>
      <input ref=${input} id="token" name="token" type="password" autocomplete="off" spellcheck="false" required />
      <p class="muted small">The admin or the read-only token of the admin API. It is kept in this tab only
        (sessionStorage) and sent in the Authorization header.</p>
      <${ErrorNote} error=${error} />
      <button type="submit" class="primary" disabled=${busy}>Sign in</button>
    </form>
  </main>`;
}

function Page({ route }) {
  const [first, second] = route.parts;
  if (first === 'schedules' && second) return html`<${SchedulePage} name=${second} />`;
  if (first === 'runs' && second) return html`<${RunPage} id=${second} />`;
  if (first === 'runs') return html`<${RunsPage} params=${route.params} />`;
  if (first === 'cluster') return html`<${ClusterPage} />`;
  return html`<${SchedulesPage} />`;
}

function Shell({ role, name, onSignOut }) {
  const route = useRoute();
  const [message, setMessage] = useState('');
  const section = route.parts[0] || 'schedules';
  // A new page: its heading takes focus, so keyboard and screen reader
  // users start there (not on the link they followed, now gone).
  const firstRender = useRef(true);
  useEffect(() => {
    if (firstRender.current) {
      firstRender.current = false;
      return;
    }
    setMessage('');
    const h = document.getElementById('page-title');
    if (h) h.focus();
  }, [route.parts.join('/')]);
  const notify = useCallback((m) => setMessage(m), []);
  const link = (name, label) => html`<a href=${`#/${name}`} aria-current=${section === name ? 'page' : undefined}>${label}</a>`;
  return html`<${Role.Provider} value=${role}><${Notify.Provider} value=${notify}>
    <a class="skip" href="#main" onClick=${(e) => { e.preventDefault(); document.getElementById('page-title')?.focus(); }}>Skip to content</a>
    <header class="top">
      <span class="brand">spine-scheduler</span>
      <nav aria-label="Sections">${link('schedules', 'Schedules')}${link('runs', 'Runs')}${link('cluster', 'Cluster')}</nav>
      <span class="who">${name ? html`<span class="small" title="The token's name; the schedules' history names it">${name}</span> ` : ''}<span class=${`tag role-${role}`}>${role === 'admin' ? 'admin' : 'read-only'}</span>
        <span class="muted small" title="Times are shown in this zone; hover a time for UTC"> ${viewerZone}</span>
        <button type="button" onClick=${onSignOut}>Sign out</button></span>
    </header>
    <div class="toast" role="status" aria-live="polite">${message ? html`<span>${message}</span> <button type="button" class="link" onClick=${() => setMessage('')}>Dismiss</button>` : ''}</div>
    <main id="main"><${Page} route=${route} /></main>
  <//><//>`;
}

function App() {
  const [me, setMe] = useState(null);
  const role = me ? me.role : null;
  const [checking, setChecking] = useState(true);
  const [reason, setReason] = useState('');
  // The saved token if there is one; without one this answers only when
  // the replica runs without authentication (--insecure-no-auth, `dev`).
  useEffect(() => {
    call('GET', 'v1/whoami', { token: savedToken() || undefined })
      .then((who) => setMe(who))
      .catch((e) => {
        if (e.status === 401) forgetToken();
        else setReason(e.message);
      })
      .finally(() => setChecking(false));
  }, []);
  useEffect(() => whenUnauthorized(() => {
    forgetToken();
    setMe(null);
    setReason('The token is no longer accepted; sign in again.');
  }), []);
  if (checking) return html`<p class="muted">Checking the saved token…</p>`;
  if (!role) return html`<${Login} reason=${reason} onSignedIn=${(who) => { setReason(''); setMe(who); }} />`;
  return html`<${Shell} role=${role} name=${me.name} onSignOut=${() => { forgetToken(); setMe(null); }} />`;
}

render(html`<${App} />`, document.getElementById('app'));
