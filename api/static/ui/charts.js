// Charts on the vendored Apache ECharts (loaded as a classic script before the modules):
// line charts with zoom, heatmaps and parallel coordinates, each in a <figure> whose
// caption is the chart's text alternative (latest values) and whose data-points attribute
// counts the points drawn. Long series are thinned on the client as the API thins them.

import { fmtNum, h } from './dom.js';

const PALETTE = ['#2563eb', '#dc2626', '#059669', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#4b5563'];
const live = new Set(); // every mounted chart, disposed when the page changes
const MAX_DRAWN = 4000; // points per series before the client thins it

/** The value a JSON answer gives ("NaN", "Infinity" are strings): a number or null. */
export function num(value) {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

/** Keep about `max` points: per bucket the first, lowest and highest (spikes survive). */
export function thin(points, max = MAX_DRAWN) {
  if (points.length <= max) return points;
  const per = Math.ceil((points.length * 3) / max);
  const out = [];
  for (let i = 0; i < points.length; i += per) {
    const bucket = points.slice(i, i + per);
    const finite = bucket.filter((p) => p[1] !== null);
    const picks = new Set([bucket[0]]);
    if (finite.length) {
      picks.add(finite.reduce((a, b) => (b[1] < a[1] ? b : a)));
      picks.add(finite.reduce((a, b) => (b[1] > a[1] ? b : a)));
    }
    out.push(...[...picks].sort((a, b) => a[0] - b[0]));
  }
  const last = points[points.length - 1];
  if (out[out.length - 1] !== last) out.push(last);
  return out;
}

/** Dispose every chart (the page they were on is gone). */
export function disposeCharts() {
  for (const chart of live) chart.dispose();
  live.clear();
}

class Chart {
  constructor(title, { height = 280, description = '', key = '' } = {}) {
    this.canvas = h('div.chart-canvas', { role: 'img', 'aria-label': title });
    this.canvas.style.height = `${height}px`;
    this.caption = h('figcaption.chart-alt', {}, description || 'No data yet.');
    this.el = h('figure.chart', { dataset: { points: '0', chart: key } }, h('h3.chart-title', {}, title), this.canvas, this.caption);
    this.title = title;
    this.chart = null;
    this.pending = null;
    this.frame = null;
    this.observer = new ResizeObserver(() => {
      if (!this.canvas.clientWidth) return;
      if (this.chart) this.chart.resize();
      else this.schedule();
    });
    this.observer.observe(this.canvas);
    live.add(this);
  }

  /** The ECharts instance, made once the canvas is laid out (ECharts needs its size). */
  ensure() {
    if (!this.chart && this.canvas.clientWidth) {
      this.chart = globalThis.echarts.init(this.canvas, null, { renderer: 'canvas' });
    }
    return this.chart;
  }

  draw(option, points, alt) {
    this.el.dataset.points = String(points);
    this.caption.textContent = alt;
    this.canvas.setAttribute('aria-label', `${this.title}. ${alt}`);
    this.pending = option;
    this.schedule();
  }

  /** Draw on the next frame; a hidden chart draws when it is shown (its size changes). */
  schedule() {
    if (this.frame || !this.pending) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      const chart = this.ensure();
      if (!chart || !this.pending) return;
      chart.setOption(this.pending, { notMerge: true, lazyUpdate: true });
      this.pending = null;
    });
  }

  dispose() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.observer?.disconnect();
    this.chart?.dispose();
    this.chart = null;
    live.delete(this);
  }
}

/** Lines over steps: series [{name, points: [[step, value|null], ...]}]. */
export class LineChart extends Chart {
  constructor(title, { yName = 'value', xName = 'step', logY = false, height, empty, key, hold = false } = {}) {
    super(title, { height, description: empty, key });
    // hold: a value that holds until it changes (a learning rate logged when it changes),
    // drawn as steps up to xMax, the latest step the job has reached.
    Object.assign(this, { yName, xName, logY, hold, xMax: 0, empty: empty || 'No data yet.' });
    this.series = new Map();
  }

  /** list: [{name, points, until?}]; `until` is where a held series ends (else xMax). */
  set(list) {
    this.series = new Map(list.map((s) => [s.name, s.points.slice()]));
    this.until = new Map(list.filter((s) => s.until).map((s) => [s.name, s.until]));
    this.render();
  }

  /** Add one point; a step already drawn (a resent or resumed step) is replaced. */
  add(name, step, value) {
    const points = this.series.get(name) || [];
    while (points.length && points[points.length - 1][0] >= step) points.pop();
    points.push([step, num(value)]);
    this.series.set(name, points.length > MAX_DRAWN * 1.5 ? thin(points) : points);
  }

  render() {
    const entries = [...this.series.entries()].filter(([, pts]) => pts.length);
    const total = entries.reduce((n, [, pts]) => n + pts.length, 0);
    if (!total) {
      this.draw(emptyOption(this.empty, this.canvas.clientWidth), 0, this.empty);
      return;
    }
    const alt = entries.map(([name, pts]) => {
      const last = pts[pts.length - 1];
      return `${name} ${fmtNum(last[1])} at ${this.xName} ${fmtNum(last[0])}`;
    }).join('; ');
    const drawn = !this.hold ? entries : entries.map(([name, pts]) => {
      const last = pts[pts.length - 1];
      const end = this.until?.get(name) ?? this.xMax;
      return [name, end > last[0] ? [...pts, [end, last[1]]] : pts];
    });
    this.draw(lineOption(drawn, this), total, `Latest: ${alt} (${total} points).`);
  }
}

