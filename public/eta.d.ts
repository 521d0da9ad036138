// Types of eta.js (plain JavaScript, served to the status page as it is): for TypeScript importers
// (the tests, a CLI).

export declare const DRAIN_WINDOW_MS: number
export declare const MIN_SPAN_MS: number

export declare class RateWindow {
  constructor(windowMs?: number, falling?: boolean)
  add(at: number, value: number): void
  rate(minSpanMs?: number): number | null
  reset(): void
}

export declare function etaSeconds(remaining: number, rate: number | null): number | null

/** What an ETA rests on: the throttle, a measured drain rate, nothing lacking, or nothing (unknown, or failed). */
export type EtaBasis = 'throttle' | 'measured' | 'in-sync' | null

export declare const OVERDUE_FACTOR: number
export declare const OVERDUE_SECONDS: number

export interface EtaInput {
  state: string
  dirtyBytes: number
  maxBytesPerSecond?: number | null
  /** How long its dirtyBytes have been what they are. */
  secondsSinceChange?: number
  /** The net rate its lag was seen going down (bytes/s), null before two looks. */
  measuredRate?: number | null
}

export interface Eta {
  etaSeconds: number | null
  /** The rate the ETA rests on (the throttle, or the measured one). */
  rateBytesPerSecond: number | null
  basis: EtaBasis
}

export declare function estimateEta(input: EtaInput): Eta

export interface ReplicaLook {
  id: string
  state: string
  dirtyBytes: number
  maxBytesPerSecond?: number | null
}

export interface ReplicaFigures {
  dirtyBytes: number
  /** Bytes/s its lag was seen going down over the window, net of new writes; null before two looks span MIN_SPAN_MS. */
  drainBytesPerSecond: number | null
  etaSeconds: number | null
  /** The rate the ETA rests on. */
  rateBytesPerSecond: number | null
  etaBasis: EtaBasis
}

export interface VolumeFigures {
  inSync: boolean
  /** The slowest replica's ETA: 0 when every one is in sync, null when one is unknown. */
  etaSeconds: number | null
  replicas: Map<string, ReplicaFigures>
}

export declare class LagTracker {
  constructor(windowMs?: number, minSpanMs?: number)
  sample(volume: string, replica: ReplicaLook, at: number): ReplicaFigures
  sampleVolume(status: { name: string; replicas: ReplicaLook[] }, at: number): VolumeFigures
  forget(volume?: string): void
}

export declare function formatBytes(n: number): string
export declare function formatRate(bytesPerSecond: number | null | undefined): string
export declare function formatDuration(seconds: number | null | undefined): string
export declare function formatEta(eta: { etaSeconds: number | null }): string
export declare function formatEtaBasis(eta: { etaBasis: EtaBasis; rateBytesPerSecond: number | null }): string
