// Overview: this agent's view of Raft, every Raft server's own view (asked
// by the agent over the cluster port; one that does not answer within 2 s
// shows why), the members as gossip sees them, the catalog's counts by
// health and the latest health transitions.

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
      const [status, servers, members, summary, transitions] = await Promise.all([
        api('GET', '/v1/cluster/status'), api('GET', '/v1/cluster/servers'), api('GET', '/v1/cluster/members'),
        api('GET', '/v1/ui/summary'), api('GET', '/v1/ui/transitions?limit=25'),
      ]);
      replace(root,
        h('h1', null, 'Overview'),
        raftCards(status.data),
        h('h2', null, 'Raft servers'),
        h('p', { class: 'muted' }, 'Each server\'s own view, as it answered this agent (2 s at most each).'),
        serversTable(servers.data),
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
  return h('div', { class: 'cards', 'aria-label': 'Raft' },
    card('Leader', s.leader || 'none', s.leader ? null : h('div', null, badge('no leader', 'critical'))),
    card('This node', s.node, h('div', null, badge(s.state.toLowerCase(), s.state.toLowerCase() === 'leader' ? 'leader' : 'off'))),
    card('Term', num(s.term)),
    card('Applied index', num(s.applied_index)),
    card('Commit index', num(s.commit_index)),
    card('Last contact', contact(s.last_contact_ms, s.state.toLowerCase())));
}

// contact renders a last contact in milliseconds (-1: never).
function contact(ms, state) {
  if (ms < 0) return 'never';
  if (state === 'leader') return 'is leader';
  return `${num(ms)} ms`;
}

function serversTable(s) {
  const rows = s.servers.map((sv) => {
    const v = sv.view;
    const state = v ? v.state.toLowerCase() : '';
    const answer = sv.error ? h('span', { class: 'error' }, sv.error)
      : sv.id === s.node ? h('span', { class: 'muted' }, 'this agent') : `${num(sv.took_ms)} ms`;
    return h('tr', { dataset: { server: sv.id, state: state || 'no-answer' } },
      h('td', null, sv.id, sv.suffrage.toLowerCase() === 'voter' ? null : h('span', { class: 'muted' }, ` (${sv.suffrage.toLowerCase()})`),
        h('div', { class: 'mono muted hide-narrow' }, sv.address)),
      h('td', { class: 'role' }, v ? badge(state, state === 'leader' ? 'leader' : state === 'candidate' ? 'warning' : 'off') : badge('no answer', 'critical')),
      h('td', { class: 'leader' }, v ? (v.leader || badge('none', 'critical')) : '—'),
      h('td', { class: 'num term' }, v ? num(v.term) : '—'),
      h('td', { class: 'num commit' }, v ? num(v.commit_index) : '—'),
      h('td', { class: 'num applied' }, v ? num(v.applied_index) : '—'),
      h('td', { class: 'num last' }, v ? num(v.last_index) : '—'),
      h('td', { class: 'num contact' }, v ? contact(v.last_contact_ms, state) : '—'),
      h('td', { class: 'answer' }, answer));
  });
  return table(['Server', 'Role', 'Leader', ['Term', 'num'], ['Commit index', 'num'], ['Applied index', 'num'], ['Last index', 'num'], ['Last contact', 'num'], 'Answer'],
    rows, { label: 'Raft servers', empty: 'No Raft configuration known.' });
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
