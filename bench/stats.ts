/**
 * Pure statistics and number formatting, shared by the measuring code (its
 * progress lines) and the renderer (bench/render/). No I/O.
 */

/** Nearest-rank percentile (p=100: max); NaN for no data. */
export function pct(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}
export const median = (xs: number[]): number => pct(xs, 50);
export const mean = (xs: number[]): number => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);
export const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
export const fmt = (x: number | null | undefined, d = 1): string => (x === null || x === undefined || Number.isNaN(x) ? '-' : x.toFixed(d));
export const signed = (x: number, d = 1): string => (Number.isNaN(x) ? '-' : `${x >= 0 ? '+' : ''}${x.toFixed(d)}`);

/** Least-squares slope of y over x; NaN with fewer than 2 points or no spread in x. */
export function slope(points: Array<[number, number]>): number {
  const n = points.length;
  if (n < 2) return NaN;
  const mx = points.reduce((a, p) => a + p[0], 0) / n;
  const my = points.reduce((a, p) => a + p[1], 0) / n;
  const num = points.reduce((a, p) => a + (p[0] - mx) * (p[1] - my), 0);
  const den = points.reduce((a, p) => a + (p[0] - mx) ** 2, 0);
  return den === 0 ? NaN : num / den;
}
