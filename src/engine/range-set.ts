/** A set of byte offsets kept as sorted, disjoint, non-touching half-open intervals [start, end). */
export class RangeSet {
  // Parallel arrays keep memory at two numbers per interval, whatever the bytes covered.
  private starts: number[] = []
  private ends: number[] = []
  private total = 0

  static of(...ranges: Array<[number, number]>): RangeSet {
    const set = new RangeSet()
    for (const [start, end] of ranges) set.add(start, end)
    return set
  }

  /** Total bytes covered. */
  get bytes(): number {
    return this.total
  }

  /** Number of disjoint intervals. */
  get count(): number {
    return this.starts.length
  }

  get isEmpty(): boolean {
    return this.starts.length === 0
  }

  /** Index of the first interval whose end is >= offset (it may touch or contain offset). */
  private firstEndingAtOrAfter(offset: number): number {
    let lo = 0
    let hi = this.ends.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (this.ends[mid] < offset) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  /** Adds [start, end); reports whether anything changed. */
  add(start: number, end: number): boolean {
    if (end <= start) return false
    const i = this.firstEndingAtOrAfter(start)
    let j = i
    let newStart = start
    let newEnd = end
    let removed = 0
    while (j < this.starts.length && this.starts[j] <= end) {
      newStart = Math.min(newStart, this.starts[j])
      newEnd = Math.max(newEnd, this.ends[j])
      removed += this.ends[j] - this.starts[j]
      j++
    }
    if (j - i === 1 && newStart === this.starts[i] && newEnd === this.ends[i]) return false
    this.starts.splice(i, j - i, newStart)
    this.ends.splice(i, j - i, newEnd)
    this.total += newEnd - newStart - removed
    return true
  }

  /** Removes [start, end); reports whether anything changed. */
  remove(start: number, end: number): boolean {
    if (end <= start) return false
    const i = this.firstEndingAtOrAfter(start + 1)
    let j = i
    const keepStarts: number[] = []
    const keepEnds: number[] = []
    let removed = 0
    while (j < this.starts.length && this.starts[j] < end) {
      const s = this.starts[j]
      const e = this.ends[j]
      if (s < start) {
        keepStarts.push(s)
        keepEnds.push(start)
      }
      if (e > end) {
        keepStarts.push(end)
        keepEnds.push(e)
      }
      removed += Math.min(e, end) - Math.max(s, start)
      j++
    }
    if (j === i) return false
    this.starts.splice(i, j - i, ...keepStarts)
    this.ends.splice(i, j - i, ...keepEnds)
    this.total -= removed
    return true
  }

  /** Whether any byte of [start, end) is in the set. */
  intersects(start: number, end: number): boolean {
    if (end <= start) return false
    const i = this.firstEndingAtOrAfter(start + 1)
    return i < this.starts.length && this.starts[i] < end
  }

  /** Whether every byte of [start, end) is in the set. */
  covers(start: number, end: number): boolean {
    if (end <= start) return true
    const i = this.firstEndingAtOrAfter(end)
    return i < this.starts.length && this.starts[i] <= start && this.ends[i] >= end
  }

  /** Bytes of [start, end) that are in the set. */
  bytesWithin(start: number, end: number): number {
    let n = 0
    for (let i = this.firstEndingAtOrAfter(start + 1); i < this.starts.length && this.starts[i] < end; i++) {
      n += Math.min(this.ends[i], end) - Math.max(this.starts[i], start)
    }
    return Math.max(0, n)
  }

  /** The first interval that ends after `offset`, clipped to start at or after it. */
  firstFrom(offset: number): [number, number] | undefined {
    const i = this.firstEndingAtOrAfter(offset + 1)
    if (i >= this.starts.length) return undefined
    return [Math.max(this.starts[i], offset), this.ends[i]]
  }

  /** Drops every byte at or after `size` (a file shrank). */
  truncate(size: number): void {
    this.remove(size, Number.MAX_SAFE_INTEGER)
  }

  clear(): void {
    this.starts = []
    this.ends = []
    this.total = 0
  }

  clone(): RangeSet {
    const copy = new RangeSet()
    copy.starts = this.starts.slice()
    copy.ends = this.ends.slice()
    copy.total = this.total
    return copy
  }

  /** Adds every interval of another set. */
  addAll(other: RangeSet): void {
    for (const [s, e] of other) this.add(s, e)
  }

  *[Symbol.iterator](): IterableIterator<[number, number]> {
    for (let i = 0; i < this.starts.length; i++) yield [this.starts[i], this.ends[i]]
  }

  toJSON(): Array<[number, number]> {
    return [...this]
  }
}
