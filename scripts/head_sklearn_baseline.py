"""scikit-learn baseline for scripts/bench-head.ts: LogisticRegression over a C grid on the same cached features.

Usage: head_sklearn_baseline.py DIR  (DIR holds train.f32, train.labels, val.f32, val.labels, meta.json {dim})
Prints one JSON object: val accuracy per C (raw and l2-normalised), the best, and the grid's wall time.
"""
import json, os, sys, time
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import normalize
import sklearn

d = sys.argv[1]
meta = json.load(open(os.path.join(d, "meta.json")))
load = lambda name, dt: np.fromfile(os.path.join(d, name), dtype=dt)
xtr = load("train.f32", np.float32).reshape(-1, meta["dim"]); ytr = load("train.labels", np.int32)
xva = load("val.f32", np.float32).reshape(-1, meta["dim"]); yva = load("val.labels", np.int32)
grid = [0.01, 0.1, 1.0, 10.0, 100.0]
results = []
start = time.perf_counter()
for norm in ("none", "l2"):
    a, b = (xtr, xva) if norm == "none" else (normalize(xtr), normalize(xva))
    for c in grid:
        t = time.perf_counter()
        clf = LogisticRegression(C=c, max_iter=1000).fit(a, ytr)
        results.append({"normalize": norm, "C": c, "valAcc": float((clf.predict(b) == yva).mean()), "seconds": time.perf_counter() - t})
seconds = time.perf_counter() - start
best = max(results, key=lambda r: r["valAcc"])
print(json.dumps({"sklearn": sklearn.__version__, "grid": results, "best": best, "seconds": seconds,
                  "bestRaw": max(r["valAcc"] for r in results if r["normalize"] == "none"),
                  "bestL2": max(r["valAcc"] for r in results if r["normalize"] == "l2")}))
