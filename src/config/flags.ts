/**
 * The flags of `ambientd agent` and the settings part of its --help, both
 * from the table in settings.ts: each setting's flag sets its key (a group's
 * members with their own flags set `group.member`; a group with one
 * KEY=VALUE flag, --limit, sets any member).
 */
import { parseArgs } from 'node:util';
import { AmbientError } from '../util/errors.js';
import { show, type Obj } from '../util/fields.js';
import { didYouMean, isGroup, Required, Derived, SETTINGS, type Group, type Setting } from './settings.js';

type AnySetting = Setting<unknown>;
type AnyGroup = Group<Record<string, AnySetting>>;
type FlagOption = { type: 'string' | 'boolean'; multiple?: boolean; short?: string };

const TABLE = Object.entries(SETTINGS) as Array<[string, AnySetting | AnyGroup]>;

/** Flags of `ambientd agent` that are not settings. */
const COMMAND_FLAGS: Record<string, FlagOption> = { help: { type: 'boolean', short: 'h' }, config: { type: 'string' } };

const HINT = 'run `ambientd agent --help` for every flag and its default';

/** parseArgs options: the command's own flags and one per setting (a KEY=VALUE group flag repeats). */
export function agentFlagOptions(): Record<string, FlagOption> {
  const out: Record<string, FlagOption> = { ...COMMAND_FLAGS };
  for (const [, s] of TABLE) {
    if (isGroup(s)) {
      if (s.flag) out[s.flag] = { type: 'string', multiple: true };
      else for (const m of Object.values(s.members)) if (m.flag) out[m.flag] = { type: 'string' };
    } else if (s.flag) out[s.flag] = { type: 'string' };
  }
  return out;
}

export interface AgentArgs {
  help: boolean;
  /** --config FILE, or null */
  config: string | null;
  /** settings given as flags, by their keys in the file (loadConfig's overrides) */
  overrides: Obj;
}

/** `ambientd agent` arguments; a bad flag is a USAGE error that names it (and the flag meant, when it is a near miss). */
export function parseAgentArgs(args: string[]): AgentArgs {
  let values: Record<string, string | boolean | Array<string | boolean> | undefined>;
  try {
    ({ values } = parseArgs({ args, options: agentFlagOptions(), strict: true, allowPositionals: false }));
  } catch (e) {
    const msg = (e as Error).message;
    const unknown = /Unknown option '([^']+)'/.exec(msg)?.[1];
    const guess = unknown ? didYouMean(unknown, 'flag') : null;
    throw new AmbientError('USAGE', msg, `${guess ? `did you mean ${guess}? ` : ''}${HINT}`);
  }
  return { help: values.help === true, config: typeof values.config === 'string' ? values.config : null, overrides: flagOverrides(values) };
}

function fromFlag(s: AnySetting, text: string, flag: string): unknown {
  return s.kind.fromFlag ? s.kind.fromFlag(text, flag) : text;
}

/** Flag values (parseArgs' `values`) -> settings by their file keys; flags not given are left out. */
export function flagOverrides(values: Record<string, unknown>): Obj {
  const out: Obj = {};
  for (const [field, s] of TABLE) {
    const key = s.key ?? field;
    if (!isGroup(s)) {
      const v = s.flag ? values[s.flag] : undefined;
      if (typeof v === 'string') out[key] = fromFlag(s, v, `--${s.flag}`);
      continue;
    }
    const members: Obj = {};
    if (s.flag) {
      const list = values[s.flag];
      for (const kv of Array.isArray(list) ? list : []) {
        const i = typeof kv === 'string' ? kv.indexOf('=') : -1;
        if (i <= 0)
          throw new AmbientError('USAGE', `--${s.flag} must be KEY=VALUE, got ${show(kv)}`, `KEY is one of ${Object.keys(s.members).join(', ')}; ${HINT}`);
        const [k, text] = [(kv as string).slice(0, i), (kv as string).slice(i + 1)];
        const m = Object.entries(s.members).find(([name, ms]) => (ms.key ?? name) === k)?.[1];
        // an unknown KEY is left for the settings check, which lists the known ones
        members[k] = m ? fromFlag(m, text, `--${s.flag} ${k}`) : text;
      }
    } else {
      for (const [name, m] of Object.entries(s.members)) {
        const v = m.flag ? values[m.flag] : undefined;
        if (typeof v === 'string') members[m.key ?? name] = fromFlag(m, v, `--${m.flag}`);
      }
    }
    if (Object.keys(members).length > 0) out[key] = members;
  }
  return out;
}

// ---------------------------------------------------------------------------
// --help
// ---------------------------------------------------------------------------

/** "[30s]", "(required)", "" for no default, or what the table says to show. */
function shownDefault(s: AnySetting): string {
  if (s.shown !== undefined) return s.shown;
  if (s.default instanceof Required) return '(required)';
  if (s.default instanceof Derived || s.default === null) return '';
  return `[${s.kind.format ? s.kind.format(s.default) : String(s.default)}]`;
}

/** "key (a | b): help (range) [default]" */
function describe(key: string, s: AnySetting): string {
  const values = s.kind.values ? ` (${s.kind.values.join(' | ')})` : '';
  const range = s.kind.range ? ` (${s.kind.range})` : '';
  return [`${key}${values}: ${s.help}${range}`, shownDefault(s)].filter(Boolean).join(' ');
}

/** Words of `text` in lines of at most `width` after `indent` columns (the first line's prefix is given). */
function wrap(first: string, indent: number, text: string, width: number): string[] {
  const lines: string[] = [];
  let line = first.padEnd(indent);
  let empty = true;
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (!empty && line.length + 1 + word.length > width) {
      lines.push(line);
      line = ' '.repeat(indent);
      empty = true;
    }
    line += (empty ? '' : ' ') + word;
    empty = false;
  }
  lines.push(line);
  return lines;
}

const FLAG_COLUMN = 23;

/**
 * The settings part of `ambientd agent --help`: one entry per setting, in
 * table order: its flag, its file key, what it does, its allowed values and
 * range, its default.
 */
export function settingsHelp(width = 100): string {
  const lines: string[] = [];
  const flagLine = (flag: string, arg: string | undefined, text: string): void => {
    const head = `  --${flag}${arg ? ` ${arg}` : ''}`;
    if (head.length >= FLAG_COLUMN) lines.push(head, ...wrap('', FLAG_COLUMN, text, width));
    else lines.push(...wrap(head, FLAG_COLUMN, text, width));
  };
  for (const [field, s] of TABLE) {
    const key = s.key ?? field;
    if (!isGroup(s)) {
      if (s.flag) flagLine(s.flag, s.arg, describe(key, s));
      continue;
    }
    if (!s.flag) {
      for (const [name, m] of Object.entries(s.members)) if (m.flag) flagLine(m.flag, m.arg, describe(`${key}.${m.key ?? name}`, m));
      continue;
    }
    flagLine(s.flag, s.arg, `${key}.K: ${s.help ?? ''}`);
    const labels = Object.entries(s.members).map(([name, m]) => `${m.key ?? name}=${shownDefault(m).replace(/^\[|\]$/g, '')}`);
    const labelWidth = Math.max(...labels.map((l) => l.length)) + 2;
    Object.values(s.members).forEach((m, i) => {
      const range = m.kind.range ? ` (${m.kind.range})` : '';
      lines.push(...wrap(' '.repeat(FLAG_COLUMN) + labels[i], FLAG_COLUMN + labelWidth, `${m.help}${range}`, width));
    });
  }
  return lines.join('\n');
}
