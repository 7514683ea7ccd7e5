// The schedules page: every schedule at a glance, filters, and the actions
// (pause with a note, resume, run now, backfill) that the list and the
// schedule page share.

import { html, useState } from './vendor/htm-preact-standalone.module.js';
import { get, post, seg } from './api.js';
import { describeTrigger, triggerText, owner, duration, utcTitle } from './format.js';
import { Time, Status, Td, usePoll, Loading, FormDialog, useIsAdmin } from './widgets.js';

// Every schedule, following next_cursor (the list is paged by 1000).
async function allSchedules() {
  let items = [];
  let invalid = [];
  let cursor;
  do {
    const page = await get('v1/schedules', { limit: 1000, cursor });
    items = items.concat(page.items);
    invalid = invalid.concat(page.invalid || []);
    cursor = page.next_cursor;
  } while (cursor);
  return { items, invalid };
}

function PauseDialog({ schedule, onClose }) {
  return html`<${FormDialog} title=${`Pause ${schedule.name}`} submitLabel="Pause" onClose=${onClose}
    submit=${async (form) => {
      const note = form.get('note').trim();
      await post(`v1/schedules/${seg(schedule.name)}/pause`, note ? { note } : undefined);
      return `Paused ${schedule.name}.`;
    }}>
    <p>No tick fires while it is paused; runs already started go on.</p>
    <label for="pause-note">Note (why, until when)</label>
    <textarea id="pause-note" name="note" rows="3" maxlength="1000"></textarea>
  <//>`;
}

function ResumeDialog({ schedule, onClose }) {
  return html`<${FormDialog} title=${`Resume ${schedule.name}`} submitLabel="Resume" onClose=${onClose}
    submit=${async () => {
      await post(`v1/schedules/${seg(schedule.name)}/resume`);
      return `Resumed ${schedule.name}.`;
    }}>
    <p>Its next tick fires as scheduled; ticks it missed while paused are not run (use a backfill for those).</p>
    ${schedule.pause && schedule.pause.note ? html`<p>Paused because: <q>${schedule.pause.note}</q></p>` : ''}
  <//>`;
}

function RunNowDialog({ schedule, onClose }) {
  return html`<${FormDialog} title=${`Run ${schedule.name} now`} submitLabel="Run now" onClose=${onClose}
    submit=${async (form) => {
      const text = form.get('params').trim();
      let body;
      if (text) {
        let params;
        try {
          params = JSON.parse(text);
        } catch (e) {
          throw new Error(`Params override: not JSON (${e.message}).`);
        }
        body = { params };
      }
      const run = await post(`v1/schedules/${seg(schedule.name)}/run`, body);
      return `Started a manual run of ${schedule.name} (${run.run_id}).`;
    }}>
    <p>One manual run of <code>${schedule.pipeline}</code>, now, besides its ticks.</p>
    <label for="run-params">Params override (JSON object, optional; merged over the schedule's)</label>
    <textarea id="run-params" name="params" rows="3" spellcheck="false" placeholder='{"key": "value"}'></textarea>
  <//>`;
}

// datetime-local value (viewer's zone) -> RFC 3339 instant.
const instant = (v) => (v ? new Date(v).toISOString() : '');
const localInput = (d) => {
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
};

function BackfillDialog({ schedule, onClose }) {
  const now = new Date();
  const dayAgo = new Date(now.getTime() - 86400000);
  return html`<${FormDialog} title=${`Backfill ${schedule.name}`} submitLabel="Start backfill" onClose=${onClose}
    submit=${async (form) => {
      const body = { start: instant(form.get('start')), end: instant(form.get('end')), mode: form.get('mode') };
      if (form.get('allow_large')) body.allow_large = true;
      const b = await post(`v1/schedules/${seg(schedule.name)}/backfill`, body);
      return `Backfill ${b.backfill_id}: ${b.ticks_planned} ticks planned.`;
    }}>
    <p>Runs the schedule's ticks in a past range (times in your zone).</p>
    <label for="bf-start">From (inclusive)</label>
    <input id="bf-start" name="start" type="datetime-local" required value=${localInput(dayAgo)} />
    <label for="bf-end">To (exclusive)</label>
    <input id="bf-end" name="end" type="datetime-local" required value=${localInput(now)} />
    <label for="bf-mode">Which ticks</label>
    <select id="bf-mode" name="mode">
      <option value="missing">Only ticks with no run</option>
      <option value="all">Every tick (one more attempt for those with runs)</option>
    </select>
    <label class="check"><input type="checkbox" name="allow_large" value="yes" /> Allow up to 100,000 ticks (else 10,000)</label>
  <//>`;
}

