import type { Clock } from '../../src/engine/throttle.js'

interface Timer {
  at: number
  fn: () => void
}

/**
 * A clock for the throttle that moves only when the test says: advance() fires the timers that fall
 * due, in order, each at its own time. Nothing waits in real time.
 */
export class FakeClock implements Clock {
  private time = 0
  private nextId = 0
  private readonly timers = new Map<number, Timer>()
  private readonly onSet: Array<() => void> = []

  now(): number {
    return this.time
  }

  setTimer(fn: () => void, ms: number): () => void {
    const id = this.nextId++
    this.timers.set(id, { at: this.time + Math.max(0, ms), fn })
    for (const notify of this.onSet.splice(0)) notify()
    return () => void this.timers.delete(id)
  }

  /** How long from now each pending timer is due, soonest first. */
  get pending(): number[] {
    return [...this.timers.values()].map((timer) => timer.at - this.time).sort((a, b) => a - b)
  }

  /** Resolves once a timer is pending (at once if one is). */
  whenTimerSet(): Promise<void> {
    if (this.timers.size > 0) return Promise.resolve()
    return new Promise((resolve) => this.onSet.push(resolve))
  }

  /** Moves time forward by `ms`, firing every timer due by then at its own time. */
  advance(ms: number): void {
    const end = this.time + ms
    for (;;) {
      let due: [number, Timer] | undefined
      for (const entry of this.timers) if (entry[1].at <= end && (!due || entry[1].at < due[1].at)) due = entry
      if (!due) break
      this.timers.delete(due[0])
      this.time = due[1].at
      due[1].fn()
    }
    this.time = end
  }
}
