/** Minimal helpers for the self-contained HTML pages featcache writes (training curves, prediction reports). */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** Marks a page as featcache's, so a later run may replace it (and only then). */
export const GENERATOR_META = '<meta name="generator" content="featcache">';

export function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">${GENERATOR_META}<title>${escapeHtml(title)}</title>
<style>
body{font:14px system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px} table{border-collapse:collapse;margin:12px 0} td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f4f4f4} .grid{display:flex;flex-wrap:wrap;gap:12px} figure{margin:0;width:224px}
figure img{width:224px;height:224px;object-fit:cover;border-radius:4px} figcaption{font-size:13px;margin-top:4px}
.wrong{color:#b00} .muted{color:#777}
</style></head><body>
<h1>${escapeHtml(title)}</h1>
${body}
</body></html>
`;
}
