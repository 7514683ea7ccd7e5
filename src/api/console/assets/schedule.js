// One schedule: its definition, its next 10 fire times (changes of UTC
// offset, i.e. daylight saving, marked) and its run history as a timeline:
// a strip per day in the viewer's zone, a cell per run coloured by status;
// and its latest changes (the audit trail: what changed, which token or
// schedules file changed it).

import { html, useState } from './vendor/htm-preact-standalone.module.js';
import { get, seg } from './api.js';
import { describeTrigger, triggerText, owner, duration, lagOf, localTime, utcTitle, dayOf, offsetOf, viewerZone } from './format.js';
import { Time, Td, usePoll, Loading } from './widgets.js';
import { ScheduleActions, PausedNote } from './schedules.js';

// How far back the timeline reaches, and how many runs it shows at most.
const TIMELINE_DAYS = 7;
const TIMELINE_RUNS = 1000;
// How many of its latest changes the page lists.
const CHANGES = 10;

async function load(name) {
  const since = new Date(Date.now() - TIMELINE_DAYS * 86400000).toISOString();
  const [schedule, next, runs, changes] = await Promise.all([
    get(`v1/schedules/${seg(name)}`),
    get(`v1/schedules/${seg(name)}/next`, { count: 10 }),
    get(`v1/schedules/${seg(name)}/runs`, { since, limit: TIMELINE_RUNS }),
    get(`v1/schedules/${seg(name)}/history`, { limit: CHANGES }),
  ]);
  return { schedule, next, runs: runs.items, more: !!runs.next_cursor, changes: changes.items };
}

// Who made a change: a token by its name, a schedules file by its source.
function actorText(a) {
  if (a.kind === 'token') return `token ${a.name}`;
  if (a.kind === 'file') return `file ${a.name}`;
  return 'anonymous';
}

function Changes({ changes }) {
  if (!changes.length) return html`<p class="muted">No changes recorded.</p>`;
  return html`<table class="changes cards"><thead><tr><th>When</th><th>Change</th><th>By</th><th>What</th></tr></thead>
    <tbody>${changes.map((c) => html`<tr>
      <${Td} label="When"><${Time} at=${c.at} rel /><//>
      <${Td} label="Change">${c.action.replace('_', ' ')}${c.version_after ? html` <span class="muted small">v${c.version_after}</span>` : ''}<//>
      <${Td} label="By">${actorText(c.actor)}<//>
      <${Td} label="What">${[
        c.fields.length ? c.fields.join(', ') : null,
        c.note ? `note: ${c.note}` : null,
        c.paused_by ? `by ${c.paused_by}` : null,
        c.former_manager ? `from ${c.former_manager}` : null,
      ].filter(Boolean).join(' · ') || '—'}<//>
    </tr>`)}</tbody></table>`;
}

function Definition({ s }) {
  const rows = [
    ['Pipeline', html`<code>${s.pipeline}</code>`],
    ['Trigger', html`<code>${triggerText(s)}</code>`],
    ['Reads', describeTrigger(s) || '—'],
    ['Zone', s.timezone],
    ['State', s.enabled ? 'enabled' : html`<${PausedNote} schedule=${s} />`],
    ['Paused at', s.pause && s.pause.at ? html`<${Time} at=${s.pause.at} />` : null],
    ['Owner', owner(s)],
    [s.schedule_type === 'interval' ? 'Counted from' : 'Starts', s.start_at ? html`<${Time} at=${s.start_at} />` : null],
    ['Ends', s.end_at ? html`<${Time} at=${s.end_at} />` : null],
    ['Overlap', `${s.overlap_policy}, at most ${s.max_instances} at once`],
    ['Misfire grace', duration(s.misfire_grace_time)],
    ['Coalesce', s.coalesce ? 'yes' : 'no'],
    ['Timeout', s.timeout ? duration(s.timeout) : 'none'],
    ['Jitter', s.jitter ? duration(s.jitter) : 'none'],
    ['Retry', s.retry.max_attempts > 1 ? `${s.retry.max_attempts} attempts, backoff ${duration(s.retry.backoff)} up to ${duration(s.retry.backoff_max)}` : 'none'],
    ['Params', Object.keys(s.params || {}).length ? html`<pre>${JSON.stringify(s.params, null, 2)}</pre>` : '{}'],
    ['Description', s.description],
    ['Version', `${s.version}, changed `, html`<${Time} at=${s.updated_at} />`],
  ];
  return html`<dl class="definition">${rows.filter((r) => r[1] !== null && r[1] !== undefined).map(
    ([k, ...v]) => html`<dt>${k}</dt><dd>${v}</dd>`,
  )}</dl>`;
}

function NextFires({ next }) {
  if (next.paused) return html`<p class="muted">Paused: nothing fires until it is resumed.</p>`;
  if (!next.fires.length) return html`<p class="muted">${next.ended ? 'Ended: it will not fire again.' : 'No upcoming fire times.'}</p>`;
  let previous = null;
  return html`<ol class="fires">${next.fires.map((f) => {
    const offset = offsetOf(f.local);
    const changed = previous !== null && previous !== offset;
    const from = previous;
    previous = offset;
    return html`<li class=${changed ? 'dst' : ''}>
      <${Time} at=${f.at} rel />
      <span class="muted small"> · ${f.local.replace('T', ' ')} ${next.timezone}</span>
      ${changed ? html` <strong class="dst-mark">UTC offset changes ${from} → ${offset} (daylight saving)</strong>` : ''}
    </li>`;
  })}</ol>`;
}

