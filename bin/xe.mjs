#!/usr/bin/env node
// The xe command line. Like bin/xenon.mjs it runs the TypeScript sources, but
// since xe starts once per command, it keeps an esbuild bundle of
// src/cli/xe.ts (rebuilt whenever one of its source files changes) and runs
// that: ~0.3 s a command instead of ~1 s through the tsx loader. With
// XE_NO_BUNDLE=1, or when esbuild is not there, it goes through tsx.
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const entry = join(root, 'src', 'cli', 'xe.ts');

function cacheDirs() {
  const tag = createHash('sha256').update(root).digest('hex').slice(0, 12);
  return [join(root, 'node_modules', '.cache', 'xenon-xe'), join(tmpdir(), `xenon-xe-${process.getuid?.() ?? 'u'}-${tag}`)];
}

/** The inputs recorded with a bundle are unchanged (same size and mtime). */
function fresh(metaFile) {
  try {
    const meta = JSON.parse(readFileSync(metaFile, 'utf8'));
    for (const [file, stamp] of Object.entries(meta.inputs)) {
      const st = statSync(join(root, file));
      if (`${st.size}:${st.mtimeMs}` !== stamp) return false;
    }
    return true;
  } catch {
    return false;
  }
}

async function bundle() {
  if (process.env.XE_NO_BUNDLE) return undefined;
  for (const dir of cacheDirs()) {
    const out = join(dir, 'xe.mjs');
    const metaFile = join(dir, 'xe.meta.json');
    if (fresh(metaFile)) return out;
    try {
      const { buildSync } = await import('esbuild');
      mkdirSync(dir, { recursive: true });
      const tmp = `${out}.${process.pid}.tmp`;
      const r = buildSync({ entryPoints: [entry], absWorkingDir: root, bundle: true, platform: 'node', format: 'esm', target: 'node20', packages: 'external', outfile: tmp, metafile: true, logLevel: 'silent' });
      const inputs = {};
      for (const file of Object.keys(r.metafile.inputs)) {
        const st = statSync(join(root, file));
        inputs[file] = `${st.size}:${st.mtimeMs}`;
      }
      renameSync(tmp, out);
      const metaTmp = `${metaFile}.${process.pid}.tmp`;
      writeFileSync(metaTmp, JSON.stringify({ inputs }));
      renameSync(metaTmp, metaFile);
      return out;
    } catch {
      // not writable here, or no esbuild: try the next place, then tsx
    }
  }
  return undefined;
}

const built = await bundle();
if (built) {
  await import(pathToFileURL(built).href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../src/cli/xe.ts');
}
