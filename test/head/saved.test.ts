import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { type Tf, loadTf } from '../../src/head/runtime.js';
import { type HeadInfo, type SavedHead, loadHead, readHeadFiles, saveHead } from '../../src/head/saved.js';
import { FeatcacheError } from '../../src/errors.js';
import { type DenseWeights, softmaxRows } from '../../src/head/model.js';
import { predictLogits } from '../../src/head/minibatch/train.js';
import { seededRandom } from '../../src/util/random.js';
import { tempDir } from '../support/helpers.js';

const [dim, classes] = [5, 3];
const random = seededRandom(11);
const layers: DenseWeights[] = [
  {
    kernel: Float32Array.from({ length: dim * classes }, () => random() * 4 - 2),
    shape: [dim, classes],
    bias: Float32Array.from([0.1, -0.2, 0.3]),
    activation: 'softmax',
  },
];
const features = Float32Array.from({ length: 4 * dim }, () => random() * 2 - 1);

function head(temperature?: number): SavedHead {
  const info: HeadInfo = {
    format: 1,
    classes: ['a', 'b', 'c'],
    normalization: { kind: 'none' },
    provenance: {
      modelSha256: 'f'.repeat(64),
      modelFile: 'm.onnx',
      tappedTensor: 't',
      preset: {},
      exif: 'ignore',
      icc: 'ignore',
      dim,
      cache: 'c',
      trainedAt: '',
      backend: 'cpu',
      backendSkipped: [],
      versions: {},
    },
    options: {},
    bestEpoch: 1,
    summary: {},
    ...(temperature === undefined ? {} : { temperature }),
  };
  return { info, layers, extras: { 'metrics.json': '{}\n' } };
}

