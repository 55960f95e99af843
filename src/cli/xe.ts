/**
 * xe, the XenServer command line, for Xenon: `xe <command> [-s server]
 * [-p port] [-u user] [-pw password | -pwf file] [--nossl]
 * [--trust-on-first-use] [key=value …] [--flag …]`.
 *
 * The generic <class>-list / -param-* commands come from the datamodel at
 * run time; the everyday commands are in ./xe/ops.ts. Output and error
 * printing follow xe's.
 */
import { ERRORS } from '../datamodel/errors.ts';
import type { XenApiClient } from '../client/client.ts';
import { CliError, connect, parseConnection, ServerError, Transport } from './xe/conn.ts';
import type { Command, Ctx } from './xe/context.ts';
import { recordBlock, Resolver } from './xe/format.ts';
import { dataSourceCommands } from './xe/data-sources.ts';
import { genericCommands } from './xe/generic.ts';
import { specificCommands } from './xe/ops.ts';

const VM_SELECTORS = ['vm', '<vm-selectors>'];
const HOST_SELECTORS = ['host', '<host-selectors>'];
const VM_SELECTORS_INFO = ' The VM parameters can be selected with vm=<name or uuid>, uuid=, or any VM field=value filter (see vm-list params=all); with more than one match, --multiple is required.';
const HOST_SELECTORS_INFO = ' The host parameters can be selected with host=<name or uuid>, uuid=, or any host field=value filter; with more than one match, --multiple is required.';
/** Commands a pool member answers itself, with a slave-local session (its master may be gone). */
const ON_A_MEMBER = new Set(['pool-emergency-transition-to-master', 'pool-emergency-reset-master']);

/** Commands that `xe help` (without --all) lists. */
const COMMON = new Set([
  'vm-list', 'vm-install', 'vm-start', 'vm-shutdown', 'vm-reboot', 'vm-suspend', 'vm-resume', 'vm-pause', 'vm-unpause', 'vm-snapshot', 'vm-clone',
  'vm-copy', 'vm-uninstall', 'vm-migrate', 'vm-export', 'vm-import', 'vm-cd-insert', 'vm-cd-eject', 'vm-disk-add', 'vm-vif-list', 'vm-param-list',
  'vm-param-get', 'vm-param-set', 'template-list', 'snapshot-revert', 'host-list', 'sr-list', 'sr-create', 'vdi-list', 'vdi-create', 'network-list',
  'network-create', 'vif-create', 'pool-list', 'task-list', 'console', 'event-wait', 'help',
]);

export function allCommands(): Map<string, Command> {
  const m = new Map<string, Command>();
  for (const c of [...genericCommands(), ...specificCommands(), ...dataSourceCommands()]) m.set(c.name, c);
  m.set('help', { name: 'help', reqd: [], optn: ['all', 'minimal'], help: 'Prints help: the common commands, every command (--all), or one command (xe help <command>).', noSession: true, freeParams: true, run: async () => undefined });
  return m;
}

const USAGE = `Usage:
  xe <command>
    [ -s <server> ]            Xenon host (default 127.0.0.1)
    [ -p <port> ]              port (default 443, or 80 with --nossl)
    [ -u <username> -pw <password> | -pwf <password file> ]
                               User authentication (password or file)
    [ --nossl ]                Plain HTTP instead of HTTPS
    [ --trust-on-first-use ]   Pin the server's certificate in ~/.xe-known-hosts
                               instead of checking it against the trusted CAs
    [ --debug ]                Print each call on stderr
    [ <other arguments> ... ]  Command-specific options

Settings may also come from XE_EXTRA_ARGS (server=…,port=…,username=…,password=…)
and ~/.xe (key=value lines: server, port, username, password, nossl, tofu).

To get help on a specific command:
  xe help <command>

`;

function columns(names: readonly string[]): string {
  if (names.length === 0) return '';
  const width = Math.max(...names.map((n) => n.length)) + 2;
  const per = Math.max(1, Math.floor(78 / width));
  const lines: string[] = [];
  for (let i = 0; i < names.length; i += per) lines.push('    ' + names.slice(i, i + per).map((n) => n.padEnd(width)).join('').trimEnd());
  return lines.join('\n') + '\n';
}

function help(ctx: Ctx, words: readonly string[], cmds: Map<string, Command>): void {
  const all = ctx.params.get('all') === 'true';
  const minimal = ctx.params.get('minimal') === 'true';
  if (words.length) {
    for (const w of words) {
      const c = cmds.get(w);
      if (!c) {
        ctx.out(`Unknown command '${w}'\n`);
        ctx.exitCode = 1;
        continue;
      }
      const optional = [...c.optn, ...(c.vmSelectors ? VM_SELECTORS : []), ...(c.hostSelectors ? HOST_SELECTORS : [])];
      const desc = c.help + (c.vmSelectors ? VM_SELECTORS_INFO : c.hostSelectors ? HOST_SELECTORS_INFO : '');
      ctx.out(recordBlock([['command name        ', c.name], ['reqd params     ', c.reqd.join(', ')], ['optional params ', optional.join(', ')], ['description     ', desc]]) + '\n');
    }
    return;
  }
  const names = [...cmds.keys()].sort();
  const shown = all ? names : names.filter((n) => COMMON.has(n));
  if (minimal) {
    ctx.out(shown.join(',') + '\n');
    return;
  }
  if (all) {
    const host = shown.filter((n) => n.startsWith('host-'));
    const vm = shown.filter((n) => n.startsWith('vm-'));
    const other = shown.filter((n) => !n.startsWith('host-') && !n.startsWith('vm-'));
    ctx.out(`${USAGE}Full command list\n-----------------\n${columns(host)}\n${columns(vm)}\n${columns(other)}`);
  } else {
    ctx.out(`${USAGE}To get a full listing of commands:\n  xe help --all\n\nCommon command list\n-------------------\n${columns(shown)}`);
  }
}

