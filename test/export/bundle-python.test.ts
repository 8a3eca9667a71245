/**
 * README's Python snippet for classifier.onnx (onnxruntime + Pillow, preprocessing read from the file), run verbatim
 * on every hymenoptera val image, against `featcache predict --model classifier.onnx` on the same images.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { hymenoptera, mobilenetModel, needsShared, runCli, tempDir } from '../support/helpers.js';
import { pythonEnv } from '../support/python-venv.js';
import { README_PYTHON, readmeBlock, runPythonBlockEach } from '../support/readme.js';
import { writeTestHead } from '../serve/heads.js';

const py = await pythonEnv();

interface Prediction {
  path: string;
  top: { label: string; probability: number }[];
}

describe('README: classifier.onnx from Python (onnxruntime + Pillow) agrees with featcache predict', () => {
  let dir: string;
  let images: string[];
  let classes: string[];
  let predicted: Map<string, Map<string, number>>;
  const skip = needsShared(mobilenetModel, hymenoptera) || py.needs('onnxruntime', 'PIL', 'numpy');
  before(async () => {
    if (skip) return;
    dir = await tempDir();
    images = [];
    for (const cls of ['ants', 'bees']) {
      const folder = path.join(hymenoptera, 'val', cls);
      images.push(...(await fs.readdir(folder)).sort().map((f) => path.join(folder, f)));
    }
    classes = ['ants', 'bees', 'wasps'];
    const head = path.join(dir, 'head');
    // Seeded weights over real MobileNetV2 features: probabilities spread over (0, 1), not saturated at 0 or 1.
    await writeTestHead(head, {
      model: mobilenetModel,
      tappedTensor: '464_quantized',
      dim: 1280,
      classes,
      normalization: 'l2',
      scale: 8,
    });
    const b = await runCli([
      'bundle',
      '--head',
      head,
      '--model',
      mobilenetModel,
      '--out',
      path.join(dir, 'classifier.onnx'),
    ]);
    assert.equal(b.code, 0, b.stderr);
    const p = await runCli([
      'predict',
      ...images,
      '--model',
      path.join(dir, 'classifier.onnx'),
      '--json',
      '--top',
      '3',
    ]);
    assert.equal(p.code, 0, p.stderr);
    const rows = p.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Prediction);
    predicted = new Map(rows.map((r) => [r.path, new Map(r.top.map((t) => [t.label, t.probability]))]));
  });
  after(() => (dir ? fs.rm(dir, { recursive: true, force: true }) : undefined));

  it(`top-1 on every val image, probabilities within 1e-4`, { skip }, async (t) => {
    const block = readmeBlock('python', README_PYTHON.onnxruntime, 'onnxruntime + Pillow');
    const results = (await runPythonBlockEach(
      py,
      block,
      dir,
      { probs: 'probs.tolist()', classes: 'classes' },
      'photo.jpg',
      images,
    )) as { probs: number[]; classes: string[]; __stdout__: string }[];
    assert.equal(results.length, 153);
    let worst = 0;
    let disagreements = 0;
    results.forEach((r, i) => {
      const image = images[i]!;
      assert.deepEqual(r.classes, classes);
      const byClass = predicted.get(image) ?? predicted.get(path.relative(process.cwd(), image));
      assert.ok(byClass, `featcache predict has no row for ${image}`);
      const expected = classes.map((c) => byClass.get(c)!);
      r.probs.forEach((p, k) => (worst = Math.max(worst, Math.abs(p - expected[k]!))));
      const top = (v: number[]) => v.indexOf(Math.max(...v));
      if (top(r.probs) !== top(expected)) disagreements++;
      // The snippet prints its top 3, best first: the first line names the class it found.
      assert.equal(r.__stdout__.split('\n')[0]!.split(' ')[0], classes[top(r.probs)]);
    });
    t.diagnostic(`max abs probability difference ${worst.toExponential(2)}, top-1 disagreements ${disagreements}/153`);
    assert.equal(disagreements, 0, `top-1 differs on ${disagreements} of 153 images`);
    assert.ok(worst <= 1e-4, `max abs probability difference ${worst}`);
  });
});
