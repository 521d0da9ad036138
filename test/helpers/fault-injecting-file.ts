import { getSystemErrorMap } from 'node:util'
import { openLocalFile, type ReplicaFile, type ReplicaFileOpener } from '../../src/engine/replica-file.js'

/**
 * What one file does wrong right now. A failure is an errno code ('EIO', 'ENOSPC', ...). The faults
 * are read at every call, so a test may replace them (FaultInjector.set) or change their fields while
 * the file is open.
 */
export interface Faults {
  /** Opening the file fails with this code. */
  failOpen?: string
  failReads?: string
  /** Writes and truncates fail with this code. */
  failWrites?: string
  /** size() (an fstat) fails with this code. */
  failSize?: string
  failSync?: string
  /** Milliseconds added before every read, write, truncate and sync. */
  delayMs?: number
  /** Awaited before the file is opened: lets a test hold a replica's open until it says. */
  openGate?: () => Promise<void>
  /** Awaited before every write: lets a test hold a replica's writes. */
  writeGate?: () => Promise<void>
  /** Awaited before every size() call: lets a test hold a replica inside a size check. */
  sizeGate?: () => Promise<void>
}

type Op = 'open' | 'read' | 'write' | 'truncate' | 'size' | 'sync'

const SYSCALL: Record<Op, string> = { open: 'open', read: 'read', write: 'write', truncate: 'ftruncate', size: 'fstat', sync: 'fsync' }
const SYSTEM_ERRORS = new Map([...getSystemErrorMap()].map(([errno, [code, message]]) => [code, { errno, message }]))

/** An error shaped as node:fs makes one: "EIO: i/o error, write '/path'", with errno, code, syscall and path. */
function ioError(code: string, op: Op, path: string): NodeJS.ErrnoException {
  const known = SYSTEM_ERRORS.get(code)
  const syscall = SYSCALL[op]
  return Object.assign(new Error(`${code}: ${known?.message ?? 'injected fault'}, ${syscall} '${path}'`), { errno: known?.errno, code, syscall, path })
}

/** A test backend: wraps a real file and fails, slows or holds its calls on demand. */
export class FaultInjectingFile implements ReplicaFile {
  constructor(
    private readonly inner: ReplicaFile,
    private readonly faults: () => Faults,
  ) {}

  get path(): string {
    return this.inner.path
  }

  private async before(op: Exclude<Op, 'open'>): Promise<void> {
    const delayMs = op === 'size' ? undefined : this.faults().delayMs
    if (delayMs) await new Promise((resolve) => setTimeout(resolve, delayMs))
    const gate = op === 'write' ? this.faults().writeGate : op === 'size' ? this.faults().sizeGate : undefined
    if (gate) await gate()
    // Read again after waiting: the test may have changed the faults meanwhile.
    const f = this.faults()
    const code = { read: f.failReads, write: f.failWrites, truncate: f.failWrites, size: f.failSize, sync: f.failSync }[op]
    if (code) throw ioError(code, op, this.inner.path)
  }

  async read(buffer: Buffer, offset: number): Promise<number> {
    await this.before('read')
    return this.inner.read(buffer, offset)
  }

  async write(buffer: Buffer, offset: number): Promise<number> {
    await this.before('write')
    return this.inner.write(buffer, offset)
  }

  async size(): Promise<number> {
    await this.before('size')
    return this.inner.size()
  }

  async truncate(size: number): Promise<void> {
    await this.before('truncate')
    return this.inner.truncate(size)
  }

  async sync(): Promise<void> {
    await this.before('sync')
    return this.inner.sync()
  }

  close(): Promise<void> {
    return this.inner.close()
  }
}

/**
 * Opens files through the fault-injecting backend (over real local files unless told otherwise).
 * Faults are set per absolute path, before or after the file is opened.
 */
export class FaultInjector {
  private readonly byPath = new Map<string, Faults>()

  constructor(private readonly open: ReplicaFileOpener = openLocalFile) {}

  readonly opener: ReplicaFileOpener = async (path) => {
    await this.get(path).openGate?.()
    const code = this.get(path).failOpen
    if (code) throw ioError(code, 'open', path)
    return new FaultInjectingFile(await this.open(path), () => this.get(path))
  }

  /** From now on `path` has these faults (and no others). */
  set(path: string, faults: Faults): void {
    this.byPath.set(path, faults)
  }

  /** The faults `path` has now ({} when none). */
  get(path: string): Faults {
    // A whole replace stages its content beside the replica, on the same disk: that disk's faults apply to it too.
    const staged = /^(.*\/)\.([^/]+)\.filemirror-replace$/.exec(path)
    return this.byPath.get(path) ?? (staged ? this.byPath.get(staged[1] + staged[2]) : undefined) ?? {}
  }

  /** No more faults on `path`, or on any path when none is given. */
  clear(path?: string): void {
    if (path === undefined) this.byPath.clear()
    else this.byPath.delete(path)
  }
}
