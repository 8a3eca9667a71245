/** The tapped model's feature output name, apart from the tap so that reading it does not load onnx-proto. */
export const FEATURE_OUTPUT = 'featcache_features';
