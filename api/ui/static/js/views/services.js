// Services: a page of services at a time (GET /v1/services with limit and
// cursor), searchable by name prefix and filtered by tag, meta and health on
// the agent, so 10,000 services cost the page no more than 50 do.

import { api, query } from '../api.js';
import { h, replace, badge, table, tags, num, serviceHref } from '../dom.js';

const PAGE = 50;

export function services(params) {
  const state = {
    prefix: params.get('prefix') ?? '', tag: params.get('tag') ?? '', meta: params.get('meta') ?? '',
    health: params.get('health') ?? '',
  };
  let cursors = ['']; // cursors[i] starts page i
  let page = 0;
  let next = '';

  const input = (name, label, placeholder) => h('div', null,
    h('label', { for: `f-${name}` }, label),
    h('input', { id: `f-${name}`, name, value: state[name], placeholder, type: 'search', autocomplete: 'off', spellcheck: 'false', oninput: changed }));
  const health = h('select', { id: 'f-health', name: 'health', onchange: changed },
    [['', 'any'], ['healthy', 'has a healthy instance'], ['passing', 'has a passing instance'], ['warning', 'has a warning instance'], ['critical', 'has a critical instance']]
      .map(([v, t]) => h('option', { value: v, selected: state.health === v }, t)));
  const form = h('form', { class: 'filters', role: 'search', onsubmit: (e) => { e.preventDefault(); view.refresh(); } },
    input('prefix', 'Name starts with', 'web'), input('tag', 'Tag', 'canary'), input('meta', 'Meta key:value', 'zone:eu-1a'),
    h('div', null, h('label', { for: 'f-health' }, 'Health'), health));
  const results = h('div', { 'aria-live': 'polite' });
  const root = h('div', null, h('h1', null, 'Services'), form, results);

  let debounce;
  function changed(ev) {
    state[ev.target.name] = ev.target.value.trim();
    const q = query(state);
    history.replaceState(null, '', `#/services${q}`);
    clearTimeout(debounce);
    debounce = setTimeout(() => { cursors = ['']; page = 0; view.refresh(); }, 250);
  }

  const view = {
    title: 'Services',
    root,
    async refresh() {
      const q = { prefix: state.prefix, tag: state.tag || undefined, meta: state.meta || undefined, limit: PAGE, cursor: cursors[page] || undefined };
      if (state.health === 'healthy') q.healthy = 'true';
      else if (state.health) q.status = state.health;
      const { data } = await api('GET', `/v1/services${query(q)}`);
      next = data.next_cursor ?? '';
      const rows = data.services.map((s) => h('tr', null,
        h('td', null, h('a', { href: serviceHref(s.name), dataset: { key: `svc:${s.name}` } }, s.name)),
        h('td', { class: 'hide-narrow' }, tags(s.tags)),
        h('td', { class: 'num' }, num(s.instances)),
        h('td', null, h('span', { class: 'counts' },
          s.passing ? badge(`${num(s.passing)} passing`, 'passing') : null,
          s.warning ? badge(`${num(s.warning)} warning`, 'warning') : null,
          s.critical ? badge(`${num(s.critical)} critical`, 'critical') : null,
          s.unavailable ? badge(`${num(s.unavailable)} out of service`, 'draining') : null))));
      const pager = h('div', { class: 'pager' },
        h('button', { type: 'button', disabled: page === 0, dataset: { key: 'prev' }, onclick: () => { page--; view.refresh(); } }, '← Previous'),
        h('span', { class: 'muted' }, `Page ${page + 1}`),
        h('button', { type: 'button', disabled: !next, dataset: { key: 'next' }, onclick: () => { cursors[page + 1] = next; page++; view.refresh(); } }, 'Next →'));
      replace(results,
        table(['Service', ['Tags', 'hide-narrow'], ['Instances', 'num'], 'Health'], rows, { label: 'Services', empty: state.prefix || state.tag || state.meta || state.health ? 'No service matches.' : 'No services registered.' }),
        pager);
    },
    focusSearch() { form.querySelector('input').focus(); },
  };
  return view;
}
