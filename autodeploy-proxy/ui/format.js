// Numbers and durations for people.

export function money(x) {
  if (x === undefined || x === null) return '–';
  if (x === 0) return '0.00';
  return x < 0.01 ? x.toFixed(4) : x.toFixed(2);
}

export function rate(x) {
  if (!x) return '0';
  return x < 10 ? x.toFixed(1) : Math.round(x).toString();
}

export function duration(seconds) {
  if (seconds === undefined || seconds === null) return '–';
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** A link as the user should copy it: absolute, on this page's origin when it is a path. */
export function absoluteLink(link) {
  return new URL(link, window.location.origin).href;
}
