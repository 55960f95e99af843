/** Checks of an image chain by tools that are not ours: libvhdi (vhdiinfo) and qemu-img. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** vhdiinfo's fields of one file ("Identifier", "Parent identifier", "Parent filename" …). */
async function vhdiinfo(path: string): Promise<Record<string, string>> {
  const { stdout } = await run('vhdiinfo', [path]);
  const out: Record<string, string> = {};
  for (const m of stdout.matchAll(/^\t([^:\t]+?)\s*:\s*(.*)$/gm)) out[m[1]] = m[2].trim();
  return out;
}

/**
 * The whole chain under `path` is sound (files in `checked` were found sound
 * already and are not looked at again): for VHD, libvhdi reads every file and
 * each child's parent identifier is its parent's identifier (and qemu-img
 * reads the top); for qcow2, `qemu-img check` finds nothing wrong in any
 * image of the backing chain (no corruption, no leaked clusters).
 */
export async function checkChainFile(path: string, checked: Set<string> = new Set()): Promise<void> {
  if (path.endsWith('.qcow2')) {
    const { stdout } = await run('qemu-img', ['info', '-U', '--backing-chain', '--output=json', '-f', 'qcow2', path]);
    for (const img of JSON.parse(stdout) as { filename: string }[]) {
      if (checked.has(img.filename)) continue;
      checked.add(img.filename);
      await run('qemu-img', ['check', '-U', '-q', '-f', 'qcow2', img.filename]).catch((e: { stdout?: string; stderr?: string; code?: number }) => {
        assert.fail(`qemu-img check ${img.filename} (exit ${e.code}): ${e.stdout ?? ''}${e.stderr ?? ''}`);
      });
    }
    return;
  }
  await run('qemu-img', ['info', '-U', '-f', 'vpc', path]);
  const seen = new Set<string>();
  for (let file: string | undefined = path; file; ) {
    assert.ok(!seen.has(file), `chain loops at ${file}`);
    seen.add(file);
    if (checked.has(file)) return;
    checked.add(file);
    const info = await vhdiinfo(file);
    if (info['Disk type'] !== 'Differential') return;
    const parent = join(dirname(file), info['Parent filename'] ?? '');
    assert.ok(existsSync(parent), `${file}: parent ${info['Parent filename']} missing`);
    const parentInfo = await vhdiinfo(parent);
    assert.equal(parentInfo.Identifier, info['Parent identifier'], `${file}: libvhdi finds parent ${parent} with identifier ${parentInfo.Identifier}, the child expects ${info['Parent identifier']}`);
    file = parent;
  }
}
