/**
 * featcache's preprocessing against torchvision itself (Resize → CenterCrop → ToTensor → Normalize on the PIL image,
 * transforms v1 and v2), for every preset that claims torchvision's behaviour, on hymenoptera's val images.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decodeToRgb, writeNormalised } from '../../src/image/preprocess.js';
import { DEFAULT_IMAGE_POLICY, PRESETS, type Preset } from '../../src/image/presets.js';
import { hymenoptera, needsShared, repoRoot, tempDir } from '../support/helpers.js';
import { pythonEnv } from '../support/python-venv.js';

const py = await pythonEnv();

/** The presets whose description claims torchvision's eval transform. */
const TORCHVISION_PRESETS: Preset[] = Object.values(PRESETS).filter((p) => p.name.startsWith('torchvision'));

interface Parity {
  maxAbs: number;
  meanAbs: number;
  maxLevels: number;
  equalShare: number;
  worstImage: string;
  v1VsV2MaxAbs: number;
}

describe('preprocessing parity with torchvision itself', () => {
  const skip = needsShared(hymenoptera) || py.needs('torch', 'torchvision', 'PIL', 'numpy');
  let dir: string;
  let parity: Record<string, Parity>;
  before(async () => {
    if (skip) return;
    dir = await tempDir();
    const images: string[] = [];
    for (const cls of ['ants', 'bees']) {
      const folder = path.join(hymenoptera, 'val', cls);
      images.push(...(await fs.readdir(folder)).sort().map((f) => path.join(folder, f)));
    }
    const presets = [];
    for (const preset of TORCHVISION_PRESETS) {
      const size = 3 * preset.crop * preset.crop;
      const out = new Float32Array(images.length * size);
      for (const [i, image] of images.entries())
        writeNormalised(await decodeToRgb(image, preset, DEFAULT_IMAGE_POLICY), preset, 'NCHW', out, i);
      const tensors = path.join(dir, `${preset.name}.f32`);
      await fs.writeFile(tensors, out);
      presets.push({ ...preset, tensors });
    }
    const spec = path.join(dir, 'spec.json');
    await fs.writeFile(spec, JSON.stringify({ images, presets }));
    const script = path.join(repoRoot, 'test/support/python/torchvision_parity.py');
    parity = JSON.parse(await py.run([script, spec])) as Record<string, Parity>;
  });
  after(() => (dir ? fs.rm(dir, { recursive: true, force: true }) : undefined));

  it('the presets that claim torchvision behaviour are torchvision and torchvision-v2', () => {
    assert.deepEqual(
      TORCHVISION_PRESETS.map((p) => p.name),
      ['torchvision', 'torchvision-v2'],
    );
  });

  for (const preset of TORCHVISION_PRESETS) {
    it(`${preset.name}: within 1e-5 of torchvision on all 153 val images`, { skip }, (t) => {
      const p = parity[preset.name]!;
      t.diagnostic(
        `${preset.name}: max abs ${p.maxAbs.toExponential(2)} (worst ${path.basename(p.worstImage ?? '-')}), mean abs ${p.meanAbs.toExponential(2)}, ` +
          `max ${p.maxLevels} 8-bit levels, ${(p.equalShare * 100).toFixed(3)}% of values equal; transforms v1 vs v2 ${p.v1VsV2MaxAbs.toExponential(2)}`,
      );
      assert.ok(
        p.v1VsV2MaxAbs <= 1e-6,
        'torchvision.transforms and transforms.v2 agree (else which one is the reference?)',
      );
      assert.ok(p.maxAbs <= 1e-5, `max abs ${p.maxAbs} in normalised units (${p.maxLevels} 8-bit levels)`);
    });
  }
});
