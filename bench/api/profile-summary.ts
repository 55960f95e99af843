/**
 * Summarises a V8 .cpuprofile (from `node --cpu-prof`): the functions with the
 * most self time, and with the most inclusive time.
 *
 * Run: npx tsx bench/api/profile-summary.ts FILE.cpuprofile [--top N]
 * (bench/api/run.ts --server-node-args "--cpu-prof --cpu-prof-dir DIR" profiles the daemon.)
 */
import { readFileSync } from 'node:fs';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
  hitCount?: number;
}
const [file, ...rest] = process.argv.slice(2);
const topIdx = rest.indexOf('--top');
const TOP = topIdx >= 0 ? Number(rest[topIdx + 1]) : 30;
const prof = JSON.parse(readFileSync(file, 'utf8')) as { nodes: Node[]; samples: number[] };
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const hits = new Map<number, number>();
for (const s of prof.samples) hits.set(s, (hits.get(s) ?? 0) + 1);
const total = prof.samples.length;
const label = (n: Node): string => `${n.callFrame.functionName || '(anon)'} ${n.callFrame.url.replace(/^.*\/(src|node_modules)\//, '$1/')}:${n.callFrame.lineNumber + 1}`;

const self = new Map<string, number>();
const incl = new Map<string, number>();
function walk(id: number, stack: Set<string>): number {
  const n = byId.get(id)!;
  let sum = hits.get(id) ?? 0;
  const l = label(n);
  self.set(l, (self.get(l) ?? 0) + sum);
  const added = !stack.has(l);
  if (added) stack.add(l);
  for (const c of n.children ?? []) sum += walk(c, stack);
  if (added) {
    stack.delete(l);
    incl.set(l, (incl.get(l) ?? 0) + sum);
  }
  return sum;
}
walk(prof.nodes[0].id, new Set());
const show = (title: string, m: Map<string, number>): void => {
  console.log(`\n${title} (of ${total} samples)`);
  for (const [l, v] of [...m].sort((a, b) => b[1] - a[1]).slice(0, TOP)) console.log(`${((100 * v) / total).toFixed(1).padStart(6)}%  ${l}`);
};
show('self', self);
show('inclusive', incl);
