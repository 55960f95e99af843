/** Words and numbers as people read them. */
import { ConnectionError, XenApiClientError } from '../../src/client/browser.ts';

export function bytes(n: number): string {
  if (!Number.isFinite(n)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  let v = n;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

/** xapi's error code, and its parameters, in a sentence. */
export function errorText(e: unknown): string {
  if (e instanceof XenApiClientError) return `${e.code}${e.params.length ? `: ${e.params.join(', ')}` : ''}`;
  if (e instanceof ConnectionError) return e.message;
  return e instanceof Error ? e.message : String(e);
}

/** `OpaqueRef:NULL` and '' name nothing. */
export const isNull = (ref: string | undefined): boolean => !ref || ref === 'OpaqueRef:NULL';

export const byName = <T extends { name_label: string }>(a: T, b: T): number => a.name_label.localeCompare(b.name_label, undefined, { numeric: true });

/** Operation names as button labels. */
export const OPERATION_LABELS: Record<string, string> = {
  start: 'Start',
  clean_shutdown: 'Shut down',
  hard_shutdown: 'Force shut down',
  clean_reboot: 'Reboot',
  hard_reboot: 'Force reboot',
  suspend: 'Suspend',
  resume: 'Resume',
  pause: 'Pause',
  unpause: 'Unpause',
  snapshot: 'Snapshot',
  clone: 'Clone',
  copy: 'Copy',
  export: 'Export',
  destroy: 'Delete',
  pool_migrate: 'Migrate',
};

/** xapi's datetimes (`20261206T03:34:33Z`) as local time. */
export function dateText(xapi: string): string {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2}):(\d{2}):(\d{2})Z?$/.exec(xapi);
  if (!m) return xapi;
  const d = new Date(Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]));
  return d.getUTCFullYear() < 1980 ? '—' : d.toLocaleString();
}