/** Splits `cmd k=v --flag word` into the command, its parameters and bare words. */
function parseCommand(args: readonly string[]): { name: string | undefined; params: Map<string, string>; words: string[] } {
  const params = new Map<string, string>();
  const words: string[] = [];
  let name: string | undefined;
  for (const a of args) {
    if (a.startsWith('--') && a.length > 2) {
      const eq = a.indexOf('=');
      if (eq > 0) params.set(a.slice(2, eq), a.slice(eq + 1));
      else params.set(a.slice(2), 'true');
      continue;
    }
    const eq = a.indexOf('=');
    if (eq > 0) params.set(a.slice(0, eq), a.slice(eq + 1));
    else if (name === undefined) name = a;
    else words.push(a);
  }
  return { name, params, words };
}

/** Prints a XenAPI error as xe does: the code, then `name: value` for each parameter. */
async function printServerError(e: ServerError, res: Resolver | undefined, err: (s: string) => void): Promise<void> {
  const names = (ERRORS as Record<string, readonly string[]>)[e.code];
  const params = res ? await Promise.all(e.params.map((p, i) => res.describe(p, names?.[i]))) : [...e.params];
  if (!names) {
    err(`Error code: ${e.code}\nError parameters: ${params.join(', ')}\n`);
    return;
  }
  const lines = [e.code];
  const n = Math.max(names.length, params.length);
  for (let i = 0; i < n; i++) lines.push(`${names[i] ?? '<extra>'}: ${params[i] ?? '<unknown>'}`);
  err(lines.join('\n') + '\n');
}

export async function main(argv: readonly string[]): Promise<number> {
  const out = (s: string): void => void process.stdout.write(s);
  const err = (s: string): void => void process.stderr.write(s);
  let transport: Transport | undefined;
  let client: XenApiClient | undefined;
  let res: Resolver | undefined;
  let loggedIn = false;
  try {
    if (argv.includes('-version')) {
      out('xe for Xenon (JSON-RPC)\n');
      return 0;
    }
    const wantsHelp = argv.includes('--help') || argv.includes('-help');
    const { settings, rest } = parseConnection(argv.filter((a) => a !== '--help' && a !== '-help'));
    const { name, params, words } = parseCommand(rest);
    const cmds = allCommands();
    if (wantsHelp || name === undefined) {
      err(`Usage: xe <cmd> [-s server] [-p port] ([-u username] [-pw password] or [-pwf <password file>]) <other arguments>\n\nA full list of commands can be obtained by running \n\txe help -s <server> -p <port>\n`);
      return 0;
    }
    const ctxBase = { params, out, err, exitCode: 0 };
    if (name === 'help') {
      const ctx = { ...ctxBase } as unknown as Ctx;
      help(ctx, words, cmds);
      return ctx.exitCode;
    }
    const cmd = cmds.get(name);
    if (!cmd) throw new CliError(`Unknown command: ${name}`, true);
    if (words.length) throw new CliError(`Syntax error: ${words[0]}`, true);
    for (const r of cmd.reqd) if (!params.has(r)) throw new CliError(`Required parameter not found: ${r}`, true);
    transport = new Transport(settings);
    client = connect(transport);
    try {
      // the emergency commands run on a pool member whose master is gone: they log in there alone, as xapi's CLI does
      if (ON_A_MEMBER.has(name)) await client.loginLocal(settings.username, settings.password);
      else await client.login(settings.username, settings.password, 'cli');
      loggedIn = true;
    } catch (e) {
      if (e instanceof ServerError && e.code === 'SESSION_AUTHENTICATION_FAILED') {
        throw new CliError(settings.password === '' && settings.username === '' ? 'Username/password must be specified' : 'Authentication failed', true);
      }
      throw e;
    }
    res = new Resolver(client);
    const ctx: Ctx = { ...ctxBase, client, transport, res };
    await cmd.run(ctx);
    return ctx.exitCode;
  } catch (e) {
    if (e instanceof ServerError) await printServerError(e, client && loggedIn ? res : undefined, err);
    else if (e instanceof CliError) {
      if (e.usage) err(`${e.message}\nFor usage run: 'xe help'\n`);
      else err(`Error: ${e.message}\n`);
    } else {
      const x = e as NodeJS.ErrnoException;
      if (x.code === 'ECONNREFUSED' || x.code === 'EHOSTUNREACH') err('Unable to contact server. Please check server and port settings.\n');
      else if (x.code === 'ENOTFOUND') err(`Host '${x.message.split(' ').pop() ?? ''}' not found.\n`);
      else if (x.code && /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(x.code)) {
        err(`Error: the server's certificate could not be verified (${x.code}: ${x.message}).\nUse --trust-on-first-use to pin it, or --nossl for plain HTTP.\n`);
      } else err(`Error: ${x.message ?? String(e)}\n`);
    }
    return 1;
  } finally {
    if (loggedIn) await client?.logout().catch(() => undefined);
    transport?.close();
  }
}

const code = await main(process.argv.slice(2));
process.exitCode = code;
