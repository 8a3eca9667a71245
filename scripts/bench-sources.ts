/**
 * Extract throughput from WebDataset tar shards and from URLs on 127.0.0.1, as ratios to extracting the same images
 * from a folder in the same run (MobileNetV2 int8 on CPU, hymenoptera train). Goals: ≥ 0.95× for tar, ≥ 0.9× for URLs.
 * The server runs in its own process, as a remote one would. Sources alternate (in a rotating order) over rounds and
 * each keeps its best round, so a burst of load on the machine does not decide a ratio. Besides throughput, the CPU
 * time this process spends per image is compared: on a shared, loaded machine it is the steadier measure of what a
 * source costs.
 *   node dist/scripts/bench-sources.js   (BENCH_QUICK=1: 64 images, 1 round)
 */
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as tarStream from 'tar-stream';
import { extract } from '../src/jobs/extract.js';

const self = fileURLToPath(import.meta.url);
const repo = path.resolve(path.dirname(self), '../..');
const shared = path.resolve(repo, '../shared');
const model = path.join(shared, 'models/mobilenetv2-12-int8.onnx');
const hymenoptera = path.join(shared, 'data/hymenoptera_data');
const SHARDS = 4;

interface Run {
  images: number;
  /** Images per second after setup (listing, model load, planning). */
  imagesPerSecond: number;
  /** Whole call, setup included: what a user waits for. */
  wallS: number;
  setupS: number;
  /** CPU time of this process (all threads: decode pool, inference worker, fetch/tar reading) per image, in ms. */
  cpuMsPerImage: number;
}

async function pack(file: string, members: { name: string; body: Buffer }[]): Promise<void> {
  const p = tarStream.pack();
  for (const m of members) p.entry({ name: m.name }, m.body);
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of p) chunks.push(chunk as Buffer);
  await fs.writeFile(file, Buffer.concat(chunks));
}

/** A static file server on 127.0.0.1 in a child process; resolves with its base URL. */
async function serve(root: string): Promise<{ base: string; child: ChildProcess }> {
  const code = `
    const http = require('node:http'); const fs = require('node:fs'); const path = require('node:path');
    const root = ${JSON.stringify(root)};
    const server = http.createServer((req, res) => {
      const file = path.join(root, decodeURIComponent(req.url.split('?')[0]));
      fs.readFile(file, (error, body) => {
        if (error) { res.writeHead(404).end(); return; }
        res.writeHead(200, { 'content-type': 'image/jpeg', 'content-length': body.length }).end(body);
      });
    });
    server.listen(0, '127.0.0.1', () => process.stdout.write(String(server.address().port) + '\\n'));`;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<string>((resolve, reject) => {
    child.stdout.once('data', (d: Buffer) => resolve(d.toString().trim()));
    child.once('exit', (c) => reject(new Error(`server exited (${c})`)));
  });
  return { base: `http://127.0.0.1:${port}`, child };
}

