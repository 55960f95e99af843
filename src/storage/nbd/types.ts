/** What an NBD export serves and how: the block device, the options, the running export. */
/** A byte-addressed device an NBD export serves. All offsets/lengths are validated by the server first. */
export interface BlockDevice {
  /** Size in bytes. */
  readonly size: number;
  readonly readOnly: boolean;
  /** Exactly `length` bytes at `offset` (the server guarantees `offset + length <= size`). */
  read(offset: number, length: number): Promise<Buffer>;
  write(offset: number, data: Buffer): Promise<void>;
  /** Make completed writes durable. */
  flush(): Promise<void>;
  /** Discard a range (contents afterwards unspecified). If absent, NBD_CMD_TRIM is not offered. */
  trim?(offset: number, length: number): Promise<void>;
  /** Make a range read as zeros. If absent the server writes zero buffers. */
  writeZeroes?(offset: number, length: number): Promise<void>;
  close(): Promise<void>;
  /** The export is closing: fail at once the requests that wait for something only a later call would bring (a standby device's activation). */
  abort?(): void;
}

export interface NbdServeOptions {
  /** Export name clients ask for; the empty (default) name is accepted too. Default ''. */
  exportName?: string;
  /** Free text returned for NBD_INFO_DESCRIPTION. */
  description?: string;
  /** Largest READ / WRITE / WRITE_ZEROES chunk accepted (bytes). Default 32 MiB. */
  maxPayload?: number;
  /** Preferred block size advertised with NBD_INFO_BLOCK_SIZE. Default 4096. */
  preferredBlockSize?: number;
  /** Connections still negotiating after this long are dropped. Default 30 s. */
  handshakeTimeoutMs?: number;
  /** Requests executing concurrently per connection before the server stops reading. Default 16. */
  maxInflight?: number;
  /** Permission bits of the socket file. Default 0o600. */
  socketMode?: number;
  /** Diagnostic messages (connection errors, protocol violations). */
  log?: (msg: string) => void;
}

export interface NbdExport {
  readonly socketPath: string;
  readonly exportName: string;
  /** `nbd+unix:///<name>?socket=<path>` for qemu-img / qemu-io / -drive file=. */
  readonly uri: string;
  readonly size: number;
  readonly readOnly: boolean;
  /** Open client connections. */
  readonly connectionCount: number;
  /** Stop listening, let in-flight requests finish, end the connections, close the device. Idempotent. */
  close(): Promise<void>;
}

