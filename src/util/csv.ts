/**
 * One text cell of a CSV featcache writes. Quoted when it holds a quote, comma or line break (RFC 4180); a cell that
 * starts with = + - @, tab or CR is prefixed with ' (OWASP's advice against spreadsheet formula injection), since paths
 * and labels come from files and URLs anyone may name. Numbers are written as numbers, never through this.
 */
export function csvText(text: string): string {
  const safe = /^[=+\-@\t\r]/.test(text) ? `'${text}` : text;
  return /[",\n\r]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
}

/**
 * A text cell as csvText wrote it, read back: the ' that csvText puts before a leading = + - @, tab or CR is taken
 * off, so featcache's own CSVs (audit --labels-out) feed back into featcache unchanged. (A cell that really starts
 * with ' and one of those characters reads one ' short: the price of the injection guard.)
 */
export function csvTextValue(cell: string): string {
  return /^'[=+\-@\t\r]/.test(cell) ? cell.slice(1) : cell;
}
