// The dashboard's entry point: hash routes (#/jobs, #/jobs/<id>, #/submit, #/compare,
// #/sweeps, #/sweeps/<id>, #/login), the login gate, page set-up and tear-down.

import { setToken, token } from './api.js';
import { disposeCharts } from './charts.js';
import { errorBox, fill, h } from './dom.js';
import * as compare from './pages/compare.js';
import * as job from './pages/job.js';
import * as jobs from './pages/jobs.js';
import * as login from './pages/login.js';
import * as submit from './pages/submit.js';
import * as sweeps from './pages/sweeps.js';

const ROUTES = [
  [/^\/login$/, login.render, 'Log in', null],
  [/^\/jobs$/, jobs.render, 'Jobs', 'jobs'],
  [/^\/jobs\/([0-9a-fA-F-]{36})$/, job.render, 'Job', 'jobs'],
  [/^\/submit$/, submit.render, 'New job', 'submit'],
  [/^\/compare$/, compare.render, 'Compare', 'compare'],
  [/^\/sweeps$/, sweeps.renderList, 'Sweeps', 'sweeps'],
  [/^\/sweeps\/([0-9a-fA-F-]{36})$/, sweeps.renderOne, 'Sweep', 'sweeps'],
];

const main = document.getElementById('main');
let current = { cleanup: null, controller: null };
let firstRoute = true;
let flash = null; // a message for the login view (why the user was sent there)
let wanted = null; // where to go after logging in

function parse(hash) {
  const raw = hash.replace(/^#/, '') || '/jobs';
  const [path, qs = ''] = raw.split('?');
  return { path, query: new URLSearchParams(qs) };
}

async function route() {
  if (location.hash && !location.hash.startsWith('#/')) return; // an in-page anchor
  const { path, query } = parse(location.hash);
  const found = ROUTES.find(([re]) => re.test(path));
  if (!token() && path !== '/login') {
    wanted = location.hash || '#/jobs';
    location.replace('#/login');
    return;
  }
  teardown();
  updateChrome(found?.[3]);
  const controller = new AbortController();
  current = { controller, cleanup: null };
  if (!found) {
    document.title = 'Not found · Trainyard';
    fill(main, h('h1', {}, 'Page not found'), h('p', {}, h('a', { href: '#/jobs' }, 'Back to the jobs')));
    return;
  }
  const [re, render, title] = found;
  document.title = `${title} · Trainyard`;
  const params = re.exec(path).slice(1);
  const ctx = { signal: controller.signal, query, params, flash: takeFlash(), loggedIn: afterLogin };
  main.replaceChildren();
  if (!firstRoute) main.focus({ preventScroll: false });
  firstRoute = false;
  try {
    current.cleanup = (await render(main, ctx)) || null;
  } catch (exc) {
    if (exc?.name === 'AbortError' || controller.signal.aborted) return;
    fill(main, h('h1', {}, title), errorBox(exc));
  }
}

function teardown() {
  current.controller?.abort();
  try {
    current.cleanup?.();
  } finally {
    disposeCharts();
  }
}

function takeFlash() {
  const message = flash;
  flash = null;
  return message;
}

function afterLogin() {
  const next = wanted && wanted !== '#/login' ? wanted : '#/jobs';
  wanted = null;
  location.hash = next;
}

function updateChrome(section) {
  for (const link of document.querySelectorAll('#nav a[data-section]')) {
    if (link.dataset.section === section) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  document.getElementById('logout').hidden = !token();
}

window.addEventListener('trainyard:unauthorized', (event) => {
  flash = event.detail.message;
  if (parse(location.hash).path === '/login') return; // the login form shows its own error
  wanted = location.hash;
  location.hash = '#/login';
});

document.getElementById('logout').addEventListener('click', () => {
  setToken(null);
  flash = 'Logged out.';
  location.hash = '#/login';
});

document.querySelector('.skip').addEventListener('click', (event) => {
  event.preventDefault();
  main.focus();
});

window.addEventListener('hashchange', route);
route();
