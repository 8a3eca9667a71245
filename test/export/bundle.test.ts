import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openBackbone } from '../../src/backbone/index.js';
import { decodeModel } from '../../src/backbone/graph.js';
import { predict } from '../../src/jobs/predict.js';
import {
  METADATA_KEYS,
  PROBABILITIES_OUTPUT,
  bundleMetadataOf,
  openBundle,
  readHeadFiles,
} from '../../src/export/bundle.js';
import { bundle } from '../../src/jobs/bundle.js';
import { decodeToRgb, writeNormalised } from '../../src/image/preprocess.js';
import { DEFAULT_IMAGE_POLICY, PRESETS } from '../../src/image/presets.js';
import { applyNormalization } from '../../src/head/normalize.js';
import {
  hymenoptera,
  mobilenetModel,
  needsShared,
  resnetModel,
  runCli,
  tempDir,
  writeImage,
  writeTinyModel,
} from '../support/helpers.js';
import { writeTestHead } from '../serve/heads.js';

const preset = PRESETS.torchvision!;

async function pixelsOf(files: string[]): Promise<Float32Array> {
  const out = new Float32Array(files.length * 3 * preset.crop * preset.crop);
  for (const [i, f] of files.entries())
    writeNormalised(await decodeToRgb(f, preset, DEFAULT_IMAGE_POLICY), preset, 'NCHW', out, i);
  return out;
}

/** The head computed independently in float64 from the backbone's features: normalise, dense layers, softmax(z / T). */
async function reference(
  model: string,
  tap: string,
  headDir: string,
  pixels: Float32Array,
  count: number,
): Promise<Float64Array> {
  const head = await readHeadFiles(headDir);
  const backbone = await openBackbone(model, { tap, device: { kind: 'cpu' }, threads: 1 });
  const features = applyNormalization(
    head.info.normalization,
    await backbone.extract(pixels.slice(), count, preset.crop),
    count,
    backbone.dim,
  );
  await backbone.close();
  const t = head.info.temperature ?? 1;
  const k = head.info.classes.length;
  const out = new Float64Array(count * k);
  for (let r = 0; r < count; r++) {
    let x: number[] = Array.from(features.subarray(r * backbone.dim, (r + 1) * backbone.dim));
    head.layers.forEach((l, li) => {
      const y = Array.from(l.bias, Number);
      for (let i = 0; i < l.shape[0]; i++)
        for (let j = 0; j < l.shape[1]; j++) y[j]! += x[i]! * l.kernel[i * l.shape[1] + j]!;
      x = li + 1 < head.layers.length ? y.map((v) => Math.max(0, v)) : y;
    });
    const m = Math.max(...x);
    const e = x.map((v) => Math.exp((v - m) / t));
    const s = e.reduce((a, b) => a + b, 0);
    e.forEach((v, j) => (out[r * k + j] = v / s));
  }
  return out;
}

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** predict()'s probabilities for every class, in class order, rows in file order. */
async function predictAll(files: string[], head: string, classes: string[]): Promise<Float64Array> {
  const result = await predict({
    inputs: files,
    head,
    top: classes.length,
    batchSize: 4,
    device: 'cpu',
    threads: 0,
    backend: 'cpu',
  });
  const out = new Float64Array(files.length * classes.length);
  result.predictions.forEach((p, r) => {
    assert.equal(p.error, undefined);
    for (const t of p.top) out[r * classes.length + classes.indexOf(t.label)] = t.probability;
  });
  return out;
}

