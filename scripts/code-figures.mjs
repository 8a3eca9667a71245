#!/usr/bin/env node
// Size figures of src/ for refactoring notes: files and lines per folder, functions longer than a limit, and lines
// wider than Prettier's print width. Prints JSON; `--long` also lists each long function (file:line name lines).
// Functions are every declaration, method, accessor, constructor, arrow and function expression, counted from the
// line of their start to the line of their end, with TypeScript's own parser so that strings and comments cannot
// confuse the count.
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

const ROOT = path.resolve(import.meta.dirname, '..');
const SRC = path.join(ROOT, 'src');
const FUNCTION_LIMIT = 60;
const WIDTH = JSON.parse(fs.readFileSync(path.join(ROOT, '.prettierrc.json'), 'utf8')).printWidth ?? 80;

function sourceFiles(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    return e.name.endsWith('.ts') ? [p] : [];
  });
}

function functionName(node) {
  if (node.name) return node.name.getText();
  const parent = node.parent;
  if (parent && ts.isVariableDeclaration(parent)) return parent.name.getText();
  if (parent && ts.isPropertyAssignment(parent)) return parent.name.getText();
  if (ts.isConstructorDeclaration(node)) return 'constructor';
  return '(anonymous)';
}

function longFunctions(file, text) {
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const found = [];
  const visit = (node) => {
    if (ts.isFunctionLike(node) && 'body' in node && node.body) {
      const start = source.getLineAndCharacterOfPosition(node.getStart(source)).line;
      const end = source.getLineAndCharacterOfPosition(node.getEnd()).line;
      const lines = end - start + 1;
      if (lines > FUNCTION_LIMIT) found.push({ line: start + 1, name: functionName(node), lines });
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

const folders = {};
const long = [];
let totalLines = 0;
let wide = 0;
for (const file of sourceFiles(SRC).sort()) {
  const rel = path.relative(SRC, file).split(path.sep).join('/');
  const folder = rel.includes('/') ? rel.slice(0, rel.lastIndexOf('/')) : '.';
  const text = fs.readFileSync(file, 'utf8');
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  const entry = (folders[folder] ??= { files: 0, lines: 0 });
  entry.files += 1;
  entry.lines += lines.length;
  totalLines += lines.length;
  wide += lines.filter((l) => l.length > WIDTH).length;
  for (const f of longFunctions(file, text)) long.push({ file: rel, ...f });
}

const figures = {
  folders,
  files: Object.values(folders).reduce((n, f) => n + f.files, 0),
  lines: totalLines,
  functionsOver: { limit: FUNCTION_LIMIT, count: long.length },
  linesOver: { width: WIDTH, count: wide, share: Number((wide / totalLines).toFixed(4)) },
};
if (process.argv.includes('--long'))
  figures.functionsOver.list = long.map((f) => `${f.file}:${f.line} ${f.name} ${f.lines}`);
console.log(JSON.stringify(figures, null, 2));
