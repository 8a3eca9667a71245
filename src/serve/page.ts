/**
 * The page `GET /` serves: drop or pick images, each is POSTed to /predict as raw bytes and shown as a thumbnail
 * with its top-k as bars. Self-contained (no external scripts, styles or fonts), so it works offline and under a
 * strict Content-Security-Policy of 'self' plus inline.
 */
import { escapeHtml } from '../util/html.js';

export interface PageInfo {
  title: string;
  classes: string[];
  provenance: string;
  top: number;
}

export function servePage(info: PageInfo): string {
  const config = JSON.stringify({ top: info.top }).replace(/</g, '\\u003c');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${escapeHtml(info.title)}</title>
<style>
body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:20px;margin:0 0 4px} .muted{color:#777;font-size:12px}
#drop{border:2px dashed #aaa;border-radius:8px;padding:28px;text-align:center;margin:16px 0;cursor:pointer}
#drop.over{border-color:#2a7;background:#f3fbf6}
#results{display:flex;flex-wrap:wrap;gap:14px}
.card{width:240px;border:1px solid #ddd;border-radius:6px;padding:8px}
.card img{width:224px;height:224px;object-fit:cover;border-radius:4px;display:block;margin:0 auto 6px}
.name{font-size:12px;color:#555;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.row{display:flex;align-items:center;gap:6px;margin:3px 0;font-size:13px}
.label{width:90px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.bar{flex:1;background:#eee;height:12px;border-radius:3px;overflow:hidden}
.bar span{display:block;height:100%;background:#3a8}
.p{width:44px;text-align:right;font-variant-numeric:tabular-nums}
.error{color:#b00;font-size:13px}
</style></head><body>
<h1>${escapeHtml(info.title)}</h1>
<div class="muted">${escapeHtml(info.classes.length + ' classes: ' + info.classes.slice(0, 20).join(', ') + (info.classes.length > 20 ? ', …' : ''))}</div>
<div class="muted">${escapeHtml(info.provenance)}</div>
<label id="drop">Drop images here, or click to pick files
<input id="file" type="file" accept="image/*" multiple hidden></label>
<div id="results"></div>
<script>
const config = ${config};
const drop = document.getElementById('drop');
const input = document.getElementById('file');
const results = document.getElementById('results');
function el(tag, cls, text) { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; }
async function classify(file) {
  const card = el('div', 'card');
  card.dataset.file = file.name;
  const img = el('img'); img.alt = file.name; img.src = URL.createObjectURL(file);
  card.append(img, el('div', 'name', file.name));
  const out = el('div', 'out', 'classifying…');
  card.append(out);
  results.prepend(card);
  try {
    const response = await fetch('predict?top=' + config.top, { method: 'POST', headers: { 'content-type': file.type || 'application/octet-stream' }, body: file });
    const body = await response.json();
    out.textContent = '';
    if (!response.ok) { out.className = 'error'; out.textContent = body.error || ('HTTP ' + response.status); card.dataset.status = 'error'; return; }
    for (const t of body.top) {
      const row = el('div', 'row');
      const bar = el('div', 'bar'); const fill = el('span'); fill.style.width = (100 * t.probability).toFixed(1) + '%'; bar.append(fill);
      row.append(el('span', 'label', t.label), bar, el('span', 'p', t.probability.toFixed(3)));
      out.append(row);
    }
    card.dataset.top = body.top[0].label;
    card.dataset.status = 'done';
  } catch (error) {
    out.className = 'error'; out.textContent = String(error); card.dataset.status = 'error';
  }
}
function handle(files) { for (const f of files) classify(f); }
input.addEventListener('change', () => { handle(input.files); input.value = ''; });
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => { e.preventDefault(); drop.classList.remove('over'); handle(e.dataTransfer.files); });
</script>
</body></html>
`;
}