export async function benchSources(opts: {
  quick: boolean;
  log: (l: string) => void;
}): Promise<Record<string, unknown>> {
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'featcache-bench-sources-'));
  let server: { base: string; child: ChildProcess } | null = null;
  try {
    // The same images three ways: a folder (copies of the originals), tar shards, URLs.
    const folder = path.join(work, 'folder');
    const files: { cls: string; name: string; file: string }[] = [];
    for (const cls of ['ants', 'bees']) {
      const names = (await fs.readdir(path.join(hymenoptera, 'train', cls))).sort();
      for (const name of opts.quick ? names.slice(0, 32) : names)
        files.push({ cls, name, file: path.join(hymenoptera, 'train', cls, name) });
    }
    for (const f of files) {
      await fs.mkdir(path.join(folder, f.cls), { recursive: true });
      await fs.copyFile(f.file, path.join(folder, f.cls, f.name));
    }
    const shards = path.join(work, 'shards');
    await fs.mkdir(shards);
    for (let s = 0; s < SHARDS; s++) {
      const members: { name: string; body: Buffer }[] = [];
      for (const [i, f] of files.entries()) {
        if (i % SHARDS !== s) continue;
        const key = `${f.cls}_${path.parse(f.name).name.replace(/\./g, '_')}`;
        members.push(
          { name: `${key}.jpg`, body: await fs.readFile(f.file) },
          { name: `${key}.cls`, body: Buffer.from(f.cls === 'ants' ? '0' : '1') },
        );
      }
      await pack(path.join(shards, `train-${String(s).padStart(6, '0')}.tar`), members);
    }
    server = await serve(folder);
    const list = path.join(work, 'urls.txt');
    await fs.writeFile(list, files.map((f) => `${server!.base}/${f.cls}/${encodeURIComponent(f.name)}`).join('\n'));

    const threads = Math.min(os.availableParallelism(), 2);
    const inputs: Record<'folder' | 'tar' | 'url', string> = {
      folder,
      tar: path.join(shards, `train-{000000..${String(SHARDS - 1).padStart(6, '0')}}.tar`),
      url: list,
    };
    // Warm-up (not counted): page cache, JIT and onnxruntime's first session cost nobody in the measured rounds.
    await extract({
      data: folder,
      model,
      cache: path.join(work, 'cache-warmup'),
      device: 'cpu',
      threads,
      batchSize: 16,
    });
    const best: Record<string, Run> = {};
    const rounds = opts.quick ? 1 : 3;
    const order = ['folder', 'tar', 'url'] as const;
    let cacheId = 0;
    for (let round = 0; round < rounds; round++) {
      for (const source of [...order.slice(round % 3), ...order.slice(0, round % 3)]) {
        const started = performance.now();
        const cpu = process.cpuUsage();
        const r = await extract({
          data: inputs[source],
          model,
          cache: path.join(work, `cache-${cacheId++}`),
          device: 'cpu',
          threads,
          batchSize: 16,
          partRows: 512,
        });
        const used = process.cpuUsage(cpu);
        const run = {
          images: r.extracted,
          imagesPerSecond: r.imagesPerSecond,
          wallS: (performance.now() - started) / 1000,
          setupS: r.timings.setupS,
          cpuMsPerImage: (used.user + used.system) / 1000 / r.extracted,
        };
        if (r.extracted !== files.length)
          throw new Error(`${source}: extracted ${r.extracted} of ${files.length} (${r.failures[0]?.message ?? ''})`);
        opts.log(
          `bench-sources: round ${round + 1} ${source}: ${run.imagesPerSecond.toFixed(1)} img/s, ${run.wallS.toFixed(2)} s wall (setup ${run.setupS.toFixed(2)} s), ${run.cpuMsPerImage.toFixed(1)} ms CPU/image`,
        );
        if (!best[source] || run.imagesPerSecond > best[source].imagesPerSecond)
          best[source] = {
            ...run,
            cpuMsPerImage: Math.min(run.cpuMsPerImage, best[source]?.cpuMsPerImage ?? Infinity),
          };
        else best[source] = { ...best[source], cpuMsPerImage: Math.min(run.cpuMsPerImage, best[source].cpuMsPerImage) };
      }
    }
    const ratio = (s: string) => ({
      ...best[s]!,
      ratio: best[s]!.imagesPerSecond / best.folder!.imagesPerSecond,
      wallRatio: best.folder!.wallS / best[s]!.wallS,
      cpuRatio: best.folder!.cpuMsPerImage / best[s]!.cpuMsPerImage,
    });
    return {
      model: path.basename(model),
      images: files.length,
      threads,
      batchSize: 16,
      shards: SHARDS,
      rounds,
      folder: best.folder,
      tar: ratio('tar'),
      url: ratio('url'),
      goals: { tar: 0.95, url: 0.9 },
      loadAverage: os.loadavg()[0],
      note: "ratio: best img/s after setup vs the folder's; wallRatio: folder wall time / this wall time (setup, e.g. listing shards, included); cpuRatio: folder CPU ms per image / this source's (1 = costs the same)",
    };
  } finally {
    server?.child.kill();
    await fs.rm(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && pathToFileURL(process.argv[1]).href === import.meta.url) {
  const result = await benchSources({
    quick: process.env.BENCH_QUICK === '1',
    log: (l) => process.stderr.write(`${l}\n`),
  });
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}
