/**
 * The `xenon` command:
 *   xenon server --data-dir DIR --http 127.0.0.1:PORT [--https ADDR:PORT] [--backend qemu|sim] …
 *   xenon stop --data-dir DIR [--guests] [--timeout SECONDS]
 */
import { parseArgs } from 'node:util';
import { startServer, type Listen } from '../server.ts';
import { defaultPlugins } from '../plugins.ts';
import type { HttpLimits } from '../api/limits.ts';
import { acquirePidFile } from './xenon/pidfile.ts';
import { stopXenon } from './xenon/stop.ts';

/** `--max-connections 512` and the like: the HTTP limits (api/limits.ts), in connections, seconds and MiB. */
const LIMIT_OPTIONS = {
  'max-connections': { key: 'maxConnections', scale: 1 },
  'max-connections-per-client': { key: 'maxConnectionsPerClient', scale: 1 },
  'headers-timeout': { key: 'headersTimeoutMs', scale: 1000 },
  'keep-alive-timeout': { key: 'keepAliveTimeoutMs', scale: 1000 },
  'rpc-body-timeout': { key: 'rpcBodyTimeoutMs', scale: 1000 },
  'max-rpc-body-mib': { key: 'maxRpcBodyBytes', scale: 1024 * 1024 },
  'max-rpc-in-flight-mib': { key: 'maxRpcBytesInFlight', scale: 1024 * 1024 },
} as const satisfies Record<string, { key: keyof HttpLimits; scale: number }>;

function parseLimits(values: Partial<Record<keyof typeof LIMIT_OPTIONS, string>>): Partial<HttpLimits> {
  const out: { -readonly [K in keyof HttpLimits]?: number } = {};
  for (const [option, { key, scale }] of Object.entries(LIMIT_OPTIONS)) {
    const text = values[option as keyof typeof LIMIT_OPTIONS];
    if (text === undefined) continue;
    const n = Number(text);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${option} must be a positive number`);
    out[key] = Math.round(n * scale);
  }
  return out;
}

function parseListen(text: string | undefined, fallbackHost: string): Listen | undefined {
  if (!text) return undefined;
  if (text.startsWith('/')) return { host: '', port: 0, socketPath: text };
  const i = text.lastIndexOf(':');
  const host = i > 0 ? text.slice(0, i).replace(/^\[|\]$/g, '') : fallbackHost;
  const port = Number(i >= 0 ? text.slice(i + 1) : text);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`bad address: ${text}`);
  return { host, port };
}

const USAGE = `usage: xenon server --data-dir DIR [--http ADDR:PORT] [--https ADDR:PORT] [--backend qemu|sim [--sim-consoles]]
                     [--accel auto|kvm|tcg] [--network ovs|bridge|none] [--attach-uplinks] [--durability crash|power] [--log-level LEVEL]
                     [--max-connections N] [--max-connections-per-client N] [--headers-timeout S] [--keep-alive-timeout S]
                     [--rpc-body-timeout S] [--max-rpc-body-mib M] [--max-rpc-in-flight-mib M]
                     [--local-socket PATH]…
       xenon stop --data-dir DIR [--guests] [--timeout SECONDS]
         stops the daemon of DIR; its guests, bridges and Open vSwitch daemons keep running unless --guests
         (which shuts the guests down, cleanly within the timeout, else hard, and removes the rest).
         Run it in the daemon's network namespace.`;

async function server(rest: string[]): Promise<void> {
  const { values } = parseArgs({
    args: rest,
    options: {
      'data-dir': { type: 'string' },
      'local-socket': { type: 'string', multiple: true },
      http: { type: 'string' },
      https: { type: 'string' },
      backend: { type: 'string' },
      'sim-consoles': { type: 'boolean' },
      accel: { type: 'string' },
      network: { type: 'string' },
      'attach-uplinks': { type: 'boolean' },
      durability: { type: 'string' },
      'log-level': { type: 'string' },
      'max-connections': { type: 'string' },
      'max-connections-per-client': { type: 'string' },
      'headers-timeout': { type: 'string' },
      'keep-alive-timeout': { type: 'string' },
      'rpc-body-timeout': { type: 'string' },
      'max-rpc-body-mib': { type: 'string' },
      'max-rpc-in-flight-mib': { type: 'string' },
    },
  });
  if (!values['data-dir']) throw new Error(USAGE);
  const backend = (values.backend ?? 'qemu') as 'qemu' | 'sim';
  if (backend !== 'qemu' && backend !== 'sim') throw new Error(`unknown backend ${backend}`);
  const https = parseListen(values.https, '0.0.0.0');
  const release = acquirePidFile(values['data-dir']);
  process.on('exit', release);
  const start = () => startServer(
    {
      dataDir: values['data-dir']!,
      localSockets: values['local-socket'] ?? [],
      http: parseListen(values.http, '127.0.0.1') ?? { host: '127.0.0.1', port: 80 },
      https: https ?? null,
      backend,
      logLevel: values['log-level'],
      synchronous: values.durability === 'power' ? 'FULL' : 'NORMAL',
      httpLimits: parseLimits(values),
    },
    defaultPlugins({
      backend,
      simConsoles: values['sim-consoles'] ?? false,
      accel: values.accel as 'auto' | 'kvm' | 'tcg' | undefined,
      network: values.network as 'ovs' | 'bridge' | 'none' | undefined,
      attachUplinks: values['attach-uplinks'] ?? false,
    }),
  );
  let server = await start();
  let stopping = false;
  const stop = (): void => {
    stopping = true;
    server.close().then(() => process.exit(0), () => process.exit(1));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdout.write(`xenon: listening on ${[server.httpUrl, server.httpsUrl].filter(Boolean).join(' and ')}\n`);
  // joining or leaving a pool restarts the daemon in place, as xapi restarts itself
  for (;;) {
    await server.restartRequested;
    if (stopping) return;
    process.stdout.write('xenon: restarting (pool membership changed)\n');
    await server.close().catch((e: unknown) => process.stderr.write(`xenon: closing before the restart: ${e instanceof Error ? e.message : String(e)}\n`));
    server = await start();
    process.stdout.write(`xenon: restarted, listening on ${[server.httpUrl, server.httpsUrl].filter(Boolean).join(' and ')}\n`);
  }
}

async function stop(rest: string[]): Promise<void> {
  const { values } = parseArgs({
    args: rest,
    options: { 'data-dir': { type: 'string' }, guests: { type: 'boolean' }, timeout: { type: 'string' } },
  });
  if (!values['data-dir']) throw new Error(USAGE);
  const seconds = Number(values.timeout ?? 60);
  if (!Number.isFinite(seconds) || seconds <= 0) throw new Error(`bad --timeout: ${values.timeout}`);
  await stopXenon({
    dataDir: values['data-dir'],
    guests: values.guests ?? false,
    timeoutMs: seconds * 1000,
    say: (line) => void process.stdout.write(`xenon: ${line}\n`),
  });
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  if (command === 'server') return server(rest);
  if (command === 'stop') return stop(rest);
  process.stderr.write(`${USAGE}\n`);
  process.exit(command === '--help' || command === '-h' ? 0 : 2);
}

main(process.argv.slice(2)).catch((e: unknown) => {
  process.stderr.write(`xenon: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