describe('bundle: tiny backbone, every head shape', () => {
  let dir: string;
  let model: string;
  let files: string[];
  before(async () => {
    dir = await tempDir();
    model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    files = [];
    for (let i = 0; i < 5; i++) {
      files.push(path.join(dir, `img${i}.png`));
      await writeImage(files[i]!, i * 13 + 2, { format: 'png', width: 60 + i * 7, height: 50 });
    }
  });
  after(() => fs.rm(dir, { recursive: true, force: true }));

  const cases = [
    { normalization: 'none', scale: 2 },
    { normalization: 'l2', scale: 4, temperature: 1.7 },
    { normalization: 'standard', hidden: 8, scale: 1.5 },
    { normalization: 'standard', hidden: 5, temperature: 0.6, scale: 1 },
  ] as const;
  for (const c of cases) {
    it(`matches an independent float64 head within 1e-5: ${JSON.stringify(c)}`, async () => {
      const head = path.join(dir, `head-${c.normalization}-${'hidden' in c ? c.hidden : 0}`);
      await writeTestHead(head, { model, tappedTensor: 'pooled', dim: 3, classes: ['a', 'b', 'c', 'd'], ...c });
      const out = path.join(dir, `${path.basename(head)}.onnx`);
      const result = await bundle({ head, out });
      assert.equal(result.metadata.provenance.head.temperature, 'temperature' in c ? c.temperature : 1);
      const pixels = await pixelsOf(files);
      const expected = await reference(model, 'pooled', head, pixels, files.length);
      const opened = await openBundle(out);
      const got = await opened.predict(pixels.slice(), files.length);
      await opened.close();
      assert.ok(maxAbs(got, expected) < 1e-5, `max abs ${maxAbs(got, expected)}`);
      assert.ok(
        Math.max(...got) - Math.min(...got) > 0.05,
        'probabilities are not all equal: the test can tell heads apart',
      );
      // predict (the head applied in featcache) and the bundle agree, with a temperature or without one.
      const viaPredict = await predictAll(files, head, ['a', 'b', 'c', 'd']);
      assert.ok(maxAbs(got, viaPredict) < 1e-5, `vs predict: max abs ${maxAbs(got, viaPredict)}`);
    });
  }

  it("classes that do not sort as strings ('0'…'10', WebDataset's integers): the bundle's labels are predict's", async () => {
    const head = path.join(dir, 'head-eleven');
    // Training order: numeric. As strings '10' sorts before '2', so a sorted copy would shift 2…10 by one.
    const classes = Array.from({ length: 11 }, (_, i) => String(i));
    await writeTestHead(head, {
      model,
      tappedTensor: 'pooled',
      dim: 3,
      classes,
      normalization: 'l2',
      scale: 6,
      temperature: 1.3,
      seed: 11,
    });
    const out = path.join(dir, 'eleven.onnx');
    const result = await bundle({ head, out });
    assert.deepEqual(result.metadata.classes, classes, "metadata lists the classes in the head's order");
    const props = Object.fromEntries(
      (decodeModel(new Uint8Array(await fs.readFile(out)), out).metadataProps ?? []).map((m) => [m.key, m.value]),
    );
    assert.deepEqual(JSON.parse(props[METADATA_KEYS.classes] as string), classes);
    // Label → probability from predict on the head, and from predict on the bundle (labels from its metadata).
    const expected = await predictAll(files, head, classes);
    const viaBundle = await predict({
      inputs: files,
      head: path.join(dir, 'no-such-head'),
      model: out,
      top: 11,
      device: 'cpu',
      backend: 'cpu',
    });
    assert.equal(viaBundle.failed, 0);
    const labelled = new Float64Array(files.length * 11);
    viaBundle.predictions.forEach((p, r) => {
      assert.equal(p.top.length, 11);
      for (const t of p.top) labelled[r * 11 + classes.indexOf(t.label)] = t.probability;
    });
    assert.ok(maxAbs(labelled, expected) < 1e-5, `by label: max abs ${maxAbs(labelled, expected)}`);
    assert.ok(Math.max(...expected) - Math.min(...expected) > 0.05, 'the classes get different probabilities');
    // And the bundle's own outputs, column by column, are the head's reference in the head's class order.
    const pixels = await pixelsOf(files);
    const opened = await openBundle(out);
    assert.deepEqual(opened.classes, classes);
    const got = await opened.predict(pixels.slice(), files.length);
    await opened.close();
    const reference11 = await reference(model, 'pooled', head, pixels, files.length);
    assert.ok(maxAbs(got, reference11) < 1e-5, `vs reference: ${maxAbs(got, reference11)}`);
  });

  it('predict --model accepts a bundle directly (library and CLI), without reading --head', async () => {
    const head = path.join(dir, 'head-predict');
    const classes = ['a', 'b', 'c'];
    await writeTestHead(head, {
      model,
      tappedTensor: 'pooled',
      dim: 3,
      classes,
      normalization: 'standard',
      hidden: 4,
      scale: 2,
    });
    const out = path.join(dir, 'predict.onnx');
    await bundle({ head, out });
    const expected = await predictAll(files, head, classes);
    const viaBundle = await predict({
      inputs: files,
      head: path.join(dir, 'no-such-head'),
      model: out,
      top: 3,
      device: 'cpu',
      backend: 'cpu',
    });
    assert.equal(viaBundle.failed, 0);
    viaBundle.predictions.forEach((p, r) => {
      for (const t of p.top)
        assert.ok(Math.abs(t.probability - expected[r * 3 + classes.indexOf(t.label)]!) < 1e-5, `${p.path} ${t.label}`);
    });
    const cli = await runCli([
      'predict',
      ...files.slice(0, 2),
      '--model',
      out,
      '--head',
      path.join(dir, 'no-such-head'),
      '--device',
      'cpu',
      '--json',
    ]);
    assert.equal(cli.code, 0, cli.stderr);
    const lines = cli.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.deepEqual(
      lines.map((l) => l.top[0].label),
      viaBundle.predictions.slice(0, 2).map((p) => p.top[0]!.label),
    );
  });

  it('featcache bundle on the command line: JSON summary, and errors that name the flag', async () => {
    const head = path.join(dir, 'head-cli');
    await writeTestHead(head, { model, tappedTensor: 'pooled', dim: 3, classes: ['x', 'y'], normalization: 'l2' });
    const out = path.join(dir, 'cli.onnx');
    const ok = await runCli(['bundle', '--head', head, '--out', out, '--json']);
    assert.equal(ok.code, 0, ok.stderr);
    const summary = JSON.parse(ok.stdout);
    assert.deepEqual(summary.classes, ['x', 'y']);
    assert.equal(summary.out, out);
    assert.equal(summary.bytes, (await fs.stat(out)).size);
    const again = await runCli(['bundle', '--head', head, '--out', out]);
    assert.equal(again.code, 0, `a bundle it wrote may be replaced: ${again.stderr}`);
    const bad = await runCli(['bundle', '--head', head, '--out', path.join(dir, 'cli.bin')]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--out: expected a file name ending in \.onnx/);
    const noHead = await runCli(['bundle', '--head', path.join(dir, 'missing'), '--out', path.join(dir, 'm.onnx')]);
    // The one head reader's wording (head/saved.ts), as predict says it; the exit code of a usage slip.
    assert.equal(noHead.code, 2);
    assert.match(noHead.stderr, /--head .*missing: no head\.json here; train one with 'featcache train-head/);
  });

  it('writes classes, preprocessing and provenance into metadata_props, readable without featcache', async () => {
    const head = path.join(dir, 'head-meta');
    await writeTestHead(head, { model, tappedTensor: 'pooled', dim: 3, classes: ['cat', 'dog'], normalization: 'l2' });
    const out = path.join(dir, 'meta.onnx');
    await bundle({ head, out });
    const proto = decodeModel(await fs.readFile(out), out);
    const props = Object.fromEntries((proto.metadataProps ?? []).map((p) => [p.key, p.value]));
    assert.deepEqual(JSON.parse(props[METADATA_KEYS.classes]), ['cat', 'dog']);
    const pre = JSON.parse(props[METADATA_KEYS.preprocessing]);
    assert.equal(pre.preset.resizeShorter, 256);
    assert.deepEqual(pre.preset.mean, [0.485, 0.456, 0.406]);
    assert.equal(pre.input.layout, 'NCHW');
    assert.equal(pre.policy.exif, 'ignore');
    const prov = JSON.parse(props[METADATA_KEYS.provenance]);
    const sha = (await readHeadFiles(head)).info.provenance.modelSha256;
    assert.equal(prov.backbone.sha256, sha);
    assert.match(prov.head.id, /^[0-9a-f]{64}$/);
    assert.ok(prov.versions.onnxruntime);
    assert.deepEqual(
      proto.graph!.output!.map((o) => o.name),
      [PROBABILITIES_OUTPUT, 'logits'],
    );
    assert.notEqual(bundleMetadataOf(proto, out), null);
  });

  it("refuses to replace a file it did not write, and a backbone that is not the head's", async () => {
    const head = path.join(dir, 'head-refuse');
    await writeTestHead(head, { model, tappedTensor: 'pooled', dim: 3, classes: ['a', 'b'], normalization: 'none' });
    const precious = path.join(dir, 'precious.onnx');
    await fs.writeFile(precious, 'not mine');
    await assert.rejects(bundle({ head, out: precious }), /precious\.onnx exists and is not a featcache bundle/);
    assert.equal(await fs.readFile(precious, 'utf8'), 'not mine');
    const other = await writeTinyModel(path.join(dir, 'other.onnx'), { pool: 'ReduceMean13' });
    await assert.rejects(
      bundle({ head, out: path.join(dir, 'x.onnx'), model: other }),
      /sha256 .* not the backbone the head/,
    );
    await assert.rejects(bundle({ head, out: path.join(dir, 'x.txt') }), /out: expected a file name ending in \.onnx/);
    await assert.rejects(bundle({ head: path.join(dir, 'nohead'), out: path.join(dir, 'y.onnx') }), /no head\.json/);
    await assert.rejects(openBundle(model), /not a featcache bundle/);
  });
});

describe('bundle: real backbones equal predict', () => {
  let dir: string;
  let files: string[];
  before(async () => {
    dir = await tempDir();
    if (needsShared(hymenoptera)) return; // each test below skips, saying why
    files = (await fs.readdir(path.join(hymenoptera, 'val/ants')))
      .sort()
      .slice(0, 2)
      .map((f) => path.join(hymenoptera, 'val/ants', f));
    files.push(
      ...(await fs.readdir(path.join(hymenoptera, 'val/bees')))
        .sort()
        .slice(0, 2)
        .map((f) => path.join(hymenoptera, 'val/bees', f)),
    );
  });
  after(() => fs.rm(dir, { recursive: true, force: true }));

  it(
    'ResNet50 fixture, standard normalisation and a hidden layer: within 1e-5 of predict',
    { skip: needsShared(resnetModel, hymenoptera) },
    async () => {
      const head = path.join(dir, 'resnet-head');
      const classes = ['ants', 'bees', 'wasps'];
      await writeTestHead(head, {
        model: resnetModel,
        tappedTensor: '/avgpool/GlobalAveragePool_output_0',
        dim: 2048,
        classes,
        normalization: 'standard',
        hidden: 16,
        scale: 1,
      });
      const out = path.join(dir, 'resnet.onnx');
      await bundle({ head, out });
      const expected = await predictAll(files, head, classes);
      const opened = await openBundle(out);
      const got = await opened.predict(await pixelsOf(files), files.length);
      await opened.close();
      assert.ok(maxAbs(got, expected) < 1e-5, `max abs ${maxAbs(got, expected)}`);
      assert.ok(
        Math.min(...got) < 0.9 * Math.max(...got) && Math.max(...got) < 0.999,
        `probabilities informative: ${Array.from(got, (v) => v.toFixed(3)).join(',')}`,
      );
    },
  );

  it(
    'MobileNetV2-int8, l2 normalisation: within 1e-5 of predict, and the same file in onnxruntime-web (wasm) within 1e-4',
    { skip: needsShared(mobilenetModel, hymenoptera) },
    async () => {
      const head = path.join(dir, 'mobilenet-head');
      const classes = ['ants', 'bees'];
      await writeTestHead(head, {
        model: mobilenetModel,
        tappedTensor: '464_quantized',
        dim: 1280,
        classes,
        normalization: 'l2',
        scale: 6,
      });
      const out = path.join(dir, 'mobilenet.onnx');
      await bundle({ head, out });
      const expected = await predictAll(files, head, classes);
      const pixels = await pixelsOf(files);
      const opened = await openBundle(out);
      const got = await opened.predict(pixels.slice(), files.length);
      await opened.close();
      assert.ok(maxAbs(got, expected) < 1e-5, `max abs ${maxAbs(got, expected)}`);
      assert.ok(Math.max(...got) < 0.999, 'probabilities not saturated');

      const ortWeb = await import('onnxruntime-web');
      ortWeb.env.wasm.numThreads = 1;
      const session = await ortWeb.InferenceSession.create(new Uint8Array(await fs.readFile(out)), {
        executionProviders: ['wasm'],
      });
      const result = await session.run({ input: new ortWeb.Tensor('float32', pixels, [files.length, 3, 224, 224]) });
      const web = result[PROBABILITIES_OUTPUT]!.data as Float32Array;
      await session.release();
      assert.ok(maxAbs(web, got) < 1e-4, `onnxruntime-web vs node: max abs ${maxAbs(web, got)}`);
    },
  );
});
