// One deployment: its instances, cold starts, failures, activity chart, actions, settings
// and a "try it" curl builder.

import { api, ApiError } from './api.js';
import { activityChart, coldStartChart } from './chart.js';
import { h, replace } from './dom.js';
import { absoluteLink, duration, money, rate } from './format.js';
import { badge, linkWithCopy } from './overview.js';

/** The settings the edit form offers; the rest of the config is sent back unchanged. */
const FIELDS = [
  { name: 'name', label: 'Name' },
  { name: 'description', label: 'Description', textarea: true },
  { name: 'start_command', label: 'Start command' },
  { name: 'max_instances', label: 'Max instances', number: true },
  { name: 'min_instances', label: 'Min instances (warm pool)', number: true },
  { name: 'idle_retention', label: 'Idle retention (e.g. 10m)' },
  { name: 'start_timeout', label: 'Start timeout (e.g. 5m)' },
  { name: 'concurrency_limit', label: 'Concurrency limit (0 = unlimited)', number: true },
  { name: 'price_per_hour', label: 'Price per hour', number: true },
];

const RULES = ['', 'scale-out', 'random', 'round-robin'];

export class DeploymentView {
  constructor(root, id, onGone) {
    this.root = root;
    this.id = id;
    this.onGone = onGone;
    this.detail = null;
    this.history = null;
    this.openLogs = new Map();
    this.confirming = null;
    this.editing = false;
    this.rule = '';
    this.skeleton();
  }

  skeleton() {
    this.header = h('section', { class: 'deployment-head' });
    this.notice = h('div', { class: 'notice', role: 'status', 'aria-live': 'polite' });
    this.form = h('section', { class: 'card edit', hidden: true });
    this.chart = h('section', { class: 'card' });
    this.instances = h('section', { class: 'card' });
    this.starts = h('section', { class: 'card' });
    this.failures = h('section', { class: 'card' });
    this.tryIt = h('section', { class: 'card' });
    replace(this.root,
      h('a', { class: 'back', href: '#/' }, '← All deployments'),
      this.header, this.notice, this.form, this.instances,
      h('div', { class: 'grid' }, this.chart, this.starts),
      this.failures, this.tryIt);
  }

  async load() {
    let detail;
    let history;
    try {
      [detail, history] = await Promise.all([
        api('GET', `/api/v1/deployments/${encodeURIComponent(this.id)}`),
        api('GET', `/api/v1/deployments/${encodeURIComponent(this.id)}/history`),
      ]);
    } catch (err) {
      if (err instanceof ApiError && err.code === 1002) {
        replace(this.root, h('a', { class: 'back', href: '#/' }, '← All deployments'),
          h('p', { class: 'empty' }, `No deployment "${this.id}".`));
        return;
      }
      throw err;
    }
    this.detail = detail;
    this.history = history;
    this.render();
  }

  status(status) {
    const current = this.header.querySelector('.badge');
    if (current) current.replaceWith(badge(status));
  }

  say(text, kind) {
    replace(this.notice, text ? h('p', { class: `notice-${kind || 'info'}` }, text) : null);
  }

  /** Replaces a "Starting…"/"Releasing…" notice once the instance got there. */
  settle() {
    const waiting = this.awaiting;
    if (!waiting) return;
    const instance = this.detail.instances.find((i) => i.id === waiting.id);
    if (waiting.done(instance)) {
      this.awaiting = null;
      this.say(`Instance ${waiting.id} ${waiting.text}.`);
    }
  }

