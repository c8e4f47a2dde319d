// Small DOM helpers: element building, formatting, sortable tables, forms and
// notices. Everything is built with DOM calls (no innerHTML), so names of queues,
// users or messages can never inject markup.

/** `h('td', {class: 'num', onclick: f, 'data-col': 'x'}, 'text', child, [more])` */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k in el && k !== 'list' && k !== 'form' && !k.startsWith('data-')) el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// ---- formatting -------------------------------------------------------------

const numberFormat = new Intl.NumberFormat('en-US');

export function num(v) {
  return typeof v === 'number' && Number.isFinite(v) ? numberFormat.format(v) : '–';
}

/** A rate in messages (or bytes) per second, one decimal; '–' when the API has none. */
export function rate(v, unit = '/s') {
  if (typeof v !== 'number' || !Number.isFinite(v)) return '–';
  const digits = Math.abs(v) >= 100 ? 0 : 1;
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) + unit;
}

export function bytes(v) {
  if (typeof v !== 'number' || !Number.isFinite(v)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return (i === 0 ? v : v.toFixed(v >= 100 ? 0 : 1)) + ' ' + units[i];
}

export function duration(seconds) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds)) return '–';
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600), mm = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${hh}h`;
  if (hh) return `${hh}h ${mm}m`;
  if (mm) return `${mm}m ${s % 60}s`;
  return `${s}s`;
}

export function timestamp(ms) {
  if (typeof ms !== 'number') return '–';
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A `*_details.rate` field, or undefined. */
export function rateOf(stats, key) {
  return stats?.[`${key}_details`]?.rate;
}

/** Short badges for the flags RabbitMQ's UI abbreviates (D, AD, Excl, I, Args). */
export function features(obj) {
  const out = [];
  const tag = (label, title) => out.push(h('abbr', { class: 'feature', title }, label));
  if (obj.durable) tag('D', 'durable');
  if (obj.auto_delete) tag('AD', 'auto-delete');
  if (obj.exclusive) tag('Excl', 'exclusive');
  if (obj.internal) tag('I', 'internal');
  const args = obj.arguments && Object.keys(obj.arguments);
  if (args && args.length) tag('Args', args.map((k) => `${k}: ${JSON.stringify(obj.arguments[k])}`).join('\n'));
  return out;
}

export function link(href, text) {
  return h('a', { href }, text);
}

/** `#/queues/%2F/name`: a hash route with each segment encoded. */
export function route(...segments) {
  return '#/' + segments.map(encodeURIComponent).join('/');
}

// ---- notices ----------------------------------------------------------------

/** A notice under the tabs: 'ok' ones fade after a while, errors stay until closed
 *  or replaced. */
export function notify(message, kind = 'ok') {
  const box = document.getElementById('flash');
  const note = h('div', { class: `note ${kind}` }, h('span', { class: 'note-text' }, message),
    h('button', { type: 'button', class: 'link', 'aria-label': 'dismiss', onclick: () => note.remove() }, '×'));
  box.prepend(note);
  while (box.children.length > 3) box.lastChild.remove();
  if (kind === 'ok') setTimeout(() => note.remove(), 5000);
}

/** Drops the error notices (a page change makes them stale). */
export function clearErrors() {
  for (const n of document.querySelectorAll('#flash .note.error')) n.remove();
}

// ---- tables -----------------------------------------------------------------

const sortState = new Map();

/**
 * A sortable table. `columns`: [{label, value: row => sortable, cell: row => node or
 * text (default: value), num: right-aligned, key: data-col name, optional: left out
 * when no row has a value, e.g. rates a broker does not report}]. `opts`: `id` (keeps
 * the sort order across refreshes), `rowAttrs: row => attributes`, `empty` text.
 */
export function table(allColumns, rows, opts = {}) {
  const present = (v) => v !== undefined && v !== null;
  const columns = allColumns.filter((c) => !c.optional || rows.some((r) => present(c.value(r))));
  const id = opts.id || allColumns.map((c) => c.label).join('|');
  const sort = sortState.get(id) || { index: opts.sortIndex ?? 0, desc: false };
  const col = columns[sort.index];
  const sorted = col && col.value ? [...rows].sort((a, b) => compare(col.value(a), col.value(b)) * (sort.desc ? -1 : 1)) : rows;
  const wrap = h('div', { class: 'table-wrap' });
  const render = () => fill(wrap, table(allColumns, rows, opts).firstChild);
  const head = h('tr', {}, columns.map((c, i) => h('th', {
    class: [c.num ? 'num' : '', c.value ? 'sortable' : '', i === sort.index ? (sort.desc ? 'desc' : 'asc') : ''].join(' ').trim(),
    title: c.title,
    onclick: c.value ? () => {
      sortState.set(id, { index: i, desc: i === sort.index ? !sort.desc : false });
      render();
    } : undefined,
  }, c.label)));
  const body = sorted.length
    ? sorted.map((row) => h('tr', opts.rowAttrs ? opts.rowAttrs(row) : {}, columns.map((c) => {
      const content = c.cell ? c.cell(row) : c.value ? c.value(row) : '';
      return h('td', { class: c.num ? 'num' : c.class, 'data-col': c.key }, content);
    })))
    : [h('tr', {}, h('td', { class: 'empty', colSpan: columns.length }, opts.empty || 'Nothing here.'))];
  wrap.append(h('table', { class: 'grid', id: opts.id }, h('thead', {}, head), h('tbody', {}, body)));
  return wrap;
}

