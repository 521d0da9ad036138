import { constants, promises as fs } from 'node:fs'
import { dirname } from 'node:path'

/** What a replica is stored on: anything with positional reads and writes. */
export interface ReplicaFile {
  readonly path: string
  /** Fills `buffer` from `offset`; returns the bytes read, fewer only at end of file. */
  read(buffer: Buffer, offset: number): Promise<number>
  /** Writes all of `buffer` at `offset`; returns the bytes written. */
  write(buffer: Buffer, offset: number): Promise<number>
  size(): Promise<number>
  truncate(size: number): Promise<void>
  /** Makes written data durable (fdatasync). */
  sync(): Promise<void>
  close(): Promise<void>
}

export type ReplicaFileOpener = (path: string) => Promise<ReplicaFile>

/** A local file opened once and kept open; every read and write is positional. */
export class LocalFile implements ReplicaFile {
  private constructor(
    readonly path: string,
    private readonly handle: fs.FileHandle,
  ) {}

  /** Opens (creating the file and its directories if missing) for reading and writing. */
  static async open(path: string): Promise<LocalFile> {
    await fs.mkdir(dirname(path), { recursive: true })
    const handle = await fs.open(path, constants.O_RDWR | constants.O_CREAT, 0o644)
    return new LocalFile(path, handle)
  }

  async read(buffer: Buffer, offset: number): Promise<number> {
    let done = 0
    while (done < buffer.length) {
      const { bytesRead } = await this.handle.read(buffer, done, buffer.length - done, offset + done)
      if (bytesRead === 0) break
      done += bytesRead
    }
    return done
  }

  async write(buffer: Buffer, offset: number): Promise<number> {
    let done = 0
    while (done < buffer.length) {
      const { bytesWritten } = await this.handle.write(buffer, done, buffer.length - done, offset + done)
      done += bytesWritten
    }
    return done
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
    return this.handle.close()
  }
}

export const openLocalFile: ReplicaFileOpener = (path) => LocalFile.open(path)
