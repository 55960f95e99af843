/**
 * The tar of an XVA, through `tar-stream`: archives written from members
 * with backpressure, and read member by member from any byte source. Kept
 * behind this small interface so the XVA code asks for members, not streams.
 */
import { extract, pack, type Extract } from 'tar-stream';

/** A member being read (tar-stream names this type but does not export it). */
type Source = Extract extends AsyncIterable<infer S> ? S : never;

/**
 * Headers without the ustar magic are read too, as our reader always did:
 * xapi's tar library may write old-style (v7) headers. tar-stream accepts
 * the option; its type declarations do not list it.
 */
const LENIENT: NonNullable<Parameters<typeof extract>[0]> & { allowUnknownFormat: boolean } = { allowUnknownFormat: true };

export class TarError extends Error {
  constructor(
    readonly code: 'TRUNCATED' | 'CORRUPT',
    message: string,
  ) {
    super(message);
  }
}

/** One regular file of an archive, whole (an XVA's members are at most a few MiB). */
export interface TarMember {
  readonly name: string;
  readonly data: Buffer;
}

export interface TarEntry {
  readonly name: string;
  readonly size: number;
}

// ------------------------------------------------------------------ writing

/**
 * The archive of `members`, end marker included, as the bytes to send. A
 * member is taken from `members` only once the reader has taken the bytes
 * before it, so a slow reader slows the producer down; stopping early (the
 * reader returns) stops the producer too, which runs its own clean-up.
 */
export async function* tarArchive(members: AsyncIterable<TarMember> | Iterable<TarMember>): AsyncGenerator<Buffer> {
  const out = pack();
  let stopped = false;
  const feed = (async (): Promise<void> => {
    for await (const m of members) {
      if (stopped) return;
      await new Promise<void>((resolve, reject) => {
        const sink = out.entry({ name: m.name, size: m.data.length }, m.data, (err) => (err ? reject(err) : resolve()));
        sink.once('close', () => resolve());
      });
      if (stopped) return;
    }
    out.finalize();
  })();
  feed.catch((e: unknown) => out.destroy(e instanceof Error ? e : new Error(String(e))));
  try {
    for await (const chunk of out) yield chunk as Buffer;
    await feed;
  } finally {
    stopped = true;
    if (!out.destroyed) out.destroy();
    await feed.catch(() => undefined);
  }
}

// ------------------------------------------------------------------ reading

function asTarError(e: unknown): TarError {
  if (e instanceof TarError) return e;
  const message = e instanceof Error ? e.message : String(e);
  return new TarError(/unexpected end/i.test(message) ? 'TRUNCATED' : 'CORRUPT', message);
}

/**
 * Tar members one by one from a byte source. `next()` returns the next
 * regular file's header (long names and pax headers applied; directories and
 * links skipped), or null at the end of the archive; its data must then be
 * read (`data`) or skipped (`skip`) before asking for the next one. `drain()`
 * reads and drops the rest of the source, so a client's upload can finish.
 */
export class TarReader {
  private readonly extractor: Extract = extract(LENIENT);
  private readonly entries: AsyncIterator<Source>;
  private current: Source | undefined;
  private discarding = false;
  private readonly pumping: Promise<void>;

  constructor(source: AsyncIterable<Buffer | string>) {
    this.entries = this.extractor[Symbol.asyncIterator]();
    this.pumping = this.pump(source[Symbol.asyncIterator]());
    this.pumping.catch(() => undefined);
  }

  private async pump(it: AsyncIterator<Buffer | string>): Promise<void> {
    try {
      for (;;) {
        const r = await it.next();
        if (r.done) break;
        if (this.discarding || this.extractor.destroyed) continue;
        const chunk = typeof r.value === 'string' ? Buffer.from(r.value) : r.value;
        if (!this.extractor.write(chunk)) await writable(this.extractor);
      }
      if (!this.discarding && !this.extractor.destroyed) this.extractor.end(undefined);
    } catch (e) {
      this.extractor.destroy(e instanceof Error ? e : new Error(String(e)));
      throw e;
    }
  }

  async next(): Promise<TarEntry | null> {
    await this.skip();
    for (;;) {
      let r: IteratorResult<Source>;
      try {
        r = await this.entries.next();
      } catch (e) {
        throw asTarError(e);
      }
      if (r.done) return null;
      const { header } = r.value;
      if (header.type !== 'file' && header.type !== 'contiguous-file') {
        this.current = r.value;
        await this.skip(); // directories, links…: an XVA has none worth reading
        continue;
      }
      this.current = r.value;
      return { name: header.name, size: header.size };
    }
  }

  /** The current member's data, whole. */
  async data(): Promise<Buffer> {
    const entry = this.current;
    this.current = undefined;
    if (!entry) return Buffer.alloc(0);
    const parts: Buffer[] = [];
    try {
      for await (const c of entry) parts.push(c as Buffer);
    } catch (e) {
      throw asTarError(e);
    }
    return parts.length === 1 ? parts[0] : Buffer.concat(parts);
  }

  async skip(): Promise<void> {
    const entry = this.current;
    this.current = undefined;
    if (!entry) return;
    try {
      for await (const _ of entry);
    } catch (e) {
      throw asTarError(e);
    }
  }

  /** Stops reading members and drops whatever the source still sends. */
  async drain(): Promise<void> {
    this.discarding = true;
    if (!this.extractor.destroyed) this.extractor.destroy();
    await this.pumping.catch(() => undefined);
  }
}

/** Resolves when the extractor takes writes again, or is gone. */
function writable(w: Extract): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      w.off('drain', done);
      w.off('close', done);
      resolve();
    };
    w.on('drain', done);
    w.on('close', done);
  });
}
