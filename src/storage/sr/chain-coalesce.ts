/**
 * Crash-safe coalesce for a directory of images (the `ext` and `file` SRs):
 * a hidden base is folded into its only child so that a crash at any point
 * leaves either the old chain or the new one. The protocol (docs/vhd.md):
 *
 *   1. check on disk that the child's parent is the base and that nothing
 *      else is built on the base; check the child's chain opens;
 *   2. journal `copy`; write the child's sectors into the base (the child
 *      still masks every one of them, so the chain reads the same throughout);
 *   3. journal `switch` (with the child's VHD identity); give the base the
 *      child's footer UUID; rename the base over the child; drop the journal.
 *
 * On start, `recoverCoalesces` rolls a `copy` journal back (the old chain is
 * intact; the base merely holds sectors its child masks) and rolls a `switch`
 * journal forward (every step of it is idempotent).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { open, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { coalesce, diskUuid, setDiskUuid, verifyChain } from '../vhd/index.ts';
import { SrDriverError, type VolumeInfo } from './driver.ts';

type Format = 'vhd' | 'qcow2';

/** What the protocol needs of the SR: where images and journals live. */
export interface ChainFiles {
  readonly dir: string;
  fileFor(uuid: string, format: Format): string;
  formatOf(uuid: string): Format;
  info(uuid: string): Promise<VolumeInfo>;
  scan(): Promise<VolumeInfo[]>;
}

interface Journal {
  base: string;
  child: string;
  format: Format;
  phase: 'copy' | 'switch';
  /** The child's VHD footer UUID (hex), which the merged base takes. */
  childIdentity?: string;
}

const JOURNAL = /^\.coalesce-([0-9a-f-]{36})\.json$/;
const journalPath = (dir: string, child: string): string => join(dir, `.coalesce-${child}.json`);

/** Flushes a directory's entries (renames, creations, removals) to disk. */
async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Replaces the journal atomically (write, fsync, rename, fsync the directory). */
async function writeJournal(dir: string, j: Journal): Promise<void> {
  const path = journalPath(dir, j.child);
  const tmp = `${path}.tmp`;
  await writeFile(tmp, JSON.stringify(j));
  const fh = await open(tmp, 'r+');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  await syncDir(dir);
}

async function dropJournal(dir: string, child: string): Promise<void> {
  await rm(journalPath(dir, child), { force: true });
  await syncDir(dir);
}

const inconsistent = (what: string): SrDriverError => new SrDriverError('SR_BACKEND_FAILURE', `chain inconsistent: ${what}`);

/**
 * The disk's own view must agree before anything is written: the child's
 * parent is the base, nothing else is built on the base, and the child's
 * chain opens (every parent UUID as expected).
 */
async function checkOnlyChild(files: ChainFiles, child: string, base: string, format: Format): Promise<void> {
  const info = await files.info(child);
  if (info.parent !== base) throw inconsistent(`${child} is built on ${info.parent ?? 'nothing'}, not on ${base}`);
  const others = (await files.scan()).filter((v) => v.parent === base && v.uuid !== child).map((v) => v.uuid);
  if (others.length > 0) throw inconsistent(`${base} also has ${others.join(', ')} built on it`);
  if (format === 'vhd') {
    await verifyChain(files.fileFor(child, 'vhd')).catch((e: unknown) => {
      throw inconsistent(e instanceof Error ? e.message : String(e));
    });
  } else await qemuImg(['info', '-U', '--backing-chain', '-f', 'qcow2', files.fileFor(child, 'qcow2')]);
}

/** qemu-img, which dies with us (a SIGKILLed daemon must not leave it writing behind its journal). */
function qemuImg(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('setpriv', ['--pdeathsig', 'KILL', 'qemu-img', ...args], { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(Object.assign(new Error(`qemu-img ${args[0]}: ${String(stderr).trim() || err.message}`), /No space left/i.test(String(stderr)) ? { code: 'ENOSPC' } : {}));
      else resolve(String(stdout));
    });
  });
}

