// filemirror status URL [NAME] [--watch]: replica states, lag (dirty bytes) and ETA to in-sync.
//
// Lag, rates and ETA are computed by the status page's module (public/eta.js, see eta.ts): a throttled replica's
// ETA is its lag over its throttle, counting down; an unthrottled (or overdue) one's is its lag over the rate it
// was seen draining, net of new writes. A one-shot status with a replica whose ETA is still unknown (no rate
// measured from one look) takes a second look a second later.
import { CliError, getJson, parseServerUrl } from './http.js'
import { formatBytes, formatDuration, formatEta, formatRate, LagTracker, type ReplicaFigures } from './eta.js'
import { jsonLine, outputMode, result, type OutputMode } from './output.js'

export interface StatusOptions {
  watch?: boolean
  /** Seconds between refreshes with --watch. */
  interval?: number
  /** With --watch: exit 0 once every replica is in-sync. */
  untilInSync?: boolean
  json?: boolean
}

interface ReplicaView {
  id: string
  mode: string
  state: string
  read: boolean
  write: boolean
  dirtyBytes: number
  maxBytesPerSecond: number | null
  error: { code?: string; message?: string } | null
}

interface VolumeView {
  name: string
  state: string
  size: number
  etag: string
  error: { code?: string; message?: string } | null
  replicas: ReplicaView[]
}

/** A replica as status shows it: its figures are public/eta.js's (dirtyBytes, drain and ETA rates, etaBasis). */
export type ReplicaRow = {
  id: string
  mode: string
  state: string
  maxBytesPerSecond: number | null
  error: { code?: string; message?: string } | null
} & ReplicaFigures

export interface VolumeRow {
  name: string
  state: string
  size: number
  etag: string
  error: { code?: string; message?: string } | null
  inSync: boolean
  /** When every replica should be in-sync: the largest replica ETA (null when one is unknown). */
  etaSeconds: number | null
  replicas: ReplicaRow[]
}

/** Turns successive status snapshots into rows with drain rates and ETAs (public/eta.js's LagTracker). */
export class StatusRows {
  private readonly tracker = new LagTracker()

  rows(volumes: VolumeView[], at: number): VolumeRow[] {
    const names = new Set(volumes.map((v) => v.name))
    for (const name of this.seen) if (!names.has(name)) this.tracker.forget(name)
    this.seen = names
    return volumes.map((v) => {
      const figures = this.tracker.sampleVolume(v, at)
      return {
        name: v.name,
        state: v.state,
        size: v.size,
        etag: v.etag,
        error: v.error ?? null,
        inSync: figures.inSync,
        etaSeconds: figures.etaSeconds,
        replicas: v.replicas.map((r): ReplicaRow => {
          const f = figures.replicas.get(r.id)!
          return { id: r.id, mode: r.mode, state: r.state, maxBytesPerSecond: r.maxBytesPerSecond ?? null, ...f, error: r.error ?? null }
        }),
      }
    })
  }

  private seen = new Set<string>()
}

function pad(cells: string[][]): string[] {
  const widths = cells[0].map((_, i) => Math.max(...cells.map((row) => row[i].length)))
  return cells.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]))).join('  ').trimEnd())
}

/** The human table: one block per volume. */
export function renderRows(rows: VolumeRow[]): string {
  if (rows.length === 0) return 'no volumes\n'
  const out: string[] = []
  for (const v of rows) {
    const sync = v.inSync ? 'in sync' : `in sync in ${v.etaSeconds === null ? '?' : formatDuration(v.etaSeconds)}`
    out.push(`${v.name}  ${v.state}  ${formatBytes(v.size)}  ${sync}${v.error ? `  error ${v.error.code ?? ''}: ${v.error.message ?? ''}` : ''}`)
    const cells = [['  REPLICA', 'MODE', 'STATE', 'LAG', 'RATE', 'ETA']]
    for (const r of v.replicas) {
      const basis = r.etaBasis === 'throttle' ? ' (throttle)' : r.etaBasis === 'measured' ? ' (measured)' : ''
      const rate = r.dirtyBytes === 0 || r.rateBytesPerSecond === null ? '-' : `${formatRate(r.rateBytesPerSecond)}${basis}`
      cells.push([`  ${r.id}`, r.mode, r.state + (r.error ? ` (${r.error.code ?? 'error'})` : ''), formatBytes(r.dirtyBytes), rate, formatEta(r)])
    }
    out.push(...pad(cells), '')
  }
  return out.join('\n')
}

