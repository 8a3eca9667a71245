/**
 * Reference rows from which `auto` search uses the HNSW index, in a module of its own so that the jobs' defaults
 * (loaded by every command line) can name it without loading the search. Measured (scripts/bench-neighbors.ts,
 * 1280-d, 2 cores): a self-kNN graph is faster exact up to ~80 k rows (exact ∝ n², HNSW build + queries ∝ n); a batch
 * of queries gains from a built index from ~20 k rows, but building it costs as much as tens of thousands of exact
 * queries there.
 */
export const ANN_THRESHOLD = 80_000;
