import { randomBytes } from 'node:crypto'
import type { ReplicaOperationEvent } from '../engine/operation-group.js'
import type { Volume } from '../engine/volume.js'

/** One replica's share of an operation group starting or finishing. */
export interface OperationEventData {
  volume: string
  group: string
  kind: string
  replica: string
  mode: string
  phase: 'start' | 'done'
  status: string
  offset: number
  length: number
  bytes: number
  error: { code: string; message: string } | null
  durationMs: number
}

export interface ReplicaStateEventData {
  volume: string
  replica: string
  state: string
  previous: string | null
  error: { code: string; message: string } | null
}

export type StreamEventType = 'operation' | 'replicaState' | 'idle' | 'checksumMismatch'

/** A block that failed its checksum on a replica (a read or a scrub found it), and whether it was repaired, from where. */
export interface ChecksumMismatchEventData {
  volume: string
  replica: string
  offset: number
  length: number
  repaired: boolean
  from: string | null
}

/** An event as published: a sequence number, and its SSE frame serialized once for every subscriber. */
export interface StreamEvent {
  seq: number
  id: string
  type: StreamEventType
  volume: string
  data: Record<string, unknown>
  /** The SSE frame: built on first use, so events nobody reads cost no JSON. */
  readonly frame: string
}

/** An event whose payload and frame are built only when a subscriber or a replay needs them. */
class LazyEvent implements StreamEvent {
  private built: string | undefined
  private payload: Record<string, unknown> | undefined
  constructor(
    readonly seq: number,
    readonly id: string,
    readonly type: StreamEventType,
    readonly volume: string,
    private readonly fields: Record<string, unknown>,
    private readonly at: number,
  ) {}

  get data(): Record<string, unknown> {
    return (this.payload ??= { type: this.type, volume: this.volume, ...this.fields, time: new Date(this.at).toISOString() })
  }

  get frame(): string {
    return (this.built ??= `id: ${this.id}\nevent: ${this.type}\ndata: ${JSON.stringify(this.data)}\n\n`)
  }
}

/** Where a subscriber's frames go: `write` reports false when the client is not keeping up (as stream.write). */
export interface EventSink {
  write(text: string): boolean
  /** Ends the stream in order (server shutting down). */
  end(): void
  /** Cuts the stream off at once (the client fell too far behind). */
  destroy(): void
}

export interface SubscribeOptions {
  /** Only this volume's events; all volumes when undefined. */
  volume?: string
  /** The Last-Event-ID the client sent, to replay what it missed. */
  lastEventId?: string
  sink: EventSink
}

export interface EventStreamOptions {
  /** Events kept for Last-Event-ID resumption. */
  replayWindow: number
  /** Frames queued for a subscriber whose sink is full before it is dropped. */
  queueLimit: number
  /** A comment is sent to every subscriber this often. */
  heartbeatMs: number
  /** Told when a subscriber is dropped for falling behind. */
  onDrop?: (subscription: Subscription) => void
}

/** Milliseconds an EventSource waits before reconnecting. */
const RETRY_MS = 2_000

/** One client of the stream: frames go straight to its sink until it pushes back, then into a bounded queue. */
export class Subscription {
  private readonly queue: string[] = []
  private blocked = false
  closed = false
  dropped = false

  constructor(
    private readonly bus: EventStream,
    readonly volume: string | undefined,
    private readonly sink: EventSink,
    private readonly limit: number,
  ) {}

  /** Frames waiting for the client to read. */
  get queued(): number {
    return this.queue.length
  }

  matches(event: StreamEvent): boolean {
    return this.volume === undefined || this.volume === event.volume
  }

  /** Sends a frame, or queues it while the client pushes back; past the limit the client is dropped. */
  send(frame: string): void {
    if (this.closed) return
    if (this.blocked) {
      if (this.queue.length >= this.limit) return this.drop()
      this.queue.push(frame)
      return
    }
    if (!this.sink.write(frame)) this.blocked = true
  }

  /** The sink has room again (its 'drain'): send what was queued until it pushes back again. */
  drained(): void {
    if (this.closed) return
    this.blocked = false
    while (this.queue.length > 0 && !this.blocked) {
      if (!this.sink.write(this.queue.shift()!)) this.blocked = true
    }
  }

  /** The client went away, or the server is stopping (`end` the sink in order). */
  close(endSink = false): void {
    if (this.closed) return
    this.closed = true
    this.queue.length = 0
    this.bus.forget(this)
    if (endSink) this.sink.end()
  }

  private drop(): void {
    this.dropped = true
    this.close()
    this.sink.destroy()
    this.bus.dropped(this)
  }
}

/**
 * The operator's view of the engine as a sequence of events: each replica's operation start and
 * done, replica state changes, idle and checksum mismatches, numbered, kept in a bounded window for Last-Event-ID
 * resumption, and fanned out to subscribers that are dropped, not buffered for, when they fall behind.
 */
export class EventStream {
  /** Ids carry this stream's epoch, so an id from before a restart is recognised as unknown. */
  readonly epoch = randomBytes(4).toString('hex')
  private seq = 0
  private readonly window: StreamEvent[] = []
  private readonly subscribers = new Set<Subscription>()
  private readonly watched = new WeakSet<Volume>()
  private heartbeat: NodeJS.Timeout | undefined
  droppedCount = 0

  constructor(private readonly options: EventStreamOptions) {}

  get subscriberCount(): number {
    return this.subscribers.size
  }

