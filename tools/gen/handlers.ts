/**
 * Generates src/messages/generated/handlers.ts: per class, one typed method
 * per message — arguments by name with their declared types (defaults already
 * filled in by dispatch), the declared result. Explicit messages are required
 * (a handler or the `notImplemented` marker); generic ones are derived by
 * messages/generic.ts and may be overridden.
 */
import { MODEL, type ModelMessage } from '../../src/datamodel/model.ts';
import { HEADER, key, tsType } from './ts-types.ts';

const argsType = (m: ModelMessage): string =>
  m.params.length === 0 ? 'NoArgs' : `{ ${m.params.map((p) => `${key(p.name)}: ${tsType(p.type, 'R.')}`).join('; ')} }`;

/** Record arguments (a constructor's `args`) carry only the fields the caller sent. */
const argsTypeOf = (m: ModelMessage): string =>
  m.params.length === 1 && m.params[0].type.kind === 'record' && m.generic?.kind === 'create'
    ? `{ args: Partial<${tsType(m.params[0].type, 'R.')}> }`
    : argsType(m).replace(/: (R\.\w+_record)(;| })/g, ': Partial<$1>$2');

export const handlerInterface = (cls: string): string => `${cls}_handlers`;

/** Whether a class must be given handlers (it has explicit messages). */
export const needsHandlers = (messages: readonly ModelMessage[]): boolean => messages.some((m) => !m.generic);

export function generateHandlers(): string {
  const out: string[] = [
    ...HEADER('tools/gen/handlers.ts'),
    "import type * as R from '../../datamodel/generated/records.ts';",
    "import type { Handler, NotImplemented } from '../context.ts';",
    '',
    '/** The arguments of a message that takes none (besides the session). */',
    'export type NoArgs = Readonly<Record<string, never>>;',
    '',
  ];
  const required: string[] = [];
  for (const c of MODEL) {
    const messages = [...c.messages.values()].filter((m) => m.lifecycle !== 'removed');
    out.push(`/** ${c.name}: explicit messages required, generic ones optional overrides. */`, `export interface ${handlerInterface(c.name)} {`);
    for (const m of messages) {
      const handler = `Handler<${argsTypeOf(m)}, ${tsType(m.result, 'R.')}>`;
      out.push(m.generic ? `  ${key(m.name)}?: ${handler};` : `  ${key(m.name)}: ${handler} | NotImplemented;`);
    }
    out.push('}', '');
    if (needsHandlers(messages)) required.push(c.name);
  }
  out.push('/** The behaviour of every class, by class name (classes with only generic messages may be left out). */', 'export interface Handlers {');
  for (const c of MODEL) out.push(`  ${key(c.name)}${required.includes(c.name) ? '' : '?'}: ${handlerInterface(c.name)};`);
  out.push('}', '');
  return out.join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) process.stdout.write(generateHandlers());
