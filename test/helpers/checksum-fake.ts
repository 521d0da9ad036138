import { checksum } from '../../src/engine/block-hash.js'
import type { ChecksumStore } from '../../src/engine/verified-read.js'

/**
 * A checksum store in memory with BlockChecksums' read-side contract, for engine tests of verified reads and scrub:
 * CRC-32C per block, zero-padded past the volume's end; `write` stands for a client write landing on it.
 */
export class FakeChecksums implements ChecksumStore {
  readonly blockBytes = 4096
  private readonly sums = new Map<number, number>()
  private readonly touched = new Map<number, number>()
  private generation = 0
  exclusiveRuns = 0
  /** Called at every beginRead (a test makes a write race the read here). */
  onBeginRead: ((start: number, end: number) => void) | undefined

  /** Checksums of `data` from `offset` (the volume's bytes): covered from then on. */
  constructor(data?: Buffer, offset = 0) {
    if (data) this.set(offset, data)
  }

  private crc(block: Buffer): number {
    if (block.length === this.blockBytes) return checksum(block)
    const padded = Buffer.alloc(this.blockBytes)
    block.copy(padded)
    return checksum(padded)
  }

  private set(offset: number, data: Buffer): void {
    for (let at = 0; at < data.length; at += this.blockBytes) this.sums.set((offset + at) / this.blockBytes, this.crc(data.subarray(at, at + this.blockBytes)))
  }

  /** A client write of `data` at block-aligned `offset` landed: new checksums, and reads begun before it are told. */
  write(offset: number, data: Buffer): void {
    this.generation++
    for (let at = 0; at < data.length; at += this.blockBytes) this.touched.set((offset + at) / this.blockBytes, this.generation)
    this.set(offset, data)
  }

  covered(start: number, end: number): boolean {
    for (let k = Math.floor(start / this.blockBytes); k * this.blockBytes < end; k++) if (!this.sums.has(k)) return false
    return true
  }

  beginRead(start: number, end: number): unknown {
    this.onBeginRead?.(start, end)
    return { generation: this.generation }
  }

  /** Reads judged with checksums computed where they were read (`known`), and the full blocks taken from them. */
  knownReads = 0

  mismatches(ticket: unknown, offset: number, data: Buffer, known?: Uint32Array): number[] {
    const since = (ticket as { generation: number }).generation
    const bad: number[] = []
    if (known) this.knownReads++
    for (let at = 0; at < data.length; at += this.blockBytes) {
      const k = (offset + at) / this.blockBytes
      const sum = this.sums.get(k)
      if (sum === undefined || (this.touched.get(k) ?? 0) > since) continue
      const full = at + this.blockBytes <= data.length
      const seen = known && full ? known[at / this.blockBytes] : this.crc(data.subarray(at, at + this.blockBytes))
      if (seen !== sum) bad.push(offset + at)
    }
    return bad
  }

  changedSince(ticket: unknown, start: number, end: number): boolean {
    const since = (ticket as { generation: number }).generation
    for (let k = Math.floor(start / this.blockBytes); k * this.blockBytes < end; k++) if ((this.touched.get(k) ?? 0) > since) return true
    return false
  }

  exclusive<T>(_start: number, _end: number, work: () => Promise<T>): Promise<T> {
    this.exclusiveRuns++
    return work()
  }

  cover(ticket: unknown, offset: number, data: Buffer): void {
    if (!this.changedSince(ticket, offset, offset + data.length)) this.set(offset, data)
  }
}
