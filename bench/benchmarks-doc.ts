/** docs/benchmarks.md: each bench/ command rewrites its own section there and leaves the others. */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const BENCHMARKS_DOC = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'docs', 'benchmarks.md');

/**
 * Puts `section` (which starts with its own `## heading` line) where the
 * section of that heading was, or at the end; returns the file's path.
 */
export function writeBenchmarkSection(heading: string, section: string): string {
  const doc = existsSync(BENCHMARKS_DOC) ? readFileSync(BENCHMARKS_DOC, 'utf8') : '# Benchmarks\n';
  const start = doc.indexOf(heading);
  const body = `${section.trimEnd()}\n`;
  let out: string;
  if (start < 0) out = `${doc.trimEnd()}\n\n${body}`;
  else {
    const next = doc.indexOf('\n## ', start + heading.length);
    out = doc.slice(0, start) + body + (next < 0 ? '' : `\n${doc.slice(next + 1)}`);
  }
  writeFileSync(BENCHMARKS_DOC, out);
  return BENCHMARKS_DOC;
}
