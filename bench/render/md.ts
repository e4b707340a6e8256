/** Markdown and plain-text tables for the renderer. */

export function table(head: string[], rows: string[][]): string {
  return [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

/** Columns padded for a terminal: the first left-aligned, the others right-aligned. */
export function textTable(head: string[], rows: string[][]): string {
  const all = [head, ...rows];
  const w = head.map((_, c) => Math.max(...all.map((r) => r[c]!.length)));
  return all.map((r) => r.map((cell, c) => (c === 0 ? cell.padEnd(w[c]!) : cell.padStart(w[c]!))).join('  ')).join('\n');
}

/** "met" / "**NOT met**" / "not measured". */
export const yes = (b: boolean | null): string => (b === null ? 'not measured' : b ? 'met' : '**NOT met**');
/** The same without markdown emphasis. */
export const plain = (s: string): string => s.replace(/\*/g, '');
