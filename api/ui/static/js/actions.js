// Actions on an instance: maintenance on and off, drain with a deadline,
// deregister. Each asks for confirmation in a dialog; a refused request
// keeps the dialog open with the API's error (401 and 403 included, with a
// pointer to the token dialog).

import { api, path, ApiError } from './api.js';
import { h, toast } from './dom.js';

const dialog = () => document.getElementById('confirm-dialog');

// confirmAction opens the dialog. fields are {name, label, value, hint};
// run(values) performs the request and may throw; the dialog closes only
// when it succeeds.
export function confirmAction({ title, text, fields = [], ok = 'Confirm', danger = false, run }) {
  const d = dialog();
  const form = document.getElementById('confirm-form');
  const err = document.getElementById('confirm-error');
  const okButton = document.getElementById('confirm-ok');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-text').textContent = text;
  const inputs = fields.map((f) => h('input', { id: `confirm-${f.name}`, name: f.name, value: f.value ?? '', required: f.required, autocomplete: 'off' }));
  document.getElementById('confirm-fields').replaceChildren(...fields.map((f, i) =>
    h('div', { class: 'field' }, h('label', { for: `confirm-${f.name}` }, f.label), inputs[i], f.hint ? h('small', { class: 'muted' }, f.hint) : null)));
  err.hidden = true;
  okButton.textContent = ok;
  okButton.className = danger ? 'danger' : 'primary';
  okButton.disabled = false;

  form.onsubmit = async (ev) => {
    ev.preventDefault();
    okButton.disabled = true;
    err.hidden = true;
    const values = Object.fromEntries(inputs.map((i) => [i.name, i.value.trim()]));
    try {
      await run(values);
      d.close();
    } catch (e) {
      err.hidden = false;
      err.replaceChildren(describe(e));
      if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
        err.append(' ', h('button', { type: 'button', class: 'small', onclick: () => { d.close(); document.getElementById('auth-button').click(); } }, 'Enter a token'));
      }
    } finally {
      okButton.disabled = false;
    }
  };
  document.getElementById('confirm-cancel').onclick = () => d.close();
  d.showModal();
  (inputs[0] ?? document.getElementById('confirm-cancel')).focus();
}

export function describe(e) {
  if (e instanceof ApiError) return `Refused: ${e.toString()}`;
  return `Failed: ${e.message}`;
}

function maintenancePath(service, id) { return path('v1', 'services', service, 'instances', id, 'maintenance'); }

// instanceActions returns the buttons that act on one instance.
export function instanceActions(inst, { small = false, onDone } = {}) {
  const cls = small ? 'small' : '';
  const name = `${inst.service}/${inst.id}`;
  const done = (msg) => { toast(msg); onDone?.(); };
  const key = (a) => `${a}:${inst.service}:${inst.id}`;
  const buttons = [];
  if (inst.maintenance || inst.draining) {
    buttons.push(h('button', { type: 'button', class: cls, dataset: { key: key('resume'), action: 'resume' }, onclick: () => confirmAction({
      title: 'Return to service', text: `End ${inst.draining ? 'draining' : 'maintenance'} of ${name}: it gets traffic again once passing.`, ok: 'Return to service',
      run: async () => { await api('PUT', maintenancePath(inst.service, inst.id), { body: { mode: 'none' } }); done(`${name} is back in service`); },
    }) }, 'Resume'));
  }
  if (!inst.maintenance) {
    buttons.push(h('button', { type: 'button', class: cls, dataset: { key: key('maint'), action: 'maintenance' }, onclick: () => confirmAction({
      title: 'Maintenance', text: `Take ${name} out of service until you resume it. It stays registered.`, ok: 'Start maintenance',
      fields: [{ name: 'reason', label: 'Reason (optional)', value: '' }],
      run: async (v) => { await api('PUT', maintenancePath(inst.service, inst.id), { body: { mode: 'maintenance', reason: v.reason || undefined } }); done(`${name} is in maintenance`); },
    }) }, 'Maintenance'));
  }
  buttons.push(h('button', { type: 'button', class: cls, dataset: { key: key('drain'), action: 'drain' }, onclick: () => confirmAction({
    title: 'Drain', text: `Send ${name} no new requests; the leader deregisters it at the deadline.`, ok: 'Start draining',
    fields: [{ name: 'deadline', label: 'Deadline (a duration from now, 1s to 24h)', value: '5m', required: true, hint: 'e.g. 90s, 5m, 1h' }],
    run: async (v) => { await api('PUT', maintenancePath(inst.service, inst.id), { body: { mode: 'drain', deadline: v.deadline } }); done(`${name} is draining`); },
  }) }, 'Drain'));
  buttons.push(h('button', { type: 'button', class: `${cls} danger`, dataset: { key: key('dereg'), action: 'deregister' }, onclick: () => confirmAction({
    title: 'Deregister', text: `Remove ${name} and its checks from the catalog. A service that registers itself will come back.`, ok: 'Deregister', danger: true,
    run: async () => { await api('DELETE', path('v1', 'services', inst.service, 'instances', inst.id)); done(`${name} deregistered`); },
  }) }, 'Deregister'));
  return buttons;
}
