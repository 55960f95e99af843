/**
 * The HA plugin: the HA service (services.ha) and its channel route, and HA
 * resumed at start on a host that runs it. It comes after the pool plugin
 * (whose membership says who the master is and holds the pool secret).
 */
import { XenApiError } from '../datamodel/api-error.ts';
import { answer, hasSecret, readJson } from '../pool/channel.ts';
import { membershipOf } from '../pool/membership.ts';
import type { Plugin } from '../server.ts';
import { becomeMaster, followMaster } from '../pool/master-change.ts';
import { peerOfHost } from '../pool/peers.ts';
import { checkHaRequest, HA_ROUTE, HaDaemon } from './service.ts';

export function haPlugin(): Plugin {
  let ha: HaDaemon | undefined;
  return {
    name: 'ha',
    async start(services, routes) {
      const m = membershipOf(services.store);
      if (!m) return; // a daemon without pool membership (tests of single subsystems) has no HA
      const secret = m.role.secret;
      const daemon = new HaDaemon(services, peerOfHost(services, secret), () => m.role.role === 'master', {
        becomeMaster: () => becomeMaster(services, m),
        follow: (address) => followMaster(services, m, address),
      });
      ha = daemon;
      services.ha = daemon;
      routes.routes.set(HA_ROUTE, async (req, res) => {
        try {
          if (req.method !== 'POST') throw new XenApiError('INVALID_VALUE', 'method', String(req.method));
          if (!hasSecret(req, secret)) throw new XenApiError('PERMISSION_DENIED', 'the pool secret is required');
          answer(res, { result: await daemon.serve(checkHaRequest(await readJson(req))) });
        } catch (error) {
          answer(res, { error });
        }
      });
      await daemon.resume();
    },
    async stop() {
      await ha?.close();
    },
  };
}
