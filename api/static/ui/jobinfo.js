// What a job row says at a glance: speed and best metric, from its progress and summary.

import { fmtNum } from './dom.js';

/** Steps per second: the worker's figure once finished, else steps over elapsed time. */
export function stepsPerSecond(job) {
  const reported = job.summary?.steps_per_s;
  if (typeof reported === 'number') return reported;
  if (job.status !== 'running' || !job.started_at || !job.progress.step) return null;
  const seconds = (Date.now() - Date.parse(job.started_at)) / 1000;
  return seconds > 0 ? job.progress.step / seconds : null;
}

const PREFERRED = ['val_accuracy', 'val_loss', 'train_accuracy', 'train_loss'];

/** "val_accuracy 0.97" from the summary's final metrics (accuracy first, then loss). */
export function bestMetric(job) {
  const metrics = job.summary?.metrics;
  if (!metrics || typeof metrics !== 'object') {
    const loss = job.summary?.final_loss;
    return typeof loss === 'number' ? `final loss ${fmtNum(loss)}` : null;
  }
  const key = PREFERRED.find((k) => k in metrics) || Object.keys(metrics)[0];
  return key ? `${key.replace('_', ' ')} ${fmtNum(metrics[key])}` : null;
}

export function isFinal(status) {
  return ['succeeded', 'failed', 'cancelled', 'pruned'].includes(status);
}
