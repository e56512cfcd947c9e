// DOM helpers. Every piece of text from the API goes into the page as a
// text node (never as HTML), so check output, tags or meta values cannot
// inject markup.

// h builds an element: h('a', {href: '#/'}, 'text', child, [more]).
// Attributes starting with "on" are event listeners; null/false/undefined
// attributes and children are skipped.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// A live reload replaces a view's elements. A reload that lands between a
// button's press and its release would remove the button under the
// pointer and the click would be lost (the browser sends a click only when
// press and release hit the same element; Space clicks a button only if
// that button saw the key go down); a busy catalog reloads a page up to
// five times a second. So while a pointer (or Space on a button) is held
// down inside an element, replace holds that element's new content back
// (the element gets data-held) and puts it in once the pointer is
// released, after the click that release makes.
let pressed = null; // what the held pointer went down on
const held = new Map(); // element -> its newest content
// The main button only: a right click's release may go to the context
// menu, never to the page, and must not leave reloads held.
addEventListener('pointerdown', (e) => { if (e.button === 0) pressed = e.target; }, true);
function released() {
  pressed = null;
  if (!held.size) return;
  // The click comes after pointerup in the same task; a timer runs after it.
  setTimeout(() => {
    if (pressed) return; // pressed again: the next release puts it in
    const all = [...held];
    held.clear();
    for (const [el, children] of all) {
      delete el.dataset.held;
      replace(el, ...children);
    }
  }, 0);
}
addEventListener('pointerup', released, true);
addEventListener('pointercancel', released, true);
addEventListener('blur', released);
addEventListener('contextmenu', released, true);
// The same for Space on a button, which clicks on the key's release.
addEventListener('keydown', (e) => { if (e.key === ' ' && e.target instanceof HTMLButtonElement) pressed = e.target; }, true);
addEventListener('keyup', (e) => { if (e.key === ' ' && pressed) released(); }, true);

// replace swaps the children of el, keeping the keyboard focus on the
// element with the same data-key (if the new content has one), so a live
// refresh does not throw a keyboard user back to the top. While a pointer
// is held down inside el, it waits for the release (above).
export function replace(el, ...children) {
  if (pressed && el.contains(pressed)) {
    held.set(el, children);
    el.dataset.held = '';
    return;
  }
  const active = document.activeElement;
  const key = el.contains(active) ? active?.dataset?.key : undefined;
  const fresh = document.createDocumentFragment();
  append(fresh, children);
  el.replaceChildren(fresh);
  if (key) {
    const again = el.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (again) again.focus();
  }
}

export function badge(text, kind) {
  return h('span', { class: `badge ${kind ?? text}` }, text);
}

export function table(headers, rows, opts = {}) {
  const names = headers.map((c) => (Array.isArray(c) ? c[0] : c));
  // Each cell carries its column's name, which narrow screens show beside
  // the value when rows are stacked (style.css).
  for (const row of rows) {
    [...row.children].forEach((td, i) => { if (names[i]) td.dataset.label = names[i]; });
  }
  return h('div', { class: 'table-wrap' },
    h('table', { 'aria-label': opts.label },
      h('thead', null, h('tr', null, headers.map((c) => {
        const [text, cls] = Array.isArray(c) ? c : [c, null];
        return h('th', { scope: 'col', class: cls }, text);
      }))),
      h('tbody', null, rows.length ? rows : h('tr', null, h('td', { colspan: headers.length, class: 'muted' }, opts.empty ?? 'Nothing here.')))));
}

// tags and meta draw one .tag each, with its whole text as the title (a
// long one is cut), and a space between them where a line may break.
export function tags(list) {
  return (list ?? []).map((t) => [h('span', { class: 'tag', title: t }, t), ' ']);
}

export function meta(obj) {
  return Object.entries(obj ?? {}).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => [h('span', { class: 'tag', title: `${k}=${v}` }, `${k}=${v}`), ' ']);
}

// ago renders a time as "12s ago" (or "in 1m") with the exact time as a
// tooltip; tick keeps it current.
export function ago(t) {
  if (!t) return '';
  const d = new Date(t);
  if (Number.isNaN(d.getTime()) || d.getUTCFullYear() < 1971) return '';
  return h('time', { class: 'ago', datetime: d.toISOString(), title: d.toISOString() }, agoText(d));
}

function agoText(d) {
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  const abs = Math.abs(s);
  const txt = abs < 60 ? `${abs}s` : abs < 3600 ? `${Math.floor(abs / 60)}m` : abs < 86400 ? `${Math.floor(abs / 3600)}h` : `${Math.floor(abs / 86400)}d`;
  return s >= 0 ? `${txt} ago` : `in ${txt}`;
}

// tick rewrites the relative times under root from their datetime: a quiet
// catalog brings no reload, and "hold-down ends in 59s" must still count
// down. Only text that changed is touched, so a tick costs a page of 100
// rows next to nothing and never replaces an element under the pointer.
export function tick(root) {
  for (const el of root.querySelectorAll('time.ago')) {
    const txt = agoText(new Date(el.dateTime));
    if (el.textContent !== txt) el.textContent = txt;
  }
}

export function num(n) {
  return typeof n === 'number' ? n.toLocaleString('en-US') : (n ?? '');
}

// link to a service or instance page (names are URL-escaped).
export function serviceHref(service) { return `#/services/${encodeURIComponent(service)}`; }
export function instanceHref(service, id) { return `#/services/${encodeURIComponent(service)}/${encodeURIComponent(id)}`; }

export function toast(text) {
  const el = document.getElementById('toast');
  el.textContent = text;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.textContent = ''; }, 4000);
}