  render() {
    this.settle();
    const d = this.detail;
    // The detail's `instances` is the list of instances (it replaces the summary's count).
    const live = d.instances.length;
    replace(this.header,
      h('div', { class: 'title' },
        h('h1', {}, d.name), badge(d.status),
        d.name !== d.id ? h('span', { class: 'id' }, d.id) : null),
      d.description ? h('p', { class: 'description' }, d.description) : null,
      h('div', { class: 'facts' },
        linkWithCopy(d.link),
        h('span', {}, `${live} / ${d.max_instances} instances`),
        h('span', {}, `${rate(d.requests_per_second)} req/s`),
        h('span', {}, `${money(d.hourly_rate)}/h now`),
        h('span', {}, `${money(d.total_cost)} total`),
        'idle_waste' in d ? h('span', {}, `${money(d.idle_waste)} idle waste`) : null,
        'budget_refusals' in d ? h('span', {}, `${d.budget_refusals} budget refusals`) : null,
        h('span', {}, `provider ${d.provider}`)),
      h('div', { class: 'actions' },
        h('button', { type: 'button', id: 'prewarm', onclick: () => this.prewarm(),
          disabled: live >= d.max_instances }, 'Pre-warm an instance'),
        h('button', { type: 'button', id: 'edit', class: 'secondary', onclick: () => this.openEdit() }, 'Edit settings'),
        this.confirming === 'delete'
          ? h('span', { class: 'confirm' }, 'Delete this deployment and release its instances? ',
            h('button', { type: 'button', id: 'confirm-delete', class: 'danger', onclick: () => this.remove() }, 'Delete'),
            h('button', { type: 'button', class: 'quiet', onclick: () => { this.confirming = null; this.render(); } }, 'Cancel'))
          : h('button', { type: 'button', id: 'delete', class: 'danger', onclick: () => { this.confirming = 'delete'; this.render(); } }, 'Delete')));
    replace(this.chart, h('h2', {}, 'Last 15 minutes'),
      h('p', { class: 'legend' }, h('span', { class: 'key key-bar' }), 'requests/s ',
        h('span', { class: 'key key-line' }), 'instances'),
      activityChart(this.history));
    this.renderInstances();
    const starts = this.history.cold_starts;
    replace(this.starts, h('h2', {}, 'Cold starts'),
      starts.length === 0 ? h('p', { class: 'empty' }, 'No cold start yet.') : [
        h('p', { class: 'legend' }, h('span', { class: 'key key-create' }), 'provider call ',
          h('span', { class: 'key key-boot' }), 'boot and readiness probe ',
          h('span', { class: 'key key-first' }), 'first byte'),
        coldStartChart(starts.slice(0, 8))]);
    const failures = this.history.start_failures;
    replace(this.failures, h('h2', {}, 'Recent start failures'),
      failures.length === 0 ? h('p', { class: 'empty' }, 'None.')
        : h('ul', { class: 'failures' }, failures.map((f) => h('li', {},
          h('code', {}, f.instance), ` ${duration(f.age_s)} ago: `, h('span', { class: 'reason' }, f.reason)))));
    this.renderTryIt();
  }

  renderInstances() {
    const d = this.detail;
    const rows = d.instances.map((i) => {
      const confirming = this.confirming === i.id;
      const logs = this.openLogs.get(i.id);
      return [
        h('tr', { 'data-instance': i.id },
          h('td', { 'data-label': 'Instance' }, h('code', {}, i.id)),
          h('td', { 'data-label': 'State' }, h('span', { class: `state state-${i.state}` }, i.state)),
          h('td', { 'data-label': 'Endpoint' }, i.endpoint ? `${i.endpoint.host}:${i.endpoint.port}` : '–'),
          h('td', { class: 'num', 'data-label': 'Age' }, duration(i.age)),
          h('td', { class: 'num', 'data-label': 'In flight' }, String(i.in_flight)),
          h('td', { class: 'num', 'data-label': 'Served' }, String(i.served)),
          h('td', { class: 'num', 'data-label': 'Cost' }, money(i.cost)),
          h('td', { class: 'row-actions' },
            h('button', { type: 'button', class: 'quiet', onclick: () => this.toggleLogs(i.id) }, logs ? 'Hide log' : 'Log'),
            confirming
              ? h('span', { class: 'confirm' }, 'Release? ',
                h('button', { type: 'button', class: 'danger confirm-release', onclick: () => this.release(i.id) }, 'Release'),
                h('button', { type: 'button', class: 'quiet', onclick: () => { this.confirming = null; this.renderInstances(); } }, 'Cancel'))
              : h('button', { type: 'button', class: 'secondary release', disabled: i.state !== 'ready' && i.state !== 'starting' && i.state !== 'creating',
                onclick: () => { this.confirming = i.id; this.renderInstances(); } }, 'Release'))),
        logs ? h('tr', { class: 'log-row' }, h('td', { colspan: 8 },
          h('pre', { class: 'log' }, logs.length ? logs.join('\n') : '(no log lines)'))) : null,
      ];
    });
    replace(this.instances, h('h2', {}, 'Instances'),
      d.instances.length === 0
        ? h('p', { class: 'empty' }, 'No instance: the next request (or Pre-warm) starts one.')
        : h('table', { class: 'instances responsive' },
          h('thead', {}, h('tr', {}, ['Instance', 'State', 'Endpoint', 'Age', 'In flight', 'Served', 'Cost', ''].map((t) => h('th', {}, t)))),
          h('tbody', {}, rows)));
  }

  renderTryIt() {
    const d = this.detail;
    const options = RULES.concat(d.instances.filter((i) => i.state === 'ready').map((i) => i.id));
    if (!options.includes(this.rule)) this.rule = '';
    const line = curlLine(absoluteLink(d.link), this.rule);
    const out = h('code', { class: 'curl', id: 'curl' }, line);
    const select = h('select', { id: 'rule', onchange: (e) => { this.rule = e.target.value; this.renderTryIt(); } },
      options.map((r) => h('option', { value: r, selected: r === this.rule }, r === '' ? '(none: default routing)' : r)));
    replace(this.tryIt, h('h2', {}, 'Try it'),
      h('label', { class: 'inline' }, 'Deploy-Route-Rule ', select),
      h('div', { class: 'curl-box' }, out,
        h('button', { type: 'button', class: 'quiet', onclick: (e) => copyText(line, e.target) }, 'Copy')));
  }

