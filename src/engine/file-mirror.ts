import { EventEmitter } from 'node:events'
import { FileLane, type Footprint } from './file-lane.js'
import { EndOfFileError, Operation, type OperationType } from './operation.js'
import { OperationList } from './operation-list.js'
import { RangeSet } from './range-set.js'
import type { BlockSums, ReplicaFile } from './replica-file.js'

export interface FileMirrorOptions {
  /** Capacity of each file's queue of async operations; callers wait for room beyond it. */
  queueSize: number
  /** Operations share the caller's buffer instead of working on their own copy. */
  fixedBuffer?: boolean
}

interface FileState<F> {
  async: boolean
  userData: F | undefined
  /** Bytes read since they were last written. */
  cached: RangeSet
  lane: FileLane
}

export interface FileMirrorEvents<U, F> {
  /** Fires when an operation starts and again when it is done. */
  operation: [Operation<U, F>]
  /** Fires when every file's queue has run empty. */
  idle: [FileMirror<U, F>]
}

/** Several files used as one: reads go to the reading set, writes to the writing set, each file in its own lane. */
export class FileMirror<U = unknown, F = unknown> extends EventEmitter<FileMirrorEvents<U, F>> {
  private readonly reading = new Set<ReplicaFile>()
  private readonly writing = new Set<ReplicaFile>()
  private readonly states = new Map<ReplicaFile, FileState<F>>()
  /** readAt/writeAt calls not yet returned: their operations may still be waiting for room in a lane. */
  private readonly admitting = new Set<Promise<unknown>>()
  private closed = false

  constructor(private readonly options: FileMirrorOptions) {
    super()
    if (!Number.isInteger(options.queueSize) || options.queueSize < 1) throw new RangeError('queueSize must be a positive integer')
  }

  private state(file: ReplicaFile): FileState<F> {
    let state = this.states.get(file)
    if (!state) {
      state = {
        async: false,
        userData: undefined,
        cached: new RangeSet(),
        lane: new FileLane(this.options.queueSize, () => this.emitIdleIfQuiet()),
      }
      this.states.set(file, state)
    }
    return state
  }

  private emitIdleIfQuiet(): void {
    for (const state of this.states.values()) if (state.lane.busy) return
    this.emit('idle', this)
  }

  addReadingFile(file: ReplicaFile): boolean {
    return addTo(this.reading, file, () => this.state(file))
  }

  removeReadingFile(file: ReplicaFile): boolean {
    return this.reading.delete(file)
  }

  addWritingFile(file: ReplicaFile): boolean {
    return addTo(this.writing, file, () => this.state(file))
  }

  removeWritingFile(file: ReplicaFile): boolean {
    return this.writing.delete(file)
  }

  get readingFiles(): ReplicaFile[] {
    return [...this.reading]
  }

  get writingFiles(): ReplicaFile[] {
    return [...this.writing]
  }

  /** The union of the reading and writing sets. */
  get allFiles(): ReplicaFile[] {
    return [...new Set([...this.reading, ...this.writing])]
  }

  setFileAsync(file: ReplicaFile, async: boolean): void {
    this.state(file).async = async
  }

  isFileAsync(file: ReplicaFile): boolean {
    return this.states.get(file)?.async ?? false
  }

  setFileUserData(file: ReplicaFile, userData: F | undefined): void {
    this.state(file).userData = userData
  }

  fileUserData(file: ReplicaFile): F | undefined {
    return this.states.get(file)?.userData
  }

  /** The file's cached ranges (read since last written); a copy. */
  cachedRanges(file: ReplicaFile): RangeSet {
    return this.states.get(file)?.cached.clone() ?? new RangeSet()
  }

  isFullyCached(file: ReplicaFile, size: number): boolean {
    return this.states.get(file)?.cached.covers(0, size) ?? size === 0
  }

  cachedPercent(file: ReplicaFile, size: number): number {
    if (size <= 0) return 100
    const cached = this.states.get(file)?.cached.bytesWithin(0, size) ?? 0
    return (cached / size) * 100
  }

  /** Operations waiting or running in the file's lane. */
  queueDepth(file: ReplicaFile): number {
    return this.states.get(file)?.lane.depth ?? 0
  }

  /**
   * Reads `buffer.length` bytes at `offset` from the reading set, or from `files` when given. `sums`, for a read from
   * one file: its blocks are checksummed there when the file can (its operation is then `summed`).
   */
  readAt(buffer: Buffer, offset: number, userData?: U, files?: ReplicaFile[], sums?: BlockSums): Promise<OperationList<U, F>> {
    return this.run('read', buffer, offset, userData, files ?? this.readingFiles, sums)
  }