async function fetchVolumes(base: string, name: string | undefined): Promise<VolumeView[]> {
  if (name) return [await getJson<VolumeView>(`${base}/volumes/${encodeURIComponent(name)}`, `GET /volumes/${name}`)]
  return (await getJson<{ volumes: VolumeView[] }>(`${base}/volumes`, 'GET /volumes')).volumes
}

function show(mode: OutputMode, rows: VolumeRow[], watching: boolean, base: string): void {
  if (mode === 'json') {
    jsonLine({ type: 'status', time: new Date().toISOString(), inSync: rows.every((v) => v.inSync), volumes: rows })
    return
  }
  const text = renderRows(rows)
  if (!watching) {
    process.stdout.write(text)
    return
  }
  // Redraw in place: cursor home, the table, clear what is left of the old one.
  const footer = `${base} · ${new Date().toLocaleTimeString()} · refreshing; Ctrl-C to stop`
  process.stdout.write(`\x1b[H${text.replace(/\n/g, '\x1b[K\n')}${footer}\x1b[K\n\x1b[J`)
}

export async function statusCommand(serverText: string, name: string | undefined, options: StatusOptions): Promise<number> {
  const mode = outputMode(options.json)
  const base = parseServerUrl(serverText)
  const tracker = new StatusRows()
  const intervalMs = Math.max(100, (options.interval ?? 1) * 1000)

  if (!options.watch) {
    let rows = tracker.rows(await fetchVolumes(base, name), performance.now())
    if (rows.some((v) => v.replicas.some((r) => r.etaSeconds === null && r.state !== 'failed'))) {
      // A second look, for a measured drain rate.
      await new Promise((r) => setTimeout(r, 1000))
      rows = tracker.rows(await fetchVolumes(base, name), performance.now())
    }
    show(mode, rows, false, base)
    const inSync = rows.every((v) => v.inSync)
    if (mode === 'json') result(mode, { ok: true, command: 'status', inSync }, '')
    return 0
  }

  let stop = false
  let wake: () => void = () => {}
  const onSignal = () => {
    stop = true
    wake()
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  if (mode === 'tty') process.stdout.write('\x1b[?25l\x1b[2J')
  let inSync = false
  try {
    let shown = false
    while (!stop) {
      let volumes: VolumeView[] | null = null
      try {
        volumes = await fetchVolumes(base, name)
      } catch (err) {
        // The first look must work; later, a server restarting or gone for a while is shown and watched on.
        if (!shown || !(err instanceof CliError)) throw err
        if (mode === 'json') jsonLine({ type: 'error', time: new Date().toISOString(), message: err.message })
        else process.stdout.write(`\x1b[H${err.message}; retrying\x1b[K\n\x1b[J`)
      }
      if (volumes) {
        const rows = tracker.rows(volumes, performance.now())
        inSync = rows.every((v) => v.inSync)
        show(mode, rows, true, base)
        shown = true
        if (options.untilInSync && inSync) break
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, intervalMs)
        wake = () => {
          clearTimeout(timer)
          resolve()
        }
      })
    }
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    if (mode === 'tty') process.stdout.write('\x1b[?25h')
  }
  if (mode === 'json') result(mode, { ok: true, command: 'status', inSync, interrupted: stop }, '')
  else if (options.untilInSync && inSync) process.stdout.write('every replica is in sync\n')
  return 0
}
