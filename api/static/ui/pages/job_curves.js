// A job's metric curves: loss, accuracy, learning rate (and any other metric), loaded
// thinned from GET /jobs/<id>/metrics?max_points and grown by the live stream's points.

import { api } from '../api.js';
import { LineChart, num } from '../charts.js';
import { h } from '../dom.js';

const MAX_POINTS = 1000;

function group(key) {
  const name = key.split('/').pop();
  if (name.includes('loss')) return 'loss';
  if (name.includes('acc')) return 'accuracy';
  if (name === 'lr' || name.startsWith('lr_') || name.endsWith('_lr')) return 'lr';
  return 'other';
}

export class Curves {
  constructor(jobId) {
    this.jobId = jobId;
    this.lastStep = 0;
    this.charts = {
      loss: new LineChart('Loss', { key: 'loss', yName: 'loss', empty: 'No loss points yet.' }),
      accuracy: new LineChart('Accuracy', { key: 'accuracy', yName: 'accuracy (0–1)', empty: 'No accuracy yet: it is measured on the validation split after each epoch.' }),
      lr: new LineChart('Learning rate', { key: 'lr', yName: 'lr', hold: true, empty: 'No learning-rate points yet.' }),
    };
    this.grid = h('div.chart-grid', {}, Object.values(this.charts).map((c) => c.el));
    this.el = h('div', {}, this.grid);
  }

  chart(key) {
    const name = group(key);
    if (!this.charts[name]) {
      this.charts[name] = new LineChart('Other metrics', { key: 'other', yName: 'value' });
      this.grid.append(this.charts[name].el);
    }
    return this.charts[name];
  }

  /** Replace the curves with the API's thinned series. */
  async load(signal) {
    const body = await api(`/jobs/${this.jobId}/metrics`, { query: { max_points: MAX_POINTS }, signal });
    const byChart = new Map();
    for (const series of body.series) {
      const key = `${series.split}/${series.name}`;
      const points = series.points.map((p) => [p.step, num(p.value)]);
      const chart = this.chart(key);
      if (!byChart.has(chart)) byChart.set(chart, []);
      byChart.get(chart).push({ name: key, points });
      this.lastStep = Math.max(this.lastStep, ...series.points.map((p) => p.step));
    }
    this.charts.lr.xMax = this.lastStep;
    for (const chart of Object.values(this.charts)) chart.set(byChart.get(chart) || []);
  }

  /** One `metrics` event of the stream: {step, epoch, values: {"train/loss": 1.2}}. */
  onMetrics(point) {
    const touched = new Set();
    for (const [key, value] of Object.entries(point.values)) {
      const chart = this.chart(key);
      chart.add(key, point.step, value);
      touched.add(chart);
    }
    this.lastStep = Math.max(this.lastStep, point.step);
    this.charts.lr.xMax = this.lastStep;
    touched.add(this.charts.lr);
    for (const chart of touched) chart.render();
  }
}
