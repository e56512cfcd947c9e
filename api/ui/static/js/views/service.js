// One service: its instances, filtered on the agent (tag, meta, version,
// health) and by a text search on the page, shown 100 rows at a time, with
// the effective weight each load balancer gives them and the actions.

import { api, path, query } from '../api.js';
import { h, replace, badge, table, tags, meta, ago, num, instanceHref } from '../dom.js';
import { instanceActions } from '../actions.js';

const ROWS = 100;

export function service(name, params) {
  const state = { text: params.get('q') ?? '', tag: params.get('tag') ?? '', meta: params.get('meta') ?? '', version: params.get('version') ?? '', health: params.get('health') ?? '' };
  let page = 0;
  let all = [];
  let weights = new Map();

  const input = (key, label, placeholder) => h('div', null,
    h('label', { for: `i-${key}` }, label),
    h('input', { id: `i-${key}`, name: key, value: state[key], placeholder, type: 'search', autocomplete: 'off', spellcheck: 'false', oninput: changed }));
  const health = h('select', { id: 'i-health', name: 'health', onchange: changed },
    [['', 'any'], ['healthy', 'healthy (gets traffic)'], ['passing', 'passing'], ['warning', 'warning'], ['critical', 'critical']]
      .map(([v, t]) => h('option', { value: v, selected: state.health === v }, t)));
  const form = h('form', { class: 'filters', role: 'search', onsubmit: (e) => e.preventDefault() },
    input('text', 'ID or address contains', 'web-1'), input('tag', 'Tag', 'canary'), input('meta', 'Meta key:value', 'zone:eu-1a'),
    input('version', 'Version or range', '>=1.2.0'), h('div', null, h('label', { for: 'i-health' }, 'Health'), health));
  const results = h('div', { 'aria-live': 'polite' });
  const root = h('div', null,
    h('p', { class: 'crumbs' }, h('a', { href: '#/services' }, 'Services'), ' / '),
    h('h1', null, name), form, results);

  let debounce;
  function changed(ev) {
    state[ev.target.name] = ev.target.value.trim();
    history.replaceState(null, '', `#/services/${encodeURIComponent(name)}${query({ q: state.text, tag: state.tag, meta: state.meta, version: state.version, health: state.health })}`);
    clearTimeout(debounce);
    // The text search runs on the page; the others ask the agent.
    debounce = setTimeout(() => { page = 0; ev.target.name === 'text' ? render() : view.refresh(); }, 250);
  }

  function render() {
    const needle = state.text.toLowerCase();
    // The address as the Address column shows it, port included.
    const shown = needle ? all.filter((i) => i.id.toLowerCase().includes(needle) || `${i.address}:${i.port}`.toLowerCase().includes(needle)) : all;
    const pages = Math.max(1, Math.ceil(shown.length / ROWS));
    page = Math.min(page, pages - 1);
    const rows = shown.slice(page * ROWS, (page + 1) * ROWS).map((i) => h('tr', { dataset: { instance: i.id } },
      h('td', null, h('a', { href: instanceHref(i.service, i.id), dataset: { key: `inst:${i.id}` } }, i.id)),
      h('td', { class: 'mono' }, `${i.address}:${i.port}`),
      h('td', null, badge(i.status), i.node_failed ? [' ', badge('node failed', 'critical')] : null),
      h('td', null, state_(i)),
      h('td', { class: 'num hide-narrow' }, num(i.weight)),
      h('td', { class: 'num hide-narrow', title: weights.get(i.id)?.title }, weights.get(i.id)?.text ?? '—'),
      h('td', { class: 'hide-narrow' }, i.version ?? ''),
      h('td', { class: 'hide-narrow' }, tags(i.tags), meta(i.meta)),
      h('td', { class: 'hide-narrow' }, i.node ?? ''),
      h('td', { class: 'actions' }, instanceActions(i, { small: true, onDone: () => view.refresh() }))));
    const pager = h('div', { class: 'pager' },
      h('button', { type: 'button', disabled: page === 0, dataset: { key: 'prev' }, onclick: () => { page--; render(); } }, '← Previous'),
      h('span', { class: 'muted' }, `${num(shown.length)} instance${shown.length === 1 ? '' : 's'}, page ${page + 1} of ${pages}`),
      h('button', { type: 'button', disabled: page >= pages - 1, dataset: { key: 'next' }, onclick: () => { page++; render(); } }, 'Next →'));
    replace(results,
      table(['Instance', 'Address', 'Health', 'State', ['Weight', 'num hide-narrow'], ['Effective', 'num hide-narrow'], ['Version', 'hide-narrow'], ['Tags and meta', 'hide-narrow'], ['Node', 'hide-narrow'], 'Actions'],
        rows, { label: 'Instances', empty: filtered() ? 'No instance matches the filters.' : 'No instances registered.' }),
      pager);
  }

  // filtered says whether the list is narrowed, on the page or by the agent.
  function filtered() { return Boolean(state.text || state.tag || state.meta || state.version || state.health); }

  const view = {
    title: name,
    root,
    async refresh() {
      const q = { tag: state.tag || undefined, meta: state.meta || undefined, version: state.version || undefined };
      if (state.health === 'healthy') q.healthy = 'true';
      else if (state.health) q.status = state.health;
      const [insts, lbs] = await Promise.all([
        api('GET', path('v1', 'services', name, 'instances') + query(q)),
        api('GET', `/v1/ui/lbs${query({ service: name })}`).catch(() => ({ data: [] })),
      ]);
      all = insts.data;
      weights = effectiveWeights(name, lbs.data);
      render();
    },
  };
  return view;
}

export function state_(i) {
  const out = [];
  if (i.maintenance) out.push(badge('maintenance', 'warning'), i.maintenance.reason ? ` ${i.maintenance.reason}` : '');
  if (i.draining) out.push(badge('draining'), ' deregistered ', ago(i.draining.deadline));
  if (!out.length) out.push(i.healthy ? badge('in service', 'yes') : badge('no traffic', 'off'));
  return out;
}

// effectiveWeights maps instance IDs to the weight the load balancers
// route with (after slow start and the metric rule): one LB's value, or
// the range across several, with each listed in the tooltip.
export function effectiveWeights(service, reports) {
  const per = new Map();
  for (const r of reports ?? []) {
    const svc = r.status?.services?.find((s) => s.service === service);
    for (const i of svc?.instances ?? []) {
      if (!per.has(i.id)) per.set(i.id, []);
      per.get(i.id).push({ lb: r.addr, w: i.routed ? i.effective_weight : 0, ejected: i.ejected });
    }
  }
  const out = new Map();
  for (const [id, list] of per) {
    const ws = list.map((x) => x.w);
    const lo = Math.min(...ws), hi = Math.max(...ws);
    out.set(id, {
      text: lo === hi ? String(lo) : `${lo}–${hi}`,
      title: list.map((x) => `${x.lb}: ${x.w}${x.ejected ? ' (ejected)' : ''}`).join('\n'),
    });
  }
  return out;
}
