// Load balancers: the routing tables of the balancers this agent was told
// about (--ui-lb), as each one's /lb/status reports them: backends,
// weights, slow start, outlier ejections, zones and panic mode. The agent
// fetches them (the browser talks to its agent only); counters that move
// without any catalog change are reread every 3 s while this page is open.

import { api } from '../api.js';
import { h, replace, badge, table, ago, num, instanceHref, serviceHref } from '../dom.js';

export function lbs() {
  const root = h('div');
  return {
    title: 'Load balancers',
    root,
    every: 3000,
    async refresh() {
      const { data } = await api('GET', '/v1/ui/lbs');
      if (!data.length) {
        replace(root, h('h1', null, 'Load balancers'),
          h('p', { class: 'notice' }, 'This agent knows no load balancer. Start it with ', h('code', null, '--ui-lb HOST:PORT'),
            ' (repeatable; env BEACON_UI_LB) naming the admin address of each ', h('code', null, 'beacon lb'), ', or an embedded one (--lb-admin-addr).'));
        return;
      }
      replace(root, h('h1', null, 'Load balancers'), data.map(lb));
    },
  };
}

function lb(r) {
  if (r.error) {
    return h('section', { class: 'lb', 'aria-label': r.addr }, h('h2', null, r.addr, ' ', badge('unreachable', 'critical')), h('p', { class: 'error' }, r.error));
  }
  const s = r.status;
  const reg = s.registry ?? {};
  return h('section', { class: 'lb', 'aria-label': r.addr },
    h('h2', null, h('span', { class: 'mono' }, r.addr), ' ',
      reg.connected ? badge('registry connected', 'yes') : badge('registry unreachable', 'critical'),
      s.shutting_down ? [' ', badge('shutting down', 'warning')] : null),
    h('p', { class: 'muted' },
      s.zone ? `zone ${s.zone} · ` : '', reg.node ? `following ${reg.node} · ` : '',
      s.path_routing ? 'path routing on' : 'path routing off',
      reg.last_error ? h('span', { class: 'error' }, ` · ${reg.last_error}`) : null),
    (s.services ?? []).map(service));
}

function service(svc) {
  const rows = (svc.instances ?? []).map((i) => h('tr', { dataset: { instance: i.id, routed: String(Boolean(i.routed)) } },
    h('td', null, h('a', { href: instanceHref(svc.service, i.id) }, i.id)),
    h('td', { class: 'mono' }, `${i.address}:${i.port}`),
    h('td', null, i.zone ?? ''),
    h('td', null, badge(i.status), i.draining ? [' ', badge('draining')] : null, i.maintenance ? [' ', badge('maintenance', 'warning')] : null),
    h('td', null, i.routed ? badge('routed', 'yes') : badge('not routed', 'off')),
    h('td', { class: 'num' }, num(i.weight)),
    h('td', { class: 'num' }, i.routed ? String(i.effective_weight) : '—'),
    h('td', { class: 'num' }, i.routed && i.slow_start < 1 ? `${Math.round(i.slow_start * 100)}%` : i.routed ? 'done' : '—'),
    h('td', null, i.ejected ? [badge('ejected'), ' returns ', ago(i.ejected_until)] : (i.ejections ? `${i.ejections} past` : 'no')),
    h('td', { class: 'num' }, num(i.in_flight)),
    h('td', { class: 'num' }, num(i.requests)),
    h('td', { class: 'num' }, num(i.failures))));
  return h('div', null,
    h('h3', null, h('a', { href: serviceHref(svc.service) }, svc.service), ' ',
      svc.panic ? badge('panic mode', 'panic') : badge(svc.mode, svc.mode === 'normal' ? 'yes' : 'warning')),
    h('p', { class: 'muted' }, `${svc.strategy}${svc.hash_key ? ` on ${svc.hash_key}` : ''} · ${svc.routed} routed of ${svc.registered} registered (${svc.passing} passing, ${svc.available} available) · index ${svc.index}`,
      svc.built ? [' · built ', ago(svc.built)] : null),
    table(['Backend', 'Address', 'Zone', 'Health', 'Routing', ['Weight', 'num'], ['Effective', 'num'], ['Slow start', 'num'], 'Ejected', ['In flight', 'num'], ['Requests', 'num'], ['Failures', 'num']],
      rows, { label: `Routing table of ${svc.service}`, empty: 'No backends.' }));
}
