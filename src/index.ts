/** featcache as a library: the same stages the CLI composes. */
export { FeatcacheError, ExitCode } from './errors.js';
export { openDataset, type Dataset, type DatasetOptions, type Item } from './dataset/index.js';
export { stratifiedSplit, parseShard, inShard } from './dataset/split.js';
export { PRESETS, PRESET_NAMES, getPreset, DEFAULT_IMAGE_POLICY, type Preset, type ImagePolicy } from './image/presets.js';
export { preprocess, decodeToRgb, writeNormalised } from './image/preprocess.js';
export { openBackbone, parseDevice, type Backbone, type BackboneOptions } from './backbone/index.js';
export { resolveTap, tapModel, poolCandidates, FEATURE_OUTPUT, type TapPoint } from './backbone/tap.js';
export { FeatureCache, type FeatureSet } from './store/reader.js';
export { applyNormalization, fitNormalization, type Normalization } from './head/normalize.js';
export { loadTf } from './head/runtime.js';
export { fitHead, predictProbabilities, DEFAULT_HEAD_OPTIONS, type HeadOptions } from './head/train.js';
export { loadHead, saveHead } from './head/saved.js';
export { extract, type ExtractOptions, type ExtractResult } from './commands/extract.js';
export { trainHead, DEFAULT_TRAIN_HEAD_OPTIONS, type TrainHeadOptions, type TrainHeadResult } from './jobs/train-head.js';
export { predict } from './commands/predict.js';
export { runExport } from './commands/export.js';
export { fetchModel } from './commands/fetch-model.js';
export { inspectModel } from './commands/inspect.js';
