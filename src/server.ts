import { buildApp } from './app.js'
import { ConfigError, loadConfig } from './config.js'

// Before the first file operation sizes libuv's pool: each replica file may keep LANE_CONCURRENCY reads or writes in it.
process.env.UV_THREADPOOL_SIZE ??= '16'

/** The entry point: read the configuration, listen, and stop gracefully on SIGTERM or SIGINT. */
async function main(): Promise<void> {
  let config
  try {
    config = loadConfig()
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`filemirror: ${err.message}\n`)
      process.exit(1)
    }
    throw err
  }
  const app = await buildApp({ config })
  let stopping = false
  const stop = async (signal: string) => {
    if (stopping) return
    stopping = true
    app.log.info({ signal }, 'stopping: finishing requests in flight and write-behind')
    try {
      await app.close()
      process.exit(0)
    } catch (err) {
      app.log.error({ err }, 'shutdown failed')
      process.exit(1)
    }
  }
  process.on('SIGTERM', () => void stop('SIGTERM'))
  process.on('SIGINT', () => void stop('SIGINT'))
  await app.listen({ port: config.port, host: config.host })
  await app.volumesOpen
  app.log.info({ volumes: app.volumes.list().length }, 'volumes open')
}

void main().catch((err) => {
  process.stderr.write(`filemirror: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exit(1)
})
