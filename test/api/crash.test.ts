/** Durability: every write acknowledged before a SIGKILL is there after the restart. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XenApiClient } from '../../src/client/client.ts';
import { spawnDaemon } from '../helpers/daemon.ts';

test('SIGKILL during a burst of writes loses no acknowledged write', { timeout: 120_000 }, async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'xenon-crash-'));
  try {
    const d = await spawnDaemon(dataDir, { args: ['--backend', 'sim', '--network', 'none'] });
    const acked = new Map<string, string>();
    let killed = false;
    const writers = Array.from({ length: 8 }, async (_, w) => {
      const c = new XenApiClient(d.url);
      for (let attempt = 1; ; attempt++) {
        try {
          await c.login('root', 'xenon-test-root');
          break;
        } catch (e) {
          if (killed) return;
          // a connection the daemon dropped while it was still settling is retried; a daemon that died is not
          if (attempt >= 3 || d.proc.exitCode !== null) throw new Error(`login failed before the kill: ${String(e)}\ndaemon output:\n${d.output()}`);
        }
      }
      for (let i = 0; ; i++) {
        const label = `w${w}-${i}`;
        try {
          const ref = await c.api.network.create({ name_label: label } as never);
          await c.api.network.add_to_other_config(ref, 'seq', String(i));
          acked.set(ref, label);
        } catch {
          break; // the daemon is gone
        }
      }
      c.close();
    });
    // kill mid-burst, once a fair number of writes were acknowledged (however loaded the machine)
    const deadline = Date.now() + 60_000;
    while (acked.size < 40 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    killed = true;
    d.proc.kill('SIGKILL');
    await Promise.all(writers);
    await d.exited;
    assert.ok(acked.size > 20, `only ${acked.size} writes acknowledged`);

    const again = await spawnDaemon(dataDir, { args: ['--backend', 'sim', '--network', 'none'] });
    const c = new XenApiClient(again.url);
    let recs: Awaited<ReturnType<typeof c.api.network.get_all_records>>;
    try {
      await c.login('root', 'xenon-test-root');
      recs = await c.api.network.get_all_records();
    } catch (e) {
      throw new Error(`after the restart: ${String(e)}\nfirst daemon:\n${d.output()}\nrestarted daemon:\n${again.output()}`);
    }
    for (const [ref, label] of acked) {
      assert.ok(recs[ref], `acknowledged ${label} (${ref}) lost`);
      assert.equal(recs[ref].name_label, label);
      assert.ok(recs[ref].other_config.seq !== undefined, `${label}: acknowledged other_config write lost`);
    }
    c.close();
    again.proc.kill('SIGTERM');
    await again.exited;
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('a restart keeps sessions, and the root password from first start', { timeout: 60_000 }, async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'xenon-restart-'));
  try {
    const d = await spawnDaemon(dataDir, { args: ['--backend', 'sim', '--network', 'none'] });
    const c = new XenApiClient(d.url);
    const session = await c.login('root', 'xenon-test-root');
    d.proc.kill('SIGTERM');
    await d.exited;
    const again = await spawnDaemon(dataDir, { args: ['--backend', 'sim', '--network', 'none'], env: { XENON_ROOT_PASSWORD: 'ignored-now' } });
    const c2 = new XenApiClient(again.url);
    const vms = (await c2.call('VM.get_all', [session])) as string[];
    assert.ok(vms.length > 0, 'old session still valid');
    await c2.login('root', 'xenon-test-root');
    assert.equal((await c2.api.host.get_all()).length, 1, 'first start ran once');
    c.close();
    c2.close();
    again.proc.kill('SIGTERM');
    await again.exited;
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});
