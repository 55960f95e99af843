/**
 * Chains keep their data: long seeded random sequences of snapshot, clone,
 * VM snapshot/revert, destroy, resize and writes, on every SR type that
 * holds chains, with the collector folding bases between them; after every
 * pass each live VDI must read byte for byte as modelled, each chain must be
 * sound to libvhdi and qemu-img, and no foldable base may be left.
 *
 * CHAIN_SEED=n replays one seed (printed on failure and at the start);
 * CHAIN_OPS=n (default 12) and CHAIN_SEEDS=n (default 2 per SR type) make long runs.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import type { Ref } from '../../src/client/client.ts';
import { storagePlugin, xenopsPlugin } from '../../src/plugins.ts';
import type { StorageService } from '../../src/messages/context.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { checkChainFile } from './chain-helpers.ts';
import { ChainModel, type ChainFormat } from './chain-model.ts';
import { xorshift } from './helpers.ts';

const MiB = 1024 * 1024;
const OPS = Number(process.env.CHAIN_OPS ?? 12);
const SEEDS = Number(process.env.CHAIN_SEEDS ?? 2);
const FIXED_SEED = process.env.CHAIN_SEED ? Number(process.env.CHAIN_SEED) : undefined;

let t: TestServer;
let scratch: string;
/** Errors the daemon logged: a chain found inconsistent must never pass silently, and never happen here. */
const errors: string[] = [];

before(async () => {
  scratch = mkdtempSync(join(tmpdir(), 'xenon-chains-'));
  const logger = pino({ level: 'warn' }, { write: (line: string) => void (JSON.parse(line).level >= 50 && errors.push(line)) });
  t = await startTestServer({ plugins: [storagePlugin({ gcIntervalMs: 3_600_000 }), xenopsPlugin({ backend: 'sim' })], config: { logger } });
});
after(async () => {
  await t.close();
  rmSync(scratch, { recursive: true, force: true });
});

const storage = (): StorageService => t.server.services.storage!;
const srDir = async (sr: Ref<'SR'>): Promise<string> => {
  const [pbd] = await t.client.api.SR.get_PBDs(sr);
  const config = await t.client.api.PBD.get_device_config(pbd);
  if (config.path) return config.path;
  // file SRs keep their images in <location>/<SR uuid>
  return join(config.location, await t.client.api.SR.get_uuid(sr));
};

async function put(vdi: string, body: Buffer): Promise<void> {
  const res = await fetch(`${t.url}/import_raw_vdi?session_id=${t.client.session}&vdi=${vdi}`, { method: 'PUT', body: new Uint8Array(body), headers: { 'Content-Length': String(body.length) } });
  assert.equal(res.status, 200, await res.text());
}
async function get(vdi: string): Promise<Buffer> {
  const res = await fetch(`${t.url}/export_raw_vdi?session_id=${t.client.session}&vdi=${vdi}`);
  assert.equal(res.status, 200);
  return Buffer.from(await res.arrayBuffer());
}

async function defaultSr(): Promise<Ref<'SR'>> {
  const [pool] = await t.client.api.pool.get_all();
  return t.client.api.pool.get_default_SR(pool);
}

test('three rounds of VDI.snapshot + destroy, then one collector pass: the chain stays whole and the data intact', async () => {
  const local = await defaultSr();
  const vdi = await t.client.api.VDI.create({ SR: local, virtual_size: 4 * MiB, name_label: 'rounds', type: 'user', sharable: false, read_only: false, other_config: {} } as never);
  const data = randomBytes(4 * MiB);
  await put(vdi, data);
  for (let i = 0; i < 3; i++) await t.client.api.VDI.destroy(await t.client.api.VDI.snapshot(vdi, {}));
  assert.ok((await storage().collect()) >= 3, 'three hidden bases folded');
  assert.ok((await get(vdi)).equals(data));
  const rec = await t.client.api.VDI.get_record(vdi);
  assert.equal(rec.sm_config['vhd-parent'], undefined, 'no base left under the VDI');
  await checkChainFile(join(await srDir(local), `${rec.uuid}.vhd`));
  await t.client.api.VDI.destroy(vdi);
});

const kinds: { name: string; format: ChainFormat; sr: () => Promise<Ref<'SR'>> }[] = [
  { name: 'ext SR, VHD', format: 'vhd', sr: defaultSr },
  { name: 'file SR, VHD', format: 'vhd', sr: fileSr },
  { name: 'file SR, qcow2', format: 'qcow2', sr: fileSr },
];

let shared: Ref<'SR'> | undefined;
async function fileSr(): Promise<Ref<'SR'>> {
  if (shared) return shared;
  const [host] = await t.client.api.host.get_all();
  shared = await t.client.api.SR.create(host, { location: join(scratch, 'file-sr') }, 0, 'chains', '', 'file', 'user', true, {});
  return shared;
}

describe('random sequences, verified after every collector pass', () => {
  let k = 0;
  for (const kind of kinds) {
    for (let i = 0; i < (FIXED_SEED === undefined ? SEEDS : 1); i++) {
      const seed = FIXED_SEED ?? ((Date.now() + 7919 * ++k) >>> 0) % 1_000_000;
      test(`${kind.name}: seed ${seed} (CHAIN_SEED=${seed} replays it), ${OPS} operations`, async () => {
        const sr = await kind.sr();
        const rng = xorshift(seed);
        const model = new ChainModel({ url: t.url, client: t.client, dataDir: t.dataDir, sr, srDir: await srDir(sr), format: kind.format, scratch }, rng);
        const counts = new Map<string, number>();
        const times = new Map<string, number>();
        try {
          for (let op = 0; op < OPS; ) {
            const batch = 1 + rng.int(6);
            for (let b = 0; b < batch && op < OPS; b++, op++) {
              const t0 = performance.now();
              const name = await model.step();
              counts.set(name, (counts.get(name) ?? 0) + 1);
              times.set(name, (times.get(name) ?? 0) + performance.now() - t0);
            }
            // SR.scan kicks a pass too, as in xapi; collect() joins it
            const t1 = performance.now();
            if (rng.int(2) === 0) await t.client.api.SR.scan(sr);
            await storage().collect();
            const t2 = performance.now();
            await model.verify(`seed ${seed}, after op ${op}`);
            times.set('collect', (times.get('collect') ?? 0) + t2 - t1);
            times.set('verify', (times.get('verify') ?? 0) + performance.now() - t2);
          }
          await storage().collect();
          await model.assertCollected(`seed ${seed}`);
          assert.deepEqual(errors, [], `seed ${seed}: the daemon logged errors`);
        } catch (e) {
          console.log(`chain property failed: CHAIN_SEED=${seed} ${kind.name}`);
          throw e;
        } finally {
          console.log(`${kind.name} seed ${seed}: ${[...counts].map(([n, c]) => `${n} ${c}`).join(', ')}; ms: ${[...times].map(([n, c]) => `${n} ${c.toFixed(0)}`).join(', ')}`);
          await model.dispose();
        }
      });
    }
  }
});
