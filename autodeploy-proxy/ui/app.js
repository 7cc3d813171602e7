// The dashboard: checks whether the API needs a token, asks for it once, routes between the
// overview and a deployment's page, and keeps them current from the event stream.

import { api, ApiError, setToken, subscribe, token } from './api.js';
import { DeploymentView, describe } from './deployment.js';
import { h, replace } from './dom.js';
import { Overview } from './overview.js';

const main = document.getElementById('main');
const banner = document.getElementById('banner');
const connection = document.getElementById('connection');
const signout = document.getElementById('signout');

let view = null;
let stopEvents = null;
let refreshTimer = null;
let wasLive = false;

function showBanner(text, kind) {
  banner.hidden = !text;
  banner.className = `banner banner-${kind || 'info'}`;
  replace(banner, text || '');
}

function setConnection(state, text) {
  connection.dataset.state = state;
  connection.textContent = text;
}

/** Whether the API answers without a token (no admin_token configured). */
async function apiIsOpen() {
  const response = await fetch('/api/v1/deployments', { headers: { Accept: 'application/json' }, cache: 'no-store' });
  if (response.status === 401) return false;
  if (!response.ok) throw new ApiError(response.status, null, `HTTP ${response.status}`);
  return true;
}

async function start() {
  let open;
  try {
    open = await apiIsOpen();
  } catch (err) {
    setConnection('down', 'gateway unreachable');
    showBanner(`${describe(err)} Retrying…`, 'error');
    setTimeout(start, 2000);
    return;
  }
  if (open) {
    setToken(null);
    showBanner('The API is open: [gateway] admin_token is not set, so anyone who reaches this gateway can manage its deployments.', 'warn');
    signout.hidden = true;
  } else if (!token()) {
    askToken(null);
    return;
  } else {
    try {
      await api('GET', '/api/v1/deployments');
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        setToken(null);
        askToken('wrong');
        return;
      }
    }
    showBanner('');
    signout.hidden = false;
  }
  startEvents();
  route();
}

function askToken(problem) {
  if (stopEvents) stopEvents();
  stopEvents = null;
  setConnection('locked', 'locked');
  showBanner('');
  signout.hidden = true;
  const input = h('input', { id: 'token', type: 'password', autocomplete: 'off', required: true, 'aria-describedby': 'token-error' });
  const message = h('p', { id: 'token-error', class: 'field-error', role: 'alert' },
    problem === 'wrong'
      ? 'Wrong token: the gateway refused it (401 Unauthorized). Use the admin_token from the gateway\'s config (or AUTODEPLOY_ADMIN_TOKEN).'
      : problem === 'expired' ? 'The gateway no longer accepts this token (401). Enter it again.' : '');
  replace(main, h('section', { class: 'card token-card' },
    h('h1', {}, 'Admin token'),
    h('p', {}, 'This gateway\'s API needs its admin token. It is kept in this tab only (sessionStorage) and sent as an Authorization header.'),
    h('form', {
      onsubmit: async (e) => {
        e.preventDefault();
        setToken(input.value.trim());
        try {
          await api('GET', '/api/v1/deployments');
        } catch (err) {
          setToken(null);
          if (err instanceof ApiError && err.status === 401) {
            message.textContent = 'Wrong token: the gateway refused it (401 Unauthorized). Use the admin_token from the gateway\'s config (or AUTODEPLOY_ADMIN_TOKEN).';
          } else {
            message.textContent = describe(err);
          }
          input.focus();
          return;
        }
        start();
      },
    }, h('label', { for: 'token' }, 'Token'), input, message,
    h('div', { class: 'actions' }, h('button', { type: 'submit', id: 'token-submit' }, 'Open the dashboard')))));
  input.focus();
}

function startEvents() {
  if (stopEvents) return;
  stopEvents = subscribe(onEvent, (state) => {
    if (state === 'live') {
      setConnection('live', 'live');
      // After a gateway restart the state may be anything: read it again.
      if (wasLive === false && view) refresh(0);
      wasLive = true;
    } else if (state === 'reconnecting') {
      setConnection('reconnecting', 'reconnecting…');
      wasLive = false;
    } else if (state === 'unauthorized') {
      stopEvents = null;
      setToken(null);
      askToken('expired');
    }
  });
}

function onEvent(type, data) {
  if (!view) return;
  if (type === 'lagged') {
    refresh(0);
    return;
  }
  if (view instanceof Overview) {
    if (type === 'status') view.status(data.deployment, data.status);
    refresh(250);
  } else if (data.deployment === view.id) {
    if (type === 'status') view.status(data.status);
    refresh(250);
  }
}

/** Reloads the current view's data after `delay` ms, at most once per delay. */
function refresh(delay) {
  if (refreshTimer !== null) {
    if (delay > 0) return;
    clearTimeout(refreshTimer);
  }
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    load();
  }, delay);
}

async function load() {
  if (!view) return;
  try {
    await view.load();
    if (banner.classList.contains('banner-error')) showBanner('');
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      setToken(null);
      askToken('expired');
      return;
    }
    showBanner(describe(err), 'error');
  }
}

function route() {
  if (!stopEvents) return;
  const match = /^#\/d\/(.+)$/.exec(window.location.hash);
  if (match) {
    view = new DeploymentView(main, decodeURIComponent(match[1]), () => { window.location.hash = '#/'; });
  } else {
    replace(main);
    view = new Overview(main);
  }
  load();
}

window.addEventListener('hashchange', route);
signout.addEventListener('click', () => {
  setToken(null);
  view = null;
  askToken(null);
});
// Ages and the chart move on even without events.
setInterval(() => { if (view && !document.hidden) refresh(0); }, 10000);
start();