/** Folds `base` into its only child `child`: the merged image keeps the child's name (and, for VHD, identity). */
export async function coalesceInto(files: ChainFiles, child: string, base: string): Promise<void> {
  const format = files.formatOf(child);
  if (existsSync(journalPath(files.dir, child))) throw inconsistent(`an interrupted coalesce of ${child} is still to be recovered`);
  await checkOnlyChild(files, child, base, format);
  const journal: Journal = { base, child, format, phase: 'copy' };
  await writeJournal(files.dir, journal);
  const childFile = files.fileFor(child, format);
  try {
    if (format === 'vhd') await coalesce(childFile);
    // -d: the child stays as it is (it is dropped by the rename below)
    else await whenUnlocked(() => qemuImg(['commit', '-q', '-f', 'qcow2', '-d', childFile]));
  } catch (e) {
    // nothing is lost: the child still masks whatever reached the base
    await dropJournal(files.dir, child);
    throw e;
  }
  journal.phase = 'switch';
  if (format === 'vhd') journal.childIdentity = (await diskUuid(childFile)).toString('hex');
  await writeJournal(files.dir, journal);
  await finishSwitch(files, journal);
}

/** The switch, idempotent: identity, then name, then the journal goes. */
async function finishSwitch(files: ChainFiles, j: Journal): Promise<void> {
  const baseFile = files.fileFor(j.base, j.format);
  if (existsSync(baseFile)) {
    if (j.format === 'vhd') await setDiskUuid(baseFile, Buffer.from(j.childIdentity ?? '', 'hex'));
    await rename(baseFile, files.fileFor(j.child, j.format));
    await syncDir(files.dir);
  }
  await dropJournal(files.dir, j.child);
}

/** Rolls interrupted coalesces back (copy) or forward (switch); returns what was done, to be logged. */
export async function recoverCoalesces(files: ChainFiles): Promise<string[]> {
  const notes: string[] = [];
  for (const name of await readdir(files.dir)) {
    if (name.endsWith('.json.tmp') && name.startsWith('.coalesce-')) {
      await rm(join(files.dir, name), { force: true });
      continue;
    }
    const m = JOURNAL.exec(name);
    if (!m) continue;
    let j: Journal;
    try {
      j = JSON.parse(await readFile(join(files.dir, name), 'utf8')) as Journal;
    } catch {
      // a journal is only ever renamed into place whole: an unreadable one was never acted on
      notes.push(`unreadable coalesce journal ${name} dropped`);
      await dropJournal(files.dir, m[1]);
      continue;
    }
    if (j.child !== m[1] || (j.format !== 'vhd' && j.format !== 'qcow2') || !/^[0-9a-f-]{36}$/.test(String(j.base))) {
      notes.push(`malformed coalesce journal ${name} left in place`);
      continue;
    }
    if (j.phase === 'switch') {
      await finishSwitch(files, j);
      notes.push(`coalesce of ${j.base} into ${j.child} was interrupted after the copy: completed`);
      continue;
    }
    if (j.format === 'qcow2' && existsSync(files.fileFor(j.base, 'qcow2'))) await repairLeaks(files.fileFor(j.base, 'qcow2'));
    await dropJournal(files.dir, j.child);
    notes.push(`coalesce of ${j.base} into ${j.child} was interrupted during the copy: rolled back (the old chain is intact)`);
  }
  return notes;
}

/** A commit cut short may leave clusters allocated but unreferenced in the base: give them back. */
function repairLeaks(file: string): Promise<string> {
  return whenUnlocked(() => qemuImg(['check', '-q', '-r', 'leaks', '-f', 'qcow2', file]));
}

/**
 * Runs a qemu-img that needs an image's write lock, retrying for a few
 * seconds while another QEMU process (a qemu-nbd an export is closing, a
 * qemu-img of the previous run) still holds it.
 */
async function whenUnlocked(fn: () => Promise<string>): Promise<string> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (attempt >= 50 || !/lock/i.test(String(e))) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
