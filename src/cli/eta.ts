// Rates, ETAs and units: the status page's own module (public/eta.js, plain JavaScript served as it is, typed by
// public/eta.d.ts), so the CLI and the page compute lag and ETA to in-sync the same way.
//
// It is loaded at run time from the package's public/ folder, found from here: ../../public from src/cli (tsx),
// ../../../public from dist/src/cli (the build, and the container image, which ships public/ beside dist/).
import { existsSync } from 'node:fs'
import type * as EtaModule from '../../public/eta.js'

function locate(): string {
  for (const relative of ['../../../public/eta.js', '../../public/eta.js']) {
    const url = new URL(relative, import.meta.url)
    if (existsSync(url)) return url.href
  }
  throw new Error(`public/eta.js not found above ${new URL('.', import.meta.url).pathname}`)
}

const eta: typeof EtaModule = await import(locate())

export const { RateWindow, LagTracker, etaSeconds, formatBytes, formatRate, formatDuration, formatEta } = eta
export type RateWindow = EtaModule.RateWindow
export type LagTracker = EtaModule.LagTracker
export type ReplicaFigures = EtaModule.ReplicaFigures
