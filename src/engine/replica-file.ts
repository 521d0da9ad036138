import fs, { constants, promises as fsp } from 'node:fs'
import { dirname } from 'node:path'
import { readBlocks } from './block-hash.js'
import { mkdirBelowRoot } from './storage-roots.js'

/** Where a read's block checksums go: the CRC-32C of each `blockBytes` block of the bytes read (the last may be short), into `out` from 0. */
export interface BlockSums {
  readonly blockBytes: number
  readonly out: Uint32Array
}

/** What a replica is stored on: anything with positional reads and writes. */
export interface ReplicaFile {
  readonly path: string
  /** Fills `buffer` from `offset`; returns the bytes read, fewer only at end of file. */
  read(buffer: Buffer, offset: number): Promise<number>
  /** read(), checksumming the blocks it read into `sums` on the thread that read them (bytes still in its cache). */
  readSummed?(buffer: Buffer, offset: number, sums: BlockSums): Promise<number>
  /** Writes all of `buffer` at `offset`; returns the bytes written. */
  write(buffer: Buffer, offset: number): Promise<number>
  size(): Promise<number>
  truncate(size: number): Promise<void>
  /** Makes written data durable (fdatasync). */
  sync(): Promise<void>
  close(): Promise<void>
  /** Remote backends: writes must be whole aligned chunks of this size (the last one up to the size): S3. */
  readonly writeUnit?: number
  /** Remote backends: the bytes per write the engine should aim for. */
  readonly preferredWriteUnit?: number
  /** Remote backends: whether the remote answers now (cheap; used between retries). */
  reachable?(): Promise<boolean>
}

export interface OpenOptions {
  /**
   * The storage root the file lies in. The directories between it and the file are created one level at a
   * time, never the root itself nor anything above it: a missing root fails with code ENOROOT
   * ("storage root … missing"). Without one, every missing directory is created.
   */
  root?: string
  /** The volume's and the replica's UUIDs from the volume's health record: a remote replica (S3) is stamped with them. */
  identity?: { volume: string; replica: string }
}

export type ReplicaFileOpener = (path: string, options?: OpenOptions) => Promise<ReplicaFile>

/** One positional read or write on a descriptor, as a single promise (no FileHandle bookkeeping per call). */
function positional(op: typeof fs.read | typeof fs.write, fd: number, buffer: Buffer, at: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) =>
    (op as (fd: number, b: Buffer, o: number, l: number, p: number, cb: (err: Error | null, n: number) => void) => void)(fd, buffer, at, length, position, (err, n) =>
      err ? reject(err) : resolve(n),
    ),
  )
}

/** Writes all of `buffer` at `position` of descriptor `fd`. */
export async function writeFully(fd: number, buffer: Buffer, position: number): Promise<number> {
  let done = 0
  while (done < buffer.length) done += await positional(fs.write, fd, buffer, done, buffer.length - done, position + done)
  return done
}

/** A local file opened once and kept open; every read and write is positional. */
export class LocalFile implements ReplicaFile {
  private closed = false

  private constructor(
    readonly path: string,
    private readonly handle: fsp.FileHandle,
  ) {}

  /** Opens (creating the file and its directories below its storage root if missing) for reading and writing. */
  static async open(path: string, options: OpenOptions = {}): Promise<LocalFile> {
    if (options.root !== undefined) await mkdirBelowRoot(options.root, dirname(path))
    else await fsp.mkdir(dirname(path), { recursive: true })
    const handle = await fsp.open(path, constants.O_RDWR | constants.O_CREAT, 0o644)
    return new LocalFile(path, handle)
  }

  /** The descriptor, refused once closed (a reused number could name another file). */
  private get fd(): number {
    if (this.closed) throw Object.assign(new Error(`file is closed: ${this.path}`), { code: 'EBADF' })
    return this.handle.fd
  }

  /** With the native addon only: the read and the checksums both on the libuv pool. */
  readonly readSummed = readBlocks ? (buffer: Buffer, offset: number, sums: BlockSums): Promise<number> => this.summed(buffer, offset, sums) : undefined

  private async summed(buffer: Buffer, offset: number, sums: BlockSums): Promise<number> {
    return readBlocks!(this.fd, buffer, offset, sums.blockBytes, sums.out)
  }

  async read(buffer: Buffer, offset: number): Promise<number> {
    let done = 0
    while (done < buffer.length) {
      const n = await positional(fs.read, this.fd, buffer, done, buffer.length - done, offset + done)
      if (n === 0) break
      done += n
    }
    return done
  }

  write(buffer: Buffer, offset: number): Promise<number> {
    return writeFully(this.fd, buffer, offset)
  }

  async size(): Promise<number> {
    return (await this.handle.stat()).size
  }

  truncate(size: number): Promise<void> {
    return this.handle.truncate(size)
  }

  sync(): Promise<void> {
    return this.handle.datasync()
  }

  close(): Promise<void> {
    this.closed = true
    return this.handle.close()
  }
}

export const openLocalFile: ReplicaFileOpener = (path, options) => LocalFile.open(path, options)
