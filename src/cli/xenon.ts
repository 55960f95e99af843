/**
 * The `xenon` command: `xenon server --data-dir DIR --http 127.0.0.1:PORT
 * [--https ADDR:PORT] [--backend qemu|sim]`.
 */
import { parseArgs } from 'node:util';
import { startServer, type Listen } from '../server.ts';
import { defaultPlugins } from '../plugins.ts';

function parseListen(text: string | undefined, fallbackHost: string): Listen | undefined {
  if (!text) return undefined;
  if (text.startsWith('/')) return { host: '', port: 0, socketPath: text };
  const i = text.lastIndexOf(':');
  const host = i > 0 ? text.slice(0, i).replace(/^\[|\]$/g, '') : fallbackHost;
  const port = Number(i >= 0 ? text.slice(i + 1) : text);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`bad address: ${text}`);
  return { host, port };
}

const USAGE = `usage: xenon server --data-dir DIR [--http ADDR:PORT] [--https ADDR:PORT] [--backend qemu|sim]
                     [--accel auto|kvm|tcg] [--network ovs|bridge|none] [--attach-uplinks] [--durability crash|power] [--log-level LEVEL]`;

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  if (command !== 'server') {
    process.stderr.write(`${USAGE}\n`);
    process.exit(command === '--help' || command === '-h' ? 0 : 2);
  }
  const { values } = parseArgs({
    args: rest,
    options: {
      'data-dir': { type: 'string' },
      http: { type: 'string' },
      https: { type: 'string' },
      backend: { type: 'string' },
      accel: { type: 'string' },
      network: { type: 'string' },
      'attach-uplinks': { type: 'boolean' },
      durability: { type: 'string' },
      'log-level': { type: 'string' },
    },
  });
  if (!values['data-dir']) throw new Error(USAGE);
  const backend = (values.backend ?? 'qemu') as 'qemu' | 'sim';
  if (backend !== 'qemu' && backend !== 'sim') throw new Error(`unknown backend ${backend}`);
  const https = parseListen(values.https, '0.0.0.0');
  const server = await startServer(
    {
      dataDir: values['data-dir'],
      http: parseListen(values.http, '127.0.0.1') ?? { host: '127.0.0.1', port: 80 },
      https: https ?? null,
      backend,
      logLevel: values['log-level'],
      synchronous: values.durability === 'power' ? 'FULL' : 'NORMAL',
    },
    defaultPlugins({
      backend,
      accel: values.accel as 'auto' | 'kvm' | 'tcg' | undefined,
      network: values.network as 'ovs' | 'bridge' | 'none' | undefined,
      attachUplinks: values['attach-uplinks'] ?? false,
    }),
  );
  const stop = (): void => {
    server.close().then(() => process.exit(0), () => process.exit(1));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdout.write(`xenon: listening on ${[server.httpUrl, server.httpsUrl].filter(Boolean).join(' and ')}\n`);
}

main(process.argv.slice(2)).catch((e: unknown) => {
  process.stderr.write(`xenon: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
