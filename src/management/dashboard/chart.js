// Line charts on <canvas>: time on x (the last `windowMs`), a rounded scale on y,
// one line per series. Drawn from scratch at every refresh; sharp on HiDPI screens.

const PAD = { left: 52, right: 10, top: 10, bottom: 22 };

/** 1, 2, 5 × 10^n at or above `v`: a scale top with round grid labels. */
function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function shortNumber(v) {
  if (v >= 1e9) return (v / 1e9).toFixed(v % 1e9 ? 1 : 0) + 'G';
  if (v >= 1e6) return (v / 1e6).toFixed(v % 1e6 ? 1 : 0) + 'M';
  if (v >= 1e3) return (v / 1e3).toFixed(v % 1e3 ? 1 : 0) + 'k';
  return String(Math.round(v * 100) / 100);
}

/**
 * series: [{label, color, points: [[timeMs, value], ...]}]; opts: {windowMs, now,
 * unit (appended to y labels), minTop (smallest scale top)}.
 */
export function drawChart(canvas, series, opts = {}) {
  const windowMs = opts.windowMs || 10 * 60 * 1000;
  const now = opts.now || Date.now();
  const dpr = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 400, height = canvas.clientHeight || 160;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, width, height);
  const css = getComputedStyle(canvas);
  const ink = css.getPropertyValue('--chart-ink').trim() || '#667085';
  const grid = css.getPropertyValue('--chart-grid').trim() || '#e4e7ec';
  g.font = '11px system-ui, sans-serif';

  const x0 = PAD.left, x1 = width - PAD.right, y0 = PAD.top, y1 = height - PAD.bottom;
  const t0 = now - windowMs;
  let max = 0;
  for (const s of series) for (const [t, v] of s.points) if (t >= t0 && v > max) max = v;
  const top = Math.max(niceCeil(max), opts.minTop || 1);
  // Grid lines at round values: a top of 1, 5 or 10 × 10^n in fifths, 2 × 10^n in quarters.
  const mantissa = top / Math.pow(10, Math.floor(Math.log10(top)));
  const divisions = Math.round(mantissa) === 2 ? 4 : 5;
  const xOf = (t) => x0 + ((t - t0) / windowMs) * (x1 - x0);
  const yOf = (v) => y1 - (v / top) * (y1 - y0);

  // Horizontal grid with y labels.
  g.strokeStyle = grid;
  g.fillStyle = ink;
  g.lineWidth = 1;
  g.textAlign = 'right';
  g.textBaseline = 'middle';
  for (let i = 0; i <= divisions; i++) {
    const v = (top * i) / divisions;
    const y = Math.round(yOf(v)) + 0.5;
    g.beginPath();
    g.moveTo(x0, y);
    g.lineTo(x1, y);
    g.stroke();
    g.fillText(shortNumber(v) + (opts.unit || ''), x0 - 6, y);
  }
  // Minute ticks on x, labelled relative to now.
  g.textAlign = 'center';
  g.textBaseline = 'top';
  const step = windowMs > 20 * 60 * 1000 ? 5 * 60 * 1000 : 2 * 60 * 1000;
  for (let ago = 0; ago <= windowMs; ago += step) {
    const x = Math.round(xOf(now - ago)) + 0.5;
    g.beginPath();
    g.moveTo(x, y1);
    g.lineTo(x, y1 + 4);
    g.stroke();
    g.fillText(ago === 0 ? 'now' : `-${ago / 60000}m`, Math.min(Math.max(x, x0 + 12), x1 - 12), y1 + 6);
  }

  let any = false;
  g.lineJoin = 'round';
  for (const s of series) {
    const pts = s.points.filter(([t, v]) => t >= t0 && Number.isFinite(v));
    if (!pts.length) continue;
    any = true;
    g.strokeStyle = s.color;
    g.lineWidth = 1.75;
    g.beginPath();
    pts.forEach(([t, v], i) => (i ? g.lineTo(xOf(t), yOf(v)) : g.moveTo(xOf(t), yOf(v))));
    g.stroke();
    if (pts.length === 1) {
      g.fillStyle = s.color;
      g.beginPath();
      g.arc(xOf(pts[0][0]), yOf(pts[0][1]), 2.5, 0, 2 * Math.PI);
      g.fill();
    }
  }
  if (!any) {
    g.fillStyle = ink;
    g.textAlign = 'center';
    g.textBaseline = 'middle';
    g.fillText(opts.emptyText || 'Waiting for samples…', (x0 + x1) / 2, (y0 + y1) / 2);
  }
}
