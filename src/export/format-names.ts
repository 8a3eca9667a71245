/** Export format names, apart from the writers so that --help reads them without loading Arrow or Parquet. */
export const FORMATS = ['libsvm', 'svmlight', 'npy', 'csv', 'parquet', 'arrow'] as const;
export type Format = (typeof FORMATS)[number];

/** Label written for rows without one (unlabelled images); class indices are 0-based. */
export const UNLABELLED = -1;
