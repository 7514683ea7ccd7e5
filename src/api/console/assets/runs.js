// The run ledger (filterable, newest tick first, older pages on request)
// and one run: its error, result, params, attempt chain and replica.

import { html, useState } from './vendor/htm-preact-standalone.module.js';
import { get, post, seg } from './api.js';
import { duration, lagOf, STATUSES, TRIGGERS } from './format.js';
import { Time, Status, Td, usePoll, Loading, FormDialog, useIsAdmin, ErrorNote } from './widgets.js';

const PAGE = 100;

function query(filters, cursor) {
  const since = filters.since ? new Date(filters.since).toISOString() : undefined;
  return { schedule: filters.schedule || undefined, status: filters.status || undefined, trigger: filters.trigger || undefined, since, limit: PAGE, cursor };
}

function RunRow({ r }) {
  const lag = lagOf(r);
  return html`<tr data-run=${r.run_id}>
    <${Td} label="Tick"><a href=${`#/runs/${r.run_id}`}><${Time} at=${r.scheduled_at} /></a><//>
    <${Td} label="Schedule"><a href=${`#/schedules/${seg(r.schedule)}`}>${r.schedule}</a><//>
    <${Td} label="Status"><${Status} status=${r.status} /><//>
    <${Td} label="Trigger">${r.trigger}${r.attempt > 1 ? ` (attempt ${r.attempt})` : ''}<//>
    <${Td} label="Lag">${lag === null ? html`<span class="muted">—</span>` : duration(lag)}<//>
    <${Td} label="Took">${duration(r.duration_seconds)}<//>
    <${Td} label="Error" cls="small">${r.error || ''}<//>
  </tr>`;
}

// Filters live in the address (#/runs?status=failed), so a view can be shared.
export function RunsPage({ params }) {
  const filters = {
    schedule: params.get('schedule') || '',
    status: params.get('status') || '',
    trigger: params.get('trigger') || '',
    since: params.get('since') || '',
  };
  const key = JSON.stringify(filters);
  const [older, setOlder] = useState({ key: null, items: [], cursor: null, error: null });
  const [poll] = usePoll(() => get('v1/runs', query(filters)), [key]);
  const setFilter = (name, value) => {
    const p = new URLSearchParams(filters);
    if (value) p.set(name, value);
    else p.delete(name);
    for (const [k, v] of [...p.entries()]) if (!v) p.delete(k);
    const qs = p.toString();
    location.hash = qs ? `#/runs?${qs}` : '#/runs';
  };
  const first = poll.data;
  const extra = older.key === key ? older : { items: [], cursor: null };
  const cursor = extra.cursor || (first && first.next_cursor);
  const loadOlder = async () => {
    try {
      const page = await get('v1/runs', query(filters, cursor));
      setOlder({ key, items: extra.items.concat(page.items), cursor: page.next_cursor || '', error: null });
    } catch (error) {
      setOlder({ ...extra, key, error });
    }
  };
  const items = first ? first.items.concat(extra.items.filter((r) => !first.items.some((f) => f.run_id === r.run_id))) : [];
  const hasMore = extra.cursor === '' ? false : !!cursor;
  return html`<section aria-labelledby="page-title">
    <h1 id="page-title" tabindex="-1">Runs</h1>
    <form class="filters" role="search" onSubmit=${(e) => { e.preventDefault(); setFilter('schedule', new FormData(e.target).get('schedule').trim()); }}>
      <div><label for="r-schedule">Schedule</label>
        <input id="r-schedule" name="schedule" value=${filters.schedule} placeholder="exact name" onChange=${(e) => setFilter('schedule', e.target.value.trim())} /></div>
      <div><label for="r-status">Status</label>
        <select id="r-status" value=${filters.status} onChange=${(e) => setFilter('status', e.target.value)}>
          <option value="">Any</option>
          <option value="failed,abandoned,missed">Problems (failed, abandoned, missed)</option>
          ${STATUSES.map((s) => html`<option value=${s}>${s}</option>`)}
        </select></div>
      <div><label for="r-trigger">Trigger</label>
        <select id="r-trigger" value=${filters.trigger} onChange=${(e) => setFilter('trigger', e.target.value)}>
          <option value="">Any</option>
          ${TRIGGERS.map((t) => html`<option value=${t}>${t}</option>`)}
        </select></div>
      <div><label for="r-since">Ticks since (your zone)</label>
        <input id="r-since" type="datetime-local" value=${filters.since} onChange=${(e) => setFilter('since', e.target.value)} /></div>
    </form>
    <${Loading} state=${poll} />
    ${first ? html`<table class="cards runs">
      <thead><tr><th scope="col">Tick</th><th scope="col">Schedule</th><th scope="col">Status</th><th scope="col">Trigger</th>
        <th scope="col">Lag</th><th scope="col">Took</th><th scope="col">Error</th></tr></thead>
      <tbody>${items.map((r) => html`<${RunRow} key=${r.run_id} r=${r} />`)}</tbody>
    </table>
    ${items.length ? '' : html`<p class="muted">No runs match.</p>`}
    <${ErrorNote} error=${older.key === key ? older.error : null} />
    ${hasMore ? html`<button type="button" onClick=${loadOlder}>Load older runs</button>` : ''}` : ''}
  </section>`;
}