function cellLabel(r) {
  const lag = lagOf(r);
  return [
    `${localTime(r.scheduled_at)} (${utcTitle(r.scheduled_at)})`,
    r.status,
    r.trigger !== 'schedule' ? r.trigger : null,
    r.attempt > 1 ? `attempt ${r.attempt}` : null,
    lag !== null ? `lag ${duration(lag)}` : null,
    r.duration_seconds !== null ? `took ${duration(r.duration_seconds)}` : null,
  ].filter(Boolean).join(' · ');
}

// Arrow keys between the timeline's cells (one tab stop for the whole
// timeline, not one per run): left/right within a day, up/down to the same
// place on the day above or below, Home/End to the first and last cell.
function moveFocus(e, setCurrent) {
  const strips = [...e.currentTarget.querySelectorAll('ol.cells')].map((ol) => [...ol.querySelectorAll('a.cell')]);
  const row = strips.findIndex((cells) => cells.includes(document.activeElement));
  if (row < 0) return;
  const col = strips[row].indexOf(document.activeElement);
  const all = strips.flat();
  let target = null;
  if (e.key === 'ArrowRight') target = all[all.indexOf(document.activeElement) + 1];
  else if (e.key === 'ArrowLeft') target = all[all.indexOf(document.activeElement) - 1];
  else if (e.key === 'ArrowDown' && strips[row + 1]) target = strips[row + 1][Math.min(col, strips[row + 1].length - 1)];
  else if (e.key === 'ArrowUp' && strips[row - 1]) target = strips[row - 1][Math.min(col, strips[row - 1].length - 1)];
  else if (e.key === 'Home') target = all[0];
  else if (e.key === 'End') target = all[all.length - 1];
  else return;
  e.preventDefault();
  if (target) {
    setCurrent(target.dataset.run);
    target.focus();
  }
}

// The run history as strips per day, newest day first, each strip's runs in
// tick order; a cell links to its run, and the focused or hovered cell's
// details are shown under the timeline (keyboard users get what hover gives).
function Timeline({ runs, more }) {
  const [shown, setShown] = useState(null);
  const [current, setCurrent] = useState(null);
  if (!runs.length) return html`<p class="muted">No runs in the last ${TIMELINE_DAYS} days.</p>`;
  const days = new Map();
  for (const r of [...runs].reverse()) {
    const [key, label] = dayOf(r.scheduled_at);
    if (!days.has(key)) days.set(key, { label, runs: [] });
    days.get(key).runs.push(r);
  }
  const keys = [...days.keys()].sort().reverse();
  const counts = {};
  for (const r of runs) counts[r.status] = (counts[r.status] || 0) + 1;
  // The one tab stop: the cell last focused, else the newest run.
  const stop = runs.some((r) => r.run_id === current) ? current : runs[0].run_id;
  return html`<div class="timeline" role="group" aria-label="Run history" aria-describedby="timeline-help"
      onMouseLeave=${() => setShown(null)} onKeyDown=${(e) => moveFocus(e, setCurrent)}>
    <p class="legend small">${Object.entries(counts).map(([s, n]) => html`<span class="legend-item"><span class=${`swatch s-${s}`}></span>${s} ${n}</span>`)}
      <span class="muted">· days in ${viewerZone}${more ? ` · newest ${runs.length} runs` : ''}</span></p>
    <p id="timeline-help" class="sr-only">Arrow keys move between runs, Enter opens one.</p>
    ${keys.map((k) => {
      const day = days.get(k);
      return html`<div class="strip">
        <div class="day">${day.label}</div>
        <ol class="cells" aria-label=${`Runs on ${day.label}`}>${day.runs.map((r) => {
          const label = cellLabel(r);
          return html`<li><a class=${`cell s-${r.status}`} href=${`#/runs/${r.run_id}`} title=${label} aria-label=${label}
            tabindex=${r.run_id === stop ? 0 : -1} data-run=${r.run_id}
            onFocus=${() => { setShown(label); setCurrent(r.run_id); }} onMouseEnter=${() => setShown(label)}></a></li>`;
        })}</ol>
      </div>`;
    })}
    <p class="cell-detail small" aria-live="polite">${shown || 'Hover or focus a cell (arrow keys move) for its tick, status and lag.'}</p>
  </div>`;
}

export function SchedulePage({ name }) {
  const [poll, reload] = usePoll(() => load(name), [name]);
  const d = poll.data;
  return html`<section aria-labelledby="page-title">
    <p class="crumbs"><a href="#/schedules">Schedules</a> /</p>
    <h1 id="page-title" tabindex="-1">${name}</h1>
    <${Loading} state=${poll} />
    ${d ? html`
      <p class="lead">${describeTrigger(d.schedule) || html`<code>${triggerText(d.schedule)}</code>`} · ${d.schedule.timezone}${' · '}
        ${d.schedule.enabled ? (d.schedule.next_run ? html`next <${Time} at=${d.schedule.next_run} rel />` : 'no next fire') : html`<${PausedNote} schedule=${d.schedule} />`}</p>
      <${ScheduleActions} schedule=${d.schedule} reload=${reload} />
      <h2>Run history</h2>
      <${Timeline} runs=${d.runs} more=${d.more} />
      <p><a href=${`#/runs?schedule=${seg(name)}`}>All runs of ${name} in the ledger</a></p>
      <div class="columns">
        <div><h2>Definition</h2><${Definition} s=${d.schedule} /></div>
        <div><h2>Next fire times</h2><${NextFires} next=${d.next} /></div>
      </div>
      <h2>Changes</h2>
      <${Changes} changes=${d.changes} />
    ` : ''}
  </section>`;
}

