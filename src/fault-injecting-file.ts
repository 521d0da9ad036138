import type { ReplicaFile, ReplicaFileOpener } from './replica-file.js'

/** The faults one file currently has: each op fails with the given errno code, or is delayed. */
export interface Faults {
  failReads?: string
  failWrites?: string
  failSync?: string
  /** Milliseconds added before every read and write. */
  delayMs?: number
}

function ioError(code: string, op: string, path: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: injected fault, ${op} '${path}'`), { code, syscall: op, path })
}

/** A test backend: wraps a real file and fails or slows its reads and writes on demand. */
export class FaultInjectingFile implements ReplicaFile {
  constructor(
    private readonly inner: ReplicaFile,
    private readonly faults: () => Faults,
  ) {}

  get path(): string {
    return this.inner.path
  }

  private async before(kind: 'read' | 'write' | 'sync'): Promise<void> {
    const f = this.faults()
    if (f.delayMs) await new Promise((r) => setTimeout(r, f.delayMs))
    const code = kind === 'read' ? f.failReads : kind === 'write' ? f.failWrites : f.failSync
    if (code) throw ioError(code, kind, this.inner.path)
  }

  async read(buffer: Buffer, offset: number): Promise<number> {
    await this.before('read')
    return this.inner.read(buffer, offset)
  }

  async write(buffer: Buffer, offset: number): Promise<number> {
    await this.before('write')
    return this.inner.write(buffer, offset)
  }

  size(): Promise<number> {
    return this.inner.size()
  }

  async truncate(size: number): Promise<void> {
    await this.before('write')
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

/** Opens files through the fault-injecting backend; faults are set per path, before or after opening. */
export class FaultInjector {
  private readonly byPath = new Map<string, Faults>()
  /** Paths whose open fails with this code. */
  private readonly failOpen = new Map<string, string>()

  constructor(private readonly open: ReplicaFileOpener) {}

  readonly opener: ReplicaFileOpener = async (path) => {
    const code = this.failOpen.get(path)
    if (code) throw ioError(code, 'open', path)
    return new FaultInjectingFile(await this.open(path), () => this.byPath.get(path) ?? {})
  }

  set(path: string, faults: Faults): void {
    this.byPath.set(path, faults)
  }

  failOpening(path: string, code: string | undefined): void {
    if (code) this.failOpen.set(path, code)
    else this.failOpen.delete(path)
  }

  clear(): void {
    this.byPath.clear()
    this.failOpen.clear()
  }
}
