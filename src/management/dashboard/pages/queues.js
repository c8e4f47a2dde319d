// Queues: the list (messages ready, unacked, total and rates) with a declare form; a
// queue's page with its numbers, consumers, bindings (bind, unbind), publish, get
// messages, purge and delete.

import * as api from '../api.js';
import { bytes, dangerButton, facts, features, fill, form, gone, h, link, nameFilter, notify, num, panel, parseKeyValues, rate, rateOf, route, table } from '../dom.js';
import { exchangeLabel, publishForm } from './exchanges.js';

export function mount(root, params, ctx) {
  if (params.length >= 2) return mountOne(root, params[0], params[1]);
  return mountList(root, ctx);
}

/** Messages ready/unacked/total: `messages` when the broker counts it, else ready. */
const ready = (q) => q.messages_ready;
const unacked = (q) => q.messages_unacknowledged;
const total = (q) => (typeof q.messages === 'number' ? q.messages : undefined);
/** A rate from `message_stats`; 0 for a key the broker leaves out as zero (RabbitMQ
 *  lists only non-zero counts of a queue), nothing when it keeps no statistics. */
const msgRate = (q, k) => rateOf(q.message_stats, k) ?? (q.message_stats ? 0 : undefined);

function mountList(root, ctx) {
  const body = h('div');
  const filter = nameFilter(() => render());
  let rows = [];
  root.append(panel('Queues', [h('div', { class: 'toolbar' }, filter.input), body], { id: 'panel-queues' }));
  root.append(panel('Add a new queue', form('queue-declare', [
    { name: 'vhost', label: 'Virtual host', type: 'select', options: ctx.vhosts.map((v) => [v, v]), value: ctx.vhost || '/' },
    { name: 'name', label: 'Name', required: true },
    { name: 'durable', label: 'Durability', type: 'select', options: [['true', 'Durable'], ['false', 'Transient']] },
    { name: 'auto_delete', label: 'Auto delete', type: 'select', options: [['false', 'No'], ['true', 'Yes']] },
    { name: 'arguments', label: 'Arguments', type: 'textarea', rows: 2, placeholder: 'x-message-ttl=60000\nx-max-length=1000', hint: 'key=value, one a line: x-message-ttl, x-expires, x-max-length, x-max-length-bytes, x-overflow, x-dead-letter-exchange, x-dead-letter-routing-key, x-max-priority, x-single-active-consumer' },
  ], 'Add queue', async (v) => {
    await api.put(api.path('queues', v.vhost, v.name), {
      durable: v.durable === 'true',
      auto_delete: v.auto_delete === 'true',
      arguments: parseKeyValues(v.arguments),
    });
    notify(`Queue ${v.name} declared in ${v.vhost}`);
    await refresh();
  }), { collapsible: true, collapsed: false, id: 'panel-queue-declare' }));

  function render() {
    const shown = rows.filter((q) => filter.matches(q.name));
    fill(body, table([
      ...(ctx.vhost ? [] : [{ label: 'Virtual host', value: (q) => q.vhost }]),
      { label: 'Name', key: 'name', value: (q) => q.name, cell: (q) => link(route('queues', q.vhost, q.name), q.name) },
      { label: 'Type', value: (q) => q.type },
      { label: 'Features', cell: features },
      { label: 'State', value: (q) => q.state, cell: (q) => h('span', { class: `state ${q.state}` }, q.state || '–') },
      { label: 'Consumers', key: 'consumers', value: (q) => q.consumers, cell: (q) => num(q.consumers), num: true },
      { label: 'Ready', key: 'messages_ready', value: ready, cell: (q) => num(ready(q)), num: true },
      { label: 'Unacked', key: 'messages_unacknowledged', value: unacked, cell: (q) => num(unacked(q)), num: true, optional: true },
      { label: 'Total', key: 'messages', value: total, cell: (q) => num(total(q)), num: true, optional: true },
      { label: 'Incoming', key: 'publish_rate', value: (q) => msgRate(q, 'publish'), cell: (q) => rate(msgRate(q, 'publish')), num: true, optional: true },
      { label: 'Deliver / get', key: 'deliver_get_rate', value: (q) => msgRate(q, 'deliver_get'), cell: (q) => rate(msgRate(q, 'deliver_get')), num: true, optional: true },
      { label: 'Ack', key: 'ack_rate', value: (q) => msgRate(q, 'ack'), cell: (q) => rate(msgRate(q, 'ack')), num: true, optional: true },
    ], shown, { id: 'queues', sortIndex: ctx.vhost ? 0 : 1, empty: 'No queues.', rowAttrs: (q) => ({ 'data-queue': q.name, 'data-vhost': q.vhost }) }));
  }

  async function refresh() {
    rows = await api.list('queues', ctx.vhost);
    render();
  }
  return { title: 'Queues', refresh };
}

