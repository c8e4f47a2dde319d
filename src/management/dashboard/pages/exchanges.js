// Exchanges: the list with a declare form; an exchange's page with its bindings, a
// publish form and delete. `publishForm` is shared with the queue page.

import * as api from '../api.js';
import { dangerButton, facts, features, fill, form, gone, h, link, nameFilter, notify, panel, parseKeyValues, rate, rateOf, route, table } from '../dom.js';

const TYPES = ['direct', 'fanout', 'topic', 'headers'];

/** How the default exchange is shown. */
export function exchangeLabel(name) {
  return name === '' ? '(AMQP default)' : name;
}

export function mount(root, params, ctx) {
  if (params.length >= 2) return mountOne(root, params[0], params[1], ctx);
  return mountList(root, ctx);
}

function vhostOptions(ctx) {
  return ctx.vhosts.map((v) => [v, v]);
}

function mountList(root, ctx) {
  const body = h('div');
  const filter = nameFilter(() => render());
  let rows = [];
  root.append(panel('Exchanges', [h('div', { class: 'toolbar' }, filter.input), body], { id: 'panel-exchanges' }));
  root.append(panel('Add a new exchange', form('exchange-declare', [
    { name: 'vhost', label: 'Virtual host', type: 'select', options: vhostOptions(ctx), value: ctx.vhost || '/' },
    { name: 'name', label: 'Name', required: true },
    { name: 'type', label: 'Type', type: 'select', options: TYPES.map((t) => [t, t]) },
    { name: 'durable', label: 'Durable', type: 'select', options: [['true', 'Durable'], ['false', 'Transient']] },
    { name: 'auto_delete', label: 'Auto delete', type: 'select', options: [['false', 'No'], ['true', 'Yes']] },
    { name: 'internal', label: 'Internal', type: 'select', options: [['false', 'No'], ['true', 'Yes']] },
    { name: 'arguments', label: 'Arguments', type: 'textarea', rows: 2, placeholder: 'alternate-exchange=my-ae', hint: 'key=value, one a line' },
  ], 'Add exchange', async (v) => {
    await api.put(api.path('exchanges', v.vhost, v.name), {
      type: v.type,
      durable: v.durable === 'true',
      auto_delete: v.auto_delete === 'true',
      internal: v.internal === 'true',
      arguments: parseKeyValues(v.arguments),
    });
    notify(`Exchange ${v.name} declared in ${v.vhost}`);
    await refresh();
  }), { collapsible: true, collapsed: true, id: 'panel-exchange-declare' }));

  function render() {
    const shown = rows.filter((e) => filter.matches(e.name));
    const stats = (e, k) => rateOf(e.message_stats, k) ?? (e.message_stats ? 0 : undefined);
    fill(body, table([
      ...(ctx.vhost ? [] : [{ label: 'Virtual host', value: (e) => e.vhost }]),
      { label: 'Name', key: 'name', value: (e) => e.name, cell: (e) => link(route('exchanges', e.vhost, api.exchangePathName(e.name)), exchangeLabel(e.name)) },
      { label: 'Type', value: (e) => e.type },
      { label: 'Features', cell: features },
      { label: 'Message rate in', value: (e) => stats(e, 'publish_in'), cell: (e) => rate(stats(e, 'publish_in')), num: true, optional: true },
      { label: 'Message rate out', value: (e) => stats(e, 'publish_out'), cell: (e) => rate(stats(e, 'publish_out')), num: true, optional: true },
    ], shown, { id: 'exchanges', sortIndex: ctx.vhost ? 0 : 1, rowAttrs: (e) => ({ 'data-exchange': e.name }) }));
  }

  async function refresh() {
    rows = await api.list('exchanges', ctx.vhost);
    render();
  }
  return { title: 'Exchanges', refresh };
}

