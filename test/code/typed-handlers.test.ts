/**
 * The compiler holds handlers to the datamodel: a handler whose argument or
 * result types disagree with its message, or a class's handlers missing an
 * explicit message, do not compile; a faithful one does.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const root = fileURLToPath(new URL('../../', import.meta.url));
const probe = `${root}test/code/probe.ts`;

/** Type errors of a probe module (compiled with the project's options), as text. */
function errorsOf(source: string): string[] {
  const config = ts.getParsedCommandLineOfConfigFile(`${root}tsconfig.json`, {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => undefined });
  assert.ok(config);
  const host = ts.createCompilerHost(config.options);
  const read = host.readFile;
  host.readFile = (name) => (name === probe ? source : read(name));
  host.fileExists = ((exists) => (name: string) => name === probe || exists(name))(host.fileExists);
  const program = ts.createProgram([probe], config.options, host);
  return ts.getPreEmitDiagnostics(program, program.getSourceFile(probe)).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
}

const header = `import type { PBD_handlers } from '../../src/messages/generated/handlers.ts';
import { notImplemented } from '../../src/messages/context.ts';
`;

test('a handler faithful to the datamodel compiles', () => {
  const ok = `${header}
export const h: PBD_handlers = {
  plug: (ctx, a) => { ctx.services.store.must('PBD', a.self); },
  unplug: notImplemented,
  set_device_config: (ctx, a) => { ctx.services.store.transact((tx) => tx.update('PBD', a.self, { device_config: a.value })); },
};`;
  assert.deepEqual(errorsOf(ok), []);
});

test('wrong argument types, a wrong result or a missing message do not compile', () => {
  const wrongArg = `${header}
export const h: PBD_handlers = { plug: (_ctx, a) => { const n: number = a.self; void n; }, unplug: notImplemented, set_device_config: notImplemented };`;
  assert.ok(errorsOf(wrongArg).some((e) => /not assignable to type 'number'/.test(e)));
  const wrongField = `${header}
export const h: PBD_handlers = { plug: notImplemented, unplug: notImplemented,
  set_device_config: (ctx, a) => { ctx.services.store.transact((tx) => tx.update('PBD', a.self, { device_config: 'text' })); } };`;
  assert.ok(errorsOf(wrongField).some((e) => /'string' is not assignable to type 'Record<string, string>'/.test(e)));
  const wrongResult = `${header}
export const h: PBD_handlers = { plug: () => 42, unplug: notImplemented, set_device_config: notImplemented };`;
  assert.ok(errorsOf(wrongResult).some((e) => /number/.test(e)));
  const missing = `${header}
export const h: PBD_handlers = { plug: notImplemented, unplug: notImplemented };`;
  assert.ok(errorsOf(missing).some((e) => /set_device_config/.test(e)));
});
