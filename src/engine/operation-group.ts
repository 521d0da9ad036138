import { randomBytes } from 'node:crypto'
import type { GroupKind, GroupStatus, OperationGroupView, OperationStatus } from './status.js'
import type { IoError, ReplicaMode } from './spec.js'

/** One replica's share of a group: aggregated over every chunk the group moved. */
export interface ReplicaOperation {
  replica: string
  mode: ReplicaMode
  status: OperationStatus
  bytes: number
  error: IoError | null
  durationMs: number
  /** When its current run started (performance.now()), for durationMs. */
  startedAt: number | undefined
}

export type ReplicaOperationEvent = { group: OperationGroup; operation: ReplicaOperation; phase: 'start' | 'done' }

let sequence = 0
let idPrefix = newIdPrefix()

/** 76 random bits per process, laid out as the first part of a version 4 UUID: ids from another process or run never meet these. */
function newIdPrefix(): string {
  const h = randomBytes(10).toString('hex')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(12, 15)}-${(8 | (parseInt(h[15], 16) & 3)).toString(16)}${h.slice(16, 19)}-`
}

/** A group id: the process's random prefix and a counter in the UUID's last 48 bits (cheaper than a random UUID per request). */
function groupId(seq: number): string {
  const low = seq % 2 ** 48
  if (low === 0) idPrefix = newIdPrefix()
  return idPrefix + low.toString(16).padStart(12, '0')
}

/** An operation group tracked by id: what one request did on every replica, pollable until it settles. */
export class OperationGroup {
  /** Creation order, finer than createdAt's milliseconds. */
  readonly seq = ++sequence
  readonly id = groupId(this.seq)
  readonly createdAt = Date.now()
  finishedAt: number | null = null
  readonly operations: ReplicaOperation[] = []
  length = 0
  /** Extra members of the view, such as a scrub's mismatches or the digest a checked write verified. */
  extra: Record<string, unknown> & Pick<OperationGroupView, 'digest'> = {}
  private settledWaiters: Array<() => void> = []

  constructor(
    readonly volume: string,
    readonly kind: GroupKind,
    readonly offset: number,
    private readonly onEvent?: (event: ReplicaOperationEvent) => void,
  ) {}

  add(replica: string, mode: ReplicaMode): ReplicaOperation {
    const op: ReplicaOperation = { replica, mode, status: 'queued', bytes: 0, error: null, durationMs: 0, startedAt: undefined }
    this.operations.push(op)
    return op
  }

  find(replica: string): ReplicaOperation | undefined {
    return this.operations.find((op) => op.replica === replica)
  }

  start(op: ReplicaOperation): void {
    if (op.status !== 'queued') return
    op.status = 'started'
    op.startedAt = performance.now()
    this.onEvent?.({ group: this, operation: op, phase: 'start' })
  }

  /** Settles one replica's operation; a failure is final. */
  finish(op: ReplicaOperation, bytes: number, error: IoError | null): void {
    if (op.status === 'done' || op.status === 'failed') return
    if (op.status === 'queued') this.start(op)
    op.bytes = bytes
    op.durationMs = performance.now() - (op.startedAt ?? performance.now())
    op.status = error ? 'failed' : 'done'
    op.error = error
    this.onEvent?.({ group: this, operation: op, phase: 'done' })
    this.settleIfDone()
  }

  /** Fails every operation still open, e.g. when the request was aborted. */
  failOpen(error: IoError): void {
    for (const op of this.operations) if (op.status === 'queued' || op.status === 'started') this.finish(op, op.bytes, error)
  }

  get settled(): boolean {
    return this.operations.every((op) => op.status === 'done' || op.status === 'failed')
  }

  get status(): GroupStatus {
    if (this.operations.some((op) => op.status === 'failed')) return 'failed'
    return this.settled ? 'done' : 'pending'
  }

  /** Resolves once no operation is queued or running. */
  whenSettled(): Promise<void> {
    if (this.settled) return Promise.resolve()
    return new Promise((resolve) => this.settledWaiters.push(resolve))
  }

  /** Marks a group finished once nothing more will be added to it (a read that touched no replica). */
  seal(): void {
    this.settleIfDone()
  }

  private settleIfDone(): void {
    if (!this.settled) return
    this.finishedAt ??= Date.now()
    const waiters = this.settledWaiters
    this.settledWaiters = []
    for (const resolve of waiters) resolve()
  }

  toJSON(): OperationGroupView {
    return {
      id: this.id,
      volume: this.volume,
      kind: this.kind,
      offset: this.offset,
      length: this.length,
      status: this.status,
      createdAt: new Date(this.createdAt).toISOString(),
      finishedAt: this.finishedAt === null ? null : new Date(this.finishedAt).toISOString(),
      operations: this.operations.map(({ replica, mode, status, bytes, error, durationMs }) => ({
        replica,
        mode,
        status,
        bytes,
        error,
        durationMs: status === 'started' && this.finishedAt === null ? 0 : Math.round(durationMs * 1000) / 1000,
      })),
      ...this.extra,
    }
  }
}
