/**
 * Generated files are derived from the datamodel only: regenerating each in
 * memory must give exactly what is committed (run `npm run gen` after a change).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { OUTPUTS } from '../../tools/gen/outputs.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));

for (const output of OUTPUTS) {
  test(`${output.path} is what npm run gen makes`, () => {
    const committed = readFileSync(`${root}${output.path}`, 'utf8');
    assert.ok(committed === output.generate(), `${output.path} is stale: run npm run gen`);
  });
}
