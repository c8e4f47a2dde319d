// Overview: totals, the queued-messages and message-rate graphs (from /api/overview
// samples taken every 5 s, kept for 10 minutes in this tab), the node's memory, disk
// and alarms, and the listeners.

import * as api from '../api.js';
import { drawChart } from '../chart.js';
import { bytes, duration, fill, h, num, panel, rate, table } from '../dom.js';

const WINDOW_MS = 10 * 60 * 1000;

/** [{t, o}]: when, and the /api/overview answer. */
let samples = [];
/** Whether /api/nodes answered (memory and disk figures). */
let hasNodes = true;

const RATE_SERIES = [
  ['publish', 'Publish', '#e8660c'],
  ['deliver_get', 'Deliver / get', '#2563eb'],
  ['ack', 'Consumer ack', '#16a34a'],
  ['redeliver', 'Redelivered', '#9333ea'],
  ['confirm', 'Publisher confirm', '#0891b2'],
];
const QUEUED_SERIES = [
  ['messages_ready', 'Ready', '#e8660c'],
  ['messages_unacknowledged', 'Unacked', '#2563eb'],
  ['messages', 'Total', '#475467'],
];

/** Takes one sample of /api/overview. */
export async function sample() {
  const o = await api.get('/overview');
  const t = Date.now();
  samples.push({ t, o });
  samples = samples.filter((s) => s.t >= t - WINDOW_MS - 10000);
  return o;
}

/** Forgets the samples (on logout: another user may see less). */
export function reset() {
  samples = [];
  seeded = false;
}

let seeded = false;

/** Fills the graphs' past from the broker's own sample history (RabbitMQ's
 *  `lengths_age`/`msg_rates_age` query: counts every 5 s, newest first), so a freshly
 *  opened page does not start empty. A broker without it answers without samples. */
async function seedHistory() {
  seeded = true;
  const o = await api.get('/overview?lengths_age=600&lengths_incr=5&msg_rates_age=600&msg_rates_incr=5');
  const byTime = new Map();
  const put = (section, key, list) => {
    for (const s of Array.isArray(list) ? list : []) {
      const at = byTime.get(s.timestamp) || { queue_totals: {}, message_stats: {} };
      at[section][key] = s.sample;
      byTime.set(s.timestamp, at);
    }
  };
  for (const [key] of QUEUED_SERIES) put('queue_totals', key, o.queue_totals?.[`${key}_details`]?.samples);
  for (const [key] of RATE_SERIES) put('message_stats', key, o.message_stats?.[`${key}_details`]?.samples);
  const first = samples.length ? samples[0].t : Infinity;
  const past = [...byTime.entries()].filter(([t]) => t < first).sort((a, b) => a[0] - b[0]).map(([t, o]) => ({ t, o }));
  samples = [...past, ...samples];
}

/** A rate at sample i: the API's `*_details.rate`, or else the counter's change since
 *  the sample before (a broker without rate sampling still gets a graph). */
function rateAt(i, key) {
  const stats = samples[i].o.message_stats;
  const given = stats?.[`${key}_details`]?.rate;
  if (typeof given === 'number') return given;
  if (i === 0 || typeof stats?.[key] !== 'number') return undefined;
  const before = samples[i - 1].o.message_stats?.[key];
  if (typeof before !== 'number') return undefined;
  return Math.max(0, (stats[key] - before) / ((samples[i].t - samples[i - 1].t) / 1000));
}

function legend(series, fmt) {
  return h('ul', { class: 'legend' }, series.map((s) => {
    const last = s.points.length ? s.points[s.points.length - 1][1] : undefined;
    const swatch = h('span', { class: 'swatch' });
    swatch.style.background = s.color;
    return h('li', { 'data-series': s.key }, swatch, h('span', { class: 'legend-label' }, s.label), h('span', { class: 'legend-value' }, fmt(last)));
  }));
}

function tile(label, value, key, href) {
  const body = [h('div', { class: 'tile-value', 'data-total': key }, value), h('div', { class: 'tile-label' }, label)];
  return href ? h('a', { class: 'tile', href }, body) : h('div', { class: 'tile' }, body);
}

function meter(used, limit, alarm, label) {
  if (typeof used !== 'number') return h('span', { class: 'muted' }, '–');
  const bar = h('div', { class: 'meter' + (alarm ? ' alarm' : '') }, h('div', { class: 'meter-fill' }));
  if (typeof limit === 'number' && limit > 0) bar.firstChild.style.width = Math.min(100, (used / limit) * 100).toFixed(1) + '%';
  return h('div', {}, bar, h('small', {}, label));
}