function mountOne(root, vhost, name) {
  const info = h('div');
  const consumers = h('div');
  const bindings = h('div');
  const messages = h('div', { id: 'get-results' });
  const qpath = api.path('queues', vhost, name);
  root.append(h('p', { class: 'crumbs' }, link('#/queues', 'Queues'), ' › ', h('strong', { id: 'queue-name' }, name), h('span', { class: 'muted' }, ` in virtual host ${vhost}`)));
  root.append(h('div', { class: 'columns' }, panel('Details', info, { id: 'panel-queue' }), panel('Consumers', consumers, { id: 'panel-consumers' })));

  const bindForm = form('bind', [
    { name: 'source', label: 'From exchange', required: true },
    { name: 'routing_key', label: 'Routing key' },
    { name: 'arguments', label: 'Arguments', type: 'textarea', rows: 2, placeholder: 'x-match=all', hint: 'key=value, one a line' },
  ], 'Bind', async (v) => {
    await api.post(api.path('bindings', vhost, 'e', v.source, 'q', name), { routing_key: v.routing_key, arguments: parseKeyValues(v.arguments) });
    notify(`Bound ${name} to ${v.source}`);
    await refresh();
  }, { inline: true });
  root.append(panel('Bindings', [bindings, bindForm], { collapsible: true, id: 'panel-bindings' }));
  root.append(panel('Publish message', publishForm(vhost, '', name), { collapsible: true, collapsed: false, id: 'panel-publish' }));

  const getForm = form('get', [
    { name: 'ackmode', label: 'Ack mode', type: 'select', options: [['ack_requeue_true', 'Nack message, requeue true'], ['ack_requeue_false', 'Automatic ack (remove)'], ['reject_requeue_true', 'Reject, requeue true'], ['reject_requeue_false', 'Reject, requeue false']] },
    { name: 'encoding', label: 'Encoding', type: 'select', options: [['auto', 'Auto string / base64'], ['base64', 'base64']] },
    { name: 'count', label: 'Messages', type: 'number', value: '1', min: 1 },
  ], 'Get messages', async (v) => {
    const got = await api.post(qpath + '/get', { count: Math.max(1, Number(v.count) || 1), ackmode: v.ackmode, encoding: v.encoding, truncate: 50000 });
    showMessages(got);
    await refresh();
  }, { inline: true });
  root.append(panel('Get messages', [h('p', { class: 'muted' }, 'Getting a message is destructive only with automatic ack; the others put it back (redelivered).'), getForm, messages], { collapsible: true, id: 'panel-get' }));

  root.append(panel('Purge and delete', h('div', { class: 'row' },
    dangerButton('Purge messages', `Purge all ready messages of ${name}?`, async () => {
      const res = await api.del(qpath + '/contents');
      notify(`Queue ${name} purged` + (typeof res.message_count === 'number' ? ` (${res.message_count} messages)` : ''));
      await refresh();
    }, { id: 'queue-purge' }),
    dangerButton('Delete queue', `Delete queue ${name} and its messages?`, async () => {
      await api.del(qpath);
      notify(`Queue ${name} deleted`);
      location.hash = '#/queues';
    }, { id: 'queue-delete' })), { collapsible: true, collapsed: true, id: 'panel-danger' }));

  function showMessages(got) {
    if (!Array.isArray(got) || !got.length) {
      fill(messages, h('p', { class: 'muted', id: 'get-empty' }, 'Queue is empty.'));
      return;
    }
    fill(messages, got.map((m, i) => h('div', { class: 'message' },
      h('h3', {}, `Message ${i + 1}`),
      facts([
        ['Exchange', exchangeLabel(m.exchange ?? '')],
        ['Routing key', m.routing_key],
        ['Redelivered', String(!!m.redelivered)],
        ['Left in queue', num(m.message_count)],
        ['Properties', h('code', {}, JSON.stringify(m.properties || {}))],
        ['Payload', `${num(m.payload_bytes)} bytes, encoding ${m.payload_encoding}`],
      ]),
      h('pre', { class: 'message-payload' }, m.payload))));
  }

  async function refresh() {
    const q = await api.get(qpath, { optional: true });
    if (q === null) return gone(root, `Queue ${name} in virtual host ${vhost}`, '#/queues', 'All queues');
    fill(info, facts([
      ['Virtual host', q.vhost],
      ['Type', q.type],
      ['Features', h('span', {}, features(q).length ? features(q) : '–')],
      ['State', q.state],
      ['Messages', h('span', { id: 'queue-messages' },
        `ready ${num(ready(q))} · unacked ${num(unacked(q))} · total ${num(total(q))}`)],
      ['Consumers', num(q.consumers)],
      typeof q.consumer_utilisation === 'number' && ['Consumer utilisation', `${Math.round(q.consumer_utilisation * 100)}%`],
      typeof q.memory === 'number' && ['Memory', bytes(q.memory)],
      q.message_stats && ['Rates', h('span', { id: 'queue-rates' }, `publish ${rate(msgRate(q, 'publish'))} · deliver/get ${rate(msgRate(q, 'deliver_get'))} · ack ${rate(msgRate(q, 'ack'))} · redeliver ${rate(msgRate(q, 'redeliver'))}`)],
      q.idle_since && ['Idle since', q.idle_since],
    ]));

    let list = await api.get(qpath + '/bindings', { optional: true });
    if (list === null) list = (await api.get(api.path('bindings', vhost))).filter((b) => b.destination === name && b.destination_type === 'queue');
    fill(bindings, table([
      { label: 'From', value: (b) => b.source, cell: (b) => link(route('exchanges', vhost, api.exchangePathName(b.source)), exchangeLabel(b.source)) },
      { label: 'Routing key', value: (b) => b.routing_key },
      { label: 'Arguments', value: (b) => (b.arguments && Object.keys(b.arguments).length ? JSON.stringify(b.arguments) : '') },
      { label: '', cell: (b) => (b.source === '' ? h('span', { class: 'muted' }, 'implicit') : dangerButton('Unbind', null, async () => {
        await api.del(api.path('bindings', vhost, 'e', b.source, 'q', name, b.properties_key ?? b.routing_key));
        notify(`Unbound ${name} from ${b.source}`);
        await refresh();
      })) },
    ], list, { id: 'queue-bindings', empty: 'No bindings.' }));

    const all = await api.get(api.path('consumers', vhost), { optional: true });
    if (all === null) {
      fill(consumers, h('p', { class: 'muted' }, `${num(q.consumers)} consumers (this broker's API does not list them).`));
    } else {
      const mine = all.filter((c) => c.queue?.name === name);
      fill(consumers, table([
        { label: 'Channel', value: (c) => c.channel_details?.name },
        { label: 'Consumer tag', value: (c) => c.consumer_tag },
        { label: 'Ack required', value: (c) => (c.ack_required ? 'yes' : 'no') },
        { label: 'Exclusive', value: (c) => (c.exclusive ? 'yes' : 'no') },
        { label: 'Prefetch', value: (c) => c.prefetch_count, cell: (c) => num(c.prefetch_count), num: true },
        { label: 'Active', value: (c) => (c.active === false ? 'no' : 'yes') },
      ], mine, { id: 'queue-consumers', empty: 'No consumers.' }));
    }
  }
  return { title: `Queue ${name}`, refresh };
}
