/**
 * Names that mean the same split, as datasets spell them: torchvision's train/val, Kaggle's training/validation,
 * and valid, test and testing. A split asked for by one name and present under another member of its family is found
 * there (when exactly one member is present), so the defaults `train` and `val` reach a dataset's `training` and
 * `validation` folders and the splits cached from them.
 */
export const SPLIT_FAMILIES: readonly (readonly string[])[] = Object.freeze([
  Object.freeze(['train', 'training']),
  Object.freeze(['val', 'validation', 'valid']),
  Object.freeze(['test', 'testing']),
]);

/** Every name of every family: the folder names that mark split folders. */
export const SPLIT_NAMES: readonly string[] = Object.freeze(SPLIT_FAMILIES.flat());

/** `requested` when it is available; else the one available member of its family; else `requested` unchanged. */
export function splitAlias(requested: string, available: readonly string[]): string {
  if (available.includes(requested)) return requested;
  const present = SPLIT_FAMILIES.find((f) => f.includes(requested))?.filter((n) => available.includes(n)) ?? [];
  return present.length === 1 ? present[0]! : requested;
}
