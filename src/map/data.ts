/**
 * What the map's layout hands the map's page: one column per attribute over every point, so 100 k points stay a
 * few typed arrays instead of 100 k objects, and the page can be written without knowing how the layout was made.
 */

/** A point's colour source; `audit` needs an audit's scores, `prediction` a head's. */
export type MapColor = 'label' | 'prediction' | 'audit';
export const MAP_COLORS: readonly MapColor[] = Object.freeze(['label', 'prediction', 'audit']);

/**
 * `-` and devices (/dev/stdout, /dev/null): the page is streamed there, no thumbnails can sit beside it, and the
 * command's summary keeps off stdout. Here, free of imports, so the command line can ask without loading the page code.
 */
export function isStreamOut(out: string): boolean {
  return out === '-' || out.startsWith('/dev/') || out.startsWith('/proc/self/fd/');
}

export interface MapPredictions {
  /** Which head made them (its directory) and how (e.g. "saved head" or "cross-fitted probe"). */
  source: string;
  /** Predicted class index per point (into `MapData.classes`). */
  index: Int32Array;
  /** Probability of the predicted class per point. */
  probability: Float32Array;
}

export interface MapAudit {
  /** Where the scores came from (an audit's output directory). */
  source: string;
  /** Label-quality score per point in [0, 1], 1 = label looks right; NaN where the audit did not score the row. */
  score: Float32Array;
  /** Flags per point ("label issue", "knn disagrees", "outlier", …); empty for clean rows. */
  flags: string[][];
}

export interface MapData {
  title: string;
  /** Shown on the page and kept in the output: model sha256, tapped tensor, preset, layout parameters, versions. */
  provenance: Record<string, unknown>;
  classes: string[];
  /** Split names; `split[i]` indexes this. */
  splits: string[];
  count: number;
  /** 2-D layout, any scale (the page fits it to the view). */
  x: Float32Array;
  y: Float32Array;
  /** Cached path of each point (as the cache keys it). */
  paths: string[];
  split: Uint8Array;
  /** Given label per point (index into `classes`), -1 where unlabelled. */
  label: Int32Array;
  /** The image file each point was read from, for thumbnails; null where unknown (moved, or a URL). */
  files: (string | null)[];
  predictions: MapPredictions | null;
  audit: MapAudit | null;
  /** The colouring the page opens with. */
  color: MapColor;
}

export interface MapPageOptions {
  /** Make (or reuse) JPEG thumbnail sprites beside the page. */
  thumbnails: boolean;
  /** Longest side of a thumbnail, in pixels. */
  thumbnailSize: number;
  log?: ((line: string) => void) | undefined;
}

export interface MapPageResult {
  /** The page written. */
  page: string;
  /** Thumbnails made this run, and reused from an earlier run. */
  thumbnailsMade: number;
  thumbnailsReused: number;
  /** Points without a thumbnail (no image file, or unreadable). */
  thumbnailsMissing: number;
  /** Every file written, page included. */
  written: string[];
}
