// The cluster: which replicas are alive, who leads, heartbeat ages, clock
// offsets and the fire lag of the replica that answered.

import { html } from './vendor/htm-preact-standalone.module.js';
import { get } from './api.js';
import { duration } from './format.js';
import { Time, Td, usePoll, Loading } from './widgets.js';

const short = (id) => id.slice(0, 8);

function FireLag({ lag, nodes }) {
  const node = nodes.find((n) => n.node_id === lag.node_id);
  const cell = (v) => (v === null || v === undefined ? html`<span class="muted">—</span>` : duration(v));
  return html`<div class="stats">
    <div class="stat"><div class="stat-label">p50</div><div class="stat-value">${cell(lag.p50_seconds)}</div></div>
    <div class="stat"><div class="stat-label">p90</div><div class="stat-value">${cell(lag.p90_seconds)}</div></div>
    <div class="stat"><div class="stat-label">p99</div><div class="stat-value">${cell(lag.p99_seconds)}</div></div>
    <div class="stat"><div class="stat-label">ticks</div><div class="stat-value">${lag.count}</div></div>
  </div>
  <p class="muted small">Fire lag (pipeline start minus tick) of the ticks replica ${node ? node.hostname : ''} <code>${short(lag.node_id)}</code>${' '}started since it started, from its own metrics; other replicas report theirs when they answer (and on /metrics).</p>`;
}

function NodeRow({ n }) {
  const stale = n.alive && n.heartbeat_age_seconds > 10;
  return html`<tr class=${n.alive ? '' : 'is-dead'}>
    <${Td} label="Replica">${n.hostname} <code class="small" title=${n.node_id}>${short(n.node_id)}</code>${n.is_self ? html` <span class="tag">answering</span>` : ''}<//>
    <${Td} label="State">${n.alive ? html`<span class="ok">alive</span>` : html`<span class="bad">not alive</span>`} · ${n.state}<//>
    <${Td} label="Leader">${n.is_leader ? html`<strong>leader</strong> since <${Time} at=${n.leader_since} />` : ''}<//>
    <${Td} label="Heartbeat"><span class=${stale ? 'warn' : ''} title=${`last at ${n.heartbeat_at}`}>${duration(n.heartbeat_age_seconds)} ago</span><//>
    <${Td} label="Clock offset">${n.clock_offset_seconds === null || n.clock_offset_seconds === undefined
      ? html`<span class="muted" title="only the answering replica knows its own">—</span>`
      : duration(n.clock_offset_seconds)}<//>
    <${Td} label="Version">${n.version}<//>
    <${Td} label="Started"><${Time} at=${n.started_at} rel /><//>
  </tr>`;
}

export function ClusterPage() {
  const [poll] = usePoll(() => get('v1/cluster'), []);
  const c = poll.data;
  const alive = c ? c.nodes.filter((n) => n.alive).length : 0;
  return html`<section aria-labelledby="page-title">
    <h1 id="page-title" tabindex="-1">Cluster</h1>
    <${Loading} state=${poll} />
    ${c ? html`
      <p class="summary">${alive} of ${c.nodes.length} replicas alive${' · '}
        ${c.leader ? html`leader <strong>${c.leader.hostname}</strong> <code class="small">${short(c.leader.node_id)}</code> since <${Time} at=${c.leader.since} rel />`
          : html`<span class="bad">no leader</span>`}${' · '}read at <${Time} at=${c.read_at} /></p>
      <h2>Replicas</h2>
      <table class="cards nodes">
        <thead><tr><th scope="col">Replica</th><th scope="col">State</th><th scope="col">Leader</th><th scope="col">Heartbeat</th>
          <th scope="col">Clock offset</th><th scope="col">Version</th><th scope="col">Started</th></tr></thead>
        <tbody>${c.nodes.map((n) => html`<${NodeRow} key=${n.node_id} n=${n} />`)}</tbody>
      </table>
      <h2>Fire lag</h2>
      ${c.fire_lag ? html`<${FireLag} lag=${c.fire_lag} nodes=${c.nodes} />` : html`<p class="muted">Not reported by this replica.</p>`}
    ` : ''}
  </section>`;
}
