// The jobs list: the caller's jobs (the API shows only the token owner's), filtered by
// status and kind, with progress, speed and best metric; refreshed while any job runs.

import { api, unlessAborted } from '../api.js';
import { errorBox, field, fill, fmtNum, fmtTime, h, select, shortId, spinner, statusBadge, table } from '../dom.js';
import { bestMetric, stepsPerSecond } from '../jobinfo.js';

const STATUSES = ['', 'queued', 'running', 'succeeded', 'failed', 'cancelled', 'pruned'];
const REFRESH_MS = 3000;

export async function render(main, ctx) {
  const status = select(STATUSES.map((s) => [s, s || 'any']), ctx.query.get('status') || '', { name: 'status' });
  const kind = select([['', 'any'], ['train', 'train'], ['infer', 'infer']], ctx.query.get('kind') || '', { name: 'kind' });
  const list = h('div', {}, spinner());
  const more = h('div.more');
  const selected = new Set();
  const compareBtn = h('button', { type: 'button', disabled: true, on: { click: compareSelected } }, 'Compare selected');
  fill(main,
    h('div.page-head', {}, h('h1', {}, 'Jobs'), h('a.button.primary', { href: '#/submit' }, 'New job')),
    h('form.filters', { on: { change: applyFilters, submit: (e) => e.preventDefault() }, 'aria-label': 'Filters' },
      field('Status', status), field('Kind', kind), compareBtn),
    list, more);

  let rows = [];
  let timer = null;

  async function load({ append = false, cursor = null } = {}) {
    const page = await api('/jobs', { query: { status: status.value, kind: kind.value, cursor, limit: 50 }, signal: ctx.signal });
    rows = append ? rows.concat(page.jobs) : page.jobs;
    draw();
    fill(more, page.next_cursor
      ? h('button', { type: 'button', on: { click: () => load({ append: true, cursor: page.next_cursor }).catch(unlessAborted(show)) } }, 'Load more')
      : null);
    clearTimeout(timer);
    if (!append && rows.some((j) => j.status === 'running' || j.status === 'queued')) {
      timer = setTimeout(() => load().catch(unlessAborted(show)), REFRESH_MS);
    }
  }

  function show(exc) {
    fill(list, errorBox(exc, 'Could not list the jobs'));
  }

  function draw() {
    const empty = status.value || kind.value ? 'No job matches these filters.' : 'No jobs yet: submit one with “New job”.';
    fill(list, table(columns(), rows, { caption: 'Your jobs, newest first', empty }));
  }

  function columns() {
    return [
      { label: 'Select', cell: (j) => h('input', { type: 'checkbox', 'aria-label': `select job ${shortId(j.id)}`, checked: selected.has(j.id), on: { change: (e) => toggle(j.id, e.target.checked) } }) },
      { label: 'Job', cell: (j) => h('a', { href: `#/jobs/${j.id}` }, h('code', {}, shortId(j.id))) },
      { label: 'Kind', cell: (j) => j.kind },
      { label: 'Status', cell: (j) => statusBadge(j.status) },
      { label: 'Progress', cell: progressCell },
      { label: 'Epoch', num: true, cell: (j) => fmtNum(j.progress.epoch) },
      { label: 'Steps/s', num: true, cell: (j) => fmtNum(stepsPerSecond(j), 3) },
      { label: 'Best metric', cell: (j) => bestMetric(j) || '—' },
      { label: 'Created', cell: (j) => fmtTime(j.created_at) },
    ];
  }

  function toggle(id, on) {
    if (on) selected.add(id);
    else selected.delete(id);
    compareBtn.disabled = selected.size < 2 || selected.size > 10;
  }

  function compareSelected() {
    location.hash = `#/compare?ids=${[...selected].join(',')}`;
  }

  function applyFilters() {
    const qs = new URLSearchParams();
    if (status.value) qs.set('status', status.value);
    if (kind.value) qs.set('kind', kind.value);
    history.replaceState(null, '', `#/jobs${qs.toString() ? `?${qs}` : ''}`);
    fill(list, spinner());
    load().catch(unlessAborted(show));
  }

  await load().catch(unlessAborted(show));
  return () => clearTimeout(timer);
}

export function progressCell(j) {
  const { step, total_steps: total } = j.progress;
  const label = total ? `${fmtNum(step)} / ${fmtNum(total)}` : `${fmtNum(step)} steps`;
  return h('div.progress-cell', {},
    h('progress', { max: total || 1, value: total ? step : (j.status === 'succeeded' ? 1 : 0), 'aria-label': `progress ${label}` }),
    h('span', {}, label));
}
