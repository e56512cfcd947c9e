// One instance: what is registered, its state, every check with its
// target, thresholds, status, output and flapping, the transition
// timeline, and the actions.

import { api, path, query } from '../api.js';
import { h, replace, badge, table, tags, meta, ago, num, serviceHref } from '../dom.js';
import { instanceActions } from '../actions.js';
import { state_, effectiveWeights } from './service.js';

export function instance(service, id) {
  const root = h('div');
  const view = {
    title: `${service}/${id}`,
    root,
    async refresh() {
      const [inst, lbs] = await Promise.all([
        api('GET', path('v1', 'services', service, 'instances', id)),
        api('GET', `/v1/ui/lbs${query({ service })}`).catch(() => ({ data: [] })),
      ]).catch((e) => {
        if (e.status === 404) return [null, null];
        throw e;
      });
      const crumbs = h('p', { class: 'crumbs' }, h('a', { href: '#/services' }, 'Services'), ' / ', h('a', { href: serviceHref(service) }, service), ' /');
      if (!inst) {
        replace(root, crumbs, h('h1', null, id), h('p', { class: 'notice' }, 'This instance is not registered (any more).'));
        return;
      }
      const i = inst.data;
      const eff = effectiveWeights(service, lbs.data).get(i.id);
      replace(root, crumbs,
        h('h1', null, i.id, ' ', badge(i.status)),
        h('div', { class: 'actionbar' }, instanceActions(i, { onDone: () => view.refresh() })),
        h('dl', { class: 'props' },
          prop('Address', h('span', { class: 'mono' }, `${i.address}:${i.port}`)),
          prop('State', state_(i)),
          prop('Health', [badge(i.status), i.node_failed ? [' ', badge('node failed', 'critical')] : null]),
          prop('Healthy since', i.healthy_since ? ago(i.healthy_since) : '—'),
          prop('Version', i.version || '—'),
          prop('Weight', num(i.weight)),
          prop('Effective weight', eff ? h('span', { title: eff.title }, eff.text) : '— (no load balancer routes it)'),
          prop('Node', i.node || '—'),
          prop('Tags', i.tags?.length ? tags(i.tags) : '—'),
          prop('Meta', i.meta && Object.keys(i.meta).length ? meta(i.meta) : '—'),
          prop('Metrics', i.metrics ? Object.entries(i.metrics).map(([k, v]) => h('span', { class: 'tag' }, `${k}=${v}`)) : '—'),
          i.maintenance ? prop('Maintenance', [i.maintenance.reason || 'no reason given', ' since ', ago(i.maintenance.since)]) : null,
          i.draining ? prop('Draining', ['since ', ago(i.draining.since), ', deregistered ', ago(i.draining.deadline)]) : null,
          prop('Indexes', `created ${i.create_index}, modified ${i.modify_index}`)),
        h('h2', null, 'Checks'),
        checksTable(i.checks ?? []),
        h('h2', null, 'Transitions'),
        timeline(i.transitions ?? []));
    },
  };
  return view;
}

function prop(k, v) { return [h('dt', null, k), h('dd', null, v)]; }

function target(c) {
  switch (c.type) {
    case 'http': return `${c.method || 'GET'} ${c.http}`;
    case 'tcp': return c.tcp;
    case 'grpc': return c.grpc + (c.grpc_service ? ` (${c.grpc_service})` : '');
    case 'ttl': return `report within ${c.ttl}`;
    default: return '';
  }
}

function checksTable(checks) {
  const rows = checks.map((c) => h('tr', { dataset: { check: c.id } },
    h('td', null, h('div', null, c.name), h('div', { class: 'muted mono' }, c.id)),
    h('td', null, c.type),
    h('td', { class: 'mono' }, target(c)),
    h('td', null, c.type === 'ttl' ? '—' : `every ${c.interval}, timeout ${c.timeout}`),
    h('td', null, `critical after ${c.failures_before_critical || 1} failure${(c.failures_before_critical || 1) > 1 ? 's' : ''}, passing after ${c.successes_before_passing || 1}`),
    h('td', null, badge(c.status), c.flapping ? [' ', badge('flapping', 'critical'), c.flap_until ? [' hold-down ends ', ago(c.flap_until)] : null] : null,
      h('div', { class: 'muted' }, 'since ', ago(c.status_since))),
    h('td', null, c.owner || (c.type === 'ttl' ? 'leader' : '—')),
    h('td', { class: 'output-cell' }, c.output ? h('pre', { class: 'output' }, c.output) : h('span', { class: 'muted' }, 'no output'))));
  return table(['Check', 'Type', 'Target', 'Schedule', 'Thresholds', 'Status', 'Run by', 'Output'], rows, { label: 'Checks', empty: 'No checks: the instance counts as passing.' });
}

function timeline(ts) {
  if (!ts.length) return h('p', { class: 'muted' }, 'No transitions recorded.');
  return h('ol', { class: 'timeline', 'aria-label': 'Transitions, newest first' }, [...ts].reverse().map((t) =>
    h('li', { class: `to-${t.to}` },
      ago(t.time), ' ', h('span', { class: 'mono' }, t.check), ': ', badge(t.from || 'none', t.from), ' → ', badge(t.to),
      t.output ? h('pre', { class: 'output' }, t.output) : null)));
}
