import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root (tests run from dist/test/...). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const BPF_OBJECT = path.join(ROOT, 'bpf', 'ambient.bpf.o');
export const CLI = path.join(ROOT, 'dist', 'src', 'cli.js');
