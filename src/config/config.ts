/**
 * Agent settings: a YAML/JSON file plus command-line overrides, read and
 * validated field by field, as the table in settings.ts declares them, into
 * one typed, frozen AgentConfig.
 */
import fs from 'node:fs';
import YAML from 'yaml';
import { AmbientError } from '../util/errors.js';
import { FieldError, isObj, show, type Obj } from '../util/fields.js';
import { Derived, didYouMean, entries, isGroup, Required, SETTINGS, type AgentConfig, type Group, type Setting } from './settings.js';

export { DEFAULT_PORTS, defaultBpfObject, type AgentConfig, type Ports } from './settings.js';
export { parseDuration, parseSize } from './units.js';

type AnySetting = Setting<unknown>;
type AnyGroup = Group<Record<string, AnySetting>>;

const TABLE = Object.entries(SETTINGS) as Array<[string, AnySetting | AnyGroup]>;
const KEYS = TABLE.map(([field, s]) => s.key ?? field);

/** One setting: its value, or its default when absent (undefined; null too unless null is a value of its kind). */
function readSetting(s: AnySetting, v: unknown, field: string, above: Obj): unknown {
  if (v === undefined || (v === null && !s.kind.takesNull)) {
    const d = s.default instanceof Derived ? s.default.compute(above) : s.default;
    if (d instanceof Required) throw new FieldError(field, d.when ? `is required ${d.when}` : 'is required', 'CONFIG_INVALID');
    return d;
  }
  return s.kind.read(v, field);
}

function readGroup(g: AnyGroup, v: unknown, field: string): Obj {
  const names = Object.keys(g.members);
  if (v === undefined || v === null) v = {};
  if (!isObj(v)) throw new FieldError(field, `must be a mapping of ${names.join(', ')}, got ${show(v)}`, 'CONFIG_INVALID');
  const keys = Object.entries(g.members).map(([m, s]) => s.key ?? m);
  for (const k of Object.keys(v))
    if (!keys.includes(k)) throw new FieldError(`${field}.${k}`, `is not a known ${g.noun} (known: ${keys.join(', ')})`, 'CONFIG_INVALID');
  const out: Obj = {};
  for (const [m, s] of Object.entries(g.members)) out[m] = readSetting(s, v[s.key ?? m], `${field}.${s.key ?? m}`, out);
  g.check?.(out, field);
  return Object.freeze(out);
}

/** Where a field's value came from, for errors: the file's name, "<flags>", or both. */
type Origin = { name: string; file: boolean; flags: boolean };

function problem(field: string, why: string, origin: Origin, cause?: unknown): AmbientError {
  const entry = entries().find((e) => e.key === field);
  let fix: string;
  if (/^is required/.test(why)) fix = `set "${field}" in the config file${entry?.flag ? ` or pass ${entry.flag}` : ''}`;
  else if (/^is not a known/.test(why)) {
    const guess = didYouMean(field, 'key');
    fix = `${guess ? `did you mean "${guess}"? ` : ''}${origin.flags ? 'fix the flag' : 'fix the field in the config file'}`;
  } else if (origin.file && origin.flags) fix = 'fix the config file or the flags';
  else if (origin.flags) fix = `fix ${entry?.flag ?? 'the flag'}`;
  else fix = 'fix the field in the config file';
  return new AmbientError(
    'CONFIG_INVALID',
    `${origin.name}: field "${field}" ${why}`,
    `${fix} (\`ambientd agent --help\` lists every setting and its default)`,
    cause ? { cause } : {},
  );
}

/** Validates a settings object (a file's, merged with flags); an error names the field and `where(field)` it came from. */
function readSettings(raw: unknown, where: (field: string) => Origin): AgentConfig {
  if (!isObj(raw)) {
    throw new AmbientError(
      'CONFIG_INVALID',
      `${where('').name}: the config must be a mapping of settings`,
      'write the settings as YAML or JSON keys, e.g. `node: node-1`',
    );
  }
  for (const k of Object.keys(raw)) if (!KEYS.includes(k)) throw problem(k, `is not a known setting (known: ${KEYS.join(', ')})`, where(k));
  const out: Obj = {};
  for (const [field, s] of TABLE) {
    const key = s.key ?? field;
    try {
      out[field] = isGroup(s) ? readGroup(s, raw[key], key) : readSetting(s, raw[key], key, out);
    } catch (e) {
      if (e instanceof FieldError) throw problem(e.field, e.problem, where(e.field), e);
      throw e;
    }
  }
  return Object.freeze(out) as unknown as AgentConfig;
}

/** Validates a parsed settings object (from a file and/or flags). */
export function parseConfig(raw: unknown, file = '<config>'): AgentConfig {
  return readSettings(raw, () => ({ name: file, file: true, flags: false }));
}

export function parseDocument(text: string, file: string, code: 'CONFIG_INVALID' | 'WORKLOADS_INVALID'): unknown {
  try {
    if (file.endsWith('.json')) return JSON.parse(text);
    // JSON is YAML: take the fast parser when the document is a JSON object
    if (/^\s*\{/.test(text)) {
      try {
        return JSON.parse(text);
      } catch {
        /* not strict JSON: YAML below */
      }
    }
    return YAML.parse(text, { uniqueKeys: true });
  } catch (e) {
    throw new AmbientError(
      code,
      `${file}: not valid ${file.endsWith('.json') ? 'JSON' : 'YAML'}: ${(e as Error).message.split('\n')[0]}`,
      'fix the syntax; the agent keeps its last good state meanwhile',
      { cause: e },
    );
  }
}

/**
 * The settings file (null: none) with `overrides` (settings keys, from
 * flags) on top; a group's members override one by one (`ports: {admin: 1}`
 * keeps the file's other ports).
 */
export function loadConfig(file: string | null, overrides: Record<string, unknown> = {}): AgentConfig {
  let raw: Obj = {};
  if (file) {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      throw new AmbientError(
        'CONFIG_UNREADABLE',
        `cannot read config file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
        'pass an existing file with --config',
        { cause: e },
      );
    }
    const doc = parseDocument(text, file, 'CONFIG_INVALID');
    if (doc !== null && !isObj(doc)) return parseConfig(doc, file);
    raw = doc ?? {};
  }
  const groups = new Set(TABLE.filter(([, s]) => isGroup(s)).map(([field, s]) => s.key ?? field));
  const merged: Obj = { ...raw };
  for (const [k, v] of Object.entries(overrides)) {
    if (v === undefined) continue;
    // a group's members one by one; a file's group that is no mapping stays (and is reported)
    if (groups.has(k) && isObj(v) && raw[k] !== undefined && raw[k] !== null) merged[k] = isObj(raw[k]) ? { ...raw[k], ...v } : raw[k];
    else merged[k] = v;
  }
  const has = (o: Obj, field: string): boolean => {
    const [top, member] = field.split('.') as [string, string | undefined];
    const v = o[top];
    return v !== undefined && (member === undefined || !isObj(v) || v[member] !== undefined);
  };
  return readSettings(merged, (field) => {
    const flags = file === null || has(overrides, field);
    // a flag wins over the file for a setting; a group's check sees both
    const fromFile = file !== null && has(raw, field) && (!flags || (!field.includes('.') && groups.has(field)));
    return { name: fromFile && flags ? `${file} with flags` : flags ? '<flags>' : file, file: fromFile, flags };
  });
}
