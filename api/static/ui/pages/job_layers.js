// The layer explorer: one layer's statistic over time (norm, mean, std, max, min,
// zero_frac, update_ratio) from GET /traces?layer&kind&stat&max_points, or its histograms
// over time as a heatmap of value bins x steps; plus the layer's latest full statistics.

import { api, unlessAborted } from '../api.js';
import { Heatmap, LineChart, num } from '../charts.js';
import { errorBox, field, fill, fmtNum, h, select, spinner, table } from '../dom.js';

const KINDS = ['param_grad', 'backward', 'forward', 'forward_pre', 'weights'];
const STATS = ['norm', 'mean', 'std', 'max', 'min', 'zero_frac', 'update_ratio', 'histogram'];
const STAT_LABELS = { zero_frac: 'zero_frac (fraction of zeros)', update_ratio: 'update_ratio (‖Δw‖ / ‖w‖)', histogram: 'histograms over time' };
const MAX_POINTS = 500;
const MAX_HISTOGRAMS = 150;
const VALUE_BINS = 40;

export class LayerExplorer {
  constructor(jobId, spec) {
    this.jobId = jobId;
    const hooks = spec?.hooks || {};
    // Every statistic is recorded on every full_every-th logged step: look that far back.
    this.window = 2 * (hooks.every_n_steps || 1) * (hooks.full_every || 10);
    this.lastStep = 0;
    this.known = new Map(); // kind -> [layer]
    this.kind = select([], '', { name: 'kind' });
    this.layer = select([], '', { name: 'layer' });
    this.stat = select(STATS.map((s) => [s, STAT_LABELS[s] || s]), 'norm', { name: 'stat' });
    this.view = h('div.explorer-view');
    this.facts = h('div.latest');
    this.chart = null;
    this.controller = null;
    const refresh = h('button', { type: 'button', on: { click: () => this.draw() } }, 'Refresh');
    this.kind.addEventListener('change', () => { this.fillLayers(); this.draw(); });
    this.layer.addEventListener('change', () => this.draw());
    this.stat.addEventListener('change', () => this.draw());
    this.el = h('div', {},
      h('form.row', { on: { submit: (e) => e.preventDefault() }, 'aria-label': 'Layer and statistic' },
        field('Hook kind', this.kind), field('Layer', this.layer), field('Statistic', this.stat), refresh),
      this.view, h('h3', {}, 'Latest recorded statistics of this layer'), this.facts);
  }

  /** rank(layer) -> its place in the model (the layer select lists them in that order). */
  setOrder(rank) {
    this.rank = rank;
  }

  /** Learn the traced (layer, kind) pairs from the last step's rows. */
  async load(lastStep, signal) {
    this.lastStep = lastStep;
    if (!lastStep) {
      fill(this.view, h('p.empty', {}, 'No traces yet: this job has recorded no layer statistics so far (or logs no hooks).'));
      return;
    }
    const body = await api(`/jobs/${this.jobId}/traces`, { query: { at_step: lastStep }, signal });
    this.known = new Map();
    for (const row of body.traces) {
      if (!this.known.has(row.kind)) this.known.set(row.kind, []);
      this.known.get(row.kind).push(row.layer);
    }
    const kinds = KINDS.filter((k) => this.known.has(k));
    fill(this.kind, kinds.map((k) => h('option', { value: k }, k)));
    this.fillLayers();
    await this.draw();
  }

  fillLayers() {
    const previous = this.layer.value;
    const rank = this.rank || (() => 0);
    const layers = [...(this.known.get(this.kind.value) || [])].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
    fill(this.layer, layers.map((l) => h('option', { value: l, selected: l === previous }, l)));
  }

  async draw() {
    const layer = this.layer.value;
    const kind = this.kind.value;
    if (!layer || !kind) return;
    this.controller?.abort();
    this.controller = new AbortController();
    const { signal } = this.controller;
    this.chart?.dispose();
    fill(this.view, spinner());
    try {
      if (this.stat.value === 'histogram') await this.histograms(layer, kind, signal);
      else await this.line(layer, kind, this.stat.value, signal);
      await this.latest(layer, kind, signal);
    } catch (exc) {
      unlessAborted((e) => fill(this.view, errorBox(e, 'Could not load the traces')))(exc);
    }
  }

  async line(layer, kind, stat, signal) {
    const body = await api(`/jobs/${this.jobId}/traces`, { query: { layer, kind, stat, max_points: MAX_POINTS }, signal });
    // Full statistics are recorded on some logged steps only (hooks.full_every): the
    // steps without them are left out, not drawn as gaps.
    const points = body.traces.filter((r) => r[stat] !== null && r[stat] !== undefined).map((r) => [r.step, num(r[stat])]);
    this.chart = new LineChart(`${layer} · ${kind} · ${stat}`, { key: 'layer', yName: stat, empty: `No ${stat} recorded for ${kind} of this layer (see hooks.stats).` });
    fill(this.view, this.chart.el);
    this.chart.set([{ name: stat, points }]);
  }

