/** Hash routes (`#/VM/OpaqueRef:…/console`): the daemon serves one page, every view lives behind the hash. */
import { useSyncExternalStore } from 'react';

export interface Route {
  /** The whole path after '#', e.g. '/VM/OpaqueRef:1/console'. */
  readonly path: string;
  readonly parts: readonly string[];
}

const subscribe = (fn: () => void): (() => void) => {
  window.addEventListener('hashchange', fn);
  return () => window.removeEventListener('hashchange', fn);
};

export function useRoute(): Route {
  const hash = useSyncExternalStore(subscribe, () => window.location.hash);
  const path = decodeURIComponent(hash.replace(/^#/, '')) || '/';
  return { path, parts: path.split('/').filter(Boolean) };
}

export const linkTo = (...parts: string[]): string => `#/${parts.map(encodeURIComponent).join('/')}`;

export function go(...parts: string[]): void {
  window.location.hash = linkTo(...parts);
}
