/** The wire codecs stand alone: they know the datamodel and nothing of dispatch or behaviour. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const SRC = new URL('../../src/', import.meta.url).pathname;

function importsOf(dir: string): Array<{ file: string; spec: string }> {
  const out: Array<{ file: string; spec: string }> = [];
  for (const name of readdirSync(join(SRC, dir), { recursive: true, encoding: 'utf8' })) {
    if (!name.endsWith('.ts')) continue;
    const text = readFileSync(join(SRC, dir, name), 'utf8');
    for (const m of text.matchAll(/^\s*(?:import|export)[^'"]*?from\s+['"]([^'"]+)['"]/gm)) out.push({ file: `${dir}/${name}`, spec: m[1] });
  }
  return out;
}

test('src/wire imports only the datamodel, itself and node', () => {
  const bad = importsOf('wire').filter(({ spec }) => spec.startsWith('.') && !spec.startsWith('./') && !spec.startsWith('../datamodel/'));
  assert.deepEqual(bad, []);
});

test('nothing in src/messages imports src/api (the api ↔ messages cycle stays broken)', () => {
  const bad = importsOf('messages').filter(({ spec }) => spec.includes('/api/'));
  assert.deepEqual(bad, []);
});