  async histograms(layer, kind, signal) {
    const body = await api(`/jobs/${this.jobId}/traces`, { query: { layer, kind, max_points: MAX_HISTOGRAMS }, signal });
    const rows = body.traces.filter((r) => Array.isArray(r.histogram));
    if (!rows.length) {
      fill(this.view, h('p.empty', {}, `No histograms recorded for ${kind} of ${layer}: set hooks.histogram_bins (and histogram_kinds) in the spec.`));
      return;
    }
    const ranged = rows.every((r) => num(r.min) !== null && num(r.max) !== null);
    this.chart = new Heatmap(`${layer} · ${kind} · histograms`, {
      key: 'layer-histograms', xName: 'step', yName: ranged ? 'value' : 'bin', height: 340,
      valueName: ranged ? 'log10(1 + count)' : 'log10(1 + ‰ of values)',
    });
    fill(this.view, this.chart.el);
    this.chart.set(ranged ? rebin(rows, layer) : byBin(rows, layer));
  }

  async latest(layer, kind, signal) {
    const from = Math.max(0, this.lastStep - this.window);
    const body = await api(`/jobs/${this.jobId}/traces`, { query: { layer, kind, from_step: from }, signal });
    const full = [...body.traces].reverse().find((r) => r.mean !== null || r.std !== null) || body.traces[body.traces.length - 1];
    if (!full) {
      fill(this.facts, h('p.empty', {}, 'Nothing recorded.'));
      return;
    }
    const stats = ['numel', 'norm', 'mean', 'std', 'min', 'max', 'zero_frac', 'nonfinite', 'update_ratio']
      .filter((s) => full[s] !== null && full[s] !== undefined).map((s) => ({ stat: s, value: full[s] }));
    fill(this.facts, table([
      { label: 'Statistic', cell: (r) => r.stat },
      { label: `At step ${fmtNum(full.step)}`, num: true, cell: (r) => fmtNum(r.value) },
    ], stats, { caption: `${layer} (${kind})` }));
  }
}

/** Histograms whose range is not recorded (hooks.stats without min / max): bin index x
step, each step's counts as its fraction of the tensor, so the shape's drift shows. */
function byBin(rows, layer) {
  const bins = Math.max(...rows.map((r) => r.histogram.length));
  const cells = [];
  rows.forEach((row, x) => {
    const total = row.histogram.reduce((a, c) => a + (num(c) || 0), 0) || 1;
    row.histogram.forEach((count, y) => {
      if (num(count)) cells.push([x, y, Math.log10(1 + (1000 * count) / total)]);
    });
  });
  const last = rows[rows.length - 1];
  return {
    xLabels: rows.map((r) => String(r.step)),
    yLabels: Array.from({ length: bins }, (_, i) => `bin ${i + 1}`),
    cells,
    alt: `${rows.length} histograms of ${layer} (${bins} bins from the lowest to the highest value of each step; ` +
      `the range is not recorded: add "min" and "max" to hooks.stats) from step ${rows[0].step} to ${last.step}.`,
  };
}

/** Histograms over [min, max] per step, re-binned onto one value axis for all steps. */
function rebin(rows, layer) {
  const lo = Math.min(...rows.map((r) => r.min));
  const hi = Math.max(...rows.map((r) => r.max));
  const width = (hi - lo) / VALUE_BINS || 1;
  const cells = [];
  rows.forEach((row, x) => {
    const counts = new Array(VALUE_BINS).fill(0);
    const bins = row.histogram.length;
    const step = (row.max - row.min) / bins;
    row.histogram.forEach((count, i) => {
      const centre = row.min + (i + 0.5) * step;
      const y = Math.min(VALUE_BINS - 1, Math.max(0, Math.floor((centre - lo) / width)));
      counts[y] += num(count) || 0;
    });
    counts.forEach((c, y) => { if (c > 0) cells.push([x, y, Math.log10(1 + c)]); });
  });
  const yLabels = Array.from({ length: VALUE_BINS }, (_, i) => fmtNum(lo + (i + 0.5) * width, 3));
  const last = rows[rows.length - 1];
  return {
    xLabels: rows.map((r) => String(r.step)), yLabels, cells,
    alt: `${rows.length} histograms of ${layer} from step ${rows[0].step} to ${last.step}; values from ${fmtNum(lo)} to ${fmtNum(hi)}; at step ${last.step} min ${fmtNum(last.min)}, max ${fmtNum(last.max)}.`,
  };
}
