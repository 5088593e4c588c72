// The predict box: an uploaded image (sent as base64) or pasted JSON inputs go to
// POST /models/<job_id>/predict; the answer shows each sample's class probabilities.

import { api } from '../api.js';
import { Bars } from '../charts.js';
import { errorBox, field, fill, fmtNum, h, select, spinner, table } from '../dom.js';
import { isFinal } from '../jobinfo.js';

const WAIT_SECONDS = 30;
const POLL_MS = 1000;

export function predictPanel(job, signal) {
  const data = job.spec?.data || {};
  const size = data.image_size ? `${data.image_size}×${data.image_size}` : 'the dataset’s size';
  const checkpoint = select([['final'], ['best'], ['latest'], ['epoch']], isFinal(job.status) ? 'final' : 'latest', { name: 'checkpoint' });
  const file = h('input', { type: 'file', name: 'image', accept: 'image/png,image/jpeg' });
  const json = h('textarea.code.inputs', { name: 'inputs', rows: 4, spellcheck: 'false', placeholder: '[[0.0, 0.5, …]] — one sample or a batch as nested lists' });
  const preview = h('div.preview');
  const result = h('div.prediction', { 'aria-live': 'polite' });
  const button = h('button.primary', { type: 'submit' }, 'Predict');
  let image = null; // a data: URL

  file.addEventListener('change', () => {
    const chosen = file.files?.[0];
    image = null;
    fill(preview);
    if (!chosen) return;
    const reader = new FileReader();
    reader.onload = () => {
      image = reader.result;
      fill(preview, h('img', { src: image, alt: `the uploaded image ${chosen.name}`, width: 96, height: 96 }));
    };
    reader.onerror = () => fill(preview, errorBox(reader.error?.message || 'could not read the file', 'Upload'));
    reader.readAsDataURL(chosen);
  });

  async function onSubmit(event) {
    event.preventDefault();
    let inputs = image;
    if (!inputs) {
      try {
        inputs = JSON.parse(json.value);
      } catch (exc) {
        fill(result, errorBox(json.value.trim() ? `not valid JSON: ${exc.message}` : 'choose an image or paste JSON inputs', 'Inputs'));
        return;
      }
    }
    button.disabled = true;
    fill(result, spinner('Predicting…'));
    try {
      let answer = await api(`/models/${job.id}/predict`, { method: 'POST', body: { inputs, checkpoint: checkpoint.value, wait_seconds: WAIT_SECONDS }, signal });
      if (!answer.outputs && answer.status) answer = await awaitJob(answer.id, signal);
      fill(result, showAnswer(answer));
    } catch (exc) {
      if (exc.name !== 'AbortError') fill(result, errorBox(exc, 'Prediction failed'));
    } finally {
      button.disabled = false;
    }
  }

  return h('form.card', { on: { submit: onSubmit } },
    h('p', {}, `Upload an image (PNG or JPEG: converted to the model’s channels and resized to ${size}, as the training images were) or paste JSON inputs.`),
    h('div.row', {}, field('Image', file), preview),
    field('Or JSON inputs', json),
    h('div.row', {}, field('Checkpoint', checkpoint), button),
    result);
}

/** An inference job the API queued (202): poll it until it ends. */
async function awaitJob(id, signal) {
  for (;;) {
    const job = await api(`/jobs/${id}`, { signal });
    if (isFinal(job.status)) {
      if (job.status !== 'succeeded') throw new Error(`inference job ${id} ${job.status}: ${job.error || 'no message'}`);
      return { job_id: id, ...job.summary };
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

function showAnswer(answer) {
  const outputs = answer.outputs || [];
  if (!outputs.length) return errorBox('the answer has no outputs', 'Prediction');
  return h('div', {}, outputs.map((out, i) => (out.probabilities ? classification(out, i, outputs.length) : regression(out, i))));
}

function classification(out, i, n) {
  const probs = out.probabilities.map((p) => (typeof p === 'number' ? p : 0));
  const total = probs.reduce((a, b) => a + b, 0);
  const classes = probs.map((_, c) => String(c));
  const chart = new Bars(n > 1 ? `Sample ${i + 1}: class probabilities` : 'Class probabilities', { height: 220 });
  const alt = `Predicted class ${out.predicted_class} with probability ${fmtNum(probs[out.predicted_class])}; probabilities sum to ${total.toFixed(3)}.`;
  chart.set(classes, probs, { highlight: out.predicted_class, alt });
  const rows = probs.map((p, c) => ({ c, p })).sort((a, b) => b.p - a.p);
  return h('div.sample', { dataset: { predicted: String(out.predicted_class), sum: total.toFixed(4) } },
    h('p.verdict', {}, 'Predicted class ', h('strong', {}, String(out.predicted_class)), ` (p = ${fmtNum(probs[out.predicted_class], 3)}); probabilities sum to `, h('span.prob-sum', {}, total.toFixed(3)), '.'),
    chart.el,
    h('details', {}, h('summary', {}, 'All probabilities'),
      table([{ label: 'Class', cell: (r) => String(r.c) }, { label: 'Probability', num: true, cell: (r) => fmtNum(r.p) }], rows, { caption: 'Probabilities, highest first' })));
}

function regression(out, i) {
  return h('div.sample', {}, h('p.verdict', {}, `Sample ${i + 1} output: `, h('code', {}, (out.output || []).map((v) => fmtNum(v)).join(', '))));
}
