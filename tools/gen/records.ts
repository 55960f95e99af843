/**
 * Generates src/datamodel/generated/records.ts: a record type per class, the
 * enumerations as unions, and `Records` (class name → record type), shared by
 * the server (typed store, handlers) and the client.
 */
import { ENUMS } from '../../src/datamodel/enums.ts';
import { MODEL } from '../../src/datamodel/model.ts';
import { enumName, HEADER, key, recordName, tsType } from './ts-types.ts';

export function generateRecords(): string {
  const out: string[] = [
    ...HEADER('tools/gen/records.ts'),
    '/** An object reference (`OpaqueRef:…`) of class C. */',
    'export type Ref<C extends string> = string & { readonly __class?: C };',
    '',
  ];
  for (const [name, values] of Object.entries(ENUMS)) out.push(`export type ${enumName(name)} = ${values.map((v) => JSON.stringify(v)).join(' | ')};`);
  out.push('');
  for (const c of MODEL) {
    out.push(`/** ${c.decl.doc} */`, `export interface ${recordName(c.name)} {`);
    for (const f of c.fields) out.push(`  ${key(f.name)}: ${tsType(f.type)};`);
    out.push('}', '');
  }
  out.push('/** Every class\'s record type, by class name. */', 'export interface Records {');
  for (const c of MODEL) out.push(`  ${key(c.name)}: ${recordName(c.name)};`);
  out.push('}', '', '/** A class name of the datamodel. */', 'export type ClassName = keyof Records;', '');
  return out.join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) process.stdout.write(generateRecords());
