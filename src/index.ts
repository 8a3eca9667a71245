/**
 * featcache as a library: one plain async function per job (what the CLI calls), and the stages they compose —
 * dataset → image → backbone → store → head → export. Nothing here imports the command line, and the published types
 * stay free of TensorFlow.js and ONNX protobuf types (functions that take those are internal), so a consumer compiles
 * with `skipLibCheck: false`.
 *
 * @example
 * import { extract, trainHead, predict } from 'featcache';
 * await extract({ data: 'hymenoptera_data', split: 'train', model: 'models/resnet50.onnx' });
 */
export { FeatcacheError, ExitCode } from './errors.js';

// Jobs: each loads its module (and onnxruntime, Arrow, sharp, fastify... as it needs them) on its first call, so
// importing featcache costs only what a program calls. Types and defaults are static and cost nothing.
export {
  DEFAULT_EXTRACT_OPTIONS,
  DEFAULT_TRAIN_HEAD_OPTIONS,
  DEFAULT_PREDICT_OPTIONS,
  DEFAULT_INSPECT_OPTIONS,
  DEFAULT_INFO_OPTIONS,
  DEFAULT_DEMO_OPTIONS,
  DEFAULT_FETCH_MODEL_OPTIONS,
  DEFAULT_INSTALL_CUDA_OPTIONS,
  DEFAULT_BUNDLE_OPTIONS,
  DEFAULT_SERVE_OPTIONS,
  DEFAULT_EXPORT_OPTIONS,
  DEFAULT_COMPACT_OPTIONS,
} from './jobs/defaults.js';
export type { ExtractOptions, ExtractResult, ExtractTimings } from './jobs/extract.js';
export type { TrainHeadOptions, TrainHeadResult } from './jobs/train-head.js';
export type { PredictOptions, PredictResult, Prediction } from './jobs/predict.js';
export type { InspectOptions, InspectResult, TapCandidate } from './jobs/inspect.js';
export type { InfoOptions, CacheInfo, SplitInfo } from './jobs/info.js';
export type { DemoOptions, DemoResult } from './jobs/demo.js';
export type { FetchModelOptions, FetchResult } from './jobs/fetch-model.js';
export type { InstallCudaOptions, InstallCudaResult } from './jobs/install-cuda.js';
export type { BundleOptions, BundleResult } from './jobs/bundle.js';
export type { DrainReport, ServeOptions, ServeHandle } from './jobs/serve.js';
export type { SimilarNeighbour } from './serve/similar.js';
export type { ExportOptions, ExportResult } from './jobs/export.js';
export type { CompactOptions, CompactResult } from './jobs/compact.js';

/** An async function that imports its module on first call; same signature (generics included) as the original. */
function deferred<F extends (...args: never[]) => Promise<unknown>>(load: () => Promise<F>): F {
  return (async (...args: Parameters<F>) => (await load())(...args)) as F;
}

export const extract = deferred(async () => (await import('./jobs/extract.js')).extract);
export const trainHead = deferred(async () => (await import('./jobs/train-head.js')).trainHead);
export const predict = deferred(async () => (await import('./jobs/predict.js')).predict);
export const expandInputs = deferred(async () => (await import('./jobs/predict.js')).expandInputs);
export const inspect = deferred(async () => (await import('./jobs/inspect.js')).inspect);
export const info = deferred(async () => (await import('./jobs/info.js')).info);
export const demo = deferred(async () => (await import('./jobs/demo.js')).demo);
export const fetchModel = deferred(async () => (await import('./jobs/fetch-model.js')).fetchModel);
export const installCuda = deferred(async () => (await import('./jobs/install-cuda.js')).installCuda);
export const bundle = deferred(async () => (await import('./jobs/bundle.js')).bundle);
export const serve = deferred(async () => (await import('./jobs/serve.js')).serve);
export const exportSplit = deferred(async () => (await import('./jobs/export.js')).exportSplit);
export const compactSplit = deferred(async () => (await import('./jobs/compact.js')).compactSplit);