/** A chart with nothing to draw says so in its middle, wrapped to its width. */
function emptyOption(text, width) {
  return {
    title: {
      text, left: 'center', top: 'middle',
      textStyle: { fontSize: 13, lineHeight: 19, color: '#4b5563', fontWeight: 'normal', width: Math.max(160, (width || 320) - 40), overflow: 'break' },
    },
  };
}

function lineOption(entries, { yName, xName, logY, hold }) {
  return {
    animation: false,
    color: PALETTE,
    grid: { left: 56, right: 20, top: 52, bottom: 64 },
    legend: { type: 'scroll', top: 0, textStyle: { fontSize: 12 } },
    tooltip: { trigger: 'axis', valueFormatter: (v) => fmtNum(v) },
    xAxis: { type: 'value', name: xName, nameLocation: 'middle', nameGap: 26, min: 'dataMin', max: 'dataMax', minInterval: 1, axisLabel: { hideOverlap: true } },
    yAxis: { type: logY ? 'log' : 'value', name: yName, nameTextStyle: { align: 'left' }, scale: true, axisLabel: { formatter: (v) => fmtNum(v, 3) } },
    dataZoom: [{ type: 'inside', filterMode: 'none' }, { type: 'slider', height: 16, bottom: 8, filterMode: 'none' }],
    series: entries.map(([name, pts]) => ({
      name, type: 'line', showSymbol: pts.length < 40, symbolSize: 5, sampling: 'lttb', connectNulls: false, data: pts, step: hold ? 'end' : false,
    })),
  };
}

/** A heatmap of rows x columns (layers x steps, bins x steps) with a colour scale. */
export class Heatmap extends Chart {
  constructor(title, { xName = 'step', yName = 'layer', valueName = 'value', height = 320, inverse = false, key } = {}) {
    super(title, { height, key });
    Object.assign(this, { xName, yName, valueName, inverse });
  }

  /** xLabels, yLabels, cells [[xi, yi, value]], alt: the text alternative. */
  set({ xLabels, yLabels, cells, alt }) {
    const values = cells.map((c) => c[2]).filter((v) => v !== null);
    if (!values.length) {
      this.draw(emptyOption(alt, this.canvas.clientWidth), 0, alt);
      return;
    }
    const min = Math.min(...values);
    const max = Math.max(...values);
    this.draw({
      animation: false,
      grid: { left: 8, right: 16, top: 12, bottom: 76, containLabel: true },
      tooltip: {
        position: 'top',
        // Tooltips are HTML: the labels (layer names from a user's spec) are escaped.
        formatter: (p) => `${esc(this.yName)} ${esc(yLabels[p.value[1]])}<br>${esc(this.xName)} ${esc(xLabels[p.value[0]])}<br>${esc(this.valueName)}: ${fmtNum(p.value[2])}`,
      },
      xAxis: { type: 'category', data: xLabels, name: this.xName, nameLocation: 'middle', nameGap: 24, axisLabel: { hideOverlap: true } },
      yAxis: { type: 'category', data: yLabels, inverse: this.inverse, axisLabel: { fontSize: 11 } },
      visualMap: {
        min, max: max === min ? min + 1e-9 : max, orient: 'horizontal', left: 'center', bottom: 0,
        itemHeight: 160, itemWidth: 12, text: [fmtNum(max, 3), `${this.valueName}:  ${fmtNum(min, 3)}`], textStyle: { fontSize: 11 },
        inRange: { color: ['#f0f9ff', '#7dd3fc', '#2563eb', '#7c3aed', '#dc2626'] },
      },
      series: [{ type: 'heatmap', data: cells, progressive: 0, emphasis: { itemStyle: { borderColor: '#111', borderWidth: 1 } } }],
    }, cells.length, alt);
  }
}

/** Parallel coordinates: dims [{name, type: 'value'|'category', data?}], rows of values. */
export class Parallel extends Chart {
  set(dims, rows, { colorDim, alt }) {
    if (!rows.length) {
      this.draw(emptyOption(alt, this.canvas.clientWidth), 0, alt);
      return;
    }
    const colored = rows.map((r) => r[colorDim]).filter((v) => typeof v === 'number');
    this.draw({
      animation: false,
      parallelAxis: dims.map((d, i) => ({ dim: i, name: d.name, type: d.type || 'value', data: d.data, scale: true, nameTextStyle: { fontSize: 12 }, nameRotate: 0 })),
      parallel: { left: 60, right: 130, top: 40, bottom: 30 },
      visualMap: colored.length ? {
        dimension: colorDim, min: Math.min(...colored), max: Math.max(...colored), right: 8, top: 'center', itemHeight: 120,
        text: [dims[colorDim].name, ''], calculable: true, inRange: { color: ['#dc2626', '#d97706', '#059669'] },
      } : undefined,
      series: [{ type: 'parallel', lineStyle: { width: 2, opacity: 0.7 }, data: rows }],
    }, rows.length, alt);
  }
}

/** Bars of one value per category (a prediction's class probabilities). */
export class Bars extends Chart {
  set(categories, values, { xName = 'class', yName = 'probability', highlight = -1, alt }) {
    this.draw({
      animation: false,
      grid: { left: 48, right: 16, top: 24, bottom: 40 },
      tooltip: { trigger: 'axis', valueFormatter: (v) => fmtNum(v) },
      xAxis: { type: 'category', data: categories, name: xName, nameLocation: 'middle', nameGap: 26 },
      yAxis: { type: 'value', name: yName, min: 0, max: yName === 'probability' ? 1 : undefined },
      series: [{
        type: 'bar',
        data: values.map((v, i) => ({ value: v, itemStyle: { color: i === highlight ? '#059669' : '#93c5fd' } })),
      }],
    }, values.length, alt);
  }
}

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

function esc(text) {
  return String(text ?? '').replace(/[&<>"']/g, (c) => ESCAPES[c]);
}
