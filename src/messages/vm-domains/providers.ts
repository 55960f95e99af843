/** What storage and networking provide to a VM's domain, and the MACs xapi would give its VIFs. */
import { randomBytes } from 'node:crypto';

export type { DiskProvider, NicProvider } from '../context.ts';

/** A locally administered, unicast MAC (as xapi generates for VIFs). */
export function randomMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0] & 0xfe) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}
