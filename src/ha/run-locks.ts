/**
 * Run locks: a running VM's owner key names its host and is bound to that
 * host's lease, so it vanishes when the host is declared dead — and only then
 * may a survivor start the VM. Moving a VM (migration, restart elsewhere) is
 * one transaction from the old owner to the new.
 */
import type { EtcdEndpoints } from './etcd-client.ts';
import type { HaKeys } from './keys.ts';

export interface Owner {
  readonly host: string;
  /** The lease the key is bound to (decimal). */
  readonly lease: string;
}

export class RunLocks {
  constructor(private readonly etcd: EtcdEndpoints, private readonly keys: HaKeys) {}

  /** Takes the VM's lock for a host, if no host holds it; true if the host holds it now. */
  async claim(vmUuid: string, host: string, lease: string): Promise<boolean> {
    const key = this.keys.vm(vmUuid);
    const res = await this.etcd.call((c) => c.if(key, 'Create', '==', 0).then(c.put(key).value(host).lease(lease)).else(c.get(key)).commit());
    if (res.succeeded) return true;
    const kv = res.responses[0]?.response_range?.kvs[0];
    if (kv === undefined || kv.value.toString() !== host) return false;
    // the host's own lock under another lease (the master took it for a restart here): bound to this lease now
    return kv.lease === lease || this.move(vmUuid, host, host, lease);
  }

  /** Moves the lock from one host to another in one step; false if `from` no longer holds it. */
  async move(vmUuid: string, from: string, to: string, toLease: string): Promise<boolean> {
    const key = this.keys.vm(vmUuid);
    // a repeat after a lost answer finds the lock already moved: that is success too
    const res = await this.etcd.call((c) => c.if(key, 'Value', '==', from).then(c.put(key).value(to).lease(toLease)).else(c.get(key)).commit());
    const kv = res.responses[0]?.response_range?.kvs[0];
    return res.succeeded || (kv !== undefined && kv.value.toString() === to && kv.lease === toLease);
  }

  /** Lets the lock go (the VM halted here); only the holder's lock is removed. */
  async release(vmUuid: string, host: string): Promise<void> {
    const key = this.keys.vm(vmUuid);
    await this.etcd.call((c) => c.if(key, 'Value', '==', host).then(c.delete().key(key)).commit());
  }

  async owner(vmUuid: string): Promise<Owner | undefined> {
    const kv = (await this.etcd.call((c) => c.get(this.keys.vm(vmUuid)).exec())).kvs[0];
    return kv ? { host: kv.value.toString(), lease: kv.lease } : undefined;
  }

  /** Every held lock: VM uuid → owner. */
  async all(): Promise<Map<string, Owner>> {
    const kvs = (await this.etcd.call((c) => c.getAll().prefix(this.keys.vms).exec())).kvs;
    return new Map(kvs.map((kv) => [kv.key.toString().slice(this.keys.vms.length), { host: kv.value.toString(), lease: kv.lease }]));
  }
}
