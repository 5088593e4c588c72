// Accessible tabs (WAI-ARIA tabs pattern): buttons in a tablist, arrow keys move between
// them, one panel shown at a time.

import { h } from './dom.js';

/** tabs(label, [{id, label, panel}], {initial, onShow(id)}) -> {el, show(id)} */
export function tabs(label, items, { initial, onShow = () => {} } = {}) {
  const buttons = items.map((item) => h('button', {
    type: 'button', role: 'tab', id: `tab-${item.id}`, 'aria-controls': `panel-${item.id}`,
    on: { click: () => show(item.id), keydown: onKey },
  }, item.label));
  const panels = items.map((item) => h('section.tab-panel', {
    role: 'tabpanel', id: `panel-${item.id}`, 'aria-labelledby': `tab-${item.id}`, tabindex: '0', hidden: true,
  }, item.panel));
  const el = h('div.tabs', {}, h('div.tablist', { role: 'tablist', 'aria-label': label }, buttons), panels);

  function show(id) {
    items.forEach((item, i) => {
      const on = item.id === id;
      buttons[i].setAttribute('aria-selected', String(on));
      buttons[i].tabIndex = on ? 0 : -1;
      panels[i].hidden = !on;
    });
    onShow(id);
  }

  function onKey(event) {
    const i = buttons.indexOf(event.currentTarget);
    const moves = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: buttons.length - 1 };
    if (!(event.key in moves)) return;
    event.preventDefault();
    const next = (moves[event.key] + buttons.length) % buttons.length;
    buttons[next].focus();
    show(items[next].id);
  }

  show(items.some((item) => item.id === initial) ? initial : items[0].id);
  return { el, show };
}
