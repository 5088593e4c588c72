// A job's live stream (GET /jobs/<id>/stream) read with fetch(), because EventSource
// cannot send an Authorization header: Server-Sent Events parsed from the body, resumed
// with Last-Event-ID after the server closes it (max_seconds), polling instead while the
// API refuses more open streams (429 + Retry-After), stopped at the `end` event.

import { authHeaders, check, url } from './api.js';

const MAX_BACKOFF_MS = 30_000;

/**
 * openStream(jobId, {lastId, query, onEvent(kind, data, id), onState(state, detail),
 * poll()}) -> {close()}. States: connecting, live, reconnecting, polling, ended, error.
 * `poll` is called every few seconds while the stream is refused; it returns true once
 * the job has ended (the stream is then tried once more for its last rows).
 */
export function openStream(jobId, { lastId = null, query = {}, onEvent, onState = () => {}, poll }) {
  let stopped = false;
  let controller = null;
  let wake = null;
  const sleep = (ms) => new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    wake = () => { clearTimeout(timer); resolve(); };
  });

  async function connect() {
    let failures = 0;
    let retryMs = 1000;
    let connected = false;
    while (!stopped) {
      controller = new AbortController();
      if (!connected) onState(failures ? 'reconnecting' : 'connecting');
      let resp;
      try {
        const headers = authHeaders({ Accept: 'text/event-stream', ...(lastId ? { 'Last-Event-ID': lastId } : {}) });
        resp = await fetch(url(`/jobs/${jobId}/stream`, query), { headers, signal: controller.signal, cache: 'no-store' });
      } catch (exc) {
        if (stopped) return;
        failures += 1;
        connected = false;
        onState('reconnecting', { message: exc.message });
        await sleep(Math.min(MAX_BACKOFF_MS, 1000 * 2 ** failures));
        continue;
      }
      if (resp.status === 429) {
        resp.body?.cancel().catch(() => {});
        const seconds = Number(resp.headers.get('Retry-After')) || 15;
        connected = false;
        onState('polling', { seconds });
        await pollFor(seconds);
        continue;
      }
      if (!resp.ok) {
        try {
          await check(resp);
        } catch (exc) {
          connected = false;
          onState('error', exc);
          if ([401, 403, 404].includes(resp.status)) return;
        }
        failures += 1;
        await sleep(Math.min(MAX_BACKOFF_MS, 1000 * 2 ** failures));
        continue;
      }
      failures = 0;
      if (!connected) onState('live');
      connected = true;
      let ended = false;
      try {
        ended = await readEvents(resp.body, (field, value) => {
          if (field === 'retry') retryMs = Number(value) || retryMs;
        });
      } catch (exc) {
        if (stopped) return;
        connected = false;
        onState('reconnecting', { message: exc.message });
      }
      if (ended) {
        stopped = true;
        onState('ended');
        return;
      }
      if (!stopped) await sleep(retryMs);
    }
  }

  async function pollFor(seconds) {
    const until = Date.now() + seconds * 1000;
    while (!stopped && Date.now() < until) {
      try {
        if (poll && (await poll())) return;
      } catch (exc) {
        onState('error', exc);
      }
      await sleep(Math.min(2000, Math.max(0, until - Date.now())));
    }
  }

  /** Read events until the body ends; true if the `end` event came. */
  async function readEvents(body, onField) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    let event = { name: '', data: [], id: null };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      buffer += value;
      let newline;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline).replace(/\r$/, '');
        buffer = buffer.slice(newline + 1);
        if (line === '') {
          if (event.id !== null) lastId = event.id;
          if (event.data.length && dispatch(event.name || 'message', event.data.join('\n'))) {
            reader.cancel().catch(() => {});
            return true;
          }
          event = { name: '', data: [], id: null };
          continue;
        }
        if (line.startsWith(':')) continue; // a keepalive comment
        const colon = line.indexOf(':');
        const fieldName = colon < 0 ? line : line.slice(0, colon);
        const fieldValue = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (fieldName === 'event') event.name = fieldValue;
        else if (fieldName === 'data') event.data.push(fieldValue);
        else if (fieldName === 'id') event.id = fieldValue;
        else onField(fieldName, fieldValue);
      }
    }
  }

  function dispatch(kind, raw) {
    let data;
    try {
      data = JSON.parse(raw);
    } catch {
      return false; // not JSON: not an event this dashboard knows
    }
    onEvent(kind, data, lastId);
    return kind === 'end';
  }

  connect();
  return {
    close() {
      stopped = true;
      controller?.abort();
      wake?.();
    },
    get lastId() {
      return lastId;
    },
  };
}
