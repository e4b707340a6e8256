/**
 * The live heap of the calling thread's isolate after a full garbage
 * collection (the main thread's, or a data-plane worker's: process.memoryUsage
 * reports the heap of the isolate it runs in; rss is the process's): what
 * POST /debug/heap, leak hunts and the soak benchmark read.
 */
import v8 from 'node:v8';
import vm from 'node:vm';

export interface LiveHeap {
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  rss: number;
  gcMs: number;
}

let gcFn: (() => void) | null = null;
/** A full garbage collection (exposes V8's gc() once, on first use), then the heap figures. */
export function liveHeap(): LiveHeap {
  if (!gcFn) {
    v8.setFlagsFromString('--expose-gc');
    gcFn = vm.runInNewContext('gc') as () => void;
  }
  const t0 = process.hrtime.bigint();
  gcFn();
  const gcMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const m = process.memoryUsage();
  return { heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers, rss: m.rss, gcMs };
}
