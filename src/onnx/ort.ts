/**
 * featcache's one import of onnxruntime-node. onnxruntime 1.30's Linux and macOS builds carry Microsoft's 1DS
 * telemetry (onnxruntime PR #27379): each process writes `/tmp/mat-debug-<pid>.log`, and a device id and an event
 * cache go under `~/.cache/Microsoft/DeveloperTools`. featcache runs offline on the user's own data and leaves no
 * files it did not announce, so it opts out with `ORT_DISABLE_TELEMETRY=1` (read once, when onnxruntime starts),
 * unless the variable is already set: `ORT_DISABLE_TELEMETRY=0` keeps onnxruntime's default.
 */
import './telemetry.js';

export * from 'onnxruntime-node';