async function loadRun(id) {
  const run = await get(`v1/runs/${seg(id)}`);
  // The attempt chain: every run of the same schedule for the same tick.
  const until = new Date(new Date(run.scheduled_at).getTime() + 1).toISOString();
  const [chain, cluster] = await Promise.all([
    get(`v1/schedules/${seg(run.schedule)}/runs`, { since: run.scheduled_at, until, limit: 100 }).catch(() => ({ items: [run] })),
    get('v1/cluster').catch(() => null),
  ]);
  const node = cluster && run.node_id ? cluster.nodes.find((n) => n.node_id === run.node_id) : null;
  return { run, chain: [...chain.items].sort((a, b) => a.attempt - b.attempt || (a.run_id < b.run_id ? -1 : 1)), node };
}

function RunActions({ run, reload }) {
  const admin = useIsAdmin();
  const [open, setOpen] = useState(null);
  if (!admin) return null;
  const finished = !['pending', 'running'].includes(run.status);
  const close = (changed) => {
    setOpen(null);
    if (changed) reload();
  };
  return html`<div class="actions">
    ${finished ? html`<button type="button" onClick=${() => setOpen('rerun')}>Rerun</button>`
      : html`<button type="button" class="danger" onClick=${() => setOpen('cancel')}>Cancel run</button>`}
    ${open === 'rerun' ? html`<${FormDialog} title="Rerun" submitLabel="Rerun" onClose=${close}
      submit=${async () => { const r = await post(`v1/runs/${seg(run.run_id)}/rerun`); location.hash = `#/runs/${r.run_id}`; return `Rerun started (${r.run_id}).`; }}>
      <p>A new manual run of <code>${run.schedule}</code> with this run's params.</p><//>` : ''}
    ${open === 'cancel' ? html`<${FormDialog} title="Cancel run" submitLabel="Cancel run" danger onClose=${close}
      submit=${async () => { await post(`v1/runs/${seg(run.run_id)}/cancel`); return 'Cancel requested.'; }}>
      <p>Its replica stops the pipeline (a command gets SIGTERM, then SIGKILL).</p><//>` : ''}
  </div>`;
}

export function RunPage({ id }) {
  const [poll, reload] = usePoll(() => loadRun(id), [id]);
  const d = poll.data;
  // The crumbs and the heading are there while loading too, so the heading
  // that took focus on arrival stays the same element.
  const head = html`<p class="crumbs"><a href="#/runs">Runs</a> /${d ? html` <a href=${`#/schedules/${seg(d.run.schedule)}`}>${d.run.schedule}</a> /` : ''}</p>
    <h1 id="page-title" tabindex="-1">Run <code class="small">${id}</code></h1>`;
  if (!d) return html`<section aria-labelledby="page-title">${head}<${Loading} state=${poll} /></section>`;
  const r = d.run;
  const lag = lagOf(r);
  const json = (v) => html`<pre>${JSON.stringify(v, null, 2)}</pre>`;
  return html`<section aria-labelledby="page-title">
    ${head}
    <${ErrorNote} error=${poll.error} />
    <${RunActions} run=${r} reload=${reload} />
    <dl class="definition">
      <dt>Status</dt><dd><${Status} status=${r.status} /></dd>
      <dt>Schedule</dt><dd><a href=${`#/schedules/${seg(r.schedule)}`}>${r.schedule}</a> (<code>${r.pipeline}</code>)</dd>
      <dt>Trigger</dt><dd>${r.trigger}, attempt ${r.attempt}</dd>
      <dt>Tick</dt><dd><${Time} at=${r.scheduled_at} rel /></dd>
      <dt>Claimed</dt><dd><${Time} at=${r.claimed_at} /></dd>
      <dt>Started</dt><dd><${Time} at=${r.started_at} />${lag !== null ? ` · lag ${duration(lag)}` : ''}</dd>
      <dt>Finished</dt><dd><${Time} at=${r.completed_at} />${r.duration_seconds !== null ? ` · took ${duration(r.duration_seconds)}` : ''}</dd>
      ${r.not_before ? html`<dt>Not before</dt><dd><${Time} at=${r.not_before} rel /></dd>` : ''}
      <dt>Replica</dt><dd>${d.node ? html`${d.node.hostname} <span class="muted small">${r.node_id}</span>` : (r.node_id || '—')}</dd>
      ${r.rerun_of ? html`<dt>Rerun of</dt><dd><a href=${`#/runs/${r.rerun_of}`}>${r.rerun_of}</a></dd>` : ''}
      ${r.overlapped_run_id ? html`<dt>Overlapped</dt><dd><a href=${`#/runs/${r.overlapped_run_id}`}>${r.overlapped_run_id}</a></dd>` : ''}
      ${r.backfill_id ? html`<dt>Backfill</dt><dd><code>${r.backfill_id}</code></dd>` : ''}
    </dl>
    ${r.error ? html`<h2>Error</h2><pre class="error-text">${r.error}</pre>` : ''}
    ${r.result !== null && r.result !== undefined ? html`<h2>Result</h2>${json(r.result)}` : ''}
    ${r.params ? html`<h2>Params</h2>${json(r.params)}` : ''}
    <h2>Attempts of this tick</h2>
    <ol class="chain">${d.chain.map((a) => html`<li>
      ${a.run_id === r.run_id ? html`<strong>attempt ${a.attempt}</strong>` : html`<a href=${`#/runs/${a.run_id}`}>attempt ${a.attempt}</a>`}
      ${' '}<${Status} status=${a.status} /> ${a.trigger} · <${Time} at=${a.started_at || a.claimed_at} />${a.error ? html` · <span class="small">${a.error}</span>` : ''}
    </li>`)}</ol>
  </section>`;
}
