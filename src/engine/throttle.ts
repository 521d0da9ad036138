/** Where a throttle reads the time and how it waits; tests pass a fake one so they need not wait in real time. */
export interface Clock {
  /** Milliseconds on a monotonic scale. */
  now(): number
  /** Calls `fn` once, after `ms` milliseconds; the function returned cancels the call. */
  setTimer(fn: () => void, ms: number): () => void
}

/** The real clock: performance.now() and setTimeout. */
export const realClock: Clock = {
  now: () => performance.now(),
  setTimer: (fn, ms) => {
    const timer = setTimeout(fn, ms)
    return () => clearTimeout(timer)
  },
}

/** A token bucket in bytes per second; null means unthrottled. Debt is allowed so one large take never stalls forever. */
export class Throttle {
  private tokens: number
  private last: number

  constructor(
    private rate: number | null,
    readonly clock: Clock = realClock,
  ) {
    this.tokens = rate ?? 0
    this.last = clock.now()
  }

  setRate(rate: number | null): void {
    this.rate = rate
    this.tokens = Math.min(this.tokens, rate ?? 0)
  }

  /** Milliseconds to wait before `bytes` may be moved; takes them. */
  take(bytes: number): number {
    if (this.rate === null) return 0
    const now = this.clock.now()
    this.tokens = Math.min(this.rate, this.tokens + ((now - this.last) / 1000) * this.rate)
    this.last = now
    this.tokens -= bytes
    return this.tokens >= 0 ? 0 : (-this.tokens / this.rate) * 1000
  }

  /** Resolves after `ms` on this throttle's clock. */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.clock.setTimer(resolve, ms))
  }
}
