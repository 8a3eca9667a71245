/**
 * The feature parity oracle, run by torch itself: the ResNet50 fixture's weights in torchvision's resnet50, on
 * torchvision-preprocessed hymenoptera val images, give the avgpool hook output; featcache's features for the same
 * images — decoded and preprocessed by featcache — must match it.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FeatureCache } from '../../src/store/reader.js';
import {
  cosine,
  hymenoptera,
  needsShared,
  repoRoot,
  resnetDir,
  resnetModel,
  runCli,
  tempDir,
} from '../support/helpers.js';
import { pythonEnv } from '../support/python-venv.js';

const py = await pythonEnv();
const DIM = 2048;

function centred(v: ArrayLike<number>, mean: Float64Array): number[] {
  return Array.from(v, (x, i) => x - mean[i]!);
}

describe('feature parity with torch: the ResNet50 fixture run by torch on torchvision-preprocessed images', () => {
  const skip = needsShared(resnetModel, hymenoptera) || py.needs('torch', 'torchvision', 'onnx', 'PIL', 'numpy');
  let dir: string;
  let checks: { fixtureHookMaxAbs: number; fixtureInputMaxAbs: number; count: number };
  let paths: string[];
  let ours: Float32Array;
  let torch: Float32Array;
  before(async () => {
    if (skip) return;
    dir = await tempDir();
    const cache = path.join(dir, 'features');
    const r = await runCli([
      'extract',
      '--data',
      hymenoptera,
      '--split',
      'val',
      '--model',
      resnetModel,
      '--cache',
      cache,
      '--device',
      'cpu',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const set = await (await FeatureCache.open(cache)).read('val');
    assert.equal(set.dim, DIM);
    paths = set.paths;
    ours = set.features;
    const spec = path.join(dir, 'spec.json');
    const out = path.join(dir, 'torch.f32');
    await fs.writeFile(
      spec,
      JSON.stringify({ fixture: resnetDir, images: paths.map((p) => path.join(hymenoptera, p)), out }),
    );
    const script = path.join(repoRoot, 'test/support/python/torch_resnet_oracle.py');
    checks = JSON.parse(await py.run([script, spec])) as typeof checks;
    const bytes = await fs.readFile(out);
    torch = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  });
  after(() => (dir ? fs.rm(dir, { recursive: true, force: true }) : undefined));

  it(
    'the oracle is the fixture: torch reproduces its stored hook outputs, torchvision its stored inputs',
    { skip },
    (t) => {
      t.diagnostic(
        `torch hook vs avgpool_K.bin max abs ${checks.fixtureHookMaxAbs.toExponential(2)}; torchvision ${'transform'} vs input_K.bin max abs ${checks.fixtureInputMaxAbs.toExponential(2)}`,
      );
      assert.ok(checks.fixtureHookMaxAbs < 1e-4, `torch vs the fixture's hook outputs: ${checks.fixtureHookMaxAbs}`);
      assert.ok(checks.fixtureInputMaxAbs < 1e-5, `torchvision vs the fixture's inputs: ${checks.fixtureInputMaxAbs}`);
    },
  );

  it('featcache extract matches torch on all 153 val images: min cosine >= 0.9999, centred too', { skip }, (t) => {
    const n = paths.length;
    assert.equal(n, 153);
    assert.equal(torch.length, n * DIM);
    // Random weights make every feature vector point the same way (cosine >= 0.9 between different images), so
    // compare vectors centred on the torch features' mean as well: different images are then far apart.
    const mean = new Float64Array(DIM);
    for (let i = 0; i < n; i++) for (let d = 0; d < DIM; d++) mean[d]! += torch[i * DIM + d]! / n;
    let minCos = 1;
    let minCentred = 1;
    let maxAbs = 0;
    let maxOther = -1;
    for (let i = 0; i < n; i++) {
      const a = ours.subarray(i * DIM, (i + 1) * DIM);
      const b = torch.subarray(i * DIM, (i + 1) * DIM);
      minCos = Math.min(minCos, cosine(a, b));
      minCentred = Math.min(minCentred, cosine(centred(a, mean), centred(b, mean)));
      for (let d = 0; d < DIM; d++) maxAbs = Math.max(maxAbs, Math.abs(a[d]! - b[d]!));
      const j = (i + 1) % n;
      const other = torch.subarray(j * DIM, (j + 1) * DIM);
      maxOther = Math.max(maxOther, cosine(centred(a, mean), centred(other, mean)));
    }
    t.diagnostic(
      `min cosine ${minCos.toFixed(7)}, min centred cosine ${minCentred.toFixed(7)}, max abs ${maxAbs.toExponential(2)}; ` +
        `centred cosine to another image at most ${maxOther.toFixed(3)}`,
    );
    assert.ok(maxOther < 0.9, 'the centred comparison tells different images apart (else it proves nothing)');
    assert.ok(minCos >= 0.9999, `min cosine ${minCos}`);
    assert.ok(minCentred >= 0.9999, `min centred cosine ${minCentred}`);
  });
});
