// Overview: this agent's view of Raft, the members as gossip sees them,
// the catalog's counts by health and the latest health transitions.

import { api } from '../api.js';
import { h, replace, badge, table, ago, num, instanceHref } from '../dom.js';

export function overview() {
  const root = h('div');
  return {
    title: 'Overview',
    root,
    // Last contact moves without any catalog change: reread it every 5 s.
    every: 5000,
    async refresh() {
      const [status, members, summary, transitions] = await Promise.all([
        api('GET', '/v1/cluster/status'), api('GET', '/v1/cluster/members'),
        api('GET', '/v1/ui/summary'), api('GET', '/v1/ui/transitions?limit=25'),
      ]);
      replace(root,
        h('h1', null, 'Overview'),
        raftCards(status.data),
        h('h2', null, 'Catalog'),
        countCards(summary.data),
        h('h2', null, 'Members'),
        membersTable(members.data, status.data),
        h('h2', null, 'Recent health transitions'),
        transitionsTable(transitions.data));
    },
  };
}

function card(k, v, extra) {
  return h('div', { class: 'card' }, h('div', { class: 'k' }, k), h('div', { class: 'v' }, v), extra);
}

function raftCards(s) {
  const contact = s.last_contact_ms < 0 ? 'never' : s.state.toLowerCase() === 'leader' ? 'is leader' : `${num(s.last_contact_ms)} ms`;
  return h('div', { class: 'cards', 'aria-label': 'Raft' },
    card('Leader', s.leader || 'none', s.leader ? null : h('div', null, badge('no leader', 'critical'))),
    card('This node', s.node, h('div', null, badge(s.state.toLowerCase(), s.state.toLowerCase() === 'leader' ? 'leader' : 'off'))),
    card('Term', num(s.term)),
    card('Applied index', num(s.applied_index)),
    card('Commit index', num(s.commit_index)),
    card('Last contact', contact));
}

function countCards(c) {
  return h('div', { class: 'cards', 'aria-label': 'Counts' },
    card('Services', num(c.services)),
    card('Instances', num(c.instances)),
    card('Passing', num(c.passing), c.passing ? h('div', null, badge('passing')) : null),
    card('Warning', num(c.warning), c.warning ? h('div', null, badge('warning')) : null),
    card('Critical', num(c.critical), c.critical ? h('div', null, badge('critical')) : null),
    card('Maintenance / draining', num(c.unavailable)));
}

function membersTable(members, status) {
  const peers = new Map((status.peers ?? []).map((p) => [p.id, p]));
  const rows = [...members].sort((a, b) => a.name.localeCompare(b.name)).map((m) => {
    const p = peers.get(m.name);
    const raft = !p ? badge('not a peer', 'off') : p.leader ? badge('leader') : badge(p.suffrage.toLowerCase() === 'voter' ? 'follower' : p.suffrage.toLowerCase(), 'off');
    return h('tr', null,
      h('td', null, m.name, m.name === status.node ? h('span', { class: 'muted' }, ' (this node)') : null),
      h('td', null, badge(m.status)),
      h('td', null, raft),
      h('td', { class: 'mono hide-narrow' }, m.http_addr),
      h('td', { class: 'mono hide-narrow' }, m.gossip_addr),
      h('td', { class: 'hide-narrow' }, m.version ?? ''),
      h('td', null, ago(m.since)));
  });
  return table(['Name', 'Gossip', 'Raft', ['HTTP', 'hide-narrow'], ['Gossip address', 'hide-narrow'], ['Version', 'hide-narrow'], 'Since'], rows, { label: 'Members' });
}

export function transitionsTable(ts, { withInstance = true } = {}) {
  const rows = ts.map((t) => h('tr', null,
    h('td', null, ago(t.time)),
    withInstance ? h('td', null, h('a', { href: instanceHref(t.service, t.instance) }, `${t.service}/${t.instance}`)) : null,
    h('td', { class: 'mono' }, t.check),
    h('td', null, badge(t.from || 'none', t.from), ' → ', badge(t.to)),
    h('td', null, t.output ? h('pre', { class: 'output' }, t.output) : '')));
  const head = ['When', withInstance ? 'Instance' : null, 'Check', 'Change', 'Output'].filter(Boolean);
  return table(head, rows, { label: 'Health transitions', empty: 'No transitions recorded yet.' });
}
