/**
 * Large buffers for reads and gathered writes, reused: a fresh megabyte per request costs more in
 * garbage collection than the I/O itself. A buffer goes back only once nothing can still use it.
 */
export class BufferPool {
  private readonly free: Buffer[] = []

  constructor(
    readonly bufferBytes: number,
    private readonly maxFree: number,
  ) {}

  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.bufferBytes)
  }

  give(buffer: Buffer): void {
    if (this.free.length < this.maxFree && buffer.length === this.bufferBytes) this.free.push(buffer)
  }
}

/** One pool per process for the data path: 1 MiB slabs, at most 32 kept. */
export const slabs = new BufferPool(1 << 20, 32)
