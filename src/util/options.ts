/**
 * Options given over a job's frozen defaults. A key given as `undefined` keeps its default, so a caller (the CLI) can
 * pass every optional flag through without knowing which ones the user set.
 */
export function withDefaults<D extends object, G extends object>(defaults: D, given: G): D & G {
  const set = Object.fromEntries(Object.entries(given).filter(([, value]) => value !== undefined));
  return { ...defaults, ...set } as D & G;
}
