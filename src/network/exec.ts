// Command runner for the network drivers. Every command a backend runs goes
// through here so that an optional network namespace prefix
// (`ip netns exec <ns>`) is applied uniformly.
import { execFile } from 'node:child_process';

export class CommandError extends Error {
  override readonly name = 'CommandError';
  constructor(
    readonly argv: string[],
    readonly code: number | null,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(`command failed (${code}): ${argv.join(' ')}: ${stderr.trim() || stdout.trim()}`);
  }
}

export interface RunOptions {
  input?: string;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
  /** Run in the host namespace even if the runner has a netns (for commands that only talk to unix sockets). */
  noNetns?: boolean;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

export class Runner {
  constructor(readonly netns?: string, readonly baseEnv: NodeJS.ProcessEnv = {}) {}

  argv(cmd: string, args: string[], noNetns = false): string[] {
    return this.netns && !noNetns ? ['ip', 'netns', 'exec', this.netns, cmd, ...args] : [cmd, ...args];
  }

  run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
    const argv = this.argv(cmd, args, opts.noNetns);
    return new Promise((resolve, reject) => {
      const child = execFile(
        argv[0]!,
        argv.slice(1),
        {
          env: { ...process.env, ...this.baseEnv, ...opts.env },
          timeout: opts.timeoutMs ?? 30_000,
          maxBuffer: 64 * 1024 * 1024,
        },
        (err, stdout, stderr) => {
          if (err) {
            const code = typeof (err as NodeJS.ErrnoException & { code?: unknown }).code === 'number'
              ? ((err as unknown as { code: number }).code)
              : null;
            reject(new CommandError(argv, code, String(stdout), String(stderr) || err.message));
          } else resolve({ stdout: String(stdout), stderr: String(stderr) });
        },
      );
      child.stdin?.on('error', () => { /* child did not read its stdin */ });
      if (opts.input !== undefined) child.stdin?.end(opts.input);
      else child.stdin?.end();
    });
  }

  /** Like run() but returns null instead of throwing on a non-zero exit. */
  async tryRun(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult | null> {
    try {
      return await this.run(cmd, args, opts);
    } catch (e) {
      if (e instanceof CommandError) return null;
      throw e;
    }
  }
}
