"""scikit-learn reference for scripts/bench-head-scale.ts: LogisticRegression at one C and normalisation.

Usage: head_scale_sklearn.py DIR C NORMALIZE  (DIR holds train.f32, train.labels, val.f32, val.labels, meta.json {dim})
Prints one JSON object: val accuracy, fit seconds, iterations.
"""
import json, os, sys, time
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler, normalize
import sklearn

d, c, norm = sys.argv[1], float(sys.argv[2]), sys.argv[3]
meta = json.load(open(os.path.join(d, "meta.json")))
load = lambda name, dt: np.fromfile(os.path.join(d, name), dtype=dt)
xtr = load("train.f32", np.float32).reshape(-1, meta["dim"]); ytr = load("train.labels", np.int32)
xva = load("val.f32", np.float32).reshape(-1, meta["dim"]); yva = load("val.labels", np.int32)
if norm == "l2":
    xtr, xva = normalize(xtr), normalize(xva)
elif norm == "standard":
    s = StandardScaler().fit(xtr); xtr, xva = s.transform(xtr), s.transform(xva)
t = time.perf_counter()
clf = LogisticRegression(C=c, max_iter=1000).fit(xtr, ytr)
seconds = time.perf_counter() - t
print(json.dumps({"sklearn": sklearn.__version__, "C": c, "normalize": norm, "valAcc": float((clf.predict(xva) == yva).mean()),
                  "seconds": seconds, "iterations": int(np.max(clf.n_iter_))}))
