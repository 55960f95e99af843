/** What every view needs: the typed client, the live store and a way to run actions with their errors shown. */
import { createContext, useContext } from 'react';
import type { BrowserXenApiClient } from '../../src/client/browser.ts';
import type { LiveStore } from './live.ts';

export interface Notice {
  readonly id: number;
  readonly kind: 'error' | 'info';
  readonly text: string;
}

export interface Console {
  readonly client: BrowserXenApiClient;
  readonly store: LiveStore;
  /** Runs an action; a failure becomes a notice that names xapi's error code. Resolves to undefined on failure. */
  run<T>(what: string, action: () => Promise<T>): Promise<T | undefined>;
  notify(kind: Notice['kind'], text: string): void;
}

export const ConsoleContext = createContext<Console | null>(null);

export function useConsole(): Console {
  const c = useContext(ConsoleContext);
  if (!c) throw new Error('useConsole outside the console');
  return c;
}
