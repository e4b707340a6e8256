/**
 * The units settings are written in: durations ("30s", "24h", or a number of
 * milliseconds) and sizes ("256KiB", "32MiB", or a number of bytes), read and
 * written back (help text shows defaults the way a file would hold them).
 */

const DURATION_UNITS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
const SIZE_UNITS = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 } as const;

/** "24h", "90s", "500ms", "15m", "1d" or a number of milliseconds; null when it is none of these or not > 0. */
export function parseDuration(v: unknown): number | null {
  if (typeof v === 'number' && Number.isFinite(v) && v > 0) return v;
  if (typeof v !== 'string') return null;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(v.trim());
  if (!m) return null;
  const n = Number(m[1]) * DURATION_UNITS[m[2] as keyof typeof DURATION_UNITS];
  return n > 0 ? n : null;
}

/** "256KiB", "32MiB", "1GiB", "4096" or a number of bytes; null when it is none of these or not > 0. */
export function parseSize(v: unknown): number | null {
  if (typeof v === 'number' && Number.isInteger(v) && v > 0) return v;
  if (typeof v !== 'string') return null;
  const m = /^(\d+)(B|KiB|MiB|GiB)?$/.exec(v.trim());
  if (!m) return null;
  const n = Number(m[1]) * SIZE_UNITS[(m[2] ?? 'B') as keyof typeof SIZE_UNITS];
  return Number.isSafeInteger(n) && n > 0 ? n : null;
}

/** 30000 -> "30s", 86400000 -> "24h", 150 -> "150ms": the largest of h, m, s, ms that divides it. */
export function formatDuration(ms: number): string {
  for (const [unit, n] of [
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const) {
    if (ms >= n && ms % n === 0) return `${ms / n}${unit}`;
  }
  return `${ms}ms`;
}

/** 33554432 -> "32MiB", 4096 -> "4KiB", 1000 -> "1000": the largest binary unit that divides it. */
export function formatSize(bytes: number): string {
  for (const [unit, n] of [
    ['GiB', 1024 ** 3],
    ['MiB', 1024 ** 2],
    ['KiB', 1024],
  ] as const) {
    if (bytes >= n && bytes % n === 0) return `${bytes / n}${unit}`;
  }
  return String(bytes);
}