  async prewarm() {
    try {
      const answer = await api('POST', `/api/v1/deployments/${encodeURIComponent(this.id)}/instances`);
      this.say(`Starting instance ${answer.id}.`);
      this.awaiting = { id: answer.id, done: (i) => i && i.state === 'ready', text: 'is ready' };
      await this.load();
    } catch (err) {
      this.say(describe(err), 'error');
    }
  }

  async release(instance) {
    this.confirming = null;
    try {
      await api('DELETE', `/api/v1/deployments/${encodeURIComponent(this.id)}/instances/${encodeURIComponent(instance)}`);
      this.say(`Releasing instance ${instance}.`);
      this.awaiting = { id: instance, done: (i) => !i, text: 'was released' };
      await this.load();
    } catch (err) {
      this.say(describe(err), 'error');
    }
  }

  async remove() {
    this.confirming = null;
    this.say('Deleting: draining its instances…');
    try {
      await api('DELETE', `/api/v1/deployments/${encodeURIComponent(this.id)}`);
      this.onGone();
    } catch (err) {
      this.say(describe(err), 'error');
      this.render();
    }
  }

  toggleLogs(instance) {
    if (this.openLogs.has(instance)) {
      this.openLogs.delete(instance);
      this.renderInstances();
      return;
    }
    api('GET', `/api/v1/deployments/${encodeURIComponent(this.id)}/instances/${encodeURIComponent(instance)}`)
      .then((view) => { this.openLogs.set(instance, view.last_log); this.renderInstances(); })
      .catch((err) => this.say(describe(err), 'error'));
  }

  openEdit() {
    const config = this.detail.config;
    this.form.hidden = false;
    const inputs = {};
    const errors = {};
    const general = h('p', { class: 'field-error general' });
    const rows = FIELDS.map((f) => {
      const value = config[f.name] === undefined || config[f.name] === null ? '' : String(config[f.name]);
      const input = f.textarea
        ? h('textarea', { id: `field-${f.name}`, name: f.name, rows: 2 }, value)
        : h('input', { id: `field-${f.name}`, name: f.name, value, inputmode: f.number ? 'decimal' : null });
      inputs[f.name] = input;
      errors[f.name] = h('span', { class: 'field-error', 'data-field': f.name, id: `error-${f.name}` });
      return h('div', { class: 'field' }, h('label', { for: `field-${f.name}` }, f.label), input, errors[f.name]);
    });
    const form = h('form', {
      novalidate: true,
      onsubmit: async (e) => {
        e.preventDefault();
        for (const el of Object.values(errors)) el.textContent = '';
        general.textContent = '';
        const body = Object.assign({}, config);
        for (const f of FIELDS) {
          const raw = inputs[f.name].value;
          body[f.name] = f.number && raw.trim() !== '' && !Number.isNaN(Number(raw)) ? Number(raw) : raw;
        }
        try {
          this.detail = await api('PUT', `/api/v1/deployments/${encodeURIComponent(this.id)}`, body);
          this.form.hidden = true;
          this.say('Settings saved.');
          await this.load();
        } catch (err) {
          const fields = err instanceof ApiError ? err.fieldErrors() : {};
          let placed = false;
          for (const [field, message] of Object.entries(fields)) {
            const top = field.split('.')[0];
            if (errors[top]) {
              errors[top].textContent = errors[top].textContent ? `${errors[top].textContent}; ${message}` : message;
              inputs[top].setAttribute('aria-invalid', 'true');
              placed = true;
            } else {
              general.textContent += `${field}: ${message} `;
            }
          }
          if (!placed && !general.textContent) general.textContent = describe(err);
        }
      },
    }, rows, general,
    h('div', { class: 'actions' },
      h('button', { type: 'submit', id: 'save' }, 'Save'),
      h('button', { type: 'button', class: 'quiet', onclick: () => { this.form.hidden = true; } }, 'Cancel')));
    replace(this.form, h('h2', {}, 'Settings'), form);
    inputs.name.focus();
  }
}

function curlLine(url, rule) {
  const header = rule ? ` -H 'Deploy-Route-Rule: ${rule}'` : '';
  return `curl -i${header} '${url.replace(/'/g, "'\\''")}'`;
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = 'Copied';
  } catch (_) {
    button.textContent = 'Select and copy';
  }
  setTimeout(() => { button.textContent = 'Copy'; }, 1500);
}

/** An error for people. */
export function describe(err) {
  if (err instanceof ApiError) return `${err.msg} (HTTP ${err.status}${err.code ? `, code ${err.code}` : ''})`;
  return `The gateway cannot be reached (${err.message}).`;
}
