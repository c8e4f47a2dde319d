// Administration: virtual hosts, users and permissions, definitions export/import.
// Changes need the `administrator` tag; the API's 401 reason is shown otherwise.

import * as api from '../api.js';
import { dangerButton, fill, form, h, nameFilter, notify, num, panel, table } from '../dom.js';

function adminOnly(ctx) {
  return ctx.isAdmin ? null : h('p', { class: 'muted' }, 'Changes here need the administrator tag.');
}

export function mountVhosts(root, _params, ctx) {
  const body = h('div');
  const filter = nameFilter(() => render());
  let rows = [];
  root.append(panel('Virtual hosts', [h('div', { class: 'toolbar' }, filter.input), body], { id: 'panel-vhosts' }));
  root.append(panel('Add a new virtual host', [adminOnly(ctx), form('vhost-add', [
    { name: 'name', label: 'Name', required: true },
    { name: 'description', label: 'Description' },
    { name: 'tags', label: 'Tags', placeholder: 'prod, eu', hint: 'comma-separated' },
  ], 'Add virtual host', async (v) => {
    await api.put(api.path('vhosts', v.name), { description: v.description, tags: v.tags });
    notify(`Virtual host ${v.name} added`);
    await ctx.reloadVhosts();
    await refresh();
  })], { collapsible: true, collapsed: true, id: 'panel-vhost-add' }));

  function render() {
    const shown = rows.filter((v) => filter.matches(v.name));
    fill(body, table([
      { label: 'Name', key: 'name', value: (v) => v.name },
      { label: 'Description', value: (v) => v.description || '' },
      { label: 'Tags', value: (v) => (Array.isArray(v.tags) ? v.tags.join(', ') : v.tags || '') },
      { label: 'Ready', value: (v) => v.messages_ready, cell: (v) => num(v.messages_ready), num: true },
      { label: 'Unacked', value: (v) => v.messages_unacknowledged, cell: (v) => num(v.messages_unacknowledged), num: true },
      { label: 'Total', value: (v) => v.messages, cell: (v) => num(v.messages), num: true },
      { label: '', cell: (v) => dangerButton('Delete', `Delete virtual host ${v.name} and everything in it?`, async () => {
        await api.del(api.path('vhosts', v.name));
        notify(`Virtual host ${v.name} deleted`);
        await ctx.reloadVhosts();
        await refresh();
      }) },
    ], shown, { id: 'vhosts', rowAttrs: (v) => ({ 'data-vhost': v.name }) }));
  }

  async function refresh() {
    rows = await api.get('/vhosts');
    render();
  }
  return { title: 'Virtual hosts', refresh };
}

