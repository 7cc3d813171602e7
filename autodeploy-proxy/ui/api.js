// The management API and its event stream. The admin token lives in sessionStorage and
// travels only in the Authorization header: never in a URL, never in a cookie.

const TOKEN_KEY = 'autodeploy.admin_token';

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headers(extra) {
  const h = Object.assign({ Accept: 'application/json' }, extra || {});
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

/** An error answer of the API: its HTTP status and the body's code and msg. */
export class ApiError extends Error {
  constructor(status, code, msg) {
    super(msg || `HTTP ${status}`);
    this.status = status;
    this.code = code;
    this.msg = msg || `HTTP ${status}`;
  }

  /**
   * The per-field problems of a 422 (code 1003) answer, parsed from its message
   * ("invalid deployment config: field: problem; other: problem") as {field: problem}.
   */
  fieldErrors() {
    const out = {};
    if (this.code !== 1003) return out;
    const colon = this.msg.indexOf(': ');
    const detail = colon >= 0 ? this.msg.slice(colon + 2) : this.msg;
    for (const part of detail.split('; ')) {
      const m = /^([A-Za-z0-9_.[\]]+): (.*)$/s.exec(part);
      if (m) out[m[1]] = out[m[1]] ? `${out[m[1]]}; ${m[2]}` : m[2];
    }
    return out;
  }
}

/** Calls the API; resolves to the JSON answer, rejects with an ApiError (or a network error). */
export async function api(method, path, body) {
  const init = { method, headers: headers(body ? { 'Content-Type': 'application/json' } : {}) };
  if (body !== undefined) init.body = JSON.stringify(body);
  init.cache = 'no-store';
  const response = await fetch(path, init);
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (_) {
    json = null;
  }
  if (!response.ok) {
    throw new ApiError(response.status, json && json.code, json && json.msg);
  }
  return json;
}

/**
 * Subscribes to /api/v1/events (server-sent events, read with fetch so that the token goes in
 * a header). Calls onEvent(type, data) for each event and onState(state) with 'live',
 * 'reconnecting' or 'unauthorized'. Reconnects by itself after the gateway restarts.
 * Returns a function that stops it.
 */
export function subscribe(onEvent, onState) {
  let stopped = false;
  let controller = null;
  let delay = 250;

  async function connectOnce() {
    controller = new AbortController();
    const response = await fetch('/api/v1/events', {
      headers: headers({ Accept: 'text/event-stream' }),
      signal: controller.signal,
      cache: 'no-store',
    });
    if (response.status === 401) {
      onState('unauthorized');
      stopped = true;
      return;
    }
    if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
    onState('live');
    delay = 250;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, '\n');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        dispatch(frame);
      }
    }
  }

  function dispatch(frame) {
    let type = 'message';
    const data = [];
    for (const line of frame.split('\n')) {
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') type = value;
      else if (field === 'data') data.push(value);
    }
    if (data.length === 0) return;
    let parsed;
    try {
      parsed = JSON.parse(data.join('\n'));
    } catch (_) {
      return;
    }
    onEvent(type, parsed);
  }

  (async () => {
    while (!stopped) {
      try {
        await connectOnce();
      } catch (_) {
        // The gateway went away or restarts: try again below.
      }
      if (stopped) return;
      onState('reconnecting');
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 2000);
    }
  })();

  return () => {
    stopped = true;
    if (controller) controller.abort();
  };
}
