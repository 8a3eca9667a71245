#!/usr/bin/env node
// The import graph of src/, checked: no cycle, no upward import between the pipeline's layers, and the two wings of
// head/ (probe, minibatch) share no import. Run by `npm run check:imports` in CI; exits 1 listing each violation.
// Reads the TypeScript sources with TypeScript's own parser. Layers and wings count every import, type-only and dynamic
// ones too; cycles count the imports that exist at run time (a type-only import is erased by tsc and cannot make an
// initialisation-order bug), which lets a light module such as jobs/defaults.ts name the option types it fills in.
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

const SRC = path.resolve(import.meta.dirname, '..', 'src');

/**
 * The layers, bottom first: a file may import its own layer or any below it, never one above. A folder not listed
 * here is an error, so a new folder is placed on purpose.
 */
const LAYERS = [
  ['errors.ts', 'version.ts', 'onnx'],
  ['util'],
  ['dataset'],
  ['image'],
  ['backbone'],
  ['fetch'],
  ['store'],
  ['head'],
  ['neighbors'],
  ['audit'],
  ['map'],
  ['export'],
  ['serve'],
  ['jobs'],
  ['cli'],
  ['cli.ts', 'index.ts'],
];

/** Parts of one layer that must not import each other (the head's two solvers meet only in its core). */
const APART = [['head/probe', 'head/minibatch']];

/** Inside a layer, a core that the named parts build on and must not reach back into. */
const CORES = [{ core: 'head', wings: ['head/probe', 'head/minibatch'] }];

const rel = (file) => path.relative(SRC, file).split(path.sep).join('/');
const top = (r) => (r.includes('/') ? r.slice(0, r.indexOf('/')) : r);
const layerOf = (r) => LAYERS.findIndex((names) => names.includes(top(r)));
const within = (r, dir) => r.startsWith(`${dir}/`);

function sourceFiles(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    return e.name.endsWith('.ts') ? [p] : [];
  });
}

/** Relative specifiers this file imports or re-exports, statically or with import(), and whether each is type-only. */
function specifiers(file) {
  const source = ts.createSourceFile(file, fs.readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
  const found = [];
  const visit = (node) => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier)
      found.push({ spec: node.moduleSpecifier.text, typeOnly: isTypeOnly(node) });
    else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
      const [arg] = node.arguments;
      if (arg && ts.isStringLiteralLike(arg)) found.push({ spec: arg.text, typeOnly: false });
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found.filter((f) => f.spec.startsWith('.'));
}

/** `import type {…}`, `export type {…}`, or an import whose every named binding is `type`. */
function isTypeOnly(node) {
  if (ts.isExportDeclaration(node)) return node.isTypeOnly;
  const clause = node.importClause;
  if (!clause) return false;
  if (clause.isTypeOnly) return true;
  const named = clause.namedBindings;
  return (
    !clause.name &&
    named !== undefined &&
    ts.isNamedImports(named) &&
    named.elements.length > 0 &&
    named.elements.every((e) => e.isTypeOnly)
  );
}

/** The src/ file a specifier names, 'outside' for package files (package.json), or null if there is none. */
function resolve(from, spec) {
  const target = path.resolve(path.dirname(from), spec).replace(/\.js$/, '.ts');
  if (!target.startsWith(`${SRC}${path.sep}`)) return 'outside';
  if (fs.existsSync(target)) return target;
  if (fs.existsSync(path.join(target, 'index.ts'))) return path.join(target, 'index.ts');
  return null;
}

const files = sourceFiles(SRC);
const graph = new Map(files.map((f) => [rel(f), []]));
const problems = [];

for (const file of files) {
  const from = rel(file);
  if (layerOf(from) < 0) problems.push(`${from}: folder ${top(from)}/ has no layer in scripts/check-imports.mjs`);
  for (const { spec, typeOnly } of specifiers(file)) {
    const resolved = resolve(file, spec);
    if (!resolved) {
      problems.push(`${from}: cannot resolve ${spec}`);
      continue;
    }
    if (resolved === 'outside') continue;
    const to = rel(resolved);
    if (!typeOnly) graph.get(from).push(to);
    if (layerOf(to) > layerOf(from))
      problems.push(`${from} → ${to}: upward import (${top(from)} sits below ${top(to)})`);
    for (const [a, b] of APART)
      if ((within(from, a) && within(to, b)) || (within(from, b) && within(to, a)))
        problems.push(`${from} → ${to}: ${a} and ${b} share no import`);
    for (const { core, wings } of CORES)
      if (within(from, core) && !wings.some((w) => within(from, w)) && wings.some((w) => within(to, w)))
        problems.push(`${from} → ${to}: the ${core}/ core imports a wing`);
  }
}

// Cycles: Tarjan's strongly connected components; any component of two or more files is a cycle.
let index = 0;
const order = new Map();
const low = new Map();
const stack = [];
const onStack = new Set();
function connect(v) {
  order.set(v, index);
  low.set(v, index++);
  stack.push(v);
  onStack.add(v);
  for (const w of graph.get(v) ?? []) {
    if (!order.has(w)) {
      connect(w);
      low.set(v, Math.min(low.get(v), low.get(w)));
    } else if (onStack.has(w)) low.set(v, Math.min(low.get(v), order.get(w)));
  }
  if (low.get(v) === order.get(v)) {
    const component = [];
    let w;
    do {
      w = stack.pop();
      onStack.delete(w);
      component.push(w);
    } while (w !== v);
    if (component.length > 1 || graph.get(v).includes(v)) problems.push(`cycle: ${component.sort().join(' ↔ ')}`);
  }
}
for (const v of graph.keys()) if (!order.has(v)) connect(v);

const edges = [...graph.values()].reduce((n, targets) => n + targets.length, 0);
if (problems.length > 0) {
  for (const p of problems) process.stderr.write(`check-imports: ${p}\n`);
  process.stderr.write(`check-imports: ${problems.length} problem(s) in ${files.length} files\n`);
  process.exit(1);
}
process.stdout.write(
  `check-imports: ${files.length} files, ${edges} imports: no cycle, no upward import, wings apart\n`,
);
