// --limit-rate: a stream stage that passes bytes on no faster than a given rate (as curl's --limit-rate).
import { Transform, type TransformCallback } from 'node:stream'

const SLICE = 64 * 1024

/** A token bucket shared by every stream of one transfer (tus sends one stream per chunk). */
export class RateLimit {
  private readonly startedAt = performance.now()
  private passed = 0

  constructor(readonly bytesPerSecond: number) {}

  /** Milliseconds to wait before `bytes` more may pass. */
  delayFor(bytes: number): number {
    this.passed += bytes
    const due = this.startedAt + (this.passed * 1000) / this.bytesPerSecond
    return Math.max(0, due - performance.now())
  }

  stream(): Transform {
    const limit = this
    return new Transform({
      transform(chunk: Buffer, _encoding, done: TransformCallback) {
        let at = 0
        const next = () => {
          if (at >= chunk.length) return done()
          const slice = chunk.subarray(at, at + SLICE)
          at += slice.length
          const wait = limit.delayFor(slice.length)
          const push = () => {
            this.push(slice)
            next()
          }
          if (wait > 0) setTimeout(push, wait)
          else push()
        }
        next()
      },
    })
  }
}
