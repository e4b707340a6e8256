/**
 * Renders a benchmark run again from its JSON, without measuring anything
 * (no root, no sandbox):
 *
 *   node dist/bench/render.js bench/RESULTS.json > bench/RESULTS.md
 *
 * bench/run.js writes that JSON next to its markdown (FILE.md -> FILE.json).
 */
import fs from 'node:fs';
import { errorMessage, isAmbientError } from '../src/util/errors.js';
import { fromJson } from './results.js';
import { renderResults } from './render/index.js';

const USAGE = 'usage: node dist/bench/render.js RESULTS.json > RESULTS.md\n';

function main(argv: string[]): number {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (argv.length !== 1) {
    process.stderr.write(USAGE);
    return 2;
  }
  try {
    process.stdout.write(renderResults(fromJson(fs.readFileSync(argv[0]!, 'utf8'))));
    return 0;
  } catch (e) {
    process.stderr.write(`render: ${argv[0]}: ${isAmbientError(e) ? e.describe() : errorMessage(e)}\n`);
    return 1;
  }
}

process.exitCode = main(process.argv.slice(2));
