import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { GroupRegistry } from '../engine/group-registry.js'
import type { Volume } from '../engine/volume.js'

export interface MetricsSources {
  /** The volumes open now; gauges are read from them at each scrape. */
  volumes: () => Volume[]
  groups: GroupRegistry
  /** Event stream clients connected now. */
  subscribers: () => number
}

const PREFIX = 'filemirror_'
const REPLICA_LABELS = ['volume', 'replica'] as const
const STATES = ['in-sync', 'behind', 'resyncing', 'failed'] as const

/**
 * The service's Prometheus metrics, in a registry of their own (never prom-client's global one),
 * so every app built in a process has its own. Counters follow the engine's events; gauges are
 * read from the volumes when scraped.
 */
export class Metrics {
  readonly registry = new Registry()
  private readonly watched = new WeakSet<Volume>()
  readonly httpDuration: Histogram<'method' | 'route' | 'status_code'>
  readonly bytesRead: Counter<'volume' | 'replica'>
  readonly bytesWritten: Counter<'volume' | 'replica'>
  readonly writeBehindBytes: Counter<'volume' | 'replica'>
  readonly operationDuration: Histogram<'volume' | 'replica' | 'kind' | 'status'>
  readonly eventClientsDropped: Counter
  readonly checksumMismatches: Counter<'volume' | 'replica'>
  readonly checksumRepairs: Counter<'volume' | 'replica'>

  constructor(sources: MetricsSources) {
    const registers = [this.registry]
    collectDefaultMetrics({ register: this.registry })
    this.httpDuration = new Histogram({
      name: `${PREFIX}http_request_duration_seconds`,
      help: 'HTTP request duration by route (its pattern) and status',
      labelNames: ['method', 'route', 'status_code'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    })
    this.bytesRead = new Counter({ name: `${PREFIX}bytes_read_total`, help: 'Bytes read from a replica for requests', labelNames: REPLICA_LABELS, registers })
    this.bytesWritten = new Counter({
      name: `${PREFIX}bytes_written_total`,
      help: 'Bytes of writes a replica took (directly, or acknowledged through write-behind)',
      labelNames: REPLICA_LABELS,
      registers,
    })
    this.writeBehindBytes = new Counter({
      name: `${PREFIX}write_behind_bytes_total`,
      help: 'Bytes write-behind copied onto a replica (writes and resyncs)',
      labelNames: REPLICA_LABELS,
      registers,
    })
    this.operationDuration = new Histogram({
      name: `${PREFIX}operation_duration_seconds`,
      help: "Duration of a replica's share of an operation group, from start to done",
      labelNames: ['volume', 'replica', 'kind', 'status'],
      buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120],
      registers,
    })
    this.eventClientsDropped = new Counter({ name: `${PREFIX}event_clients_dropped_total`, help: 'Event stream clients dropped for falling behind', registers })
    this.checksumMismatches = new Counter({
      name: `${PREFIX}checksum_mismatches_total`,
      help: 'Blocks found failing their checksum on a replica (by a read or a scrub)',
      labelNames: REPLICA_LABELS,
      registers,
    })
    this.checksumRepairs = new Counter({
      name: `${PREFIX}checksum_repairs_total`,
      help: 'Blocks that failed their checksum on a replica and were rewritten there from a copy that verifies',
      labelNames: REPLICA_LABELS,
      registers,
    })

    const perReplica = (name: string, help: string, value: (volume: Volume, replica: Volume['replicas'][number]) => number) =>
      new Gauge({
        name: `${PREFIX}${name}`,
        help,
        labelNames: REPLICA_LABELS,
        registers,
        collect() {
          this.reset()
          for (const volume of sources.volumes()) for (const r of volume.replicas) this.set({ volume: volume.name, replica: r.id }, value(volume, r))
        },
      })
    perReplica('replica_queue_depth', "Operations waiting or running in a replica's lane", (v, r) => (r.file ? v.mirror.queueDepth(r.file) : 0))
    perReplica('replica_dirty_bytes', 'Bytes a replica lacks: in flight, pending write-behind or being copied', (_v, r) => r.dirtyBytes)
    perReplica(
      'replica_remote_unreachable_seconds',
      'How long a remote replica has failed with retryable errors (timeouts, refused connections, 5xx) without a success; 0 while it answers',
      (_v, r) => (r.retry ? Math.max(0, (Date.now() - r.retry.sinceWall) / 1000) : 0),
    )
    new Gauge({
      name: `${PREFIX}replica_state`,
      help: 'A replica state (1 for its current state, 0 for the others)',
      labelNames: ['volume', 'replica', 'state'],
      registers,
      collect() {
        this.reset()
        for (const volume of sources.volumes()) {
          for (const r of volume.replicas) for (const state of STATES) this.set({ volume: volume.name, replica: r.id, state }, r.state === state ? 1 : 0)
        }
      },
    })
    new Gauge({
      name: `${PREFIX}volume_size_bytes`,
      help: 'A volume size',
      labelNames: ['volume'],
      registers,
      collect() {
        this.reset()
        for (const volume of sources.volumes()) this.set({ volume: volume.name }, volume.size)
      },
    })
    new Gauge({
      name: `${PREFIX}groups_retained`,
      help: 'Operation groups retained for polling',
      registers,
      collect() {
        this.set(sources.groups.size)
      },
    })
    new Gauge({
      name: `${PREFIX}event_clients`,
      help: 'Event stream clients connected',
      registers,
      collect() {
        this.set(sources.subscribers())
      },
    })
  }

  /** Counts a volume's traffic from now on (once per volume). */
  watch(volume: Volume): void {
    if (this.watched.has(volume)) return
    this.watched.add(volume)
    // Labelled children are looked up once per replica and kind, not hashed on every operation.
    const children = new Map<string, { written: Counter.Internal; read: Counter.Internal; duration: Histogram.Internal<string> }>()
    volume.on('operation', ({ group, operation, phase }) => {
      if (phase !== 'done') return
      const key = `${operation.replica}\0${group.kind}\0${operation.status}`
      let child = children.get(key)
      if (!child) {
        const labels = { volume: volume.name, replica: operation.replica }
        child = {
          written: this.bytesWritten.labels(labels),
          read: this.bytesRead.labels(labels),
          duration: this.operationDuration.labels({ ...labels, kind: group.kind, status: operation.status }),
        }
        children.set(key, child)
      }
      if (group.kind === 'write') child.written.inc(operation.bytes)
      else if (group.kind === 'read') child.read.inc(operation.bytes)
      child.duration.observe(operation.durationMs / 1000)
    })
    volume.on('copied', ({ replica, bytes }) => this.writeBehindBytes.inc({ volume: volume.name, replica }, bytes))
    volume.on('checksumMismatch', ({ replica, repaired }) => {
      this.checksumMismatches.inc({ volume: volume.name, replica })
      if (repaired) this.checksumRepairs.inc({ volume: volume.name, replica })
    })
  }

  private readonly requestChildren = new Map<string, Histogram.Internal<string>>()

  observeRequest(method: string, route: string, statusCode: number, seconds: number): void {
    const key = `${method} ${route} ${statusCode}`
    let child = this.requestChildren.get(key)
    if (!child) {
      child = this.httpDuration.labels({ method, route, status_code: String(statusCode) })
      // Routes are patterns and statuses few: the map stays small.
      this.requestChildren.set(key, child)
    }
    child.observe(seconds)
  }

  get contentType(): string {
    return this.registry.contentType
  }

  text(): Promise<string> {
    return this.registry.metrics()
  }
}
