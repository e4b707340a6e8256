/**
 * Where a process spends its CPU: `perf record` samples of some processes,
 * sorted by symbol into PERF_CATEGORIES (bench/hbone.ts profiles the relays
 * with it). perf is optional: without it the profile is null.
 */
import fs from 'node:fs';
import path from 'node:path';
import { execFileP } from './lib.js';
import { PERF_CATEGORIES, type PerfCategory, type PerfProfile } from './results.js';

export function perfCategory(sym: string, dso: string): PerfCategory {
  if (dso.startsWith('[kernel') || dso === '[vdso]') return 'kernel';
  if (
    /libssl|libcrypto/.test(dso) ||
    /aesni|gcm|ghash|sha256|sha512|ossl_|^EVP_|^CRYPTO_|ssl3_|^tls1?_|^SSL_|^BIO_|^aes_|chacha|poly1305|ecp_nistz256|^bn_|^OPENSSL_/i.test(sym)
  )
    return 'TLS crypto';
  if (/nghttp2/i.test(sym) || /libnghttp2/.test(dso)) return 'HTTP/2 (nghttp2)';
  if (/v8::internal::.*(Mark|Sweep|Scaveng|Evacuat|Compact|Concurrent|GC|Heap::|MemoryAllocator|PagedSpace|Minor|Remembered|SlotSet)/.test(sym)) return 'V8 GC';
  if (dso.startsWith('[JIT]') || /^Builtins_|v8::|node::|^uv_|^uv__|^Node|^v8/.test(sym) || /perf-\d+\.map/.test(dso)) return 'JS + V8 + libuv';
  if (/libc\.so|libc-/.test(dso)) return 'libc (memcpy, malloc)';
  return 'other';
}

/**
 * Samples the given processes (all their threads) with `perf record` for
 * `seconds` and sorts the samples into PERF_CATEGORIES. Null if perf is
 * missing or fails (the benchmarks then go on without it).
 */
export async function perfProfile(pids: Record<string, number>, seconds: number, dir: string, freq = 499): Promise<PerfProfile | null> {
  const file = path.join(dir, `perf-${process.pid}-${Date.now()}.data`);
  const byPid = new Map(Object.entries(pids).map(([k, v]) => [v, k]));
  try {
    await execFileP('perf', ['record', '-q', '-F', String(freq), '-o', file, '-p', [...byPid.keys()].join(','), '--', 'sleep', String(seconds)], {
      timeout: seconds * 1000 + 20_000,
    });
    const { stdout } = await execFileP('perf', ['script', '-i', file, '-F', 'pid,ip,sym,dso'], { maxBuffer: 256 << 20, timeout: 60_000 });
    const byProc: PerfProfile['byProc'] = {};
    const syms = new Map<string, Map<string, number>>();
    for (const name of byPid.values()) {
      byProc[name] = Object.fromEntries([...PERF_CATEGORIES, 'total'].map((c) => [c, 0])) as Record<PerfCategory | 'total', number>;
      syms.set(name, new Map());
    }
    const unit = 100 / (freq * seconds); // one sample, in % of a core
    for (const line of stdout.split('\n')) {
      const m = /^\s*(\d+)\s+[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$/.exec(line);
      if (!m) continue;
      const name = byPid.get(Number(m[1]));
      if (!name) continue;
      const sym = m[2] === '[unknown]' ? `[unknown in ${path.basename(m[3]!)}]` : m[2]!;
      const cat = perfCategory(sym, m[3]!);
      byProc[name]![cat] += unit;
      byProc[name]!.total += unit;
      const key = `${sym}\0${path.basename(m[3]!)}`;
      syms.get(name)!.set(key, (syms.get(name)!.get(key) ?? 0) + unit);
    }
    const top: PerfProfile['top'] = {};
    for (const [name, m] of syms) {
      top[name] = [...m]
        .sort((a, b) => b[1] - a[1])
        .slice(0, 8)
        .map(([k, pct]) => ({ sym: k.split('\0')[0]!, dso: k.split('\0')[1]!, pct }));
    }
    return { byProc, top, seconds };
  } catch {
    return null;
  } finally {
    fs.rmSync(file, { force: true });
    fs.rmSync(`${file}.old`, { force: true });
  }
}