describe('saved head', () => {
  let tf: Tf;

  /** A saved head, its three files' good bytes, and a way to put them back between damages. */
  async function savedHeadToDamage() {
    const dir = path.join(await tempDir(), 'head');
    await saveHead(tf, dir, head());
    const good = Object.fromEntries(
      await Promise.all(
        ['head.json', 'model.json', 'weights.bin'].map(async (f) => [f, await fs.readFile(path.join(dir, f))] as const),
      ),
    );
    const restore = () => Promise.all(Object.entries(good).map(([f, b]) => fs.writeFile(path.join(dir, f), b)));
    return { dir, good, restore };
  }

  before(async () => {
    tf = (await loadTf('auto')).tf;
  });

  it('round-trips: the loaded head predicts softmax(logits / temperature) of the saved weights', async () => {
    const dir = path.join(await tempDir(), 'head');
    await saveHead(tf, dir, head(2.5));
    const loaded = await loadHead(tf, dir);
    assert.equal(loaded.temperature, 2.5);
    const want = softmaxRows(predictLogits(tf, layers, features, 4), classes, 2.5);
    const got = loaded.predict(features, 4);
    want.forEach((v, i) => assert.ok(Math.abs(v - got[i]!) < 1e-5, `[${i}] ${got[i]} vs ${v}`));
    assert.ok(
      Math.abs(softmaxRows(predictLogits(tf, layers, features, 4), classes, 1)[0]! - want[0]!) > 1e-3,
      'the temperature matters here',
    );
    loaded.dispose();
  });

  it("replaces only its own files in a head directory, and leaves the user's files alone", async () => {
    const dir = path.join(await tempDir(), 'head');
    await saveHead(tf, dir, { ...head(), extras: { 'metrics.json': '{}\n', 'curves.html': '<p>old</p>' } });
    await fs.writeFile(path.join(dir, 'notes.txt'), 'mine');
    await saveHead(tf, dir, head(3));
    assert.deepEqual((await fs.readdir(dir)).sort(), [
      'head.json',
      'metrics.json',
      'model.json',
      'notes.txt',
      'weights.bin',
    ]);
    assert.equal(await fs.readFile(path.join(dir, 'notes.txt'), 'utf8'), 'mine');
    assert.equal(JSON.parse(await fs.readFile(path.join(dir, 'head.json'), 'utf8')).temperature, 3);
    const siblings = await fs.readdir(path.dirname(dir));
    assert.deepEqual(siblings, ['head'], 'no temporary directory left behind');
  });

  it('refuses a non-empty directory that holds no featcache head.json, touching nothing', async () => {
    const dir = await tempDir();
    await fs.writeFile(path.join(dir, 'resnet50.onnx'), 'weights');
    await fs.writeFile(path.join(dir, 'photo.jpg'), 'jpeg');
    await assert.rejects(
      saveHead(tf, dir, head()),
      /^FeatcacheError: head .*: the directory is not empty and holds no featcache head\.json, so featcache will not write into it; choose a new or empty directory/,
    );
    assert.deepEqual((await fs.readdir(dir)).sort(), ['photo.jpg', 'resnet50.onnx']);
    await fs.writeFile(path.join(dir, 'head.json'), '{"format": 2}');
    await assert.rejects(
      saveHead(tf, dir, head()),
      /head\.json has format 2, expected 1, so it is not a head featcache wrote/,
    );
    assert.equal(await fs.readFile(path.join(dir, 'head.json'), 'utf8'), '{"format": 2}');
  });

  it('validates every file on load: what is wrong, which file, and the remedy', async () => {
    const { dir, good, restore } = await savedHeadToDamage();
    const remedy = /; retrain it with 'featcache train-head --head .*head'$/;
    const cases: [string, string | Buffer, RegExp][] = [
      ['head.json', '{}', /head\.json has format undefined, expected 1/],
      ['head.json', '{"format":1', /head\.json is not valid JSON/],
      [
        'head.json',
        JSON.stringify({ ...head().info, temperature: -1 }),
        /head\.json has "temperature" -1, expected a positive number/,
      ],
      ['model.json', '{}', /model\.json has no "modelTopology"/],
      [
        'weights.bin',
        good['weights.bin']!.subarray(0, 20),
        /weights\.bin has 20 bytes but model\.json needs 72 \(truncated\)/,
      ],
    ];
    for (const [file, content, message] of cases) {
      await restore();
      await fs.writeFile(path.join(dir, file), content);
      const error = await loadHead(tf, dir).then(
        () => null,
        (e: Error) => e,
      );
      assert.ok(error, `${file} ${String(content).slice(0, 20)} was accepted`);
      assert.match(error.message, message);
      assert.match(error.message, remedy);
      assert.match(error.message, /^head /);
    }
  });
  it('gives the same error and exit code whether predict (loadHead) or bundle (readHeadFiles) reads a damaged head', async () => {
    const { dir, good, restore } = await savedHeadToDamage();
    const faults: [string, string | Buffer | null][] = [
      ['head.json', null],
      ['model.json', null],
      ['weights.bin', null],
      ['head.json', '{"format":1'],
      ['model.json', 'not json'],
      ['head.json', '[]'],
      ['model.json', '{}'],
      ['weights.bin', good['weights.bin']!.subarray(0, 20)],
      ['weights.bin', Buffer.concat([good['weights.bin']!, Buffer.alloc(4)])],
    ];
    const failure = (p: Promise<unknown>) =>
      p.then(
        () => null,
        (e: unknown) => e,
      );
    const seen = new Set<number>();
    for (const [file, content] of faults) {
      await restore();
      if (content === null) await fs.rm(path.join(dir, file));
      else await fs.writeFile(path.join(dir, file), content);
      const viaPredict = await failure(loadHead(tf, dir));
      const viaBundle = await failure(readHeadFiles(dir));
      const what = `${file} ${content === null ? 'missing' : String(content).slice(0, 12)}`;
      assert.ok(viaPredict instanceof FeatcacheError, `${what}: loadHead gave ${String(viaPredict)}`);
      assert.ok(viaBundle instanceof FeatcacheError, `${what}: readHeadFiles gave ${String(viaBundle)}`);
      assert.equal(viaBundle.message, viaPredict.message, what);
      assert.equal(viaBundle.exitCode, viaPredict.exitCode, what);
      assert.ok(viaBundle.message.includes(file), `${what}: the message names the file`);
      seen.add(viaBundle.exitCode);
    }
    // A missing file is the user's slip (exit 2); a damaged one is a failure (exit 1): both kinds were exercised.
    assert.deepEqual([...seen].sort(), [1, 2]);
    await restore();
    const read = await readHeadFiles(dir);
    assert.deepEqual(read.layers[0]!.shape, [dim, classes]);
    assert.deepEqual(Array.from(read.layers[0]!.bias), Array.from(layers[0]!.bias));
  });
});
