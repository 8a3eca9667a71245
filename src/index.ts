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

// Jobs
export {
  extract,
  DEFAULT_EXTRACT_OPTIONS,
  type ExtractOptions,
  type ExtractResult,
  type ExtractTimings,
} from './jobs/extract.js';
export {
  trainHead,
  DEFAULT_TRAIN_HEAD_OPTIONS,
  type TrainHeadOptions,
  type TrainHeadResult,
} from './jobs/train-head.js';
export {
  predict,
  expandInputs,
  DEFAULT_PREDICT_OPTIONS,
  type PredictOptions,
  type PredictResult,
  type Prediction,
} from './jobs/predict.js';
export {
  inspect,
  DEFAULT_INSPECT_OPTIONS,
  type InspectOptions,
  type InspectResult,
  type TapCandidate,
} from './jobs/inspect.js';
export { info, DEFAULT_INFO_OPTIONS, type InfoOptions, type CacheInfo, type SplitInfo } from './jobs/info.js';
export { demo, DEFAULT_DEMO_OPTIONS, type DemoOptions, type DemoResult } from './jobs/demo.js';
export {
  fetchModel,
  DEFAULT_FETCH_MODEL_OPTIONS,
  type FetchModelOptions,
  type FetchResult,
} from './jobs/fetch-model.js';
export {
  installCuda,
  DEFAULT_INSTALL_CUDA_OPTIONS,
  type InstallCudaOptions,
  type InstallCudaResult,
} from './jobs/install-cuda.js';
export { bundle, DEFAULT_BUNDLE_OPTIONS, type BundleOptions, type BundleResult } from './jobs/bundle.js';
export { serve, DEFAULT_SERVE_OPTIONS, type ServeOptions, type ServeHandle } from './jobs/serve.js';
export { exportSplit, DEFAULT_EXPORT_OPTIONS, type ExportOptions, type ExportResult } from './jobs/export.js';
export { compactSplit, DEFAULT_COMPACT_OPTIONS, type CompactOptions, type CompactResult } from './jobs/compact.js';

// Stages
export { openDataset, type Dataset, type DatasetOptions, type DatasetLayout, type Item } from './dataset/index.js';
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
export { preprocess, decodeToRgb, writeNormalised, type PixelLayout } from './image/preprocess.js';
export { decodeBatch, type DecodedBatch } from './image/batch.js';
export { openBackbone, parseDevice, type Backbone, type BackboneOptions } from './backbone/index.js';
export {
  checkCuda,
  describeCudaProblems,
  CUDA_REQUIREMENTS,
  type CudaCheck,
  type CudaLibrary,
} from './backbone/cuda-libs.js';
export {
  download,
  DEFAULT_DOWNLOAD_TIMEOUTS,
  type DownloadOptions,
  type DownloadResult,
  type ProxySettings,
} from './fetch/download.js';
export { MODEL_SOURCES, MODEL_NAMES, type ModelSource } from './fetch/registry.js';
export { FEATURE_OUTPUT, type TapPoint } from './backbone/tap.js';
export { FeatureCache, type FeatureSet } from './store/reader.js';
export { type FeatureSetCost, type RowBatch, type StreamOptions, featureSetCost, streamRows } from './store/stream.js';
export { type ScaleDecision, type ScaleInfo, PROBE_WORK_LIMIT, chooseScale } from './jobs/train-head-scale.js';
export { SplitWriter, type SplitWriterOptions } from './store/writer.js';
export { openOutputFile, prepareOutputDir, type OutputFile, type OutputDir, type OutputSink } from './util/output.js';
export { applyNormalization, fitNormalization, type Normalization } from './head/normalize.js';
export { DEFAULT_HEAD_OPTIONS, type HeadOptions } from './head/train.js';
export { type HeadInfo } from './head/saved.js';
export { openBundle, isBundleFile, type OpenedBundle, type BundleMetadata } from './export/bundle.js';