export function mountUsers(root, _params, ctx) {
  const users = h('div');
  const permissions = h('div');
  let userRows = [];
  root.append(h('div', { class: 'columns' },
    panel('Users', users, { id: 'panel-users' }),
    panel('Permissions', permissions, { id: 'panel-permissions' })));

  const permForm = form('permission-set', [
    { name: 'user', label: 'User', type: 'select', options: [] },
    { name: 'vhost', label: 'Virtual host', type: 'select', options: ctx.vhosts.map((v) => [v, v]), value: ctx.vhost || '/' },
    { name: 'configure', label: 'Configure regexp', value: '.*' },
    { name: 'write', label: 'Write regexp', value: '.*' },
    { name: 'read', label: 'Read regexp', value: '.*' },
  ], 'Set permission', async (v) => {
    await api.put(api.path('permissions', v.vhost, v.user), { configure: v.configure, write: v.write, read: v.read });
    notify(`Permissions of ${v.user} in ${v.vhost} set`);
    await refresh();
  });
  root.append(h('div', { class: 'columns' },
    panel('Add a user', [adminOnly(ctx), form('user-add', [
      { name: 'name', label: 'Username', required: true },
      { name: 'password', label: 'Password', type: 'password', autocomplete: 'new-password', hint: 'empty: the user cannot log in with a password' },
      { name: 'tags', label: 'Tags', placeholder: 'management', hint: 'administrator, monitoring, policymaker, management, impersonator' },
    ], 'Add user', async (v) => {
      const body = { tags: v.tags };
      if (v.password) body.password = v.password;
      else body.password_hash = '';
      await api.put(api.path('users', v.name), body);
      notify(`User ${v.name} added`);
      await refresh();
    })], { id: 'panel-user-add' }),
    panel('Set permissions', permForm, { id: 'panel-permission-set' })));

  async function refresh() {
    userRows = await api.get('/users');
    const perms = await api.get('/permissions');
    fill(users, table([
      { label: 'Name', key: 'name', value: (u) => u.name },
      { label: 'Tags', value: (u) => (Array.isArray(u.tags) ? u.tags.join(', ') : u.tags || '') },
      { label: 'Can access virtual hosts', value: (u) => perms.filter((p) => p.user === u.name).map((p) => p.vhost).join(', ') || 'none' },
      { label: 'Has password', value: (u) => (u.password_hash ? 'yes' : 'no') },
      { label: '', cell: (u) => (u.name === ctx.user ? h('span', { class: 'muted' }, 'you') : dangerButton('Delete', `Delete user ${u.name}?`, async () => {
        await api.del(api.path('users', u.name));
        notify(`User ${u.name} deleted`);
        await refresh();
      })) },
    ], userRows, { id: 'users', rowAttrs: (u) => ({ 'data-user': u.name }) }));
    fill(permissions, table([
      { label: 'User', value: (p) => p.user },
      { label: 'Virtual host', value: (p) => p.vhost },
      { label: 'Configure', value: (p) => p.configure, cell: (p) => h('code', {}, p.configure) },
      { label: 'Write', value: (p) => p.write, cell: (p) => h('code', {}, p.write) },
      { label: 'Read', value: (p) => p.read, cell: (p) => h('code', {}, p.read) },
      { label: '', cell: (p) => dangerButton('Clear', `Remove ${p.user}'s permissions in ${p.vhost}?`, async () => {
        await api.del(api.path('permissions', p.vhost, p.user));
        notify(`Permissions of ${p.user} in ${p.vhost} removed`);
        await refresh();
      }) },
    ], perms, { id: 'permissions' }));
    // Keep the user picker current without losing the selection.
    const select = permForm.inputs.user;
    const chosen = select.value;
    fill(select, userRows.map((u) => h('option', { value: u.name, selected: u.name === chosen }, u.name)));
  }
  return { title: 'Users', refresh };
}

export function mountDefinitions(root, _params, ctx) {
  const fileInput = h('input', { type: 'file', id: 'definitions-file', accept: '.json,application/json' });
  const result = h('p', { id: 'definitions-result', class: 'muted' });
  root.append(panel('Export definitions', [
    h('p', {}, 'Users, virtual hosts, permissions, exchanges, queues and bindings as a RabbitMQ definitions.json.'),
    h('button', { type: 'button', class: 'primary', id: 'definitions-export', onclick: exportDefinitions }, 'Download broker definitions'),
  ], { id: 'panel-export' }));
  root.append(panel('Import definitions', [
    adminOnly(ctx),
    h('p', {}, 'Creates what is missing; all or nothing: the first refused entry undoes the import.'),
    h('div', { class: 'row' }, fileInput, h('button', { type: 'button', class: 'primary', id: 'definitions-import', onclick: importDefinitions }, 'Upload broker definitions')),
    result,
  ], { id: 'panel-import' }));

  async function exportDefinitions() {
    try {
      const defs = await api.get('/definitions');
      const blob = new Blob([JSON.stringify(defs, null, 2)], { type: 'application/json' });
      const url = URL.createObjectURL(blob);
      const day = new Date().toISOString().slice(0, 10);
      const a = h('a', { href: url, download: `haremq-definitions-${day}.json` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) {
      notify(err.message, 'error');
    }
  }

  async function importDefinitions() {
    const file = fileInput.files[0];
    if (!file) {
      notify('Choose a definitions file first', 'error');
      return;
    }
    try {
      const text = await file.text();
      JSON.parse(text);
      await api.post('/definitions', text);
      result.textContent = `Imported ${file.name}.`;
      notify(`Definitions from ${file.name} imported`);
      await ctx.reloadVhosts();
    } catch (err) {
      result.textContent = `Import failed: ${err.message}`;
      notify(`Import failed: ${err.message}`, 'error');
    }
  }
  return { title: 'Definitions' };
}
