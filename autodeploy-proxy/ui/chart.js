// Small inline-SVG charts: requests and instances over the last 15 minutes, and the phases
// of recent cold starts. No library; SVG presentation attributes only (no inline styles).

import { s } from './dom.js';
import { duration } from './format.js';

const W = 640;
const H = 170;
const PAD = { left: 34, right: 34, top: 12, bottom: 24 };

/** Requests per second (bars, left axis) and instances (step line, right axis). */
export function activityChart(history) {
  const span = history.span_s || 900;
  const bucket = history.bucket_s || 5;
  const samples = history.samples || [];
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const x = (age) => PAD.left + plotW * (1 - Math.min(age, span) / span);
  const rps = samples.map((p) => p.requests / bucket);
  const maxRps = niceMax(Math.max(1, ...rps));
  const maxInst = Math.max(1, ...samples.map((p) => p.instances));
  const yR = (v) => PAD.top + plotH * (1 - v / maxRps);
  const yI = (v) => PAD.top + plotH * (1 - v / maxInst);

  const svg = s('svg', {
    class: 'chart',
    viewBox: `0 0 ${W} ${H}`,
    role: 'img',
    'aria-label': 'Requests per second and instances over the last 15 minutes',
  });
  for (const frac of [0, 0.5, 1]) {
    const y = PAD.top + plotH * (1 - frac);
    svg.append(s('line', { class: 'grid', x1: PAD.left, x2: W - PAD.right, y1: y, y2: y }));
    svg.append(s('text', { class: 'axis', x: PAD.left - 4, y: y + 4, 'text-anchor': 'end' },
      formatAxis(maxRps * frac)));
    const instances = maxInst * frac;
    if (Number.isInteger(instances)) {
      svg.append(s('text', { class: 'axis inst', x: W - PAD.right + 4, y: y + 4 }, String(instances)));
    }
  }
  for (const minutes of [15, 10, 5, 0]) {
    svg.append(s('text', {
      class: 'axis', x: x(minutes * 60), y: H - 6, 'text-anchor': 'middle',
    }, minutes === 0 ? 'now' : `-${minutes} min`));
  }
  const barW = Math.max(1, (plotW * bucket) / span - 1);
  samples.forEach((p, i) => {
    if (!rps[i]) return;
    const top = yR(rps[i]);
    svg.append(s('rect', {
      class: 'bar', x: x(p.age_s), y: top, width: barW, height: PAD.top + plotH - top,
    }, s('title', {}, `${rps[i].toFixed(2)} req/s`)));
  });
  if (samples.length) {
    // Each sample covers its bucket: a step from its start to its end (or now).
    let d = '';
    samples.forEach((p, i) => {
      const py = yI(p.instances);
      d += `${i === 0 ? 'M' : 'L'}${x(p.age_s)},${py}H${x(Math.max(p.age_s - bucket, 0))}`;
    });
    svg.append(s('path', { class: 'line', d }));
  } else {
    svg.append(s('text', { class: 'axis', x: W / 2, y: H / 2, 'text-anchor': 'middle' },
      'no data yet: samples are taken every second'));
  }
  return svg;
}

/** One horizontal bar per cold start, split into its phases. */
export function coldStartChart(coldStarts) {
  // Narrower than the activity chart: in a half-width card or on a phone its text stays
  // readable.
  const width = 460;
  const rowH = 22;
  const labelW = 80;
  const plotW = width - labelW - 60;
  const max = Math.max(0.001, ...coldStarts.map((c) => c.total_s + (c.first_byte_s || 0)));
  const svg = s('svg', {
    class: 'chart timeline',
    viewBox: `0 0 ${width} ${coldStarts.length * rowH + 6}`,
    role: 'img',
    'aria-label': 'Cold-start phases of recent starts',
  });
  coldStarts.forEach((c, i) => {
    const y = i * rowH + 3;
    const wCreate = (plotW * c.create_s) / max;
    const wBoot = (plotW * c.boot_s) / max;
    svg.append(s('text', { class: 'axis', x: 0, y: y + 14 }, c.instance));
    svg.append(s('rect', { class: 'phase-create', x: labelW, y, width: Math.max(wCreate, 1), height: rowH - 6 },
      s('title', {}, `provider call ${duration(c.create_s)}`)));
    svg.append(s('rect', { class: 'phase-boot', x: labelW + wCreate, y, width: Math.max(wBoot, 1), height: rowH - 6 },
      s('title', {}, `boot and readiness ${duration(c.boot_s)}`)));
    const wFirst = c.first_byte_s === null || c.first_byte_s === undefined ? 0 : (plotW * c.first_byte_s) / max;
    if (wFirst > 0 || c.first_byte_s === 0) {
      svg.append(s('rect', { class: 'phase-first', x: labelW + wCreate + wBoot, y, width: Math.max(wFirst, 1), height: rowH - 6 },
        s('title', {}, `first byte ${duration(c.first_byte_s)}`)));
    }
    const total = c.total_s + (c.first_byte_s || 0);
    svg.append(s('text', { class: 'axis', x: labelW + wCreate + wBoot + wFirst + 6, y: y + 14 }, duration(total)));
  });
  return svg;
}

function niceMax(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function formatAxis(v) {
  return v >= 10 || Number.isInteger(v) ? Math.round(v).toString() : v.toFixed(1);
}
