import type { TrackedGroup } from './tracked-group.js'

export interface GroupRegistryOptions {
  /** Finished groups younger than this are evicted only when a window is full. */
  retentionMs: number
  maxGroups: number
  maxReadGroups: number
}

/** Operation groups by id in insertion order; reads and writes in separate bounded windows so memory stays flat. */
export class GroupRegistry {
  private readonly writes = new Map<string, TrackedGroup>()
  private readonly reads = new Map<string, TrackedGroup>()

  constructor(private readonly options: GroupRegistryOptions) {}

  add(group: TrackedGroup): void {
    const window = group.kind === 'read' ? this.reads : this.writes
    window.set(group.id, group)
    this.evict(window, group.kind === 'read' ? this.options.maxReadGroups : this.options.maxGroups)
  }

  get(id: string): TrackedGroup | undefined {
    return this.writes.get(id) ?? this.reads.get(id)
  }

  get size(): number {
    return this.writes.size + this.reads.size
  }

  /** A volume's groups, newest first. */
  list(volume: string, filter: (g: TrackedGroup) => boolean, limit: number): TrackedGroup[] {
    const all = [...this.writes.values(), ...this.reads.values()].filter((g) => g.volume === volume && filter(g))
    all.sort((a, b) => b.seq - a.seq)
    return all.slice(0, limit)
  }

  /** Forgets a deleted volume's groups. */
  forgetVolume(volume: string): void {
    for (const window of [this.writes, this.reads]) for (const [id, g] of window) if (g.volume === volume) window.delete(id)
  }

  /** Drops finished groups past their retention; call periodically. */
  sweep(now = Date.now()): void {
    for (const window of [this.writes, this.reads]) {
      for (const [id, g] of window) if (g.finishedAt !== null && now - g.finishedAt > this.options.retentionMs) window.delete(id)
    }
  }

  /** The oldest group goes first (O(1) per add): the count bound wins over retention. */
  private evict(window: Map<string, TrackedGroup>, max: number): void {
    for (const id of window.keys()) {
      if (window.size <= max) return
      window.delete(id)
    }
  }
}