// The write buttons for one schedule (none for a read-only token).
export function ScheduleActions({ schedule, reload, compact = false }) {
  const admin = useIsAdmin();
  const [open, setOpen] = useState(null);
  if (!admin) return null;
  const close = (changed) => {
    setOpen(null);
    if (changed) reload();
  };
  const label = (verb) => (compact ? html`${verb}<span class="sr-only"> ${schedule.name}</span>` : verb);
  const dialogs = { pause: PauseDialog, resume: ResumeDialog, run: RunNowDialog, backfill: BackfillDialog };
  const D = open && dialogs[open];
  return html`<div class="actions">
    ${schedule.enabled
      ? html`<button type="button" onClick=${() => setOpen('pause')}>${label('Pause')}</button>`
      : html`<button type="button" onClick=${() => setOpen('resume')}>${label('Resume')}</button>`}
    <button type="button" onClick=${() => setOpen('run')}>${label('Run now')}</button>
    <button type="button" onClick=${() => setOpen('backfill')}>${label('Backfill')}</button>
    ${D ? html`<${D} schedule=${schedule} onClose=${close} />` : ''}
  </div>`;
}

export function PausedNote({ schedule }) {
  if (schedule.enabled) return null;
  const p = schedule.pause || {};
  return html`<span class="paused">paused${p.note ? html`: <span class="note">${p.note}</span>` : ''}${p.by ? html` <span class="muted">(${p.by})</span>` : ''}</span>`;
}

function matches(s, q, state) {
  if (state === 'enabled' && !s.enabled) return false;
  if (state === 'paused' && s.enabled) return false;
  if (state === 'failing' && !(s.last_run && ['failed', 'abandoned', 'missed'].includes(s.last_run.status))) return false;
  if (!q) return true;
  const hay = [s.name, s.pipeline, s.cron, s.description, s.timezone, owner(s), s.pause && s.pause.note]
    .filter(Boolean).join(' ').toLowerCase();
  return q.toLowerCase().split(/\s+/).every((w) => hay.includes(w));
}

function Row({ s, reload }) {
  const reading = describeTrigger(s);
  const last = s.last_run;
  return html`<tr class=${s.enabled ? '' : 'is-paused'} data-schedule=${s.name}>
    <${Td} label="Name"><a href=${`#/schedules/${seg(s.name)}`}>${s.name}</a>
      ${s.description ? html`<div class="muted small">${s.description}</div>` : ''}<//>
    <${Td} label="Schedule"><code>${triggerText(s)}</code>${reading ? html`<div class="small">${reading}</div>` : ''}<//>
    <${Td} label="Zone">${s.timezone}<//>
    <${Td} label="Next fire">${s.next_run ? html`<${Time} at=${s.next_run} rel />` : html`<span class="muted">${s.ended ? 'ended' : '—'}</span>`}<//>
    <${Td} label="Last run">${last
      ? html`<a href=${`#/runs/${last.run_id}`}><${Status} status=${last.status} /></a>
          <span class="small" title=${utcTitle(last.scheduled_at)}> ${last.lag_seconds !== null && last.lag_seconds !== undefined ? `lag ${duration(last.lag_seconds)}` : last.trigger}</span>`
      : html`<span class="muted">never</span>`}<//>
    <${Td} label="State">${s.enabled ? html`<span class="ok">enabled</span>` : html`<${PausedNote} schedule=${s} />`}<//>
    <${Td} label="Owner">${owner(s)}<//>
    <${Td} label="Actions"><${ScheduleActions} schedule=${s} reload=${reload} compact /><//>
  </tr>`;
}

export function SchedulesPage() {
  const [q, setQ] = useState('');
  const [state, setStateFilter] = useState('all');
  const [poll, reload] = usePoll(allSchedules, []);
  const data = poll.data;
  const shown = data ? data.items.filter((s) => matches(s, q, state)) : [];
  const paused = data ? data.items.filter((s) => !s.enabled).length : 0;
  return html`<section aria-labelledby="page-title">
    <h1 id="page-title" tabindex="-1">Schedules</h1>
    <div class="filters" role="search">
      <div><label for="f-q">Search</label>
        <input id="f-q" type="search" value=${q} onInput=${(e) => setQ(e.target.value)} placeholder="name, pipeline, note…" /></div>
      <div><label for="f-state">Show</label>
        <select id="f-state" value=${state} onChange=${(e) => setStateFilter(e.target.value)}>
          <option value="all">All</option>
          <option value="enabled">Enabled</option>
          <option value="paused">Paused</option>
          <option value="failing">Last run failed, abandoned or missed</option>
        </select></div>
    </div>
    <${Loading} state=${poll} />
    ${data ? html`<p class="muted small" aria-live="polite">${shown.length} of ${data.items.length} schedules${paused ? `, ${paused} paused` : ''}</p>` : ''}
    ${data && data.invalid.length ? html`<div class="error" role="alert">Stored rows that no longer validate:
      <ul>${data.invalid.map((i) => html`<li><code>${i.name}</code>: ${i.error}</li>`)}</ul></div>` : ''}
    ${data ? html`<table class="cards schedules">
      <thead><tr><th scope="col">Name</th><th scope="col">Schedule</th><th scope="col">Zone</th><th scope="col">Next fire</th>
        <th scope="col">Last run</th><th scope="col">State</th><th scope="col">Owner</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
      <tbody>${shown.map((s) => html`<${Row} key=${s.name} s=${s} reload=${reload} />`)}</tbody>
    </table>` : ''}
  </section>`;
}