  /** The id of the latest event ("<epoch>-0" before any). */
  get lastId(): string {
    return `${this.epoch}-${this.seq}`
  }

  /** Publishes an event to every matching subscriber and keeps it for resumption. */
  publish(type: StreamEventType, volume: string, data: Record<string, unknown>): StreamEvent {
    const seq = ++this.seq
    const event: StreamEvent = new LazyEvent(seq, `${this.epoch}-${seq}`, type, volume, data, Date.now())
    // A ring: the oldest event is overwritten, never shifted out of an array.
    this.window[(seq - 1) % this.options.replayWindow] = event
    for (const sub of this.subscribers) if (sub.matches(event)) sub.send(event.frame)
    return event
  }

  /** Events after `lastEventId` still in the window; undefined when that id is unknown or already evicted. */
  replayAfter(lastEventId: string): StreamEvent[] | undefined {
    const m = /^([0-9a-f]+)-(\d{1,15})$/.exec(lastEventId.trim())
    if (!m || m[1] !== this.epoch) return undefined
    const after = Number(m[2])
    if (after > this.seq) return undefined
    const oldest = Math.max(1, this.seq - this.options.replayWindow + 1)
    // Resumable only when no event after `after` has left the window.
    if (after + 1 < oldest) return undefined
    const missed: StreamEvent[] = []
    for (let seq = after + 1; seq <= this.seq; seq++) missed.push(this.window[(seq - 1) % this.options.replayWindow])
    return missed
  }

  /**
   * Adds a subscriber: a retry hint, then the events it missed (or a `reset` event when they are
   * no longer known), then live events.
   */
  subscribe({ volume, lastEventId, sink }: SubscribeOptions): Subscription {
    const sub = new Subscription(this, volume, sink, this.options.queueLimit)
    this.subscribers.add(sub)
    sub.send(`retry: ${RETRY_MS}\n\n`)
    if (lastEventId !== undefined && lastEventId !== '') {
      const missed = this.replayAfter(lastEventId)
      if (missed) for (const e of missed) if (sub.matches(e)) sub.send(e.frame)
      if (!missed) {
        // The id names no event we still hold: say so, and give the client an id to resume from.
        const data = JSON.stringify({ type: 'reset', lastEventId, reason: 'events after this id are no longer available; refetch state' })
        sub.send(`id: ${this.lastId}\nevent: reset\ndata: ${data}\n\n`)
      }
    }
    this.startHeartbeat()
    return sub
  }

  /** Called by a subscription that closed. */
  forget(sub: Subscription): void {
    this.subscribers.delete(sub)
    if (this.subscribers.size === 0) this.stopHeartbeat()
  }

  /** Called by a subscription dropped for falling behind. */
  dropped(sub: Subscription): void {
    this.droppedCount++
    this.options.onDrop?.(sub)
  }

  /** Ends every stream in order (the server is stopping). */
  closeAll(): void {
    for (const sub of [...this.subscribers]) sub.close(true)
    this.stopHeartbeat()
  }

  private startHeartbeat(): void {
    this.heartbeat ??= setInterval(() => {
      const frame = `: heartbeat ${new Date().toISOString()}\n\n`
      for (const sub of this.subscribers) sub.send(frame)
    }, this.options.heartbeatMs).unref()
  }

  private stopHeartbeat(): void {
    clearInterval(this.heartbeat)
    this.heartbeat = undefined
  }

  /**
   * Publishes a volume's events from now on (once per volume). Replica states are compared after
   * every engine event, so a change is reported even where the engine has no event of its own for it.
   */
  watch(volume: Volume): void {
    if (this.watched.has(volume)) return
    this.watched.add(volume)
    const states = new Map<string, string>(volume.replicas.map((r) => [r.id, r.state]))
    const checkStates = () => {
      for (const r of volume.replicas) {
        const previous = states.get(r.id) ?? null
        const state = r.state
        if (state === previous) continue
        states.set(r.id, state)
        const data: Omit<ReplicaStateEventData, 'volume'> = { replica: r.id, state, previous, error: r.error }
        this.publish('replicaState', volume.name, data)
      }
      for (const id of states.keys()) if (!volume.replica(id)) states.delete(id)
    }
    volume.on('operation', (event) => {
      this.publish('operation', volume.name, operationEventData(event))
      // A read never moves a replica's state (a failing one is announced by replicaState).
      if (event.group.kind !== 'read') checkStates()
    })
    volume.on('replicaState', checkStates)
    volume.on('idle', () => {
      checkStates()
      this.publish('idle', volume.name, {})
    })
    volume.on('checksumMismatch', ({ volume: _, ...mismatch }) => {
      const data: Omit<ChecksumMismatchEventData, 'volume'> = mismatch
      this.publish('checksumMismatch', volume.name, data)
      // A repair that failed its write failed the replica.
      checkStates()
    })
  }
}

/** The fields of an operation event, from the engine's event. */
export function operationEventData({ group, operation, phase }: ReplicaOperationEvent): Omit<OperationEventData, 'volume'> {
  return {
    group: group.id,
    kind: group.kind,
    replica: operation.replica,
    mode: operation.mode,
    phase,
    status: operation.status,
    offset: group.offset,
    length: group.length,
    bytes: operation.bytes,
    error: operation.error,
    durationMs: phase === 'done' ? Math.round(operation.durationMs * 1000) / 1000 : 0,
  }
}
