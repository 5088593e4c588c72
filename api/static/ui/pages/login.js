// The login view: paste an API token; it is checked against the API, then kept in
// sessionStorage for this tab only.

import { api, ApiError, setToken } from '../api.js';
import { errorBox, field, fill, h } from '../dom.js';

export function render(main, ctx) {
  const input = h('input', { type: 'password', name: 'token', autocomplete: 'off', spellcheck: 'false', required: true, placeholder: 'ty_…' });
  const status = h('div', { 'aria-live': 'polite' }, ctx.flash ? h('p.notice', {}, ctx.flash) : null);
  const button = h('button.primary', { type: 'submit' }, 'Log in');
  const form = h('form.card.login', { on: { submit } },
    h('h1', {}, 'Log in to Trainyard'),
    h('p', {}, 'Paste an API token (', h('code', {}, 'trainyard token create you'), '). It stays in this browser tab only.'),
    field('API token', input),
    button, status);
  fill(main, form);
  input.focus();

  async function submit(event) {
    event.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    button.disabled = true;
    setToken(value);
    try {
      await api('/jobs', { query: { limit: 1 }, signal: ctx.signal });
      ctx.loggedIn();
    } catch (exc) {
      setToken(null);
      const message = exc instanceof ApiError && exc.status === 401 ? exc.message : exc;
      fill(status, errorBox(message, 'Not logged in'));
      button.disabled = false;
    }
  }
}