export function mount(root) {
  const tiles = h('div', { class: 'tiles' });
  const queuedCanvas = h('canvas', { class: 'chart', id: 'chart-queued' });
  const ratesCanvas = h('canvas', { class: 'chart', id: 'chart-rates' });
  const queuedLegend = h('div');
  const ratesLegend = h('div');
  const node = h('div');
  const listeners = h('div');
  root.append(
    tiles,
    h('div', { class: 'columns' },
      panel('Queued messages (last ten minutes)', [queuedCanvas, queuedLegend], { id: 'panel-queued' }),
      panel('Message rates (last ten minutes)', [ratesCanvas, ratesLegend], { id: 'panel-rates' })),
    h('div', { class: 'columns' }, panel('Node', node, { id: 'panel-node' }), panel('Listeners', listeners, { id: 'panel-listeners' })),
  );

  async function refresh() {
    if (!seeded) await seedHistory().catch(() => {});
    const o = await sample();
    const totals = o.object_totals || {};
    const q = o.queue_totals || {};
    fill(tiles,
      tile('Connections', num(totals.connections), 'connections', '#/connections'),
      tile('Channels', num(totals.channels), 'channels', '#/channels'),
      tile('Exchanges', num(totals.exchanges), 'exchanges', '#/exchanges'),
      tile('Queues', num(totals.queues), 'queues', '#/queues'),
      tile('Consumers', num(totals.consumers), 'consumers'),
      tile('Messages ready', num(q.messages_ready), 'messages_ready'),
      tile('Unacked', num(q.messages_unacknowledged), 'messages_unacknowledged'),
      tile('Total messages', num(q.messages), 'messages'));

    const queued = QUEUED_SERIES.map(([key, label, color]) => ({
      key, label, color,
      points: samples.filter((s) => typeof s.o.queue_totals?.[key] === 'number').map((s) => [s.t, s.o.queue_totals[key]]),
    }));
    const rates = RATE_SERIES.map(([key, label, color]) => ({
      key, label, color,
      points: samples.map((s, i) => [s.t, rateAt(i, key)]).filter(([, v]) => typeof v === 'number'),
    })).filter((s) => s.points.length || s.key === 'publish' || s.key === 'deliver_get');
    drawChart(queuedCanvas, queued, { windowMs: WINDOW_MS, minTop: 10, emptyText: o.queue_totals ? 'Waiting for samples…' : 'This broker reports no queue totals' });
    drawChart(ratesCanvas, rates, { windowMs: WINDOW_MS, minTop: 1, unit: '/s', emptyText: o.message_stats ? 'Waiting for samples…' : 'This broker reports no message rates' });
    queuedCanvas.dataset.samples = String(samples.length);
    fill(queuedLegend, legend(queued, num));
    fill(ratesLegend, legend(rates, (v) => rate(v)));

    fill(listeners, table([
      { label: 'Protocol', value: (l) => l.protocol },
      { label: 'Bound to', value: (l) => l.ip_address },
      { label: 'Port', value: (l) => l.port, num: true },
    ], o.listeners || [], { id: 'listeners', empty: 'No listeners reported.' }));

    await refreshNode(o);
  }

  async function refreshNode(o) {
    // A broker without /api/nodes is not asked again until the page is reloaded.
    const nodes = hasNodes ? await api.get('/nodes', { optional: true }).catch(() => undefined) : null;
    if (nodes === null) hasNodes = false;
    const n = Array.isArray(nodes) && nodes.length ? nodes[0] : null;
    let alarms;
    if (n) {
      alarms = [n.mem_alarm && 'memory', n.disk_free_alarm && 'disk'].filter(Boolean);
    } else {
      const check = await api.get('/health/checks/alarms', { raw: true });
      alarms = check.status === 200 ? [] : (check.body?.alarms || []).map((a) => a.resource);
    }
    const alarmBadge = alarms.length
      ? alarms.map((a) => h('span', { class: 'badge bad' }, `${a} alarm`))
      : h('span', { class: 'badge good' }, 'no alarms');
    fill(node, h('table', { class: 'facts' },
      h('tr', {}, h('th', {}, 'Name'), h('td', {}, o.node || n?.name || '–')),
      h('tr', {}, h('th', {}, 'Version'), h('td', {}, `${o.product_name || 'HareMQ'} ${o.product_version || ''} (RabbitMQ API ${o.rabbitmq_version || '?'})`)),
      n && h('tr', {}, h('th', {}, 'Uptime'), h('td', {}, duration((n.uptime ?? NaN) / 1000))),
      h('tr', {}, h('th', {}, 'Alarms'), h('td', { id: 'node-alarms' }, alarmBadge)),
      n && h('tr', {}, h('th', {}, 'Memory'), h('td', {}, meter(n.mem_used, n.mem_limit, n.mem_alarm, n.mem_limit ? `${bytes(n.mem_used)} used, alarm at ${bytes(n.mem_limit)}` : `${bytes(n.mem_used)} used, no limit`))),
      n && h('tr', {}, h('th', {}, 'Disk free'), h('td', { class: n.disk_free_alarm ? 'bad' : '' }, `${bytes(n.disk_free)}, alarm below ${bytes(n.disk_free_limit)}`)),
      n && typeof n.fd_used === 'number' && h('tr', {}, h('th', {}, 'File descriptors'), h('td', {}, `${num(n.fd_used)} / ${num(n.fd_total)}`)),
      !n && h('tr', {}, h('th', {}, 'Memory, disk'), h('td', { class: 'muted' }, 'not reported by this broker (no /api/nodes)')),
    ));
  }

  return { title: 'Overview', refresh };
}
