"""Confident learning (Northcutt, Jiang & Chuang, JAIR 2021), written from the paper in plain numpy as an
independent reference for src/audit/confident.ts (cleanlab is AGPL and not installable here).

Reads JSON {"probabilities": [[...], ...], "labels": [...], "classes": m} on stdin; prints JSON with thresholds,
confident joint, calibrated joint, noise matrix and the rows flagged by prune-by-noise-rate.

The choices the paper leaves open (see the module comment of src/audit/confident.ts): float64 arithmetic, an
empty class's threshold is +inf, argmax ties to the lower class, an all-zero confident-joint row stays zero,
round half up, margin ties to the lower row index.
"""
import json
import math
import sys

import numpy as np


def confident_learning(p, s, m):
    n = len(s)
    # Sec. 2.2: t_j is the expected self-confidence of class j: mean of p(y~=j; x) over x with given label j.
    t = np.full(m, np.inf)
    for j in range(m):
        rows = p[s == j]
        if len(rows) > 0:
            t[j] = rows[:, j].mean()
    # Eq. 1: the confident joint C[i][j] counts x labelled i whose likeliest above-threshold class is j.
    cj = np.zeros((m, m))
    above = p >= t[None, :]
    masked = np.where(above, p, -np.inf)
    best = np.argmax(masked, axis=1)  # first maximum: the lower class on ties
    for x in range(n):
        if above[x].any():
            cj[s[x], best[x]] += 1
    # Eq. 2-3: calibrate each row to the class's count, then normalise to a joint distribution.
    counts = np.bincount(s, minlength=m).astype(np.float64)
    row_sums = cj.sum(axis=1)
    q = np.zeros((m, m))
    nz = row_sums > 0
    q[nz] = cj[nz] / row_sums[nz, None] * counts[nz, None]
    if q.sum() > 0:
        q = q / q.sum()
    qs = q.sum(axis=1)
    noise = np.zeros((m, m))
    noise[qs > 0] = q[qs > 0] / qs[qs > 0, None]
    # Sec. 3.2, prune by noise rate: for each off-diagonal (i, j), the n*Q[i][j] rows labelled i with the largest
    # margin p(j) - p(i).
    flagged = set()
    for i in range(m):
        rows_i = np.nonzero(s == i)[0]
        for j in range(m):
            if i == j:
                continue
            take = math.floor(n * q[i, j] + 0.5)
            if take == 0:
                continue
            margin = p[rows_i, j] - p[rows_i, i]
            order = np.argsort(-margin, kind="stable")
            flagged.update(int(r) for r in rows_i[order[:take]])
    return {
        "thresholds": [float(v) if np.isfinite(v) else None for v in t],
        "confidentJoint": cj.ravel().tolist(),
        "joint": q.ravel().tolist(),
        "noiseMatrix": noise.ravel().tolist(),
        "flagged": sorted(flagged),
    }


def main():
    data = json.load(sys.stdin)
    m = int(data["classes"])
    p = np.asarray(data["probabilities"], dtype=np.float64).reshape(-1, m)
    s = np.asarray(data["labels"], dtype=np.int64)
    json.dump(confident_learning(p, s, m), sys.stdout)


if __name__ == "__main__":
    main()
