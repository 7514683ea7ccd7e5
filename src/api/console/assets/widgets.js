// Pieces every page uses: times, status badges, polling, dialogs, messages.

import { html, useState, useEffect, useRef, useCallback, createContext, useContext } from './vendor/htm-preact-standalone.module.js';
import { localTime, utcTitle, relative } from './format.js';

// The token's role ("admin" or "read_only"); write controls only for admin.
export const Role = createContext('read_only');
export const useIsAdmin = () => useContext(Role) === 'admin';

// Announcements (results of actions) for the page's live region.
export const Notify = createContext(() => {});
export const useNotify = () => useContext(Notify);

// An instant in the viewer's zone; UTC on hover (title) and for machines (datetime).
export function Time({ at, rel = false }) {
  if (!at) return html`<span class="muted">—</span>`;
  return html`<time datetime=${at} title=${utcTitle(at)}>${localTime(at)}${rel ? html` <span class="muted">(${relative(at)})</span>` : ''}</time>`;
}

// A table cell that becomes "label: value" at phone width (style.css): the
// value is wrapped so it stays one grid item however many nodes it has.
export function Td({ label, cls, children }) {
  return html`<td data-label=${label} class=${cls}><div class="v">${children}</div></td>`;
}

export function Status({ status }) {
  if (!status) return html`<span class="muted">—</span>`;
  return html`<span class=${`badge s-${status}`}>${status}</span>`;
}

// Loads with `load()` now and every `ms` after the previous load ended, while
// the tab is visible (hidden tabs do not poll; showing the tab again loads at
// once). Returns [{data, error}, reload].
export function usePoll(load, deps, ms = 4000) {
  const [state, setState] = useState({ data: null, error: null });
  const runRef = useRef(() => Promise.resolve());
  useEffect(() => {
    let alive = true;
    let timer = null;
    let seq = 0;
    const run = async () => {
      const id = ++seq;
      try {
        const data = await load();
        if (alive && id === seq) setState({ data, error: null });
      } catch (error) {
        if (alive && id === seq) setState((s) => ({ data: s.data, error }));
      }
    };
    const next = () => {
      clearTimeout(timer);
      if (alive && !document.hidden) timer = setTimeout(() => run().then(next), ms);
    };
    runRef.current = () => run().then(next);
    setState({ data: null, error: null });
    run().then(next);
    const visibility = () => {
      if (document.hidden) clearTimeout(timer);
      else run().then(next);
    };
    document.addEventListener('visibilitychange', visibility);
    return () => {
      alive = false;
      clearTimeout(timer);
      document.removeEventListener('visibilitychange', visibility);
    };
  }, deps);
  const reload = useCallback(() => runRef.current(), []);
  return [state, reload];
}

export function ErrorNote({ error }) {
  if (!error) return null;
  return html`<p class="error" role="alert">${error.message}</p>`;
}

export function Loading({ state }) {
  if (state.data) return html`<${ErrorNote} error=${state.error} />`;
  if (state.error) return html`<${ErrorNote} error=${state.error} />`;
  return html`<p class="muted" aria-live="polite">Loading…</p>`;
}

// A modal dialog (the native <dialog>: the page behind it is inert, so
// focus stays inside; Escape closes). Focus returns to what had it before.
export function Dialog({ title, onClose, children }) {
  const ref = useRef(null);
  const id = useRef(`dialog-${Math.random().toString(36).slice(2)}`).current;
  useEffect(() => {
    const opener = document.activeElement;
    const d = ref.current;
    if (d && !d.open) d.showModal();
    const first = d && d.querySelector('input, textarea, select');
    if (first) first.focus();
    return () => {
      if (d && d.open) d.close();
      if (opener && document.contains(opener)) opener.focus();
    };
  }, []);
  const cancel = (e) => {
    e.preventDefault();
    onClose();
  };
  return html`<dialog ref=${ref} aria-labelledby=${id} onCancel=${cancel}>
    <h2 id=${id}>${title}</h2>
    ${children}
  </dialog>`;
}

// A dialog holding a form: `submit(values)` returns a promise; its error is
// shown in the dialog, and success closes it and announces `done`.
export function FormDialog({ title, submitLabel, onClose, submit, children, danger = false }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const notify = useNotify();
  const onSubmit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const message = await submit(new FormData(e.target));
      notify(message);
      onClose(true);
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };
  return html`<${Dialog} title=${title} onClose=${() => onClose(false)}>
    <form onSubmit=${onSubmit}>
      ${children}
      <${ErrorNote} error=${error} />
      <div class="buttons">
        <button type="submit" class=${danger ? 'danger' : 'primary'} disabled=${busy}>${submitLabel}</button>
        <button type="button" onClick=${() => onClose(false)}>Cancel</button>
      </div>
    </form>
  <//>`;
}
