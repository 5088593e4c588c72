// DOM helpers: an element builder, tables, notices and number / time formatting.

/** h('div.card#x', {attrs, on: {click}}, ...children): one element. */
export function h(tag, props = {}, ...children) {
  const [name, ...rest] = tag.split(/(?=[.#])/);
  const el = document.createElement(name || 'div');
  for (const part of rest) {
    if (part.startsWith('.')) el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  if (props === null || typeof props !== 'object' || props instanceof Node || Array.isArray(props)) {
    children.unshift(props);
    props = {};
  }
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'on') {
      for (const [event, fn] of Object.entries(value)) el.addEventListener(event, fn);
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (key === 'text') {
      el.textContent = value;
    } else if (key === 'value') {
      el.value = value;
    } else if (key in el && typeof value !== 'string') {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? '' : value);
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A scrollable <table>: columns [{label, cell(row) -> node|text, num?}], rows. */
export function table(columns, rows, { caption, empty = 'Nothing here yet.' } = {}) {
  if (!rows.length) return emptyState(empty);
  const head = h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.num ? 'num' : null }, c.label)));
  const body = rows.map((row) =>
    h('tr', {}, columns.map((c) => h('td', { class: c.num ? 'num' : null }, c.cell(row)))),
  );
  return h('div.table-wrap', { tabindex: '0', role: 'region', 'aria-label': caption || 'table' },
    h('table', {}, caption ? h('caption', {}, caption) : null, h('thead', {}, head), h('tbody', {}, body)));
}

export function emptyState(message) {
  return h('p.empty', {}, message);
}

/** An error box; `err` is an ApiError, an Error or a string. */
export function errorBox(err, title = 'Something went wrong') {
  const message = typeof err === 'string' ? err : err?.message || String(err);
  const details = (err?.details || []).map((d) => h('li', {}, h('code', {}, d.loc || ''), ' ', d.msg || ''));
  return h('div.error', { role: 'alert' }, h('strong', {}, title + ': '), message,
    details.length ? h('ul', {}, details) : null);
}

export function spinner(label = 'Loading…') {
  return h('p.loading', { role: 'status' }, label);
}

export function statusBadge(status) {
  return h(`span.badge.s-${status}`, {}, status);
}

export function shortId(id) {
  return id ? id.slice(0, 8) : '—';
}

/** A number for people: 3 significant digits, thousands separators for big ones. */
export function fmtNum(value, digits = 4) {
  if (value === null || value === undefined || value === '') return '—';
  if (typeof value === 'string') return value; // "NaN", "Infinity"
  if (!Number.isFinite(value)) return String(value);
  if (Number.isInteger(value)) return value.toLocaleString('en-US');
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return value.toExponential(2);
  return Number(value.toPrecision(digits)).toString();
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return d.toLocaleString('en-GB', { dateStyle: 'short', timeStyle: 'medium' });
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** A labelled form field: label + control (+ optional hint). */
export function field(label, control, hint) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  return h('div.field', {}, h('label', { for: id }, label), control, hint ? h('small', {}, hint) : null);
}

export function select(options, value, props = {}) {
  return h('select', props, options.map(([v, label]) =>
    h('option', { value: v, selected: String(v) === String(value) }, label ?? v)));
}

/** A short message in the shared live region. */
export function toast(message, kind = 'info') {
  const box = document.getElementById('toast');
  if (!box) return;
  const item = h(`div.toast.t-${kind}`, {}, message);
  box.append(item);
  setTimeout(() => item.remove(), 5000);
}

/** A <dl> of [term, value] pairs, laid out as a grid of small cards. */
export function facts(pairs) {
  return h('dl.facts', {}, pairs.map(([term, value]) => h('div', {}, h('dt', {}, term), h('dd', {}, value))));
}
