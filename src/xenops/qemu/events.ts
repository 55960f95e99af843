/**
 * What QMP events mean for a domain: its new run state, and the event a
 * listener hears — only for what the guest did on its own (never while a
 * backend operation of ours runs).
 */
import type { DomainEvent } from '../backend.ts';
import type { Dom } from './domain.ts';
import type { QmpEvent } from './qmp.ts';

export function followQmpEvent(d: Dom, e: QmpEvent, emit: (e: DomainEvent) => void, refreshStatus: (d: Dom) => Promise<string>): void {
  const data = (e.data ?? {}) as { guest?: unknown; reason?: unknown };
  switch (e.event) {
    case 'SHUTDOWN': {
      if (!data.guest) return; // host-initiated (quit, our own reset) is not news
      if (data.reason === 'guest-reset') { d.state = 'shutdown'; d.reason = 'reboot'; d.status = 'shutdown'; if (!d.busy) emit({ uuid: d.uuid, kind: 'reboot' }); }
      else if (data.reason === 'guest-panic') { d.state = 'crashed'; d.reason = 'panic'; if (!d.busy) emit({ uuid: d.uuid, kind: 'crash', reason: 'panic' }); }
      else { d.state = 'shutdown'; d.reason = 'poweroff'; d.status = 'shutdown'; if (!d.busy) emit({ uuid: d.uuid, kind: 'shutdown', reason: 'poweroff' }); }
      return;
    }
    case 'GUEST_PANICKED': {
      if (d.state === 'crashed') return;
      d.state = 'crashed'; d.reason = 'panic'; d.status = 'guest-panicked';
      if (!d.busy) emit({ uuid: d.uuid, kind: 'crash', reason: 'panic' });
      return;
    }
    case 'STOP': {
      if (d.busy) return;
      void refreshStatus(d).then((st) => {
        if (d.busy) return;
        if (st === 'paused' || st === 'io-error') {
          if (d.state !== 'paused') { d.state = 'paused'; emit({ uuid: d.uuid, kind: 'paused', reason: st === 'io-error' ? 'io-error' : undefined }); }
        } else if (st === 'internal-error') {
          if (d.state !== 'crashed') { d.state = 'crashed'; d.reason = 'internal-error'; emit({ uuid: d.uuid, kind: 'crash', reason: 'internal-error' }); }
        }
      }).catch(() => {});
      return;
    }
    case 'RESUME': {
      if (d.busy) return;
      const was = d.state;
      d.state = 'running'; d.status = 'running'; d.reason = undefined;
      if (was === 'paused') emit({ uuid: d.uuid, kind: 'resumed' });
      return;
    }
    default:
      return;
  }
}
