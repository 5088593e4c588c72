// One job: status, progress and actions (cancel / preempt) over tabs for its curves,
// gradient flow, layer explorer, predictions, events and logs, checkpoints and spec;
// kept live by the job's stream (sse.js), or by polling while streams are refused.

import { api, unlessAborted } from '../api.js';
import { errorBox, facts as factList, fill, fmtDuration, fmtNum, fmtTime, h, shortId, spinner, statusBadge, toast } from '../dom.js';
import { isFinal, stepsPerSecond } from '../jobinfo.js';
import { openStream } from '../sse.js';
import { tabs } from '../tabs.js';
import { Curves } from './job_curves.js';
import { GradFlow } from './job_grads.js';
import { LayerExplorer } from './job_layers.js';
import { checkpoints, Events, Logs, specPanel } from './job_panels.js';
import { progressCell } from './jobs.js';
import { predictPanel } from './job_predict.js';

const TRACE_EVERY = 1;
// The server closes a stream after this long (at most TRAINYARD_STREAM_MAX_SECONDS); the
// client resumes with Last-Event-ID, without a gap or a duplicate.
const STREAM_SECONDS = 60;

export async function render(main, ctx) {
  const id = ctx.params[0];
  const { signal } = ctx;
  fill(main, spinner());
  let job = await api(`/jobs/${id}`, { signal });
  const head = h('div.job-head');
  const curves = new Curves(id);
  const grads = new GradFlow(id, job.spec);
  const explorer = new LayerExplorer(id, job.spec);
  const events = new Events();
  const logs = new Logs();
  const ckpts = h('div', {}, spinner());
  const connection = h('span.connection', { role: 'status' }, 'connecting…');
  let explorerLoaded = false;

  const views = tabs('Job views', [
    { id: 'curves', label: 'Curves', panel: curves.el },
    { id: 'grads', label: 'Gradient flow', panel: grads.el },
    { id: 'layers', label: 'Layer explorer', panel: explorer.el },
    { id: 'predict', label: 'Predict', panel: job.kind === 'train' ? predictPanel(job, signal) : h('p.empty', {}, 'An inference job: its answer is in the summary below.') },
    { id: 'activity', label: 'Events & logs', panel: h('div', {}, h('h3', {}, 'Events'), events.el, h('h3', {}, 'Worker log'), logs.el) },
    { id: 'checkpoints', label: 'Checkpoints', panel: ckpts },
    { id: 'spec', label: 'Spec', panel: specPanel(job) },
  ], { initial: ctx.query.get('tab'), onShow });

  fill(main,
    h('nav.crumbs', { 'aria-label': 'Breadcrumb' }, h('a', { href: '#/jobs' }, 'Jobs'), ' / ', h('span', {}, shortId(id))),
    head, views.el);
  drawHead();

  function onShow(tab) {
    if (tab === 'layers' && !explorerLoaded) {
      explorerLoaded = true;
      explorer.load(grads.lastStep, signal).catch(unlessAborted((e) => fill(explorer.view, errorBox(e))));
    }
    if (tab === 'checkpoints') loadCheckpoints();
  }

  function loadCheckpoints() {
    checkpoints(id, signal).then((node) => fill(ckpts, node)).catch(unlessAborted((e) => fill(ckpts, errorBox(e))));
  }

  function drawHead() {
    const running = job.status === 'running';
    const actions = h('div.actions', {},
      h('button', { type: 'button', disabled: isFinal(job.status) || job.cancel_requested, on: { click: () => act('cancel') } }, job.cancel_requested ? 'Cancelling…' : 'Cancel'),
      h('button', { type: 'button', disabled: !running || job.preempt_requested, on: { click: () => act('preempt') } }, job.preempt_requested ? 'Preempting…' : 'Preempt'),
      h('a.button', { href: `#/compare?ids=${id}` }, 'Compare…'));
    const facts = [
      ['Kind', job.kind], ['Queue', job.queue], ['Attempt', job.attempt], ['Worker', job.worker || '—'],
      ['Created', fmtTime(job.created_at)], ['Started', fmtTime(job.started_at)], ['Finished', fmtTime(job.finished_at)],
      ['Steps/s', fmtNum(stepsPerSecond(job), 3)],
      ['Wall time', fmtDuration(job.summary?.wall_s ?? null)],
    ];
    fill(head,
      h('div.page-head', {}, h('h1', {}, 'Job ', h('code', {}, shortId(id))), statusBadge(job.status), connection, actions),
      h('div.job-progress', {}, progressCell(job), h('span', {}, `epoch ${fmtNum(job.progress.epoch)}`)),
      job.error ? errorBox(job.error, `Job ${job.status}`) : null,
      factList(facts.map(([k, v]) => [k, String(v)])));
  }

  async function act(what) {
    try {
      job = { ...job, ...(await api(`/jobs/${id}/${what}`, { method: 'POST', signal })) };
      toast(what === 'cancel' ? 'Cancel requested.' : 'Preemption requested: the job checkpoints and goes back to the queue.');
      drawHead();
    } catch (exc) {
      unlessAborted((e) => head.append(errorBox(e, `Could not ${what}`)))(exc);
    }
  }

  async function refreshJob() {
    const fresh = await api(`/jobs/${id}`, { signal });
    job = { ...fresh, spec: job.spec };
    drawHead();
    return isFinal(job.status);
  }

  // First the thinned history from the REST endpoints, then the stream from just before
  // where it ends (a step resent is replaced, not drawn twice).
  await Promise.all([
    curves.load(signal),
    grads.load(signal),
    api(`/jobs/${id}/summary`, { signal }).then((s) => grads.setOrder((s.model?.parameters || []).map((p) => p.name))).catch(() => {}),
  ]).catch(unlessAborted((e) => main.append(errorBox(e, 'Could not load the results'))));
  grads.render();
  explorer.setOrder((layer) => grads.rank(layer));
  const back = isFinal(job.status) ? 0 : 1;
  const cursor = `0.${Math.max(0, curves.lastStep - back)}.${Math.max(0, grads.lastStep - back)}`;

  const stream = openStream(id, {
    lastId: cursor,
    query: { trace_every: TRACE_EVERY, max_seconds: STREAM_SECONDS },
    onEvent(kind, data) {
      if (kind === 'metrics') curves.onMetrics(data);
      else if (kind === 'traces') grads.onTraces(data);
      else if (kind === 'lifecycle') events.add(data);
      else if (kind === 'logs') logs.add(data);
      else if (kind === 'progress') {
        const changed = data.status !== job.status;
        job = { ...job, status: data.status, progress: { ...job.progress, step: data.step, total_steps: data.total_steps, epoch: data.epoch } };
        drawHead();
        if (changed) refreshJob().catch(() => {}); // worker, start time, attempt
      } else if (kind === 'end') {
        refreshJob().catch(() => {});
        loadCheckpoints();
      }
    },
    onState(state, detail) {
      const text = {
        connecting: 'connecting…', live: 'live', reconnecting: 'reconnecting…', ended: 'ended',
        polling: `polling (too many live streams; retrying in ${detail?.seconds} s)`, error: `stream error: ${detail?.message}`,
      }[state];
      connection.textContent = text;
      connection.className = `connection c-${state}`;
      if (state === 'polling') pollOnce().catch(() => {});
    },
    poll: pollOnce,
  });

  /** Without the stream: the job, its curves, events and logs by plain requests. */
  async function pollOnce() {
    const final = await refreshJob();
    await curves.load(signal);
    const body = await api(`/jobs/${id}/events`, { signal });
    events.set(body.events);
    return final;
  }

  return () => stream.close();
}
