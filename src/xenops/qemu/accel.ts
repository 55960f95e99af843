/** Which accelerator new domains get: KVM where it really works, TCG otherwise. */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Accel } from './args.ts';

const run = promisify(execFile);

/**
 * Pick the accelerator: KVM only when kvm_intel or kvm_amd is loaded, /dev/kvm
 * exists, and a probe guest (a tiny multiboot image run in 32-bit protected
 * mode that writes to isa-debug-exit) completes under it. Otherwise TCG.
 */
export async function detectAccel(qemu = 'qemu-system-x86_64', log: (m: string) => void = () => {}): Promise<Accel> {
  const hasModule = existsSync('/sys/module/kvm_intel') || existsSync('/sys/module/kvm_amd');
  if (!hasModule || !existsSync('/dev/kvm')) { log('accel: tcg (no kvm_intel/kvm_amd)'); return 'tcg'; }
  const dir = await import('node:fs/promises').then((f) => f.mkdtemp(path.join(os.tmpdir(), 'xenon-kvm-probe-')));
  try {
    const img = path.join(dir, 'probe.bin');
    await writeFile(img, multibootProbe());
    const r = await run(qemu, ['-nodefaults', '-no-user-config', '-display', 'none', '-accel', 'kvm', '-m', '32',
      '-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04', '-kernel', img], { timeout: 5000 }).then(() => 0, (e: { code?: unknown }) => (typeof e.code === 'number' ? e.code : -1));
    const ok = r === ((0x4b << 1) | 1);
    log(`accel: ${ok ? 'kvm' : 'tcg'} (probe exit ${r})`);
    return ok ? 'kvm' : 'tcg';
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A 64-byte multiboot (a.out kludge) image: out 0xf4, 'K' ; hlt. */
export function multibootProbe(): Buffer {
  const b = Buffer.alloc(64);
  const magic = 0x1badb002, flags = 0x00010000, load = 0x100000;
  b.writeUInt32LE(magic, 0);
  b.writeUInt32LE(flags, 4);
  b.writeUInt32LE((-(magic + flags)) >>> 0, 8);
  b.writeUInt32LE(load, 12); // header_addr
  b.writeUInt32LE(load, 16); // load_addr
  b.writeUInt32LE(load + 64, 20); // load_end_addr
  b.writeUInt32LE(load + 64, 24); // bss_end_addr
  b.writeUInt32LE(load + 32, 28); // entry
  Buffer.from([0xb0, 0x4b, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd]).copy(b, 32); // mov al,'K'; out 0xf4,al; hlt; jmp $-1
  return b;
}