  /** Writes `buffer` at `offset` to the writing set, or to `files` when given. */
  writeAt(buffer: Buffer, offset: number, userData?: U, files?: ReplicaFile[]): Promise<OperationList<U, F>> {
    return this.run('write', buffer, offset, userData, files ?? this.writingFiles)
  }

  private run(type: OperationType, buffer: Buffer, offset: number, userData: U | undefined, files: ReplicaFile[], sums?: BlockSums): Promise<OperationList<U, F>> {
    if (this.closed) return Promise.reject(new Error('file mirror is closed'))
    if (!Number.isSafeInteger(offset) || offset < 0) return Promise.reject(new RangeError('offset must be a non-negative safe integer'))
    let async = false
    const operations = files.map((file) => {
      const state = this.state(file)
      const own = this.options.fixedBuffer ? buffer : type === 'read' ? Buffer.allocUnsafe(buffer.length) : Buffer.from(buffer)
      async ||= state.async
      const op = new Operation<U, F>(type, file, offset, own, state.async, userData, state.userData)
      op.sums = sums
      return op
    })
    // Only sync files: every operation is in its lane now, so there is nothing to admit (and no promise per operation).
    if (!async) return this.runSync(operations)
    const admitted = this.admit(operations)
    this.admitting.add(admitted)
    const forget = () => void this.admitting.delete(admitted)
    admitted.then(forget, forget)
    return admitted
  }

  /** Queues every operation at once; resolves when all are done, counted rather than awaited one by one. */
  private runSync(operations: Operation<U, F>[]): Promise<OperationList<U, F>> {
    const list = new OperationList(operations)
    if (operations.length === 0) return Promise.resolve(list)
    return new Promise((resolve) => {
      let left = operations.length
      const oneDone = () => {
        if (--left === 0) resolve(list)
      }
      for (const op of operations) this.state(op.file).lane.push(() => this.execute(op, oneDone), false, footprint(op))
    })
  }

  /** Resolves when sync operations are done and async ones are queued (waiting for room if a queue is full). */
  private async admit(operations: Operation<U, F>[]): Promise<OperationList<U, F>> {
    const sync: Promise<void>[] = []
    for (const op of operations) {
      const lane = this.state(op.file).lane
      if (op.async) {
        await lane.reserve()
        lane.push(() => this.execute(op), true, footprint(op))
      } else {
        lane.push(() => this.execute(op), false, footprint(op))
        sync.push(op.whenDone)
      }
    }
    await Promise.all(sync)
    return new OperationList(operations)
  }

  private async execute(op: Operation<U, F>, done?: () => void): Promise<void> {
    const cached = this.state(op.file).cached
    const end = op.offset + op.buffer.length
    op.markStarted()
    this.emit('operation', op)
    let bytes = 0
    let error: Error | null = null
    try {
      if (op.type === 'read') {
        if (op.sums && op.file.readSummed) {
          bytes = await op.file.readSummed(op.buffer, op.offset, op.sums)
          op.summed = true
        } else bytes = await op.file.read(op.buffer, op.offset)
        if (bytes < op.buffer.length) error = new EndOfFileError()
        cached.add(op.offset, op.offset + bytes)
      } else {
        cached.remove(op.offset, end)
        bytes = await op.file.write(op.buffer, op.offset)
      }
    } catch (err) {
      error = err instanceof Error ? err : new Error(String(err))
    }
    op.markDone(bytes, error)
    this.emit('operation', op)
    done?.()
  }

  /** Resolves once every call has queued its operations and the file's lane has run empty. */
  async fileDrained(file: ReplicaFile): Promise<void> {
    while (this.admitting.size > 0) await Promise.allSettled([...this.admitting])
    await this.states.get(file)?.lane.drained()
  }

  /** Resolves once every call has queued its operations and every lane has run empty. */
  async drained(): Promise<void> {
    while (this.admitting.size > 0) await Promise.allSettled([...this.admitting])
    await Promise.all([...this.states.values()].map((state) => state.lane.drained()))
  }

  /** Stops taking operations, finishes every queued one (none is dropped), then optionally closes the files. */
  async close(closeFiles: boolean): Promise<void> {
    this.closed = true
    await this.drained()
    if (closeFiles) await Promise.all(this.allFiles.map((file) => file.close()))
  }
}

function footprint(op: Operation<unknown, unknown>): Footprint {
  return { start: op.offset, end: op.offset + op.buffer.length, write: op.type === 'write' }
}

function addTo(set: Set<ReplicaFile>, file: ReplicaFile, ensureState: () => unknown): boolean {
  if (set.has(file)) return false
  ensureState()
  set.add(file)
  return true
}
