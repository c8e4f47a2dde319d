// Connections (with close) and channels.

import * as api from '../api.js';
import { bytes, dangerButton, fill, h, nameFilter, notify, num, panel, rate, rateOf, table, timestamp } from '../dom.js';

/** What to show when the broker's API has no such listing (404). */
function missing(what) {
  return h('p', { class: 'muted' }, `This broker's management API does not list ${what}.`);
}

function client(c) {
  const p = c.client_properties || {};
  const name = p.connection_name ? `${p.connection_name} · ` : '';
  return `${name}${p.product || ''} ${p.version || ''}`.trim() || '–';
}

export function mountConnections(root, _params, ctx) {
  const body = h('div');
  const filter = nameFilter(() => render());
  let rows = null;
  root.append(panel('Connections', [h('div', { class: 'toolbar' }, filter.input), body], { id: 'panel-connections' }));

  function render() {
    if (rows === null) return fill(body, missing('connections'));
    const shown = rows.filter((c) => filter.matches(c.name) && (!ctx.vhost || c.vhost === ctx.vhost));
    fill(body, table([
      { label: 'Name', key: 'name', value: (c) => c.name },
      { label: 'User', value: (c) => c.user },
      { label: 'Virtual host', value: (c) => c.vhost },
      { label: 'State', value: (c) => c.state, cell: (c) => h('span', { class: `state ${c.state}` }, c.state || '–') },
      { label: 'Client', value: client },
      { label: 'Protocol', value: (c) => c.protocol },
      { label: 'TLS', value: (c) => (c.ssl ? 'yes' : 'no') },
      { label: 'Channels', value: (c) => c.channels, cell: (c) => num(c.channels), num: true },
      { label: 'From client', value: (c) => rateOf(c, 'recv_oct'), cell: (c) => rate(rateOf(c, 'recv_oct'), ' B/s'), num: true, optional: true },
      { label: 'To client', value: (c) => rateOf(c, 'send_oct'), cell: (c) => rate(rateOf(c, 'send_oct'), ' B/s'), num: true, optional: true },
      { label: 'Received', value: (c) => c.recv_oct, cell: (c) => bytes(c.recv_oct), num: true },
      { label: 'Connected', value: (c) => c.connected_at, cell: (c) => timestamp(c.connected_at) },
      { label: '', cell: (c) => dangerButton('Close', `Close connection ${c.name}?`, async () => {
        await api.del(api.path('connections', c.name), { headers: { 'x-reason': `Closed via management dashboard by ${ctx.user}` } });
        notify(`Connection ${c.name} closed`);
        await refresh();
      }, { 'data-action': 'close' }) },
    ], shown, { id: 'connections', empty: 'No connections.', rowAttrs: (c) => ({ 'data-connection': c.name }) }));
  }

  async function refresh() {
    rows = await api.get('/connections', { optional: true });
    render();
  }
  return { title: 'Connections', refresh };
}

export function mountChannels(root, _params, ctx) {
  const body = h('div');
  const filter = nameFilter(() => render());
  let rows = null;
  root.append(panel('Channels', [h('div', { class: 'toolbar' }, filter.input), body], { id: 'panel-channels' }));

  function mode(c) {
    return [c.confirm ? 'C' : '', c.transactional ? 'T' : ''].join('') || '–';
  }

  function render() {
    if (rows === null) return fill(body, missing('channels'));
    const shown = rows.filter((c) => filter.matches(c.name) && (!ctx.vhost || c.vhost === ctx.vhost));
    const stats = (c, k) => rateOf(c.message_stats, k);
    fill(body, table([
      { label: 'Channel', key: 'name', value: (c) => c.name },
      { label: 'User', value: (c) => c.user },
      { label: 'Virtual host', value: (c) => c.vhost },
      { label: 'Mode', value: mode, title: 'C: publisher confirms, T: transactional' },
      { label: 'State', value: (c) => c.state },
      { label: 'Consumers', value: (c) => c.consumer_count, cell: (c) => num(c.consumer_count), num: true },
      { label: 'Prefetch', value: (c) => c.prefetch_count, cell: (c) => num(c.prefetch_count), num: true },
      { label: 'Unacked', value: (c) => c.messages_unacknowledged, cell: (c) => num(c.messages_unacknowledged), num: true },
      { label: 'Publish', value: (c) => stats(c, 'publish'), cell: (c) => rate(stats(c, 'publish')), num: true, optional: true },
      { label: 'Deliver / get', value: (c) => stats(c, 'deliver_get'), cell: (c) => rate(stats(c, 'deliver_get')), num: true, optional: true },
      { label: 'Ack', value: (c) => stats(c, 'ack'), cell: (c) => rate(stats(c, 'ack')), num: true, optional: true },
    ], shown, { id: 'channels', empty: 'No channels.' }));
  }

  async function refresh() {
    rows = await api.get('/channels', { optional: true });
    render();
  }
  return { title: 'Channels', refresh };
}
