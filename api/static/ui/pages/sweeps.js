// Sweeps: the list, and one sweep's trials table, best trial so far, parallel-coordinates
// view of the trials' parameters against the metric, and the metric over trials.

import { api, unlessAborted } from '../api.js';
import { LineChart, num, Parallel } from '../charts.js';
import { errorBox, facts, fill, fmtNum, fmtTime, h, shortId, spinner, statusBadge, table } from '../dom.js';

const REFRESH_MS = 3000;

function trialsSummary(byState) {
  return Object.entries(byState || {}).filter(([, n]) => n).map(([s, n]) => `${n} ${s}`).join(', ') || 'none yet';
}

export async function renderList(main, ctx) {
  fill(main, h('div.page-head', {}, h('h1', {}, 'Sweeps')), spinner());
  const body = await api('/sweeps', { signal: ctx.signal });
  main.lastElementChild.remove();
  main.append(table([
    { label: 'Sweep', cell: (s) => h('a', { href: `#/sweeps/${s.id}` }, s.name || shortId(s.id)) },
    { label: 'Status', cell: (s) => statusBadge(s.status) },
    { label: 'Method', cell: (s) => s.method },
    { label: 'Metric', cell: (s) => `${s.goal} ${s.metric}` },
    { label: 'Trials', cell: (s) => trialsSummary(s.trials_by_state) },
    { label: 'Best', num: true, cell: (s) => fmtNum(s.best?.value ?? null) },
    { label: 'Created', cell: (s) => fmtTime(s.created_at) },
  ], body.sweeps, { caption: 'Your sweeps, newest first', empty: 'No sweeps yet: start one with `trainyard sweep create` or POST /api/v1/sweeps.' }));
  return null;
}

export async function renderOne(main, ctx) {
  const id = ctx.params[0];
  const head = h('div');
  const best = h('div');
  const trials = h('div');
  const parallel = new Parallel('Trials in parameter space', { key: 'parallel', height: 340 });
  const history = new LineChart('Metric by trial', { key: 'history', xName: 'trial', yName: 'metric', empty: 'No finished trials yet.' });
  fill(main,
    h('nav.crumbs', { 'aria-label': 'Breadcrumb' }, h('a', { href: '#/sweeps' }, 'Sweeps'), ' / ', h('span', {}, shortId(id))),
    head,
    h('section', { 'aria-labelledby': 'sw-best' }, h('h2#sw-best', {}, 'Best so far'), best),
    h('div.chart-grid', {}, parallel.el, history.el),
    h('section', { 'aria-labelledby': 'sw-trials' }, h('h2#sw-trials', {}, 'Trials'), trials));
  let timer = null;

  async function load() {
    const sweep = await api(`/sweeps/${id}`, { signal: ctx.signal });
    fill(head,
      h('div.page-head', {}, h('h1', {}, sweep.name || `Sweep ${shortId(id)}`), statusBadge(sweep.status)),
      sweep.error ? errorBox(sweep.error, 'Sweep error') : null,
      facts([
        ['Method', sweep.method], ['Metric', `${sweep.goal} ${sweep.metric}`],
        ['Trials', `${trialsSummary(sweep.trials_by_state)} (of ${sweep.max_trials}, ${sweep.parallel} at a time)`],
      ]));
    fill(best, sweep.best
      ? h('p.best', {}, `Trial ${sweep.best.number}: ${sweep.metric} = `, h('strong', {}, fmtNum(sweep.best.value)), ' with ', h('code', {}, JSON.stringify(sweep.best.params)),
        sweep.best.job_id ? [' — ', h('a', { href: `#/jobs/${sweep.best.job_id}` }, 'open its job')] : null)
      : h('p.empty', {}, 'No trial has finished yet.'));
    drawTrials(sweep);
    clearTimeout(timer);
    if (sweep.status === 'running' || sweep.status === 'queued') timer = setTimeout(() => load().catch(unlessAborted(show)), REFRESH_MS);
  }

  function show(exc) {
    fill(trials, errorBox(exc, 'Could not load the sweep'));
  }

  function drawTrials(sweep) {
    const rows = sweep.trials || [];
    const params = [...new Set(rows.flatMap((t) => Object.keys(t.params || {})))];
    const finishedJobs = rows.filter((t) => t.job_id && t.value !== null).map((t) => t.job_id);
    fill(trials,
      finishedJobs.length >= 2 ? h('p', {}, h('a.button', { href: `#/compare?ids=${finishedJobs.slice(0, 10).join(',')}` }, 'Compare the trials’ jobs')) : null,
      table([
        { label: '#', num: true, cell: (t) => String(t.number) },
        { label: 'State', cell: (t) => statusBadge(t.state) },
        ...params.map((p) => ({ label: p, num: true, cell: (t) => fmtNum(t.params?.[p] ?? null) })),
        { label: sweep.metric, num: true, cell: (t) => fmtNum(t.value) },
        { label: 'Job', cell: (t) => (t.job_id ? h('a', { href: `#/jobs/${t.job_id}` }, h('code', {}, shortId(t.job_id))) : '—') },
        { label: 'Stop reason', cell: (t) => t.stop_reason || '' },
      ], rows, { caption: 'Trials by number', empty: 'No trials yet.' }));
    drawCharts(sweep, rows, params);
  }

  function drawCharts(sweep, rows, params) {
    const done = rows.filter((t) => num(t.value) !== null);
    const dims = params.map((p) => {
      const values = rows.map((t) => t.params?.[p]);
      return values.every((v) => typeof v === 'number' || v === undefined) ? { name: p } : { name: p, type: 'category', data: [...new Set(values.map(String))] };
    });
    dims.push({ name: sweep.metric });
    const data = done.map((t) => [...params.map((p, i) => (dims[i].type === 'category' ? String(t.params?.[p]) : t.params?.[p])), num(t.value)]);
    parallel.set(dims, data, { colorDim: params.length, alt: `${done.length} finished trials over ${params.join(', ') || 'no parameters'}; best ${fmtNum(sweep.best?.value ?? null)}.` });
    const better = sweep.goal === 'maximize' ? Math.max : Math.min;
    let so = null;
    const bestSoFar = done.map((t) => { so = so === null ? num(t.value) : better(so, num(t.value)); return [t.number, so]; });
    history.set([{ name: sweep.metric, points: done.map((t) => [t.number, num(t.value)]) }, { name: 'best so far', points: bestSoFar }]);
  }

  await load().catch(unlessAborted(show));
  return () => clearTimeout(timer);
}
