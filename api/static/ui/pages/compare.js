// Compare jobs: pick 2–10 jobs, then GET /compare (timing, final / best metrics, spec
// differences) and each job's thinned metrics overlaid, one chart per metric.

import { api, unlessAborted } from '../api.js';
import { LineChart, num } from '../charts.js';
import { errorBox, fill, fmtDuration, fmtNum, h, shortId, spinner, statusBadge, table } from '../dom.js';
import { bestMetric } from '../jobinfo.js';

const MAX_POINTS = 500;
const MAX_JOBS = 10;

export async function render(main, ctx) {
  const ids = (ctx.query.get('ids') || '').split(',').map((s) => s.trim()).filter(Boolean);
  if (ids.length < 2) return picker(main, ctx, ids);
  fill(main, h('div.page-head', {}, h('h1', {}, `Compare ${ids.length} jobs`), h('a.button', { href: '#/compare' }, 'Choose other jobs')), spinner());
  const [comparison, metrics] = await Promise.all([
    api('/compare', { query: { ids: ids.join(',') }, signal: ctx.signal }),
    Promise.all(ids.map((id) => api(`/jobs/${id}/metrics`, { query: { max_points: MAX_POINTS }, signal: ctx.signal }))),
  ]);
  main.lastElementChild.remove();
  main.append(
    h('section', { 'aria-labelledby': 'cmp-jobs' }, h('h2#cmp-jobs', {}, 'Jobs'), jobsTable(comparison.jobs)),
    h('section', { 'aria-labelledby': 'cmp-diff' }, h('h2#cmp-diff', {}, 'Spec differences'), diffTable(comparison, ids)),
    h('section', { 'aria-labelledby': 'cmp-curves' }, h('h2#cmp-curves', {}, 'Curves'), overlays(ids, metrics)));
  return null;
}

function jobsTable(jobs) {
  const keys = [...new Set(jobs.flatMap((j) => Object.keys(j.final || {})))].sort();
  return table([
    { label: 'Job', cell: (j) => h('a', { href: `#/jobs/${j.id}` }, h('code', {}, shortId(j.id))) },
    { label: 'Status', cell: (j) => statusBadge(j.status) },
    { label: 'Wall time', num: true, cell: (j) => fmtDuration(j.wall_s) },
    { label: 'Steps/s', num: true, cell: (j) => fmtNum(j.steps_per_s, 3) },
    ...keys.map((k) => ({ label: `final ${k}`, num: true, cell: (j) => fmtNum(j.final?.[k]) })),
    ...keys.map((k) => ({ label: `best ${k}`, num: true, cell: (j) => fmtNum(j.best?.[k]) })),
  ], jobs, { caption: 'Timing and final / best metrics' });
}

function diffTable(comparison, ids) {
  const columns = [{ label: 'Spec path', cell: (d) => h('code', {}, d.path) }];
  ids.forEach((id, i) => columns.push({ label: shortId(id), cell: (d) => h('code', {}, value(d.values[i])) }));
  return table(columns, comparison.spec_differences, { caption: 'Where the specs differ', empty: 'The specs are identical.' });
}

function value(v) {
  if (v === null || v === undefined) return '(absent)';
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

/** One chart per metric (train/loss, val/accuracy, …), one line per job. */
function overlays(ids, metrics) {
  const byKey = new Map();
  metrics.forEach((body, i) => {
    const until = Math.max(0, ...body.series.flatMap((s) => s.points.map((p) => p.step)));
    for (const s of body.series) {
      const key = `${s.split}/${s.name}`;
      if (!byKey.has(key)) byKey.set(key, []);
      byKey.get(key).push({ name: shortId(ids[i]), until, points: s.points.map((p) => [p.step, num(p.value)]) });
    }
  });
  const order = (k) => ['train/loss', 'val/loss', 'val/accuracy', 'train/lr'].indexOf(k) + 1 || 99;
  const keys = [...byKey.keys()].sort((a, b) => order(a) - order(b) || a.localeCompare(b));
  if (!keys.length) return h('p.empty', {}, 'None of these jobs has recorded metrics yet.');
  const grid = h('div.chart-grid');
  for (const key of keys) {
    const held = key.split('/')[1] === 'lr'; // logged when it changes: held until the next
    const chart = new LineChart(key, { key: `compare:${key}`, yName: key.split('/')[1], hold: held });
    grid.append(chart.el);
    chart.set(byKey.get(key));
  }
  return grid;
}

/** No ids yet: choose jobs from the latest ones. */
async function picker(main, ctx, preset) {
  const chosen = new Set(preset);
  const go = h('button.primary', { type: 'submit', disabled: true }, 'Compare');
  const list = h('div', {}, spinner());
  const update = () => { go.disabled = chosen.size < 2 || chosen.size > MAX_JOBS; };
  fill(main,
    h('div.page-head', {}, h('h1', {}, 'Compare jobs')),
    h('form', { on: { submit: (e) => { e.preventDefault(); location.hash = `#/compare?ids=${[...chosen].join(',')}`; } } },
      h('p', {}, `Choose 2 to ${MAX_JOBS} jobs to overlay their curves and see where their specs differ.`), list, go));
  try {
    const page = await api('/jobs', { query: { kind: 'train', limit: 50 }, signal: ctx.signal });
    fill(list, table([
      { label: 'Compare', cell: (j) => h('input', { type: 'checkbox', 'aria-label': `compare job ${shortId(j.id)}`, checked: chosen.has(j.id), on: { change: (e) => { if (e.target.checked) chosen.add(j.id); else chosen.delete(j.id); update(); } } }) },
      { label: 'Job', cell: (j) => h('a', { href: `#/jobs/${j.id}` }, h('code', {}, shortId(j.id))) },
      { label: 'Status', cell: (j) => statusBadge(j.status) },
      { label: 'Best metric', cell: (j) => bestMetric(j) || '—' },
    ], page.jobs, { caption: 'Your latest training jobs', empty: 'No training jobs yet.' }));
    update();
  } catch (exc) {
    unlessAborted((e) => fill(list, errorBox(e, 'Could not list the jobs')))(exc);
  }
  return null;
}
