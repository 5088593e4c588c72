// New job: a JSON editor seeded with the shipped example specs, validated live through
// POST /models/summary (print(model), per-layer shapes, named_parameters, or the error
// naming the failing layer), then submitted with POST /jobs.

import { api, ApiError } from '../api.js';
import { errorBox, facts, field, fill, fmtBytes, fmtNum, h, select, spinner, table } from '../dom.js';

const DEBOUNCE_MS = 400;
let examplesCache = null;

async function examples(signal) {
  if (!examplesCache) {
    const resp = await fetch('/ui/examples.json', { signal });
    if (!resp.ok) throw new Error(`examples: ${resp.status}`);
    examplesCache = (await resp.json()).examples;
  }
  return examplesCache;
}

export async function render(main, ctx) {
  const shipped = await examples(ctx.signal);
  const names = Object.keys(shipped);
  const first = names.includes('lenet_digits') ? 'lenet_digits' : names[0];
  const picker = select(names.map((n) => [n, n.replaceAll('_', ' ')]), first, { name: 'example' });
  const editor = h('textarea.code', { name: 'spec', rows: 24, spellcheck: 'false', autocomplete: 'off', 'aria-describedby': 'spec-state' });
  const priority = h('input', { type: 'number', name: 'priority', min: 0, max: 9, step: 1, value: '5' });
  const state = h('p#spec-state.spec-state', { 'aria-live': 'polite' }, 'Checking…');
  const result = h('div.summary-panel');
  const submitBtn = h('button.primary', { type: 'submit' }, 'Submit job');
  const submitState = h('div', { 'aria-live': 'polite' });

  fill(main,
    h('div.page-head', {}, h('h1', {}, 'New job')),
    h('div.split', {},
      h('form.card.editor', { on: { submit: onSubmit } },
        h('div.row', {}, field('Example spec', picker), h('button', { type: 'button', on: { click: loadExample } }, 'Load example'), field('Priority (0–9)', priority)),
        field('Job spec (JSON: model, data, train, hooks)', editor),
        state,
        h('div.row', {}, submitBtn),
        submitState),
      h('section.card', { 'aria-labelledby': 'summary-title' }, h('h2#summary-title', {}, 'What this spec builds'), result)));

  let timer = null;
  let inFlight = null;
  let seq = 0;

  function loadExample() {
    editor.value = JSON.stringify(shipped[picker.value], null, 2);
    schedule(0);
  }

  function schedule(delay = DEBOUNCE_MS) {
    clearTimeout(timer);
    timer = setTimeout(validate, delay);
  }

  function parseSpec() {
    try {
      const spec = JSON.parse(editor.value);
      if (!spec || typeof spec !== 'object' || Array.isArray(spec)) throw new SyntaxError('the spec must be a JSON object');
      return { spec };
    } catch (exc) {
      return { error: exc.message };
    }
  }

  async function validate() {
    const { spec, error } = parseSpec();
    const mine = ++seq;
    inFlight?.abort();
    if (error) {
      setState('invalid', `Not valid JSON: ${error}`);
      fill(result, errorBox(error, 'JSON syntax'));
      return;
    }
    setState('checking', 'Checking…');
    inFlight = new AbortController();
    ctx.signal.addEventListener('abort', () => inFlight?.abort(), { once: true });
    try {
      const summary = await api('/models/summary', { method: 'POST', body: { spec }, signal: inFlight.signal });
      if (mine !== seq) return;
      setState('valid', `Valid: ${fmtNum(summary.param_count)} parameters, output ${shape(summary.output_shape)}, about ${fmtBytes(summary.estimated_train_bytes)} to train.`);
      fill(result, summaryView(summary));
    } catch (exc) {
      if (exc.name === 'AbortError' || mine !== seq) return;
      setState('invalid', `Invalid: ${exc.message}`);
      fill(result, specError(exc));
    }
  }

  function setState(kind, text) {
    state.className = `spec-state st-${kind}`;
    state.textContent = text;
    submitBtn.disabled = kind === 'invalid';
  }

  async function onSubmit(event) {
    event.preventDefault();
    const { spec, error } = parseSpec();
    if (error) return;
    submitBtn.disabled = true;
    fill(submitState, spinner('Submitting…'));
    try {
      const job = await api('/jobs', { method: 'POST', body: { kind: 'train', spec, priority: Number(priority.value) }, signal: ctx.signal });
      location.hash = `#/jobs/${job.id}`;
    } catch (exc) {
      if (exc.name === 'AbortError') return;
      fill(submitState, exc instanceof ApiError && exc.code === 'invalid_spec' ? specError(exc) : errorBox(exc, 'Not submitted'));
      submitBtn.disabled = false;
    }
  }

  editor.addEventListener('input', () => schedule());
  picker.addEventListener('change', loadExample);
  const draft = sessionStorage.getItem('trainyard.draft'); // "Edit a copy" on a job page
  sessionStorage.removeItem('trainyard.draft');
  if (draft) {
    editor.value = draft;
    schedule(0);
  } else {
    loadExample();
  }
  return () => {
    clearTimeout(timer);
    inFlight?.abort();
  };
}

function shape(dims) {
  return dims ? `[${dims.join(', ')}]` : '—';
}

/** The spec error, with the failing layer called out when the API names one. */
function specError(exc) {
  const locs = (exc.details || []).map((d) => d.loc || '');
  const layer = locs.map((loc) => /layers\[\d+\](\.layers\[\d+\])*/.exec(loc)?.[0]).find(Boolean);
  return h('div', {},
    layer ? h('p.failing-layer', {}, 'Failing layer: ', h('code', {}, layer)) : null,
    errorBox(exc, 'The spec does not build'));
}

function summaryView(s) {
  const layers = table([
    { label: 'Layer', cell: (r) => h('code', {}, r.name) },
    { label: 'Type', cell: (r) => r.type },
    { label: 'Output shape', cell: (r) => shape(r.output_shape) },
    { label: 'Parameters', num: true, cell: (r) => fmtNum(r.param_count) },
  ], s.layers, { caption: 'Layers and their output shapes' });
  const params = table([
    { label: 'Name', cell: (r) => h('code', {}, r.name) },
    { label: 'Shape', cell: (r) => shape(r.shape) },
    { label: 'numel', num: true, cell: (r) => fmtNum(r.numel) },
    { label: 'Trainable', cell: (r) => (r.trainable ? 'yes' : 'frozen') },
  ], s.parameters, { caption: 'named_parameters()', empty: 'This model has no parameters.' });
  return h('div.summary', {},
    facts([
      ['Parameters', fmtNum(s.param_count)], ['Trainable', fmtNum(s.trainable_count)],
      ['Frozen', fmtNum(s.frozen_count)], ['Output', shape(s.output_shape)],
    ]),
    h('h3', {}, 'print(model)'),
    h('pre.module-tree', { tabindex: '0' }, s.module_tree),
    h('h3', {}, 'Layers'), layers,
    h('h3', {}, 'Parameters'), params);
}
