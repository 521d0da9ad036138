import type { BlockSums, ReplicaFile } from './replica-file.js'

export type OperationType = 'read' | 'write'

/** Reading past the end of a file: the library's io.EOF, with the bytes that were read. */
export class EndOfFileError extends Error {
  readonly code = 'EOF'
  constructor() {
    super('end of file')
    this.name = 'EndOfFileError'
  }
}

const noop = () => {}

/** One read or write on one file, as the library's Operation. */
export class Operation<U = unknown, F = unknown> {
  started = false
  done = false
  bytes = 0
  error: Error | null = null
  startedAt: number | undefined
  finishedAt: number | undefined
  /** A read asked to checksum its blocks where it reads them (ReplicaFile.readSummed); `summed` once its file did. */
  sums: BlockSums | undefined
  summed = false
  // Promises only for whoever awaits them: most reads are never awaited one by one.
  private started$: Promise<void> | undefined
  private done$: Promise<void> | undefined
  private resolveStarted: (() => void) | undefined
  private resolveDone: (() => void) | undefined

  constructor(
    readonly type: OperationType,
    readonly file: ReplicaFile,
    readonly offset: number,
    /** The operation's own buffer: a copy of the caller's unless the mirror uses fixed buffers. */
    readonly buffer: Buffer,
    readonly async: boolean,
    readonly userData: U | undefined,
    readonly fileUserData: F | undefined,
  ) {}

  /** Resolves once the operation has started; never rejects. */
  get whenStarted(): Promise<void> {
    return (this.started$ ??= this.started ? Promise.resolve() : new Promise((resolve) => (this.resolveStarted = resolve)))
  }

  /** Resolves once the operation is done, failed or not; never rejects. Never before whenStarted. */
  get whenDone(): Promise<void> {
    return (this.done$ ??= this.done ? this.whenStarted.then(noop) : new Promise((resolve) => (this.resolveDone = resolve)))
  }

  /** Milliseconds from start to done (0 before it starts; running time while it runs). */
  get durationMs(): number {
    if (this.startedAt === undefined) return 0
    return (this.finishedAt ?? performance.now()) - this.startedAt
  }

  markStarted(): void {
    this.started = true
    this.startedAt = performance.now()
    this.resolveStarted?.()
  }

  markDone(bytes: number, error: Error | null): void {
    if (!this.started) this.markStarted()
    this.bytes = bytes
    this.error = error
    this.finishedAt = performance.now()
    this.done = true
    this.resolveDone?.()
  }
}
