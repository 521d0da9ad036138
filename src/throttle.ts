/** A token bucket in bytes per second; null means unthrottled. Debt is allowed so one large take never stalls forever. */
export class Throttle {
  private tokens: number
  private last = performance.now()

  constructor(private rate: number | null) {
    this.tokens = rate ?? 0
  }

  setRate(rate: number | null): void {
    this.rate = rate
    this.tokens = Math.min(this.tokens, rate ?? 0)
  }

  /** Milliseconds to wait before `bytes` may be moved; takes them. */
  take(bytes: number): number {
    if (this.rate === null) return 0
    const now = performance.now()
    this.tokens = Math.min(this.rate, this.tokens + ((now - this.last) / 1000) * this.rate)
    this.last = now
    this.tokens -= bytes
    return this.tokens >= 0 ? 0 : (-this.tokens / this.rate) * 1000
  }
}
