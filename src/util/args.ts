/**
 * Command-line argument helpers shared by the commands of src/cli.ts and the
 * development tools' commands (tools/sandbox/cli.ts): a bad argument is a
 * USAGE error (exit 2) with a hint.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { AmbientError } from './errors.js';

export function usage(msg: string): AmbientError {
  return new AmbientError('USAGE', msg, 'run `ambientd --help`');
}

export function parse<T extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: T, allowPositionals = false) {
  try {
    return parseArgs({ args, options, allowPositionals, strict: true });
  } catch (e) {
    throw usage((e as Error).message);
  }
}

export function intFlag(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n)) throw usage(`--${name} must be an integer, got ${JSON.stringify(v)}`);
  return n;
}
