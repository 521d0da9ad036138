import type { OperationGroup } from './operation-group.js'

export interface GroupRegistryOptions {
  /** Finished groups younger than this are evicted only when a window is full. */
  retentionMs: number
  maxGroups: number
  maxReadGroups: number
}

/** Operation groups by id in insertion order; reads and writes in separate bounded windows so memory stays flat. */
export class GroupRegistry {
  private readonly writes = new Map<string, OperationGroup>()
  /** Write group ids oldest first, from `writeHead` (some may be gone already): eviction never walks the Map. */
  private writeOrder: string[] = []
  private writeHead = 0
  /** Read groups come and go with every GET: a preallocated ring in insertion order (the oldest overwritten), found by id through `readIds`. */
  private readonly readRing: Array<OperationGroup | undefined>
  private readonly readIds = new Map<string, number>()
  private readNext = 0

  constructor(private readonly options: GroupRegistryOptions) {
    this.readRing = new Array<OperationGroup | undefined>(options.maxReadGroups).fill(undefined)
  }

  add(group: OperationGroup): void {
    if (group.kind === 'read') return this.addRead(group)
    this.writes.set(group.id, group)
    this.writeOrder.push(group.id)
    this.evict()
  }

  private addRead(group: OperationGroup): void {
    const slot = this.readNext
    this.readNext = slot + 1 === this.readRing.length ? 0 : slot + 1
    const old = this.readRing[slot]
    if (old) this.readIds.delete(old.id)
    this.readRing[slot] = group
    this.readIds.set(group.id, slot)
  }

  get(id: string): OperationGroup | undefined {
    const write = this.writes.get(id)
    if (write) return write
    const slot = this.readIds.get(id)
    return slot === undefined ? undefined : this.readRing[slot]
  }

  get size(): number {
    return this.writes.size + this.readIds.size
  }

  /** Read groups oldest first. */
  private *reads(): Generator<OperationGroup> {
    for (let i = 0; i < this.readRing.length; i++) {
      const g = this.readRing[(this.readNext + i) % this.readRing.length]
      if (g) yield g
    }
  }

  /** A volume's groups, newest first. */
  list(volume: string, filter: (g: OperationGroup) => boolean, limit: number): OperationGroup[] {
    const all = [...this.writes.values(), ...this.reads()].filter((g) => g.volume === volume && filter(g))
    all.sort((a, b) => b.seq - a.seq)
    return all.slice(0, limit)
  }

  /** Forgets a deleted volume's groups. */
  forgetVolume(volume: string): void {
    for (const [id, g] of this.writes) if (g.volume === volume) this.writes.delete(id)
    this.dropReads((g) => g.volume === volume)
    this.compactOrder()
  }

  /** Drops finished groups past their retention; call periodically. */
  sweep(now = Date.now()): void {
    const expired = (g: OperationGroup) => g.finishedAt !== null && now - g.finishedAt > this.options.retentionMs
    for (const [id, g] of this.writes) if (expired(g)) this.writes.delete(id)
    this.dropReads(expired)
    this.compactOrder()
  }

  private dropReads(drop: (g: OperationGroup) => boolean): void {
    for (let slot = 0; slot < this.readRing.length; slot++) {
      const g = this.readRing[slot]
      if (!g || !drop(g)) continue
      this.readRing[slot] = undefined
      this.readIds.delete(g.id)
    }
  }

  /**
   * The oldest write group goes first (O(1) per add): the count bound wins over retention. Not by iterating the Map:
   * its deleted entries stay as holes until a rehash, so its first key costs a walk past every group evicted since.
   */
  private evict(): void {
    while (this.writes.size > this.options.maxGroups && this.writeHead < this.writeOrder.length) this.writes.delete(this.writeOrder[this.writeHead++])
    if (this.writeHead > 1024 && this.writeHead * 2 > this.writeOrder.length) {
      this.writeOrder = this.writeOrder.slice(this.writeHead)
      this.writeHead = 0
    }
  }

  /** Drops the ids of write groups no longer held (swept, forgotten) from the order. */
  private compactOrder(): void {
    this.writeOrder = this.writeOrder.slice(this.writeHead).filter((id) => this.writes.has(id))
    this.writeHead = 0
  }
}
