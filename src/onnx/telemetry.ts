/** Evaluated before onnxruntime-node loads (see ort.ts): a module of its own, because imports run before a body. */
process.env.ORT_DISABLE_TELEMETRY ??= '1';
