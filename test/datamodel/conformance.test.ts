/**
 * Conformance: Xenon's datamodel against xapi's published datamodel
 * (../shared/reference/xenapi.json, beside the checkout). Every field and
 * message of the 33 in-scope classes must exist with the same name, type,
 * qualifier, parameter names and types, result and roles.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { getClass, MODEL } from '../../src/datamodel/model.ts';

const here = fileURLToPath(new URL('.', import.meta.url));
const candidates = [`${here}/../../../shared/reference/xenapi.json`, '/work/shared/reference/xenapi.json'];
const referencePath = candidates.find((p) => existsSync(p));

interface RefField { name: string; type: string; qualifier: string }
interface RefMessage { name: string; params: { name: string; type: string }[]; result: string[]; roles: string[] }
interface RefClass { name: string; fields: RefField[]; messages: RefMessage[] }

const IN_SCOPE = 'session auth subject role user task event pool host host_cpu host_metrics VM VM_metrics VM_guest_metrics VBD VBD_metrics VDI SR SM PBD PIF PIF_metrics Bond VLAN tunnel network VIF VIF_metrics console message secret blob data_source'.split(' ');

test('the reference datamodel is present', () => {
  assert.ok(referencePath, `xenapi.json not found in ${candidates.join(' or ')}`);
});

/** Deliberately stricter than xapi (issue 12): a secret's value is for pool-admin alone. */
const STRICTER = new Set(['secret.get_value']);
const within = (mine: readonly string[], theirs: readonly string[]): boolean => mine.every((r) => theirs.includes(r));

const reference: RefClass[] = referencePath ? JSON.parse(readFileSync(referencePath, 'utf8')) : [];

test('all 33 classes are declared, and nothing but them', () => {
  assert.deepEqual(MODEL.map((c) => c.name).sort(), [...IN_SCOPE].sort());
});

for (const name of IN_SCOPE) {
  const ref = reference.find((c) => c.name === name);
  test(`class ${name} matches the reference`, () => {
    assert.ok(ref, `${name} missing from reference`);
    const mine = getClass(name);
    assert.ok(mine, `${name} missing from Xenon`);
    const problems: string[] = [];
    for (const f of ref.fields) {
      const m = mine.fieldsByName.get(f.name);
      if (!m) { problems.push(`field ${f.name} missing`); continue; }
      if (m.typeText !== f.type) problems.push(`field ${f.name}: type ${m.typeText} != ${f.type}`);
      if (m.qualifier !== f.qualifier) problems.push(`field ${f.name}: qualifier ${m.qualifier} != ${f.qualifier}`);
    }
    if (mine.fields.length !== ref.fields.length) problems.push(`field count ${mine.fields.length} != ${ref.fields.length}`);
    for (const rm of ref.messages) {
      const m = mine.messages.get(rm.name);
      if (!m) { problems.push(`message ${rm.name} missing`); continue; }
      const expected = rm.params.map((p) => `${p.type} ${p.name}`);
      const actual = [...(m.session ? ['session ref session_id'] : []), ...m.params.map((p) => `${p.typeText} ${p.name}`)];
      if (expected.join(', ') !== actual.join(', ')) problems.push(`message ${rm.name}: params (${actual.join(', ')}) != (${expected.join(', ')})`);
      if (m.resultText !== rm.result[0]) problems.push(`message ${rm.name}: result ${m.resultText} != ${rm.result[0]}`);
      const sameRoles = STRICTER.has(`${name}.${rm.name}`) ? within(m.roles, rm.roles) : [...m.roles].sort().join() === [...rm.roles].sort().join();
      if (!sameRoles) problems.push(`message ${rm.name}: roles ${m.roles.join('|')} != ${rm.roles.join('|')}`);
    }
    const listed = [...mine.messages.values()].filter((m) => !m.hidden && !m.extension).length;
    if (listed !== ref.messages.length) problems.push(`message count ${listed} != ${ref.messages.length}`);
    assert.deepEqual(problems, []);
  });
}
