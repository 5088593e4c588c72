// The gradient-flow heatmap: layers x steps, colour = log10 of the gradient norm, for the
// parameters' gradients (param_grad) or the modules' output gradients (backward); loaded
// thinned from GET /traces?stat=norm&max_points and grown by the stream's `traces` events.

import { api } from '../api.js';
import { Heatmap, num } from '../charts.js';
import { field, fill, fmtNum, h, select, table } from '../dom.js';

const KINDS = [['param_grad', 'parameter gradients (param_grad)'], ['backward', 'output gradients (backward)']];
const MAX_POINTS = 300;
const MAX_COLUMNS = 100;

export class GradFlow {
  constructor(jobId, spec) {
    this.jobId = jobId;
    this.spec = spec;
    this.series = { param_grad: new Map(), backward: new Map() }; // layer -> [[step, norm]]
    this.order = [];
    this.kind = 'param_grad';
    this.chart = new Heatmap('Gradient flow', { key: 'gradient-flow', xName: 'step', yName: 'layer', valueName: 'log10 ‖grad‖', height: 360, inverse: true });
    this.picker = select(KINDS, this.kind, { on: { change: () => { this.kind = this.picker.value; this.render(); } } });
    this.latest = h('div.latest');
    this.el = h('div', {},
      h('div.row', {}, field('Gradients of', this.picker)),
      this.chart.el,
      h('h3', {}, 'Latest norms'), this.latest);
  }

  /** Layers in the model's order (named_parameters), not alphabetical. */
  setOrder(parameterNames) {
    this.order = parameterNames;
  }

  async load(signal) {
    await Promise.all(KINDS.map(async ([kind]) => {
      const body = await api(`/jobs/${this.jobId}/traces`, { query: { kind, stat: 'norm', max_points: MAX_POINTS }, signal });
      const series = new Map();
      for (const row of body.traces) {
        if (!series.has(row.layer)) series.set(row.layer, []);
        series.get(row.layer).push([row.step, num(row.norm), row.norm]);
      }
      this.series[kind] = series;
    }));
    if (!this.series.param_grad.size && this.series.backward.size) {
      this.kind = 'backward';
      this.picker.value = 'backward';
    }
    this.render();
  }

  /** The last step with a trace of either kind. */
  get lastStep() {
    let last = 0;
    for (const series of Object.values(this.series)) {
      for (const points of series.values()) last = Math.max(last, points[points.length - 1][0]);
    }
    return last;
  }

  /** The names of every traced layer, of every kind. */
  layers() {
    return [...new Set(Object.values(this.series).flatMap((s) => [...s.keys()]))];
  }

  /** One `traces` event: {step, norms: {"param_grad:conv1.weight": 0.3, ...}}. */
  onTraces({ step, norms }) {
    for (const [key, value] of Object.entries(norms)) {
      const at = key.indexOf(':');
      const series = this.series[key.slice(0, at)];
      if (!series) continue;
      const layer = key.slice(at + 1);
      if (!series.has(layer)) series.set(layer, []);
      const points = series.get(layer);
      while (points.length && points[points.length - 1][0] >= step) points.pop();
      points.push([step, num(value), value]);
    }
    this.render();
  }

  rank(layer) {
    const i = this.order.findIndex((name) => name === layer || name.startsWith(`${layer.split(':')[0]}.`));
    return i < 0 ? Number.MAX_SAFE_INTEGER : i;
  }

  render() {
    const series = this.series[this.kind];
    const layers = [...series.keys()].sort((a, b) => this.rank(a) - this.rank(b) || a.localeCompare(b));
    if (!layers.length) {
      this.chart.set({ xLabels: [], yLabels: [], cells: [], alt: this.emptyText() });
      fill(this.latest, h('p.empty', {}, this.emptyText()));
      return;
    }
    const steps = [...new Set(layers.flatMap((l) => series.get(l).map((p) => p[0])))].sort((a, b) => a - b);
    const { columnOf, labels } = columns(steps);
    const cells = new Map();
    const bad = [];
    layers.forEach((layer, y) => {
      for (const [step, value, raw] of series.get(layer)) {
        if (value === null || value <= 0) {
          if (typeof raw === 'string') bad.push(`${layer} at step ${step}`);
          continue;
        }
        const key = `${columnOf(step)},${y}`;
        const logged = Math.log10(value);
        if (!cells.has(key) || cells.get(key)[2] < logged) cells.set(key, [columnOf(step), y, logged]);
      }
    });
    const latest = layers.map((layer) => {
      const points = series.get(layer);
      return { layer, step: points[points.length - 1][0], value: points[points.length - 1][2] };
    });
    const finite = latest.filter((r) => typeof r.value === 'number');
    const top = finite.reduce((a, b) => (b.value > a.value ? b : a), finite[0]);
    const low = finite.reduce((a, b) => (b.value < a.value ? b : a), finite[0]);
    const alt = `${layers.length} layers × ${labels.length} step columns up to step ${fmtNum(steps[steps.length - 1])}` +
      (top ? `; latest largest norm ${top.layer} ${fmtNum(top.value)}, smallest ${low.layer} ${fmtNum(low.value)}` : '') +
      (bad.length ? `; non-finite: ${bad.slice(0, 3).join(', ')}` : '') + '.';
    this.chart.set({ xLabels: labels, yLabels: layers, cells: [...cells.values()], alt });
    fill(this.latest, table([
      { label: 'Layer', cell: (r) => h('code', {}, r.layer) },
      { label: 'Step', num: true, cell: (r) => fmtNum(r.step) },
      { label: '‖grad‖', num: true, cell: (r) => fmtNum(r.value) },
    ], latest, { caption: `Latest ${this.kind} norms per layer` }));
  }

  emptyText() {
    const hooks = this.spec?.hooks;
    const kinds = hooks?.kinds || ['backward', 'param_grad'];
    if (!hooks || !kinds.some((k) => k === 'param_grad' || k === 'backward')) {
      return 'No traces yet: this job logs no gradient hooks (add "hooks": {"kinds": ["param_grad"]} to the spec).';
    }
    return `No ${this.kind} traces yet: they are recorded every ${hooks.every_n_steps || 1} steps once training starts.`;
  }
}

/** Step columns: every step when few, else equal-width buckets labelled by first step. */
function columns(steps) {
  if (steps.length <= MAX_COLUMNS) {
    const index = new Map(steps.map((s, i) => [s, i]));
    return { columnOf: (s) => index.get(s), labels: steps.map(String) };
  }
  const lo = steps[0];
  const width = (steps[steps.length - 1] - lo + 1) / MAX_COLUMNS;
  const labels = Array.from({ length: MAX_COLUMNS }, (_, i) => String(Math.round(lo + i * width)));
  return { columnOf: (s) => Math.min(MAX_COLUMNS - 1, Math.floor((s - lo) / width)), labels };
}
