/** Structured JSON-lines logger with runtime-adjustable levels (admin /logging). */
export type Level = 'debug' | 'info' | 'warn' | 'error' | 'off';
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40, off: 100 };
export const LEVELS = Object.keys(ORDER) as Level[];

export function isLevel(s: string): s is Level {
  return Object.prototype.hasOwnProperty.call(ORDER, s);
}

/** Keys a root logger remembers for once(); past this many, new keys log at debug only. */
const ONCE_KEYS = 4096;

export class Logger {
  private level: Level;
  private readonly seen = new Set<string>();
  constructor(
    readonly scope: string,
    level: Level = 'info',
    private readonly sink: (line: string) => void = (l) => process.stderr.write(l + '\n'),
    private readonly root?: Logger,
  ) {
    this.level = level;
  }
  child(scope: string): Logger {
    return new Logger(`${this.scope}.${scope}`, this.level, this.sink, this.root ?? this);
  }
  getLevel(): Level {
    return this.root ? this.root.getLevel() : this.level;
  }
  setLevel(l: Level): void {
    if (this.root) this.root.setLevel(l);
    else this.level = l;
  }
  enabled(l: Level): boolean {
    return ORDER[l] >= ORDER[this.getLevel()];
  }
  /** A line already formatted elsewhere (a data-plane worker's), to this logger's sink as it is. */
  write(line: string): void {
    this.sink(line);
  }
  log(l: Exclude<Level, 'off'>, msg: string, fields: Record<string, unknown> = {}): void {
    if (!this.enabled(l)) return;
    this.sink(JSON.stringify({ time: new Date().toISOString(), level: l, scope: this.scope, msg, ...fields }, replacer));
  }
  /**
   * Logs the first occurrence of `key` at `level` and every later one at
   * debug: bad input an attacker can repeat at will (a refused CONNECT, a
   * foreign peer) is reported once with its cause, never floods the log. The
   * metrics count every occurrence.
   */
  once(key: string, l: Exclude<Level, 'off'>, msg: string, fields: Record<string, unknown> = {}): void {
    const seen = (this.root ?? this).seen;
    const k = `${this.scope}\0${key}`;
    if (seen.has(k) || seen.size >= ONCE_KEYS) {
      this.log('debug', msg, fields);
      return;
    }
    seen.add(k);
    this.log(l, msg, { ...fields, note: 'logged once; later occurrences at debug, counted in the metrics' });
  }
  debug(msg: string, f?: Record<string, unknown>): void {
    this.log('debug', msg, f);
  }
  info(msg: string, f?: Record<string, unknown>): void {
    this.log('info', msg, f);
  }
  warn(msg: string, f?: Record<string, unknown>): void {
    this.log('warn', msg, f);
  }
  error(msg: string, f?: Record<string, unknown>): void {
    this.log('error', msg, f);
  }
}

function replacer(_k: string, v: unknown): unknown {
  if (typeof v === 'bigint') return v.toString();
  if (v instanceof Error) {
    const code = (v as unknown as { code?: unknown }).code;
    return { message: v.message, ...(typeof code === 'string' ? { code } : {}) };
  }
  return v;
}