function mountOne(root, vhost, pathName, ctx) {
  const name = pathName === 'amq.default' ? '' : pathName;
  const info = h('div');
  const bindings = h('div');
  root.append(h('p', { class: 'crumbs' }, link('#/exchanges', 'Exchanges'), ' › ', h('strong', {}, exchangeLabel(name)), h('span', { class: 'muted' }, ` in virtual host ${vhost}`)));
  root.append(h('div', { class: 'columns' }, panel('Details', info, { id: 'panel-exchange' }), panel('Bindings from this exchange', bindings, { id: 'panel-exchange-bindings' })));
  root.append(panel('Publish message', publishForm(vhost, name, null), { collapsible: true, id: 'panel-publish' }));
  if (name !== '' && !name.startsWith('amq.')) {
    root.append(panel('Delete this exchange', h('div', { class: 'row' },
      dangerButton('Delete', `Delete exchange ${name} in ${vhost}?`, async () => {
        await api.del(api.path('exchanges', vhost, name));
        notify(`Exchange ${name} deleted`);
        location.hash = '#/exchanges';
      }, { id: 'exchange-delete' })), { collapsible: true, collapsed: true }));
  }

  async function refresh() {
    const e = await api.get(api.path('exchanges', vhost, pathName), { optional: true });
    if (e === null) return gone(root, `Exchange ${name} in virtual host ${vhost}`, '#/exchanges', 'All exchanges');
    fill(info, facts([
      ['Virtual host', e.vhost],
      ['Type', e.type],
      ['Features', h('span', {}, features(e).length ? features(e) : '–')],
      ['Arguments', e.arguments && Object.keys(e.arguments).length ? JSON.stringify(e.arguments) : '–'],
      e.message_stats && ['Rate in', rate(rateOf(e.message_stats, 'publish_in'))],
      e.message_stats && ['Rate out', rate(rateOf(e.message_stats, 'publish_out'))],
    ]));
    let list = await api.get(api.path('exchanges', vhost, pathName, 'bindings', 'source'), { optional: true });
    if (list === null) list = (await api.get(api.path('bindings', vhost))).filter((b) => b.source === name);
    fill(bindings, table([
      { label: 'To', value: (b) => b.destination, cell: (b) => link(route(b.destination_type === 'queue' ? 'queues' : 'exchanges', vhost, b.destination), b.destination) },
      { label: 'Kind', value: (b) => b.destination_type },
      { label: 'Routing key', value: (b) => b.routing_key },
      { label: 'Arguments', value: (b) => (b.arguments && Object.keys(b.arguments).length ? JSON.stringify(b.arguments) : '') },
    ], list, { id: 'exchange-bindings', empty: 'No bindings.' }));
  }
  return { title: `Exchange ${exchangeLabel(name)}`, refresh };
}

/**
 * Publishes through POST /api/exchanges/{vhost}/{name}/publish. With `queue` set (the
 * queue page), the exchange is the default one and the routing key is the queue.
 */
export function publishForm(vhost, exchange, queue) {
  const id = 'publish';
  return form(id, [
    queue === null
      ? { name: 'routing_key', label: 'Routing key' }
      : { name: 'routing_key', label: 'Routing key', value: queue, readOnly: true, hint: 'through the default exchange' },
    { name: 'delivery_mode', label: 'Delivery mode', type: 'select', options: [['1', '1 - non-persistent'], ['2', '2 - persistent']] },
    { name: 'headers', label: 'Headers', type: 'textarea', rows: 2, placeholder: 'x-trace=abc', hint: 'key=value, one a line' },
    { name: 'properties', label: 'Properties', type: 'textarea', rows: 2, placeholder: 'content_type=text/plain', hint: 'content_type, correlation_id, message_id, reply_to, expiration, priority…' },
    { name: 'payload', label: 'Payload', type: 'textarea', rows: 4 },
  ], 'Publish message', async (v) => {
    const properties = { delivery_mode: Number(v.delivery_mode), headers: parseKeyValues(v.headers), ...parseKeyValues(v.properties) };
    if (typeof properties.expiration === 'number') properties.expiration = String(properties.expiration);
    const res = await api.post(api.path('exchanges', vhost, api.exchangePathName(exchange), 'publish'), {
      properties,
      routing_key: v.routing_key,
      payload: v.payload,
      payload_encoding: 'string',
    });
    if (res.routed === false) notify('Message published, but not routed to any queue', 'warn');
    else notify('Message published');
  });
}
