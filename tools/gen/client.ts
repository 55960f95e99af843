/**
 * Generates src/client/generated.ts — the typed client's method declarations —
 * from the datamodel. Record and enum types come from the shared
 * src/datamodel/generated/records.ts.
 */
import { MODEL } from '../../src/datamodel/model.ts';
import { HEADER, ident, tsType } from './ts-types.ts';

export function generateClient(): string {
  const out: string[] = [
    ...HEADER('tools/gen/client.ts'),
    "import type * as R from '../datamodel/generated/records.ts';",
    '',
    "export type * from '../datamodel/generated/records.ts';",
    '',
  ];
  const signature = (params: readonly { name: string; type: Parameters<typeof tsType>[0]; default?: unknown }[]): string =>
    params.map((p) => `${ident(p.name)}${p.default ? '?' : ''}: ${tsType(p.type, 'R.')}`).join(', ');
  for (const c of MODEL) {
    const ms = [...c.messages.values()].filter((m) => m.session);
    out.push(`export interface ${c.name}_api {`);
    for (const m of ms) out.push(`  ${m.name}(${signature(m.params)}): Promise<${tsType(m.result, 'R.')}>;`);
    out.push('}', '', `export interface ${c.name}_async_api {`);
    for (const m of ms.filter((x) => x.async)) out.push(`  ${m.name}(${signature(m.params)}): Promise<R.Ref<'task'>>;`);
    out.push('}', '');
  }
  out.push('/** Every class, as the client exposes it: `client.api.VM.start(vm, false, false)`. */', 'export interface XenApiClasses {');
  for (const c of MODEL) out.push(`  ${c.name}: ${c.name}_api;`);
  out.push('}', '', 'export interface XenApiAsyncClasses {');
  for (const c of MODEL) out.push(`  ${c.name}: ${c.name}_async_api;`);
  out.push('}', '');
  return out.join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) process.stdout.write(generateClient());
