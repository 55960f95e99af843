/** How one host of the pool reaches another on the channel: its address, its pinned certificate, the pool secret. */
import { XenApiError } from '../datamodel/api-error.ts';
import { NULL_REF } from '../datamodel/types.ts';
import type { Services } from '../messages/context.ts';
import { certificateOf } from './certs.ts';
import type { Peer } from './channel.ts';

/** Another host's certificate, as pinned when it joined or as the pool's bundle has it. */
export function memberCertificate(services: Services, host: string): string {
  const { store } = services;
  const cert = certificateOf(services.dataDir, store.must('host', services.hostRef()).uuid, store.must('host', host).uuid);
  if (cert === undefined) throw new XenApiError('CANNOT_CONTACT_HOST', host);
  return cert;
}

/** How this host reaches another host of the pool. */
export function peerOfHost(services: Services, secret: string): (host: string) => Peer {
  return (host) => {
    const address = services.store.must('host', host).address;
    if (address === '' || address === NULL_REF) throw new XenApiError('CANNOT_CONTACT_HOST', host);
    return { address, cert: memberCertificate(services, host), secret };
  };
}
