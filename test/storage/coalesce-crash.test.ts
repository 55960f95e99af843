/**
 * Coalescing is crash-safe: the daemon is SIGKILLed at random moments of a
 * collector pass (kicked by SR.scan), restarted, and every VDI must read as
 * modelled and every chain be sound — then the restarted collector finishes
 * the job. VHD and qcow2 chains, seeded (CRASH_SEED replays a run;
 * CRASH_ITERATIONS, default 4, makes long runs).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XenApiClient, type Ref } from '../../src/client/client.ts';
import { spawnDaemon, type Daemon } from '../helpers/daemon.ts';
import { ChainModel, type ChainFormat } from './chain-model.ts';
import { xorshift } from './helpers.ts';

const MiB = 1024 * 1024;
const ITERATIONS = Number(process.env.CRASH_ITERATIONS ?? 4);
const SEED = process.env.CRASH_SEED ? Number(process.env.CRASH_SEED) : (Date.now() >>> 0) % 1_000_000;

async function connect(d: Daemon): Promise<XenApiClient> {
  const client = new XenApiClient(d.url);
  await client.login('root', 'xenon-test-root');
  return client;
}

/** Waits until a coalesce has written its journal (or a while has passed). */
async function journalAppears(srDir: string): Promise<void> {
  for (const end = Date.now() + 20_000; Date.now() < end; ) {
    if (readdirSync(srDir).some((f) => /^\.coalesce-.*\.json$/.test(f))) return;
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** Hidden bases still waiting to be folded. */
async function hiddenBases(client: XenApiClient, sr: Ref<'SR'>): Promise<number> {
  return Object.values(await client.api.VDI.get_all_records()).filter((v) => v.SR === sr && !v.managed).length;
}

test(`SIGKILL during coalesce, restart: no byte lost, no chain left inconsistent (CRASH_SEED=${SEED})`, { timeout: 15 * 60_000 }, async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'xenon-crash-'));
  const rng = xorshift(SEED);
  let d = await spawnDaemon(dataDir, { args: ['--backend', 'sim', '--network', 'none'] });
  let client = await connect(d);
  const kills = { copy: 0, switch: 0, none: 0 };
  try {
    const [pool] = await client.api.pool.get_all();
    const sr = await client.api.pool.get_default_SR(pool);
    const [pbd] = await client.api.SR.get_PBDs(sr);
    const srDir = (await client.api.PBD.get_device_config(pbd)).path;
    const models = new Map<ChainFormat, ChainModel>();
    const leaves = new Map<ChainFormat, Ref<'VDI'>>();
    for (const format of ['vhd', 'qcow2'] as const) {
      const m = new ChainModel({ url: d.url, client, dataDir, sr, srDir, format, scratch: dataDir }, rng);
      models.set(format, m);
      leaves.set(format, await m.create(24 * MiB));
    }
    for (let it = 0; it < ITERATIONS; it++) {
      // bases to fold, each holding data the leaf masks partly: one or two rounds of snapshot, write, destroy the snapshot
      for (const [format, m] of models) {
        const leaf = leaves.get(format)!;
        for (let r = 0; r <= rng.int(2); r++) {
          const snap = await m.branch('snapshot', leaf);
          await m.writeGuest(leaf, 4 * MiB + rng.int(12 * MiB));
          await m.destroy(snap);
        }
      }
      // SR.scan kicks the collector; the kill lands somewhere in a coalesce (once its journal is there), now and then anywhere in the pass
      await client.api.SR.scan(sr);
      if (rng.int(4) > 0) await journalAppears(srDir);
      await new Promise((r) => setTimeout(r, rng.int(80)));
      d.proc.kill('SIGKILL');
      await d.exited;
      client.close();

      d = await spawnDaemon(dataDir, { args: ['--backend', 'sim', '--network', 'none'] });
      client = await connect(d);
      for (const m of models.values()) m.retarget(d.url, client);
      const out = d.output();
      if (/interrupted during the copy/.test(out)) kills.copy++;
      else if (/interrupted after the copy/.test(out)) kills.switch++;
      else kills.none++;
      // bytes now (the restarted collector is already at work: chains are checked once it is done)
      for (const m of models.values()) await m.verify(`seed ${SEED}, iteration ${it}, after the restart`, { chains: false });

      // and the restarted collector completes the work
      for (let wait = 0; (await hiddenBases(client, sr)) > 0; wait++) {
        assert.ok(wait < 600, 'the collector folds every base after the restart');
        if (wait % 20 === 0) await client.api.SR.scan(sr);
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.deepEqual(readdirSync(srDir).filter((f) => f.startsWith('.coalesce-')), [], 'every interrupted coalesce was finished or rolled back');
      for (const m of models.values()) await m.verify(`seed ${SEED}, iteration ${it}, after the collector`);
      assert.doesNotMatch(d.output(), /chain inconsistent/, 'no chain was found inconsistent');
    }
  } catch (e) {
    console.log(`coalesce crash test failed: CRASH_SEED=${SEED}\n${d.output().slice(-4000)}`);
    throw e;
  } finally {
    console.log(d.output().split('\n').filter((l) => /collector|interrupted/.test(l)).slice(-8).join('\n'));
    console.log(`CRASH_SEED=${SEED}: ${ITERATIONS} kills — during the copy ${kills.copy}, during the switch ${kills.switch}, outside a coalesce ${kills.none}`);
    client.close();
    d.proc.kill('SIGKILL');
    await d.exited;
    rmSync(dataDir, { recursive: true, force: true });
  }
});
