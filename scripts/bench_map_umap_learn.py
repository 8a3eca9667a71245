"""umap-learn's layout from the same precomputed kNN graph featcache's map lays out (the baseline of bench-map).

usage: bench_map_umap_learn.py features.f32 dim graph.bin count k epochs
graph.bin: count*k int32 indices then count*k float32 distances (featcache's cached graph, self excluded); the point
itself is put back as column 0, as umap-learn expects (n_neighbors = k + 1). Prints JSON with the seconds of fit.
"""
import json
import resource
import sys
import time
import warnings

import numpy as np
import umap
from pynndescent import NNDescent

warnings.filterwarnings("ignore")
features_file, dim, graph_file, count, k, epochs = sys.argv[1:7]
count, k, dim, epochs = int(count), int(k), int(dim), int(epochs)
X = np.fromfile(features_file, dtype=np.float32).reshape(count, dim)
raw = np.fromfile(graph_file, dtype=np.uint8)
indices = raw[: count * k * 4].view(np.int32).reshape(count, k)
distances = raw[count * k * 4 :].view(np.float32).reshape(count, k)
self_column = np.arange(count, dtype=np.int32).reshape(-1, 1)
knn_indices = np.hstack([self_column, indices])
knn_dists = np.hstack([np.zeros((count, 1), dtype=np.float32), distances])
started = time.perf_counter()
model = umap.UMAP(
    n_neighbors=k + 1,
    metric="cosine",
    n_epochs=epochs,
    random_state=0,
    # umap-learn 0.5.3 insists on a search index (used only by transform); an empty one passes its check.
    precomputed_knn=(knn_indices, knn_dists, NNDescent.__new__(NNDescent)),
)
embedding = model.fit_transform(X)
seconds = time.perf_counter() - started
print(json.dumps({
    "seconds": seconds,
    "points": int(embedding.shape[0]),
    "peakRssMb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    "umapVersion": umap.__version__,
    "init": "spectral (umap-learn's default)",
}))
