"""Confident learning (Northcutt, Jiang & Chuang, JAIR 2021), written from the paper in plain numpy as an
independent reference for src/audit/confident.ts (cleanlab is AGPL and not installable here).

Reads JSON {"probabilities": [[...], ...], "labels": [...], "classes": m} on stdin; prints JSON with thresholds,
confident joint, calibrated joint, noise matrix and the rows flagged by prune-by-noise-rate.

The choices the paper leaves open (see the module comment of src/audit/confident.ts): float64 arithmetic, an
empty class's threshold is +inf, argmax ties to the lower class, an all-zero confident-joint row stays zero,
each class's off-diagonal total rounded half up and spread by largest remainder, margin ties to the lower row index.
"""
import json
import math
import sys

import numpy as np


def confident_learning(p, s, m, filter_by="prune_by_noise_rate"):
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
    off_diagonal = [x for x in range(n) if above[x].any() and best[x] != s[x]]
    # Sec. 3.2, prune by class: for each given class i, the n * sum_{j != i} Q[i][j] rows labelled i with the lowest
    # self-confidence.
    by_class = set()
    for i in range(m):
        rows_i = np.nonzero(s == i)[0]
        off = 0.0
        for j in range(m):
            if j != i:
                off += q[i, j]
        take = math.floor(n * off + 0.5)
        if take == 0:
            continue
        order = np.argsort(p[rows_i, i], kind="stable")
        by_class.update(int(r) for r in rows_i[order[:take]])
    # Sec. 3.2, prune by noise rate: for each off-diagonal (i, j), the n*Q[i][j] rows labelled i with the largest
    # margin p(j) - p(i).
    # The rounding (the paper leaves it open): each given class's off-diagonal total round(n * sum_j Q[i][j]) is
    # kept, the extra rows going to the cells with the largest remainders (lower j on ties).
    flagged = set()
    for i in range(m):
        rows_i = np.nonzero(s == i)[0]
        exact = [n * q[i, j] if j != i else 0.0 for j in range(m)]
        total = 0.0
        for j in range(m):
            if j != i:
                total += exact[j]
        counts = [math.floor(v) if j != i else 0 for j, v in enumerate(exact)]
        left = math.floor(total + 0.5) - sum(counts)
        by_remainder = sorted((j for j in range(m) if j != i), key=lambda j: (-(exact[j] - counts[j]), j))
        for j in by_remainder[: max(0, left)]:
            counts[j] += 1
        for j in range(m):
            if i == j:
                continue
            take = counts[j]
            if take == 0:
                continue
            margin = p[rows_i, j] - p[rows_i, i]
            order = np.argsort(-margin, kind="stable")
            flagged.update(int(r) for r in rows_i[order[:take]])
    chosen = {
        "prune_by_noise_rate": flagged,
        "prune_by_class": by_class,
        "both": flagged & by_class,
        "confident_joint": set(off_diagonal),
        "predicted_neq_given": set(int(x) for x in np.nonzero(np.argmax(p, axis=1) != s)[0]),
    }[filter_by]
    return {
        "thresholds": [float(v) if np.isfinite(v) else None for v in t],
        "confidentJoint": cj.ravel().tolist(),
        "joint": q.ravel().tolist(),
        "noiseMatrix": noise.ravel().tolist(),
        "flagged": sorted(chosen),
    }


def main():
    data = json.load(sys.stdin)
    m = int(data["classes"])
    p = np.asarray(data["probabilities"], dtype=np.float64).reshape(-1, m)
    s = np.asarray(data["labels"], dtype=np.int64)
    json.dump(confident_learning(p, s, m, data.get("filterBy", "prune_by_noise_rate")), sys.stdout)


if __name__ == "__main__":
    main()
