// What the CLI prints: a progress bar and plain lines on a terminal, JSON lines otherwise
// (one object per progress tick, and one final {"type":"result"} line).
import cliProgress from 'cli-progress'
import { etaSeconds, formatBytes, formatDuration, formatRate, RateWindow } from './eta.js'

export type OutputMode = 'tty' | 'json'

/** JSON lines when --json is given or stdout is not a terminal; a bar and plain text on a terminal. */
export function outputMode(json: boolean | undefined): OutputMode {
  return json || !process.stdout.isTTY ? 'json' : 'tty'
}

export function jsonLine(value: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(value)}\n`)
}

/** Milliseconds between two JSON progress lines (FILEMIRROR_CLI_TICK_MS, for tests). */
function tickMs(): number {
  const v = Number(process.env.FILEMIRROR_CLI_TICK_MS)
  return Number.isFinite(v) && v > 0 ? v : 500
}

/** Progress of one transfer: bytes done (resumed bytes included), total, rate of this run, ETA. */
export class Progress {
  private bar: cliProgress.SingleBar | null = null
  private readonly rate = new RateWindow(5000)
  private timer: NodeJS.Timeout | null = null
  private done = 0
  private total: number | null = null
  private resumedFrom = 0
  private readonly startedAt = Date.now()
  private stopped = false

  constructor(
    private readonly mode: OutputMode,
    private readonly command: string,
    private readonly extra: Record<string, unknown> = {},
  ) {}

  /** The transfer starts (or resumes) at `done` of `total` bytes. */
  start(total: number | null, done: number): void {
    this.total = total
    this.done = done
    this.resumedFrom = done
    this.rate.reset()
    this.rate.add(performance.now(), done)
    if (this.mode === 'tty') {
      this.bar?.stop()
      this.bar = new cliProgress.SingleBar(
        {
          format: `${this.command} [{bar}] {percentage}% | {bytes} / {totalBytes} | {rate} | ETA {etaText}`,
          stream: process.stdout,
          hideCursor: true,
          barsize: 30,
          fps: 5,
          etaBuffer: 50,
        },
        cliProgress.Presets.shades_classic,
      )
      this.bar.start(total ?? 0, done, this.payload())
    } else {
      this.emitJson()
      this.timer ??= setInterval(() => this.emitJson(), tickMs())
      this.timer.unref()
    }
  }

  update(done: number, total?: number | null): void {
    if (total !== undefined) this.total = total
    this.done = done
    this.rate.add(performance.now(), done)
    if (this.bar) {
      if (total !== undefined) this.bar.setTotal(total ?? 0)
      this.bar.update(done, this.payload())
    }
  }

  /** Ends the bar (or the ticks) with a last report of where it got to. */
  stop(): void {
    if (this.stopped) return
    this.stopped = true
    if (this.timer) clearInterval(this.timer)
    this.timer = null
    if (this.bar) {
      this.bar.update(this.done, this.payload())
      this.bar.stop()
      this.bar = null
    } else if (this.mode === 'json') {
      this.emitJson()
    }
  }

  /** What the result line reports of the transfer. */
  summary(): { bytes: number; total: number | null; resumedFrom: number; transferred: number; seconds: number } {
    return {
      bytes: this.done,
      total: this.total,
      resumedFrom: this.resumedFrom,
      transferred: this.done - this.resumedFrom,
      seconds: Math.round(Date.now() - this.startedAt) / 1000,
    }
  }

  private current(): { rate: number | null; eta: number | null } {
    const rate = this.rate.rate()
    return { rate, eta: this.total === null ? null : etaSeconds(this.total - this.done, rate) }
  }

  private payload(): Record<string, string> {
    const { rate, eta } = this.current()
    return { bytes: formatBytes(this.done), totalBytes: this.total === null ? '?' : formatBytes(this.total), rate: formatRate(rate), etaText: formatDuration(eta) }
  }

  private emitJson(): void {
    const { rate, eta } = this.current()
    jsonLine({
      type: 'progress',
      command: this.command,
      ...this.extra,
      bytes: this.done,
      total: this.total,
      percent: this.total ? Math.floor((this.done / this.total) * 1000) / 10 : this.total === 0 ? 100 : null,
      bytesPerSecond: rate === null ? null : Math.round(rate),
      etaSeconds: eta === null ? null : Math.round(eta * 10) / 10,
    })
  }
}

/** The final result: a JSON line, or a plain line on a terminal; a failure is told on stderr too. */
export function result(mode: OutputMode, value: Record<string, unknown> & { ok: boolean }, text: string): void {
  if (mode === 'json') jsonLine({ type: 'result', ...value })
  else if (value.ok) process.stdout.write(`${text}\n`)
  if (!value.ok) process.stderr.write(`filemirror${typeof value.command === 'string' ? ` ${value.command}` : ''}: ${text}\n`)
}
