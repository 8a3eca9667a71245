/** The tapped model's feature output name and the default tap, apart from the tap so that reading them does not load onnx-proto. */
export const FEATURE_OUTPUT = 'featcache_features';

export const DEFAULT_TAP = 'avgpool';