// Stages
export type { Dataset, DatasetOptions, DatasetLayout, Item } from './dataset/index.js';
export { folderSource, type ImageSource, type Stamp } from './dataset/source.js';
export { stratifiedSplit, parseShard, inShard } from './dataset/split.js';
export {
  PRESETS,
  PRESET_NAMES,
  getPreset,
  DEFAULT_IMAGE_POLICY,
  type Preset,
  type ImagePolicy,
} from './image/presets.js';
export { writeNormalised, type PixelLayout } from './image/preprocess.js';
export type { DecodedBatch } from './image/batch.js';
export type { Backbone, BackboneOptions } from './backbone/index.js';
export { parseDevice } from './backbone/device.js';
export {
  checkCuda,
  describeCudaProblems,
  CUDA_REQUIREMENTS,
  type CudaCheck,
  type CudaLibrary,
} from './backbone/cuda-libs.js';
export type { DownloadOptions, DownloadResult, ProxySettings } from './fetch/download.js';
export { DEFAULT_DOWNLOAD_TIMEOUTS } from './fetch/timeouts.js';
export { MODEL_SOURCES, MODEL_NAMES, type ModelSource } from './fetch/registry.js';
export type { TapPoint } from './backbone/tap.js';
export { FEATURE_OUTPUT } from './backbone/feature-output.js';
export { FeatureCache, type FeatureSet } from './store/reader.js';
export { type FeatureSetCost, type RowBatch, type StreamOptions, featureSetCost, streamRows } from './store/stream.js';
export type { ScaleDecision, ScaleInfo } from './jobs/train-head-scale.js';
export { SplitWriter, type SplitWriterOptions } from './store/writer.js';
export { openOutputFile, prepareOutputDir, type OutputFile, type OutputDir, type OutputSink } from './util/output.js';
export { applyNormalization, fitNormalization, type Normalization } from './head/normalize.js';
export { DEFAULT_HEAD_OPTIONS, type HeadOptions } from './head/model.js';
export { type HeadInfo } from './head/saved.js';
export type { OpenedBundle, BundleMetadata } from './export/bundle.js';

// Stages that load a heavy module (sharp, onnxruntime, undici, tar-stream) do so on their first call.
export const openDataset = deferred(async () => (await import('./dataset/index.js')).openDataset);
export const preprocess = deferred(async () => (await import('./image/preprocess.js')).preprocess);
export const decodeToRgb = deferred(async () => (await import('./image/preprocess.js')).decodeToRgb);
export const decodeBatch = deferred(async () => (await import('./image/batch.js')).decodeBatch);
export const openBackbone = deferred(async () => (await import('./backbone/index.js')).openBackbone);
export const download = deferred(async () => (await import('./fetch/download.js')).download);
export const openBundle = deferred(async () => (await import('./export/bundle.js')).openBundle);
export const isBundleFile = deferred(async () => (await import('./export/bundle.js')).isBundleFile);

// The neighbour engine and its jobs (onnxruntime, usearch) load on their first call too.
export type { Metric, KnnResult } from './neighbors/exact.js';
export type {
  NeighborsOptions,
  NeighborsResult,
  KnnGraph,
  KnnGraphOptions,
  SplitSearcher,
} from './neighbors/search.js';
export type { HnswOptions } from './neighbors/hnsw.js';
export type { SplitRows } from './neighbors/split.js';
export type { DuplicatesOptions, DuplicatesResult } from './jobs/duplicates.js';
export type { SimilarOptions, SimilarResult } from './jobs/similar.js';
export const exactKnn = deferred(async () => (await import('./neighbors/exact.js')).exactKnn);
export const neighbors = deferred(async () => (await import('./neighbors/search.js')).neighbors);
export const knnGraph = deferred(async () => (await import('./neighbors/search.js')).knnGraph);
export const loadSplit = deferred(async () => (await import('./neighbors/split.js')).loadSplit);
export const duplicates = deferred(async () => (await import('./jobs/duplicates.js')).duplicates);
export const similar = deferred(async () => (await import('./jobs/similar.js')).similar);

// The audit (label errors, outliers) loads with its first call; confident learning itself is plain arithmetic.
export type { AuditOptions, AuditResult, AuditRowsInput } from './jobs/audit.js';
export type { AuditIssue, ConfusedPair } from './audit/report.js';
export { DEFAULT_AUDIT_OPTIONS } from './jobs/defaults.js';
export { confidentLearning, FILTERS as AUDIT_FILTERS, RANK_BY as AUDIT_RANKS } from './audit/confident.js';
export const audit = deferred(async () => (await import('./jobs/audit.js')).audit);
export const auditRows = deferred(async () => (await import('./jobs/audit.js')).auditRows);

// The map (UMAP layout over the cached kNN graph, one offline page) loads with its first call.
export type { MapOptions, MapResult } from './jobs/map.js';
export type { MapColor, MapData, MapPageOptions, MapPageResult } from './map/data.js';
export type { Layout, LayoutOptions, LayoutProvenance } from './map/layout.js';
export type { UmapParameters } from './map/umap.js';
export { DEFAULT_MAP_OPTIONS } from './jobs/defaults.js';
export const map = deferred(async () => (await import('./jobs/map.js')).map);
export const mapLayout = deferred(async () => (await import('./map/layout.js')).mapLayout);