function compare(a, b) {
  const na = a === undefined || a === null, nb = b === undefined || b === null;
  if (na || nb) return na === nb ? 0 : na ? 1 : -1;
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  return String(a).localeCompare(String(b), 'en', { numeric: true });
}

/** A filter box for list pages: keeps rows whose name contains the text (or matches
 *  it as a regular expression when it is one). */
export function nameFilter(onChange) {
  const input = h('input', { type: 'search', class: 'filter', placeholder: 'Filter by name (regex ok)', oninput: () => onChange() });
  const matches = (name) => {
    const text = input.value.trim();
    if (!text) return true;
    try {
      return new RegExp(text, 'i').test(name);
    } catch {
      return name.toLowerCase().includes(text.toLowerCase());
    }
  };
  return { input, matches };
}

// ---- forms ------------------------------------------------------------------

/**
 * A form whose fields get ids `${id}-${name}`. Field: {name, label, type: text,
 * password, number, select, textarea, checkbox; options: [[value, label]], value,
 * placeholder, required, hint}. `onSubmit(values)` may be async; the button is
 * disabled meanwhile and a thrown error becomes an error notice.
 */
export function form(id, fields, submitLabel, onSubmit, opts = {}) {
  const inputs = {};
  const rows = fields.map((f) => {
    const fid = `${id}-${f.name}`;
    let input;
    if (f.type === 'select') {
      input = h('select', { id: fid, name: f.name }, (f.options || []).map(([v, label]) => h('option', { value: v, selected: String(v) === String(f.value ?? '') }, label ?? v)));
    } else if (f.type === 'textarea') {
      input = h('textarea', { id: fid, name: f.name, rows: f.rows || 3, placeholder: f.placeholder, value: f.value ?? '' });
    } else if (f.type === 'checkbox') {
      input = h('input', { id: fid, name: f.name, type: 'checkbox', checked: !!f.value });
    } else {
      input = h('input', { id: fid, name: f.name, type: f.type || 'text', placeholder: f.placeholder, value: f.value ?? '', required: f.required, min: f.min, autocomplete: f.autocomplete || 'off', readOnly: f.readOnly });
    }
    inputs[f.name] = input;
    return h('div', { class: 'field' }, h('label', { for: fid }, f.label), input, f.hint ? h('small', { class: 'hint' }, f.hint) : null);
  });
  const button = h('button', { id: `${id}-submit`, type: 'submit', class: 'primary' }, submitLabel);
  const el = h('form', { id, class: 'form' + (opts.inline ? ' inline' : ''), autocomplete: 'off' }, rows, h('div', { class: 'field actions' }, button));
  el.addEventListener('submit', async (e) => {
    e.preventDefault();
    const values = {};
    for (const [name, input] of Object.entries(inputs)) values[name] = input.type === 'checkbox' ? input.checked : input.value;
    button.disabled = true;
    try {
      await onSubmit(values, inputs);
    } catch (err) {
      notify(`${submitLabel} failed: ${err.message || err}`, 'error');
    } finally {
      button.disabled = false;
    }
  });
  el.inputs = inputs;
  return el;
}

/** A titled panel; `collapsed` makes it a closed <details> (RabbitMQ's "Add a new …"). */
export function panel(title, content, opts = {}) {
  if (opts.collapsible) {
    return h('details', { class: 'panel', open: !opts.collapsed, id: opts.id }, h('summary', {}, title), h('div', { class: 'panel-body' }, content));
  }
  return h('section', { class: 'panel', id: opts.id }, h('h2', {}, title), h('div', { class: 'panel-body' }, content));
}

/** `key=value` lines into an object (numbers and true/false typed), for x-arguments
 *  and message headers. */
export function parseKeyValues(text) {
  const out = {};
  for (const raw of String(text || '').split('\n')) {
    const line = raw.trim();
    if (!line) continue;
    const eq = line.indexOf('=');
    if (eq < 1) throw new Error(`"${line}" is not key=value`);
    const key = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    if (/^-?\d+(\.\d+)?$/.test(value)) out[key] = Number(value);
    else if (value === 'true' || value === 'false') out[key] = value === 'true';
    else out[key] = value;
  }
  return out;
}

/** A button that asks first (deletes, purges, closes). */
export function dangerButton(label, question, action, attrs = {}) {
  return h('button', {
    type: 'button',
    class: 'danger',
    ...attrs,
    onclick: async (e) => {
      if (question && !window.confirm(question)) return;
      e.target.disabled = true;
      try {
        await action();
      } catch (err) {
        notify(`${label} failed: ${err.message || err}`, 'error');
      } finally {
        e.target.disabled = false;
      }
    },
  }, label);
}

/** Replaces a page whose object does not exist (deleted meanwhile, or a stale link). */
export function gone(root, what, backHref, backLabel) {
  fill(root, h('section', { class: 'panel', id: 'panel-gone' }, h('h2', {}, 'Not found'),
    h('div', { class: 'panel-body' }, h('p', {}, `${what} does not exist (any more). `, link(backHref, backLabel)))));
}

/** Key/value rows for an object's properties. */
export function facts(pairs) {
  return h('table', { class: 'facts' }, pairs.filter(Boolean).map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', {}, v))));
}
