/**
 * Where the pool's HA state lives in etcd, under `/xenon/<pool uuid>/`:
 * - `hosts/<host uuid>`: a host's liveness key, bound to its lease (5 s);
 * - `master`: the election key, bound to the master's lease (its creation
 *   revision identifies one term of one master);
 * - `vms/<vm uuid>`: a running VM's run lock, bound to its host's lease;
 * - `log/<seq>`: the redo log of committed database writes, `snapshot`: its base.
 */
export interface HaKeys {
  readonly prefix: string;
  host(hostUuid: string): string;
  readonly hosts: string;
  readonly master: string;
  vm(vmUuid: string): string;
  readonly vms: string;
  log(seq: number): string;
  readonly logs: string;
  readonly snapshot: string;
}

/** Log sequence numbers are zero-padded so that key order is log order. */
const SEQ_DIGITS = 16;

export function haKeys(poolUuid: string): HaKeys {
  if (!/^[A-Za-z0-9-]{1,64}$/.test(poolUuid)) throw new Error(`not a pool uuid: ${poolUuid}`);
  const prefix = `/xenon/${poolUuid}/`;
  return {
    prefix,
    host: (h) => `${prefix}hosts/${h}`,
    hosts: `${prefix}hosts/`,
    master: `${prefix}master`,
    vm: (v) => `${prefix}vms/${v}`,
    vms: `${prefix}vms/`,
    log: (seq) => `${prefix}log/${String(seq).padStart(SEQ_DIGITS, '0')}`,
    logs: `${prefix}log/`,
    snapshot: `${prefix}snapshot`,
  };
}

/** The sequence number of a log key. */
export function seqOfLogKey(key: string): number {
  const n = Number(key.slice(key.lastIndexOf('/') + 1));
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`not a log key: ${key}`);
  return n;
}
