import { constants } from 'node:os'
import { buildApp } from './app.js'
import { ConfigError, loadConfig, type Config } from './config.js'
import { prepareStorage, StorageRootError } from './engine/storage-roots.js'
import type { Volume } from './engine/volume.js'

// Before the first file operation sizes libuv's pool: each replica file may keep LANE_CONCURRENCY reads or writes in it.
process.env.UV_THREADPOOL_SIZE ??= '16'

/** Refuses to start: one line on stderr, exit 1. */
function refuse(message: string): never {
  process.stderr.write(`filemirror: ${message}\n`)
  process.exit(1)
}

/** Per volume, per replica: the bytes its journal still holds (what write-behind has not copied yet). */
type DirtyReport = Record<string, Record<string, number>>

/** Reads the replicas' dirty bytes (read-only; the volumes stay readable after they are closed). */
function dirtyOf(volumes: Iterable<Volume>): { dirty: DirtyReport; dirtyBytes: number; dirtyReplicas: number } {
  const dirty: DirtyReport = {}
  let dirtyBytes = 0
  let dirtyReplicas = 0
  for (const volume of volumes) {
    const replicas: Record<string, number> = {}
    for (const replica of volume.replicas) {
      const bytes = replica.dirtyBytes
      replicas[replica.id] = bytes
      dirtyBytes += bytes
      if (bytes > 0) dirtyReplicas++
    }
    dirty[volume.name] = replicas
  }
  return { dirty, dirtyBytes, dirtyReplicas }
}

function describeDirty({ dirtyBytes, dirtyReplicas }: { dirtyBytes: number; dirtyReplicas: number }): string {
  return dirtyBytes === 0
    ? 'nothing is left dirty in the journals'
    : `${dirtyBytes} bytes on ${dirtyReplicas} replica${dirtyReplicas === 1 ? '' : 's'} left dirty in the journals, copied at the next start`
}

/** The entry point: read the configuration, listen, and stop gracefully on SIGTERM or SIGINT. */
async function main(): Promise<void> {
  let config: Config
  try {
    config = loadConfig()
    await prepareStorage(config.dataDir, config.storageRoots)
  } catch (err) {
    if (err instanceof ConfigError || err instanceof StorageRootError) refuse(err.message)
    throw err
  }
  const app = await buildApp({ config })
  let stopping = false
  const stop = async (signal: NodeJS.Signals) => {
    if (stopping) {
      // The operator insists: no more waiting for requests or write-behind. Whatever is dirty is journaled.
      const report = dirtyOf(app.volumes.list())
      app.log.warn({ signal, ...report }, `second ${signal} while stopping: exiting at once, without waiting for requests in flight or write-behind; ${describeDirty(report)}`)
      process.exit(128 + (constants.signals[signal] ?? 1))
    }
    stopping = true
    app.log.info({ signal, graceMs: config.shutdownGraceMs }, `stopping on ${signal}: finishing requests in flight and write-behind (send ${signal} again to exit at once)`)
    // The volumes as they are: the registry forgets them once closed, but their replicas stay readable.
    // Stopped while still opening: close() waits for the opening first, and so the list is taken then too.
    const volumes = new Set(app.volumes.list())
    void app.volumesOpen.then(
      () => app.volumes.list().forEach((v) => volumes.add(v)),
      () => {},
    )
    let code = 0
    try {
      await app.close()
    } catch (err) {
      app.log.error({ err }, 'shutdown failed')
      code = 1
    }
    const report = dirtyOf(volumes)
    app.log.info({ signal, exitCode: code, ...report }, `stopped: ${describeDirty(report)}`)
    process.exit(code)
  }
  process.on('SIGTERM', () => void stop('SIGTERM'))
  process.on('SIGINT', () => void stop('SIGINT'))
  await app.listen({ port: config.port, host: config.host })
  if (!config.authToken && config.allowUnauthenticated) {
    app.log.warn({ host: config.host }, `ALLOW_UNAUTHENTICATED=true and no AUTH_TOKEN: anyone who can reach ${config.host}:${config.port} can read, write and delete every volume`)
  }
  await app.volumesOpen
  app.log.info({ volumes: app.volumes.list().length }, 'volumes open')
}

void main().catch((err) => {
  process.stderr.write(`filemirror: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exit(1)
})
