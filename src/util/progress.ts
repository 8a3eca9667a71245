import cliProgress from 'cli-progress';

export interface Progress {
  increment(by: number): void;
  stop(): void;
}

/** A progress bar with images/s and ETA on a terminal; silent elsewhere (logs and CI get the summary line). */
export function progressBar(label: string, total: number, enabled: boolean): Progress {
  if (!enabled || !process.stderr.isTTY || total === 0) return { increment: () => {}, stop: () => {} };
  const bar = new cliProgress.SingleBar(
    {
      format: `${label} |{bar}| {value}/{total} | {rate} img/s | ETA {eta_formatted}`,
      stream: process.stderr,
      hideCursor: true,
      etaBuffer: 50,
    },
    cliProgress.Presets.shades_classic,
  );
  const started = Date.now();
  let done = 0;
  bar.start(total, 0, { rate: '0.0' });
  return {
    increment(by) {
      done += by;
      bar.update(done, { rate: (done / Math.max((Date.now() - started) / 1000, 1e-3)).toFixed(1) });
    },
    stop: () => bar.stop(),
  };
}
