// The job page's lists: lifecycle events (alerts, NaN origin, resumes), captured worker
// log lines, checkpoints with authenticated download, and the spec.

import { api, download } from '../api.js';
import { errorBox, fill, fmtBytes, fmtNum, fmtTime, h, table, toast } from '../dom.js';

const WARN = /alert|nonfinite|nan|exploding|vanishing|dead|skip|fail|lost|error|prun/i;
const MAX_LOG_LINES = 2000;

// Log levels that have a style; any other level (a custom one) shows as info.
const LEVELS = new Set(['debug', 'info', 'warning', 'error', 'critical']);

/** The same job event whether it came polled (no id) or streamed. */
function eventKey(event) {
  return `${event.at}|${event.kind}|${event.message}`;
}

/** Lifecycle events, newest last; warnings stand out. */
export class Events {
  constructor() {
    this.rows = [];
    this.ids = new Set();
    this.el = h('div', {}, h('p.empty', {}, 'No events yet.'));
  }

  /** The whole list, as GET /events has it (while streams are refused). */
  set(events) {
    this.rows = events.slice();
    this.ids = new Set(this.rows.map(eventKey));
    this.render();
  }

  /** A `lifecycle` event of the stream; one already shown (streamed or polled) is skipped. */
  add(event) {
    const key = eventKey(event);
    if (this.ids.has(key)) return;
    this.ids.add(key);
    this.rows.push(event);
    this.render();
  }

  render() {
    fill(this.el, table([
      { label: 'When', cell: (e) => fmtTime(e.at) },
      { label: 'Event', cell: (e) => h(`span.event${WARN.test(e.kind) ? '.warn' : ''}`, {}, e.kind) },
      { label: 'Message', cell: (e) => [e.message || '', e.data ? h('details', {}, h('summary', {}, 'data'), h('pre', {}, JSON.stringify(e.data, null, 2))) : null] },
    ], this.rows, { caption: 'Lifecycle events, oldest first', empty: 'No events yet.' }));
  }
}

/** The worker's captured log lines (`logs` events), in a scrolling monospace panel. */
export class Logs {
  constructor() {
    this.ids = new Set();
    this.box = h('pre.log', { tabindex: '0', 'aria-label': 'Worker log lines' });
    this.empty = h('p.empty', {}, 'No log lines yet.');
    this.el = h('div', {}, this.empty, this.box);
    this.box.hidden = true;
  }

  add(line) {
    if (line.id !== undefined) {
      if (this.ids.has(line.id)) return;
      this.ids.add(line.id);
    }
    const stick = this.box.scrollTop + this.box.clientHeight >= this.box.scrollHeight - 4;
    const time = line.at ? new Date(line.at).toLocaleTimeString('en-GB') : '';
    const level = LEVELS.has(String(line.level).toLowerCase()) ? String(line.level).toLowerCase() : 'info';
    this.box.append(h(`span.l-${level}`, {}, `${time} ${line.level || ''} ${line.line}\n`));
    while (this.box.childElementCount > MAX_LOG_LINES) this.box.firstElementChild.remove();
    this.empty.hidden = true;
    this.box.hidden = false;
    if (stick) this.box.scrollTop = this.box.scrollHeight;
  }
}

/** Checkpoints with a download button each (the token goes in the request, not a URL). */
export async function checkpoints(jobId, signal) {
  const body = await api(`/jobs/${jobId}/checkpoints`, { signal });
  return table([
    { label: 'Step', num: true, cell: (c) => fmtNum(c.step) },
    { label: 'Epoch', num: true, cell: (c) => fmtNum(c.epoch) },
    { label: 'Tag', cell: (c) => c.tag },
    { label: 'Size', num: true, cell: (c) => fmtBytes(c.size) },
    { label: 'sha256', cell: (c) => h('code', { title: c.sha256 }, c.sha256.slice(0, 12)) },
    { label: 'Saved', cell: (c) => fmtTime(c.created_at) },
    { label: 'Weights', cell: (c) => h('button', { type: 'button', on: { click: (e) => save(e.currentTarget, jobId, c) } }, 'Download') },
  ], body.checkpoints, { caption: 'Checkpoints (state_dict as safetensors)', empty: 'No checkpoints yet: one is saved after each epoch.' });
}

async function save(button, jobId, ckpt) {
  button.disabled = true;
  try {
    const { name, size } = await download(`/jobs/${jobId}/checkpoints/${ckpt.id}/state_dict`, `${jobId}-step${ckpt.step}.safetensors`);
    toast(`Downloaded ${name} (${fmtBytes(size)})`);
  } catch (exc) {
    button.after(errorBox(exc, 'Download failed'));
  } finally {
    button.disabled = false;
  }
}

/** The spec as submitted, with a button that opens it in the editor. */
export function specPanel(job) {
  if (!job.spec) return h('p.empty', {}, 'No spec.');
  const reuse = h('button', {
    type: 'button',
    on: { click: () => { sessionStorage.setItem('trainyard.draft', JSON.stringify(job.spec, null, 2)); location.hash = '#/submit'; } },
  }, 'Edit a copy in the editor');
  return h('div', {}, job.kind === 'train' ? reuse : null, h('pre.code-block', { tabindex: '0' }, JSON.stringify(job.spec, null, 2)));
}
