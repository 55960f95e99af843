/** The subsystems a full daemon runs, in start order. */
import type { Plugin } from './server.ts';

export interface PluginOptions {
  backend: 'qemu' | 'sim';
}

export function defaultPlugins(_o: PluginOptions): Plugin[] {
  return [];
}
