// featcache map: every point of a dataset on one canvas, explorable offline. featcache inlines this file into the page
// it writes; the data sits beside it in <script type="application/json" id="map-data">.
//
// Points are stamped straight into one ImageData buffer instead of one canvas call each, so 100 k points redraw in a
// few milliseconds on a plain CPU (no WebGL needed, which headless or remote browsers often lack).
(() => {
  'use strict';

  const BACKGROUND = rgba(17, 19, 24);
  const UNKNOWN = rgba(110, 116, 128);
  const OUTLINE = rgba(255, 255, 255);
  const SELECTED_RING = rgba(108, 180, 255);
  /** How far (CSS px) from a point the cursor may be and still hover it. */
  const HOVER_REACH = 8;
  /** Audit bins: a score in [lo, hi) falls in the bin; the last bin closes at 1. */
  const AUDIT_BINS = [0, 0.2, 0.4, 0.6, 0.8, 1];
  /** Audit scores below this are drawn on top: they are the rows worth a look. */
  const AUDIT_SUSPECT = 0.5;
  const CATEGORY_COLORS = [
    '#4e9af1',
    '#f28e2b',
    '#59c35b',
    '#e8545a',
    '#b07ce8',
    '#c9a26b',
    '#f17fc4',
    '#9ca3ad',
    '#d4d435',
    '#2ed1d8',
    '#a4c8ff',
    '#ffc48a',
    '#a6e39d',
    '#ff9f9b',
    '#d8c2f5',
    '#e6c9a8',
    '#ffc2e6',
    '#d4d8de',
    '#f0f09a',
    '#9be9ee',
  ];

  const $ = (id) => document.getElementById(id);
  const data = decode(JSON.parse($('map-data').textContent));
  const n = data.count;

  const stage = $('stage');
  const canvas = $('points');
  const overlay = $('overlay');
  const ctx = canvas.getContext('2d', { alpha: false });
  const octx = overlay.getContext('2d');
  const tooltip = $('tooltip');

  // Draw order: a fixed shuffle, so no class always lands on top of the others where they overlap.
  const order = shuffledOrder(n, 0x9e3779b9);
  const sx = new Float32Array(n);
  const sy = new Float32Array(n);
  const visible = new Uint8Array(n);
  const selected = new Uint8Array(n);
  const layers = new Uint8Array(n);
  const drawList = new Uint32Array(n);
  let selectedCount = 0;
  let matches = null;
  let matchCount = 0;
  let lowerPaths = null;

  const hiddenSplits = new Uint8Array(Math.max(1, data.splits.length));
  const modes = buildColorModes();
  let mode = modes[data.color] ? data.color : 'label';
  let mouseMode = 'pan';
  let view = { scale: 1, tx: 0, ty: 0 };
  let fitScale = 1;
  let lastSize = { w: 0, h: 0 };
  let dpr = 1;
  let image = null;
  let pixels = null;
  let stamps = null;
  let hovered = -1;
  let drag = null;
  let frameQueued = false;
  let lastFrame = { ms: 0, drawn: 0, dimmed: 0, outlined: new Int32Array(0), outlinedCount: 0, mode };
  const frameTimes = [];

  setUp();

  // ---- data ---------------------------------------------------------------------------------------------------------

  function decode(raw) {
    const typed = (b64, Type) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      return new Type(bytes.buffer, 0, bytes.byteLength / Type.BYTES_PER_ELEMENT);
    };
    const out = {
      title: raw.title,
      provenance: raw.provenance || {},
      classes: raw.classes,
      splits: raw.splits,
      count: raw.count,
      paths: raw.paths,
      x: typed(raw.x, Float32Array),
      y: typed(raw.y, Float32Array),
      split: typed(raw.split, Uint8Array),
      label: typed(raw.label, Int32Array),
      color: raw.color,
      predictions: null,
      audit: null,
      thumbs: null,
    };
    if (raw.predictions)
      out.predictions = {
        source: raw.predictions.source,
        index: typed(raw.predictions.index, Int32Array),
        probability: typed(raw.predictions.probability, Float32Array),
      };
    if (raw.audit)
      out.audit = {
        source: raw.audit.source,
        score: typed(raw.audit.score, Float32Array),
        flagNames: raw.audit.flagNames,
        flags: raw.audit.flags,
      };
    if (raw.thumbs)
      out.thumbs = {
        dir: raw.thumbs.dir,
        size: raw.thumbs.size,
        cols: raw.thumbs.cols,
        sprites: raw.thumbs.sprites,
        point: typed(raw.thumbs.point, Int32Array),
        sprite: raw.thumbs.sprite,
        cell: raw.thumbs.cell,
        w: raw.thumbs.w,
        h: raw.thumbs.h,
      };
    return out;
  }

  function rgba(r, g, b, a = 255) {
    // ImageData's bytes are R, G, B, A; read as little-endian 32-bit words that is A<<24 | B<<16 | G<<8 | R.
    return ((a << 24) | (b << 16) | (g << 8) | r) >>> 0;
  }

  function hexColor(hex) {
    const v = parseInt(hex.slice(1), 16);
    return rgba((v >> 16) & 255, (v >> 8) & 255, v & 255);
  }

  function cssColor(word) {
    return `rgb(${word & 255}, ${(word >>> 8) & 255}, ${(word >>> 16) & 255})`;
  }

  /** A colour a third of the way from `word` to the background: points outside the selection or the search. */
  function dim(word) {
    const mix = (shift) => {
      const c = (word >>> shift) & 255;
      const b = (BACKGROUND >>> shift) & 255;
      return Math.round(b + (c - b) * 0.28);
    };
    return rgba(mix(0), mix(8), mix(16));
  }

  /** A mode's colours dimmed, made once per mode when first needed. */
  function dimColors(m) {
    if (!m.dimmed) m.dimmed = m.color.map(dim);
    return m.dimmed;
  }

  function categoryColor(k) {
    if (k < CATEGORY_COLORS.length) return hexColor(CATEGORY_COLORS[k]);
    // Past the palette: golden-angle hues keep neighbouring indices apart.
    return hslColor((k * 137.508) % 360, 0.62, 0.6);
  }

  function hslColor(h, s, l) {
    const a = s * Math.min(l, 1 - l);
    const f = (m) => {
      const k = (m + h / 30) % 12;
      return Math.round(255 * (l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
    };
    return rgba(f(0), f(8), f(4));
  }

  /** Red (0, label looks wrong) through amber to blue (1, label looks right). */
  function scoreColor(s) {
    const stops = [
      [0, [232, 72, 72]],
      [0.5, [240, 190, 60]],
      [1, [70, 150, 240]],
    ];
    const t = Math.min(1, Math.max(0, s));
    const [a, b] = t <= 0.5 ? [stops[0], stops[1]] : [stops[1], stops[2]];
    const u = (t - a[0]) / (b[0] - a[0]);
    const mix = (i) => Math.round(a[1][i] + (b[1][i] - a[1][i]) * u);
    return rgba(mix(0), mix(1), mix(2));
  }

  function shuffledOrder(count, seed) {
    const out = new Uint32Array(count);
    for (let i = 0; i < count; i++) out[i] = i;
    let s = seed >>> 0;
    for (let i = count - 1; i > 0; i--) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      const j = s % (i + 1);
      const t = out[i];
      out[i] = out[j];
      out[j] = t;
    }
    return out;
  }

  // ---- colour modes -------------------------------------------------------------------------------------------------

  /**
   * Each mode gives every point a legend entry (`category`), its colour, and whether it is drawn on top (`front`) and
   * outlined (`ring`). Hiding a legend entry hides its points.
   */
  function buildColorModes() {
    const out = {};
    out.label = categoryMode(data.label, 'unlabelled');
    if (data.predictions) {
      const m = categoryMode(data.predictions.index, 'no prediction');
      const ring = new Uint8Array(n);
      let wrong = 0;
      let judged = 0;
      for (let i = 0; i < n; i++) {
        if (data.label[i] < 0 || data.predictions.index[i] < 0) continue;
        judged++;
        if (data.label[i] !== data.predictions.index[i]) {
          ring[i] = 1;
          wrong++;
        }
      }
      m.ring = ring;
      m.front = ring;
      m.note = judged
        ? `Colour is the predicted class; ${wrong} wrong of ${judged} labelled (${pct(1 - wrong / judged)} right) are outlined.`
        : 'Colour is the predicted class; no point has a label to judge it by.';
      m.extra = { name: 'wrong prediction (outlined)', count: wrong };
      out.prediction = m;
    }
    if (data.audit) out.audit = auditMode();
    return out;
  }

  function categoryMode(index, unknownName) {
    const k = data.classes.length;
    const category = new Int32Array(n);
    const color = new Uint32Array(n);
    const counts = new Array(k + 1).fill(0);
    for (let i = 0; i < n; i++) {
      const c = index[i] >= 0 && index[i] < k ? index[i] : k;
      category[i] = c;
      color[i] = c === k ? UNKNOWN : categoryColor(c);
      counts[c]++;
    }
    const entries = data.classes.map((name, c) => ({ name, color: categoryColor(c), count: counts[c] }));
    entries.push({ name: unknownName, color: UNKNOWN, count: counts[k] });
    return { category, color, entries, hidden: new Uint8Array(k + 1), ring: null, front: null, note: '' };
  }

  function auditMode() {
    const score = data.audit.score;
    const bins = AUDIT_BINS.length - 1;
    const category = new Int32Array(n);
    const color = new Uint32Array(n);
    const front = new Uint8Array(n);
    const counts = new Array(bins + 1).fill(0);
    for (let i = 0; i < n; i++) {
      const s = score[i];
      let c = bins;
      if (Number.isFinite(s)) {
        c = 0;
        while (c < bins - 1 && s >= AUDIT_BINS[c + 1]) c++;
        color[i] = scoreColor(s);
        front[i] = s < AUDIT_SUSPECT ? 1 : 0;
      } else color[i] = UNKNOWN;
      category[i] = c;
      counts[c]++;
    }
    const entries = [];
    for (let c = 0; c < bins; c++)
      entries.push({
        name: `score ${AUDIT_BINS[c].toFixed(1)}–${AUDIT_BINS[c + 1].toFixed(1)}`,
        color: scoreColor((AUDIT_BINS[c] + AUDIT_BINS[c + 1]) / 2),
        count: counts[c],
      });
    entries.push({ name: 'not scored', color: UNKNOWN, count: counts[bins] });
    return {
      category,
      color,
      entries,
      hidden: new Uint8Array(bins + 1),
      ring: null,
      front,
      note: `Label-quality score from the audit (1 = label looks right); scores under ${AUDIT_SUSPECT} are drawn on top.`,
    };
  }

  function plural(count, one, many = `${one}s`) {
    return `${count.toLocaleString()} ${count === 1 ? one : many}`;
  }

  function pct(v) {
    return `${(100 * v).toFixed(1)}%`;
  }

  // ---- view ---------------------------------------------------------------------------------------------------------

  function cssSize() {
    return { w: stage.clientWidth, h: stage.clientHeight };
  }

  function toScreenX(x) {
    return x * view.scale + view.tx;
  }

  // Screen y grows downwards; the map's y grows upwards.
  function toScreenY(y) {
    return view.ty - y * view.scale;
  }

  function toDataX(px) {
    return (px - view.tx) / view.scale;
  }

  function toDataY(py) {
    return (view.ty - py) / view.scale;
  }

  function updateVisible() {
    const m = modes[mode];
    let count = 0;
    for (let i = 0; i < n; i++) {
      const v = m.hidden[m.category[i]] || hiddenSplits[data.split[i]] ? 0 : 1;
      visible[i] = v;
      count += v;
    }
    return count;
  }

  function fit() {
    const { w, h } = cssSize();
    let x0 = Infinity;
    let x1 = -Infinity;
    let y0 = Infinity;
    let y1 = -Infinity;
    for (let i = 0; i < n; i++) {
      if (!visible[i]) continue;
      const x = data.x[i];
      const y = data.y[i];
      if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
    }
    if (x0 > x1) {
      x0 = y0 = -1;
      x1 = y1 = 1;
    }
    const margin = 28;
    const spanX = Math.max(x1 - x0, 1e-9);
    const spanY = Math.max(y1 - y0, 1e-9);
    const scale = Math.min((w - 2 * margin) / spanX, (h - 2 * margin) / spanY);
    view = { scale, tx: w / 2 - ((x0 + x1) / 2) * scale, ty: h / 2 + ((y0 + y1) / 2) * scale };
    fitScale = scale;
    requestDraw();
  }

  function zoomAt(px, py, factor) {
    const scale = Math.min(fitScale * 4000, Math.max(fitScale / 20, view.scale * factor));
    const f = scale / view.scale;
    view = { scale, tx: px - (px - view.tx) * f, ty: py - (py - view.ty) * f };
    requestDraw();
  }

  function resize() {
    const { w, h } = cssSize();
    // Keep the centre where it was: a resized window is no reason to lose one's place.
    view.tx += (w - lastSize.w) / 2;
    view.ty += (h - lastSize.h) / 2;
    lastSize = { w, h };
    dpr = window.devicePixelRatio || 1;
    for (const c of [canvas, overlay]) {
      c.width = Math.max(1, Math.round(w * dpr));
      c.height = Math.max(1, Math.round(h * dpr));
    }
    image = ctx.createImageData(canvas.width, canvas.height);
    pixels = new Uint32Array(image.data.buffer);
    stamps = null;
  }

  // ---- drawing ------------------------------------------------------------------------------------------------------

  /** Point radius in device pixels: small when points are dense, growing as one zooms in. */
  function pointRadius() {
    const base = n > 50000 ? 1 : n > 10000 ? 1.5 : n > 2000 ? 2.2 : n > 400 ? 3.2 : 4.5;
    const zoom = Math.min(3, Math.max(1, Math.sqrt(view.scale / fitScale)));
    return Math.max(1, base * zoom * dpr);
  }

  /** Pixel offsets (as index deltas into the buffer) of a disc and of the ring just outside it. */
  function makeStamps(radius, width) {
    const disc = [];
    const ring = [];
    const outer = radius + Math.max(1.5, dpr * 1.6);
    const reach = Math.ceil(outer);
    for (let dy = -reach; dy <= reach; dy++)
      for (let dx = -reach; dx <= reach; dx++) {
        const d2 = dx * dx + dy * dy;
        if (d2 <= radius * radius + radius * 0.6) disc.push(dy * width + dx);
        else if (d2 <= outer * outer + outer * 0.6) ring.push(dy * width + dx);
      }
    return { radius, width, reach, disc: Int32Array.from(disc), ring: Int32Array.from(ring) };
  }

  function requestDraw() {
    if (frameQueued) return;
    frameQueued = true;
    requestAnimationFrame(() => {
      frameQueued = false;
      draw();
    });
  }

  function draw() {
    const t0 = performance.now();
    project();
    const W = canvas.width;
    const H = canvas.height;
    const radius = pointRadius();
    if (!stamps || stamps.radius !== radius || stamps.width !== W) stamps = makeStamps(radius, W);
    const { disc, ring, reach } = stamps;
    const m = modes[mode];
    const colors = m.color;
    const focus = focused();
    const front = m.front;
    const rings = m.ring;
    pixels.fill(BACKGROUND);
    const outlined = new Int32Array(rings ? n : 0);
    let outlinedCount = 0;
    let drawn = 0;

    const stamp = (i, color, offsets) => {
      const px = Math.round(sx[i] * dpr);
      const py = Math.round(sy[i] * dpr);
      if (px < -reach || py < -reach || px >= W + reach || py >= H + reach) return false;
      const centre = py * W + px;
      if (px >= reach && py >= reach && px < W - reach && py < H - reach) {
        for (let k = 0; k < offsets.length; k++) pixels[centre + offsets[k]] = color;
      } else {
        // Near the edge: each pixel checked, so a point half off-screen neither wraps nor writes out of bounds.
        for (let k = 0; k < offsets.length; k++) {
          const o = offsets[k];
          const oy = Math.round(o / W);
          const ox = o - oy * W;
          const x = px + ox;
          const y = py + oy;
          if (x >= 0 && y >= 0 && x < W && y < H) pixels[y * W + x] = color;
        }
      }
      return true;
    };

    // Layers, drawn in order: 0 dimmed (outside the selection or search), 1 ordinary, 2 in front (wrong
    // predictions, suspect audit scores), 3 and 4 the same two for focused points (selected or matching), on top.
    // One counting sort by layer keeps the shuffled order inside each layer: two passes over the points, not five.
    const layerCounts = [0, 0, 0, 0, 0];
    for (let k = 0; k < n; k++) {
      const i = order[k];
      if (!visible[i]) {
        layers[i] = 255;
        continue;
      }
      const layer = focus && !focus[i] ? 0 : (front && front[i] ? 2 : 1) + (focus ? 2 : 0);
      layers[i] = layer;
      layerCounts[layer]++;
    }
    const starts = [0];
    for (let l = 1; l < 5; l++) starts.push(starts[l - 1] + layerCounts[l - 1]);
    for (let k = 0; k < n; k++) {
      const i = order[k];
      if (layers[i] !== 255) drawList[starts[layers[i]]++] = i;
    }
    const dimmed = layerCounts[0] > 0 ? dimColors(m) : null;
    const total = starts[4];
    for (let k = 0; k < total; k++) {
      const i = drawList[k];
      const layer = layers[i];
      drawn++;
      if (layer === 0) {
        stamp(i, dimmed[i], disc);
        continue;
      }
      if (rings && rings[i]) {
        if (stamp(i, OUTLINE, ring)) outlined[outlinedCount++] = i;
      } else if (layer >= 3 && selected[i]) stamp(i, SELECTED_RING, ring);
      stamp(i, colors[i], disc);
    }
    ctx.putImageData(image, 0, 0);
    drawOverlay();
    const ms = performance.now() - t0;
    frameTimes.push(ms);
    if (frameTimes.length > 600) frameTimes.shift();
    lastFrame = { ms, drawn, dimmed: layerCounts[0], outlined, outlinedCount, mode };
    if (!document.documentElement.dataset.drawn) {
      document.documentElement.dataset.drawn = '1';
      performance.mark('featcache-map-first-draw');
    }
  }

  /** Screen positions (CSS px) of every point, refreshed by each draw and kept for hovering. */
  function project() {
    const { scale, tx, ty } = view;
    for (let i = 0; i < n; i++) {
      sx[i] = data.x[i] * scale + tx;
      sy[i] = ty - data.y[i] * scale;
    }
  }

  function drawOverlay() {
    octx.setTransform(dpr, 0, 0, dpr, 0, 0);
    octx.clearRect(0, 0, overlay.width, overlay.height);
    if (hovered >= 0 && visible[hovered]) {
      octx.strokeStyle = '#ffffff';
      octx.lineWidth = 1.5;
      octx.beginPath();
      octx.arc(sx[hovered], sy[hovered], pointRadius() / dpr + 4, 0, Math.PI * 2);
      octx.stroke();
    }
    if (drag && (drag.kind === 'box' || drag.kind === 'lasso')) {
      octx.strokeStyle = '#6cb4ff';
      octx.fillStyle = 'rgba(108, 180, 255, 0.12)';
      octx.lineWidth = 1;
      octx.setLineDash([5, 4]);
      octx.beginPath();
      if (drag.kind === 'box') {
        octx.rect(drag.x0, drag.y0, drag.x1 - drag.x0, drag.y1 - drag.y0);
      } else {
        drag.points.forEach(([x, y], k) => (k ? octx.lineTo(x, y) : octx.moveTo(x, y)));
        octx.closePath();
      }
      octx.fill();
      octx.stroke();
      octx.setLineDash([]);
    }
  }

  /**
   * The points shown in full colour, the rest dimmed: Find's matches while the Find box holds a query (the latest
   * thing asked for: with a selection winning, typing would change nothing on the map), else the selection.
   */
  function focused() {
    if (matches) return matches;
    return selectedCount > 0 ? selected : null;
  }

  // ---- hovering -----------------------------------------------------------------------------------------------------

  function nearest(px, py) {
    const reach = Math.max(HOVER_REACH, pointRadius() / dpr + 3);
    let best = -1;
    let bestD = reach * reach;
    const focus = focused();
    for (let i = 0; i < n; i++) {
      if (!visible[i]) continue;
      const dx = sx[i] - px;
      const dy = sy[i] - py;
      let d = dx * dx + dy * dy;
      // Prefer what is drawn on top: focused points win ties against dimmed ones nearby.
      if (focus && !focus[i]) d *= 2;
      if (d < bestD) {
        bestD = d;
        best = i;
      }
    }
    return best;
  }

  function showTooltip(i, px, py) {
    tooltip.replaceChildren();
    const t = data.thumbs;
    const ti = t ? t.point[i] : -1;
    if (ti >= 0) {
      const size = t.size;
      const cell = t.cell[ti];
      const thumb = document.createElement('div');
      thumb.className = 'thumb';
      const url = t.dir + encodeURIComponent(t.sprites[t.sprite[ti]]);
      thumb.style.width = `${t.w[ti]}px`;
      thumb.style.height = `${t.h[ti]}px`;
      thumb.style.backgroundImage = `url("${url}")`;
      thumb.style.backgroundPosition = `${-(cell % t.cols) * size}px ${-Math.floor(cell / t.cols) * size}px`;
      thumb.dataset.sprite = t.sprites[t.sprite[ti]];
      thumb.dataset.cell = String(cell);
      // The background loads from the same URL; this copy only says when it is there (tests and slow disks).
      const probe = new Image();
      probe.onload = () => (thumb.dataset.loaded = '1');
      probe.onerror = () => (thumb.dataset.loaded = 'error');
      probe.src = url;
      tooltip.append(thumb);
    }
    addLine('path', data.paths[i]);
    const label = data.label[i];
    const labelName = label >= 0 ? data.classes[label] : 'unlabelled';
    const split = data.splits[data.split[i]];
    addLine('line label', `${labelName}${split !== undefined ? ` · ${split}` : ''}`);
    if (data.predictions) {
      const p = data.predictions.index[i];
      if (p >= 0) {
        const wrong = label >= 0 && p !== label;
        const right = label >= 0 && p === label;
        addLine(
          `line prediction${wrong ? ' wrong' : right ? ' right' : ''}`,
          `predicted ${data.classes[p] ?? p} (${data.predictions.probability[i].toFixed(3)})${wrong ? ' ✗' : right ? ' ✓' : ''}`,
        );
      }
    }
    if (data.audit) {
      const s = data.audit.score[i];
      addLine('line audit', Number.isFinite(s) ? `audit score ${s.toFixed(3)}` : 'audit: not scored');
      const flags = data.audit.flags[i] || [];
      if (flags.length) {
        const row = document.createElement('div');
        for (const f of flags) {
          const chip = document.createElement('span');
          chip.className = 'flag';
          chip.textContent = data.audit.flagNames[f] ?? String(f);
          row.append(chip);
        }
        tooltip.append(row);
      }
    }
    tooltip.hidden = false;
    tooltip.dataset.index = String(i);
    placeTooltip(px, py);
  }

  function placeTooltip(px, py) {
    const { w, h } = cssSize();
    const box = tooltip.getBoundingClientRect();
    let left = px + 16;
    let top = py + 16;
    if (left + box.width > w - 4) left = Math.max(4, px - box.width - 16);
    if (top + box.height > h - 4) top = Math.max(4, py - box.height - 16);
    tooltip.style.left = `${Math.round(left)}px`;
    tooltip.style.top = `${Math.round(top)}px`;
  }

  function addLine(className, text) {
    const div = document.createElement('div');
    div.className = className;
    div.textContent = text;
    tooltip.append(div);
  }

  function hideTooltip() {
    tooltip.hidden = true;
    delete tooltip.dataset.index;
  }

  function hover(px, py) {
    const i = nearest(px, py);
    if (i === hovered && i >= 0 && !tooltip.hidden) {
      placeTooltip(px, py);
      return;
    }
    hovered = i;
    drawOverlay();
    if (i >= 0) showTooltip(i, px, py);
    else hideTooltip();
  }

  // ---- selecting ----------------------------------------------------------------------------------------------------

  function selectWhere(inside, add) {
    if (!add) selected.fill(0);
    for (let i = 0; i < n; i++) if (visible[i] && inside(data.x[i], data.y[i])) selected[i] = 1;
    countSelection();
  }

  function selectBox(x0, y0, x1, y1, add) {
    const ax = Math.min(toDataX(x0), toDataX(x1));
    const bx = Math.max(toDataX(x0), toDataX(x1));
    const ay = Math.min(toDataY(y0), toDataY(y1));
    const by = Math.max(toDataY(y0), toDataY(y1));
    selectWhere((x, y) => x >= ax && x <= bx && y >= ay && y <= by, add);
  }

  function selectLasso(points, add) {
    const poly = points.map(([px, py]) => [toDataX(px), toDataY(py)]);
    const xs = poly.map((p) => p[0]);
    const ys = poly.map((p) => p[1]);
    const [ax, bx, ay, by] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    selectWhere((x, y) => x >= ax && x <= bx && y >= ay && y <= by && insidePolygon(poly, x, y), add);
  }

  /** Even-odd rule: a ray from (x, y) crosses the outline an odd number of times iff the point is inside. */
  function insidePolygon(poly, x, y) {
    let inside = false;
    for (let a = 0, b = poly.length - 1; a < poly.length; b = a++) {
      const [xa, ya] = poly[a];
      const [xb, yb] = poly[b];
      if (ya > y !== yb > y && x < ((xb - xa) * (y - ya)) / (yb - ya) + xa) inside = !inside;
    }
    return inside;
  }

  function countSelection() {
    let c = 0;
    for (let i = 0; i < n; i++) {
      if (selected[i] && !visible[i]) selected[i] = 0;
      c += selected[i];
    }
    selectedCount = c;
    $('selection-count').textContent = c
      ? `${c.toLocaleString()} selected.`
      : 'Nothing selected. Shift+drag a box, or Alt+drag a lasso.';
    $('export').disabled = c === 0;
    $('clear').disabled = c === 0;
    requestDraw();
  }

  function clearSelection() {
    selected.fill(0);
    countSelection();
  }

  /** Spreadsheets run cells that start with = + - @ tab or CR; a leading ' keeps them text (as featcache's CSVs do). */
  function csvCell(value) {
    let text = String(value);
    if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`;
    return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  }

  function selectionCsv() {
    const header = ['path', 'split', 'label'];
    if (data.predictions) header.push('prediction', 'probability');
    if (data.audit) header.push('audit_score', 'audit_flags');
    const lines = [header.join(',')];
    for (let i = 0; i < n; i++) {
      if (!selected[i]) continue;
      const label = data.label[i];
      const row = [data.paths[i], data.splits[data.split[i]] ?? '', label >= 0 ? data.classes[label] : ''];
      if (data.predictions) {
        const p = data.predictions.index[i];
        row.push(p >= 0 ? (data.classes[p] ?? p) : '', p >= 0 ? data.predictions.probability[i].toFixed(6) : '');
      }
      if (data.audit) {
        const s = data.audit.score[i];
        const flags = (data.audit.flags[i] || []).map((f) => data.audit.flagNames[f]);
        row.push(Number.isFinite(s) ? s.toFixed(6) : '', flags.join('; '));
      }
      lines.push(row.map(csvCell).join(','));
    }
    return `${lines.join('\n')}\n`;
  }

  function exportSelection() {
    if (!selectedCount) return;
    const blob = new Blob([selectionCsv()], { type: 'text/csv' });
    const url = URL.createObjectURL(blob);
    const a = document.createElement('a');
    a.href = url;
    a.download = `${slug(data.title)}-selection-${selectedCount}.csv`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  function slug(text) {
    return (
      String(text)
        .replace(/[^A-Za-z0-9._-]+/g, '-')
        .replace(/^-+|-+$/g, '')
        .slice(0, 60) || 'map'
    );
  }

  // ---- search -------------------------------------------------------------------------------------------------------

  function search(query) {
    const q = query.trim().toLowerCase();
    if (!q) {
      matches = null;
      matchCount = 0;
      $('search-count').textContent = '';
      $('select-matches').disabled = true;
      requestDraw();
      return;
    }
    if (!lowerPaths) lowerPaths = data.paths.map((p) => String(p).toLowerCase());
    matches = new Uint8Array(n);
    let c = 0;
    for (let i = 0; i < n; i++)
      if (lowerPaths[i].includes(q)) {
        matches[i] = 1;
        c++;
      }
    matchCount = c;
    $('search-count').textContent = `${c.toLocaleString()} path${c === 1 ? '' : 's'} match.`;
    $('select-matches').disabled = c === 0;
    requestDraw();
  }

  // ---- panel --------------------------------------------------------------------------------------------------------

  function renderColorButtons() {
    const box = $('colors');
    box.replaceChildren();
    const names = { label: 'Label', prediction: 'Prediction', audit: 'Audit' };
    const why = {
      prediction: 'No predictions in this map (give featcache map a head)',
      audit: 'No audit scores in this map (give featcache map an audit)',
    };
    for (const key of ['label', 'prediction', 'audit']) {
      const b = document.createElement('button');
      b.type = 'button';
      b.dataset.color = key;
      b.textContent = names[key];
      b.setAttribute('role', 'radio');
      b.setAttribute('aria-checked', String(key === mode));
      if (!modes[key]) {
        b.disabled = true;
        b.title = why[key];
      }
      b.addEventListener('click', () => setMode(key));
      box.append(b);
    }
  }

  function setMode(key) {
    if (!modes[key]) return;
    mode = key;
    for (const b of $('colors').children) b.setAttribute('aria-checked', String(b.dataset.color === key));
    renderLegend();
    refreshVisible();
  }

  function renderLegend() {
    const m = modes[mode];
    $('color-note').textContent = m.note;
    const list = $('legend');
    list.replaceChildren();
    m.entries.forEach((entry, c) => {
      if (entry.count === 0) return;
      const li = document.createElement('li');
      li.dataset.entry = String(c);
      li.classList.toggle('off', m.hidden[c] === 1);
      li.title = 'Click: hide/show · double-click: show only this';
      const swatch = document.createElement('span');
      swatch.className = 'swatch';
      swatch.style.background = cssColor(entry.color);
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = entry.name;
      const count = document.createElement('span');
      count.className = 'count';
      count.textContent = entry.count.toLocaleString();
      li.append(swatch, name, count);
      li.addEventListener('click', () => {
        m.hidden[c] ^= 1;
        li.classList.toggle('off', m.hidden[c] === 1);
        refreshVisible();
      });
      li.addEventListener('dblclick', () => {
        const solo = m.entries.every((e, k) => k === c || e.count === 0 || m.hidden[k] === 1) && !m.hidden[c];
        m.hidden.fill(solo ? 0 : 1);
        if (!solo) m.hidden[c] = 0;
        renderLegend();
        refreshVisible();
      });
      list.append(li);
    });
    if (m.extra) {
      const li = document.createElement('li');
      li.className = 'static';
      const swatch = document.createElement('span');
      swatch.className = 'swatch ring';
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = m.extra.name;
      const count = document.createElement('span');
      count.className = 'count';
      count.textContent = m.extra.count.toLocaleString();
      li.append(swatch, name, count);
      list.append(li);
    }
  }

  function renderSplits() {
    const box = $('splits');
    const counts = new Array(data.splits.length).fill(0);
    for (let i = 0; i < n; i++) counts[data.split[i]]++;
    if (data.splits.length < 2) {
      $('splits-section').hidden = true;
      return;
    }
    data.splits.forEach((name, s) => {
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = `${name} ${counts[s].toLocaleString()}`;
      b.title = 'Hide or show this split';
      b.addEventListener('click', () => {
        hiddenSplits[s] ^= 1;
        b.classList.toggle('off', hiddenSplits[s] === 1);
        refreshVisible();
      });
      box.append(b);
    });
  }

  function renderProvenance() {
    const dl = $('provenance');
    const entries = Object.entries(data.provenance);
    if (data.predictions) entries.push(['predictions', data.predictions.source]);
    if (data.audit) entries.push(['audit', data.audit.source]);
    for (const [key, value] of entries) {
      const dt = document.createElement('dt');
      dt.textContent = key;
      const dd = document.createElement('dd');
      dd.textContent = typeof value === 'string' ? value : JSON.stringify(value);
      dl.append(dt, dd);
    }
  }

  function renderSummary() {
    const parts = [plural(n, 'point'), plural(data.classes.length, 'class', 'classes')];
    if (data.thumbs) parts.push('hover for thumbnails');
    $('summary').textContent = parts.join(' · ');
  }

  function refreshVisible() {
    const shown = updateVisible();
    countSelection();
    const count = shown === n ? plural(n, 'point') : `${shown.toLocaleString()} of ${n.toLocaleString()} shown`;
    $('status').textContent = `${count} · hover for details · wheel to zoom · drag to pan · Shift+drag to select`;
    hideTooltip();
    hovered = -1;
    requestDraw();
  }

  function setMouseMode(next) {
    mouseMode = next;
    stage.dataset.mode = next;
    for (const b of $('modes').children) b.setAttribute('aria-checked', String(b.dataset.mode === next));
  }

  // ---- events -------------------------------------------------------------------------------------------------------

  function localPoint(event) {
    const r = overlay.getBoundingClientRect();
    return [event.clientX - r.left, event.clientY - r.top];
  }

  function onPointerDown(event) {
    if (event.button !== 0) return;
    const [px, py] = localPoint(event);
    const kind = event.shiftKey ? 'box' : event.altKey ? 'lasso' : mouseMode;
    drag = {
      kind,
      x0: px,
      y0: py,
      x1: px,
      y1: py,
      points: [[px, py]],
      view: { ...view },
      add: event.ctrlKey || event.metaKey,
      moved: false,
    };
    overlay.setPointerCapture(event.pointerId);
    stage.classList.add('dragging');
    hideTooltip();
    event.preventDefault();
  }

  function onPointerMove(event) {
    const [px, py] = localPoint(event);
    if (!drag) {
      hover(px, py);
      return;
    }
    drag.x1 = px;
    drag.y1 = py;
    drag.moved ||= Math.abs(px - drag.x0) + Math.abs(py - drag.y0) > 3;
    if (drag.kind === 'pan') {
      view = { scale: drag.view.scale, tx: drag.view.tx + px - drag.x0, ty: drag.view.ty + py - drag.y0 };
      requestDraw();
    } else {
      if (drag.kind === 'lasso') drag.points.push([px, py]);
      drawOverlay();
    }
  }

  function onPointerUp(event) {
    if (!drag) return;
    const d = drag;
    drag = null;
    stage.classList.remove('dragging');
    if (overlay.hasPointerCapture(event.pointerId)) overlay.releasePointerCapture(event.pointerId);
    if (d.kind === 'box' && d.moved) selectBox(d.x0, d.y0, d.x1, d.y1, d.add);
    else if (d.kind === 'lasso' && d.moved && d.points.length > 2) selectLasso(d.points, d.add);
    drawOverlay();
  }

  function onKey(event) {
    if (event.target instanceof HTMLInputElement) {
      if (event.key === 'Escape') {
        event.target.value = '';
        search('');
        event.target.blur();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const { w, h } = cssSize();
    const actions = {
      f: fit,
      p: () => setMouseMode('pan'),
      b: () => setMouseMode('box'),
      l: () => setMouseMode('lasso'),
      e: exportSelection,
      1: () => setMode('label'),
      2: () => setMode('prediction'),
      3: () => setMode('audit'),
      '+': () => zoomAt(w / 2, h / 2, 1.5),
      '=': () => zoomAt(w / 2, h / 2, 1.5),
      '-': () => zoomAt(w / 2, h / 2, 1 / 1.5),
      '/': () => $('search').focus(),
      Escape: () => {
        clearSelection();
        $('search').value = '';
        search('');
      },
    };
    const action = actions[event.key];
    if (action) {
      event.preventDefault();
      action();
    }
  }

  function setUp() {
    renderSummary();
    renderColorButtons();
    renderLegend();
    renderSplits();
    renderProvenance();
    setMouseMode('pan');
    resize();
    refreshVisible();
    fit();

    overlay.addEventListener('pointerdown', onPointerDown);
    overlay.addEventListener('pointermove', onPointerMove);
    overlay.addEventListener('pointerup', onPointerUp);
    overlay.addEventListener('pointercancel', onPointerUp);
    overlay.addEventListener('pointerleave', () => {
      if (drag) return;
      hovered = -1;
      hideTooltip();
      drawOverlay();
    });
    overlay.addEventListener(
      'wheel',
      (event) => {
        event.preventDefault();
        const [px, py] = localPoint(event);
        const delta = event.deltaMode === 1 ? event.deltaY * 16 : event.deltaY;
        zoomAt(px, py, Math.exp(-delta * 0.0015));
        hideTooltip();
      },
      { passive: false },
    );
    overlay.addEventListener('dblclick', (event) => {
      const [px, py] = localPoint(event);
      zoomAt(px, py, 2);
    });
    for (const b of $('modes').children) b.addEventListener('click', () => setMouseMode(b.dataset.mode));
    $('fit').addEventListener('click', fit);
    $('zoom-in').addEventListener('click', () => zoomAt(cssSize().w / 2, cssSize().h / 2, 1.5));
    $('zoom-out').addEventListener('click', () => zoomAt(cssSize().w / 2, cssSize().h / 2, 1 / 1.5));
    $('export').addEventListener('click', exportSelection);
    $('clear').addEventListener('click', clearSelection);
    $('select-matches').addEventListener('click', () => {
      if (!matches) return;
      selected.fill(0);
      for (let i = 0; i < n; i++) if (matches[i] && visible[i]) selected[i] = 1;
      countSelection();
    });
    let searchTimer = 0;
    $('search').addEventListener('input', (event) => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => search(event.target.value), n > 20000 ? 150 : 0);
    });
    document.addEventListener('keydown', onKey);
    let resizeTimer = 0;
    window.addEventListener('resize', () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => {
        resize();
        requestDraw();
      }, 60);
    });
  }

  // ---- a read-only window onto the drawn state, for tests and benchmarks ---------------------------------------------

  Object.defineProperty(window, 'featcacheMap', {
    value: Object.freeze({
      /** What the last frame drew: mode, points drawn, the indices outlined as wrong predictions, frame time. */
      lastFrame: () => ({
        mode: lastFrame.mode,
        drawn: lastFrame.drawn,
        dimmed: lastFrame.dimmed,
        outlined: Array.from(lastFrame.outlined.subarray(0, lastFrame.outlinedCount)),
        ms: lastFrame.ms,
      }),
      /** Draw times (ms) of recent frames, oldest first. */
      frameTimes: () => frameTimes.slice(),
      /** Where data point (x, y) is on the page, in CSS pixels relative to the viewport. */
      toClient: (x, y) => {
        const r = overlay.getBoundingClientRect();
        return [r.left + toScreenX(x), r.top + toScreenY(y)];
      },
      /** Where point i is drawn, in CSS pixels relative to the viewport. */
      pointClient: (i) => {
        const r = overlay.getBoundingClientRect();
        return [r.left + toScreenX(data.x[i]), r.top + toScreenY(data.y[i])];
      },
      selectedCount: () => selectedCount,
      matchCount: () => matchCount,
      count: n,
    }),
  });
})();
