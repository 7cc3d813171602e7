// The overview: every deployment with its status, link, instances, rate and spend.

import { api } from './api.js';
import { h, replace } from './dom.js';
import { absoluteLink, money, rate } from './format.js';

/**
 * The overview's columns. A column with `optional: true` appears only when the API sends its
 * field for some deployment (fields other releases add, such as idle waste or a budget):
 * adding one is one line here.
 */
const COLUMNS = [
  { label: 'Deployment', cell: nameCell },
  { label: 'Status', cell: (d) => badge(d.status) },
  { label: 'Link', cell: linkCell },
  { label: 'Instances', cell: (d) => `${d.instances} / ${d.max_instances}`, num: true },
  { label: 'Req/s', cell: (d) => rate(d.requests_per_second), num: true },
  { label: 'Spend/h now', cell: (d) => money(d.hourly_rate), num: true },
  { label: 'Spend total', cell: (d) => money(d.total_cost), num: true },
  { label: 'Idle waste', field: 'idle_waste', optional: true, cell: (d) => money(d.idle_waste), num: true },
  { label: 'Budget refusals', field: 'budget_refusals', optional: true, cell: (d) => String(d.budget_refusals), num: true },
];

/** A status badge: Standby, Idle or Running. */
export function badge(status) {
  return h('span', { class: `badge badge-${String(status).toLowerCase()}`, 'data-status': status }, status);
}

/** A link with a copy button. */
export function linkWithCopy(link) {
  const href = absoluteLink(link);
  const copy = h('button', {
    type: 'button',
    class: 'quiet copy',
    title: 'Copy the link',
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(href);
        copy.textContent = 'Copied';
      } catch (_) {
        copy.textContent = 'Select and copy';
      }
      setTimeout(() => { copy.textContent = 'Copy'; }, 1500);
    },
  }, 'Copy');
  return h('span', { class: 'link' }, h('code', {}, href), copy);
}

function nameCell(d) {
  return [
    h('a', { class: 'name', href: `#/d/${encodeURIComponent(d.id)}` }, d.name),
    d.name !== d.id ? h('span', { class: 'id' }, d.id) : null,
    d.description ? h('div', { class: 'description' }, d.description) : null,
  ];
}

function linkCell(d) {
  return linkWithCopy(d.link);
}

export class Overview {
  constructor(root) {
    this.root = root;
    this.deployments = [];
  }

  async load() {
    const answer = await api('GET', '/api/v1/deployments');
    this.deployments = answer.deployments;
    // The gateway-wide budget, when the gateway has one.
    this.budget = answer.budget || null;
    this.render();
  }

  /**
   * A status event: the badge and the Running tile change at once, before the next reload of
   * the list.
   */
  status(deployment, status) {
    const known = this.deployments.find((d) => d.id === deployment);
    if (!known || known.status === status) return;
    known.status = status;
    const row = this.root.querySelector(`tr[data-deployment="${CSS.escape(deployment)}"]`);
    const cell = row && row.querySelector('.badge');
    if (cell) cell.replaceWith(badge(status));
    const running = this.root.querySelector('[data-tile="Running"] .tile-value');
    if (running) running.textContent = String(this.deployments.filter((d) => d.status === 'Running').length);
  }

  render() {
    const columns = COLUMNS.filter((c) => !c.optional || this.deployments.some((d) => c.field in d));
    const running = this.deployments.filter((d) => d.status === 'Running').length;
    const spend = this.deployments.reduce((sum, d) => sum + (d.hourly_rate || 0), 0);
    const total = this.deployments.reduce((sum, d) => sum + (d.total_cost || 0), 0);
    replace(this.root,
      h('section', { class: 'summary' },
        tile('Deployments', this.deployments.length),
        tile('Running', running),
        tile('Spend/h now', money(spend)),
        tile('Spend total', money(total)),
        this.budget ? tile('Budget/h used', `${money(this.budget.hourly_rate)} / ${money(this.budget.max_per_hour)}`) : null),
      this.deployments.length === 0
        ? h('p', { class: 'empty' }, 'No deployments yet. Add one to the config file or POST /api/v1/deployments.')
        : h('table', { class: 'deployments responsive' },
          h('thead', {}, h('tr', {}, columns.map((c) => h('th', { class: c.num ? 'num' : null }, c.label)))),
          h('tbody', {}, this.deployments.map((d) => h('tr', { 'data-deployment': d.id },
            columns.map((c) => h('td', { class: c.num ? 'num' : null, 'data-label': c.label }, c.cell(d))))))));
  }
}

function tile(label, value) {
  return h('div', { class: 'tile', 'data-tile': label }, h('div', { class: 'tile-value' }, String(value)), h('div', { class: 'tile-label' }, label));
}
