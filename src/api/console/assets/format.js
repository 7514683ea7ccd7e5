// How times, durations, statuses and triggers read in the console. Times
// are shown in the viewer's zone; the UTC instant is in the title attribute.

const local = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric',
  hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false,
});
const localDay = new Intl.DateTimeFormat(undefined, {
  weekday: 'short', year: 'numeric', month: 'short', day: 'numeric',
});
const relativeFmt = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });

export const viewerZone = Intl.DateTimeFormat().resolvedOptions().timeZone || 'local time';

export function localTime(iso) {
  return iso ? local.format(new Date(iso)) : '—';
}

export function utcTitle(iso) {
  if (!iso) return '';
  return new Date(iso).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z').replace('Z', ' UTC');
}

// The viewer's calendar day of an instant: [key for grouping, label].
export function dayOf(iso) {
  const d = new Date(iso);
  const key = `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
  return [key, localDay.format(d)];
}

// "in 3 minutes", "12 seconds ago", relative to `now` (ms).
export function relative(iso, now = Date.now()) {
  if (!iso) return '';
  const s = (new Date(iso).getTime() - now) / 1000;
  const a = Math.abs(s);
  if (a < 60) return relativeFmt.format(Math.round(s), 'second');
  if (a < 3600) return relativeFmt.format(Math.round(s / 60), 'minute');
  if (a < 86400 * 2) return relativeFmt.format(Math.round(s / 3600), 'hour');
  return relativeFmt.format(Math.round(s / 86400), 'day');
}

// Seconds as people read them: 4 ms, 1.25 s, 3 min 4 s, 2 h 5 min.
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return '—';
  const s = Math.abs(seconds);
  if (s < 1) {
    const ms = s * 1000;
    const text = ms < 10 ? ms.toFixed(1) : String(Math.round(ms));
    if (Number(text) === 0) return '0 ms';
    return `${seconds < 0 ? '−' : ''}${text} ms`;
  }
  const neg = seconds < 0 ? '−' : '';
  if (s < 60) return `${neg}${s < 10 ? s.toFixed(2) : s.toFixed(1)} s`;
  if (s < 3600) return `${neg}${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  if (s < 86400) return `${neg}${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  return `${neg}${Math.floor(s / 86400)} d ${Math.round((s % 86400) / 3600)} h`;
}

// How late a run started: started_at − scheduled_at, for ticks only.
export function lagOf(run) {
  if (!run || !run.started_at || run.trigger !== 'schedule') return null;
  return (new Date(run.started_at) - new Date(run.scheduled_at)) / 1000;
}

// `every N s` in the largest whole unit.
function every(seconds) {
  const units = [[86400, 'day'], [3600, 'hour'], [60, 'minute'], [1, 'second']];
  for (const [n, unit] of units) {
    if (seconds % n === 0) {
      const k = seconds / n;
      return k === 1 ? `Every ${unit}` : `Every ${k} ${unit}s`;
    }
  }
  return `Every ${seconds} seconds`;
}

// The human reading of a schedule's trigger. Cron through cronstrue (5
// fields, or 6 with leading seconds, or @daily and friends, which cronstrue
// expands as cron does); interval and one-time triggers read directly.
export function describeTrigger(s) {
  if (s.schedule_type === 'cron' && s.cron) {
    if (!window.cronstrue) return '';
    let reading;
    try {
      reading = window.cronstrue.toString(s.cron, {
        use24HourTimeFormat: true,
        throwExceptionOnParseError: true,
      });
    } catch (_) {
      return '';
    }
    // cronie: with both day fields restricted a day matches either, unless
    // one of them starts with `*` (`*/2`): then it must match both, which
    // cronstrue's "…, and on Monday" does not say.
    const fields = s.cron.trim().split(/\s+/);
    if (fields.length >= 5) {
      const [dom, , dow] = fields.slice(-3);
      const restricted = (f) => f !== '*' && f !== '?';
      if (restricted(dom) && restricted(dow) && (dom.startsWith('*') || dow.startsWith('*'))) {
        reading += ' (only days that match both)';
      }
    }
    return reading;
  }
  if (s.schedule_type === 'interval' && s.interval_seconds) {
    return every(s.interval_seconds);
  }
  if (s.run_at) return `Once, at ${localTime(s.run_at)}`;
  return '';
}

// Whole seconds as an interval is written: 90 -> "1m 30s".
function compact(seconds) {
  const parts = [];
  let rest = seconds;
  for (const [n, unit] of [[86400, 'd'], [3600, 'h'], [60, 'm'], [1, 's']]) {
    if (rest >= n) {
      parts.push(`${Math.floor(rest / n)}${unit}`);
      rest %= n;
    }
  }
  return parts.join(' ') || '0s';
}

// The trigger as written: the cron expression, the interval, the instant.
export function triggerText(s) {
  if (s.schedule_type === 'cron') return s.cron || '';
  if (s.schedule_type === 'interval') return `every ${compact(s.interval_seconds || 0)}`;
  return `run_at ${s.run_at || ''}`;
}

// Who owns a schedule (`managed_by`, when the API gives it).
export function owner(s) {
  const m = s.managed_by;
  if (!m || !m.kind) return '—';
  if (m.kind === 'file') return m.source ? `file: ${m.source}` : 'file';
  return m.kind;
}

export const STATUSES = ['pending', 'running', 'completed', 'failed', 'skipped', 'missed', 'abandoned', 'cancelled'];
export const TRIGGERS = ['schedule', 'manual', 'retry', 'backfill'];

// The UTC offset at the end of an RFC 3339 local time ("…-04:00" -> "-04:00").
export function offsetOf(localIso) {
  const m = /([+-]\d\d:\d\d|Z)$/.exec(localIso || '');
  return m ? (m[1] === 'Z' ? '+00:00' : m[1]) : '';
}
