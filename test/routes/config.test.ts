import t from 'tap'
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ConfigError, loadConfig } from '../../src/config.js'
import { tempDir } from '../helpers/app.js'

const root = fileURLToPath(new URL('../../', import.meta.url))
const serverEntry = resolve(root, 'dist/src/server.js')

t.test('loadConfig: the documented defaults', async (t) => {
  const config = loadConfig({})
  t.equal(config.port, 8080, 'PORT defaults to 8080')
  t.equal(config.host, '127.0.0.1', 'HOST defaults to 127.0.0.1 (not every interface)')
  t.equal(config.dataDir, resolve('./data'), 'DATA_DIR defaults to ./data, resolved to an absolute path')
  t.equal(config.logLevel, 'info', 'LOG_LEVEL defaults to info')
  t.same(config.storageRoots, [config.dataDir], 'STORAGE_ROOTS defaults to [DATA_DIR]')
  t.equal(config.shutdownGraceMs, 10_000)
  t.ok(config.groupRetentionMs > 0 && config.maxGroups > 0 && config.maxReadGroups > 0 && config.maxRanges > 0, 'positive limits')
})

t.test('loadConfig: values are read and normalised', async (t) => {
  const config = loadConfig({ PORT: '0', HOST: '0.0.0.0', DATA_DIR: 'some/dir', LOG_LEVEL: 'silent', STORAGE_ROOTS: ' /srv/a , b ,,' })
  t.equal(config.port, 0, 'PORT 0 (any free port) is allowed')
  t.equal(config.host, '0.0.0.0')
  t.equal(config.dataDir, resolve('some/dir'), 'a relative DATA_DIR is resolved against the working directory')
  t.equal(config.logLevel, 'silent')
  t.same(config.storageRoots, ['/srv/a', resolve('b')], 'STORAGE_ROOTS: comma separated, trimmed, empty items dropped, resolved')
  t.same(loadConfig({ DATA_DIR: '/x', STORAGE_ROOTS: ' , ' }).storageRoots, ['/x'], 'an empty STORAGE_ROOTS falls back to DATA_DIR')
  t.equal(loadConfig({ PORT: '65535' }).port, 65535, 'the highest port is allowed')
})

t.test('loadConfig: a bad value throws a ConfigError naming the variable', async (t) => {
  const cases: Array<[Record<string, string>, string]> = [
    [{ PORT: 'abc' }, 'PORT'],
    [{ PORT: '65536' }, 'PORT'],
    [{ PORT: '-1' }, 'PORT'],
    [{ PORT: '80.5' }, 'PORT'],
    [{ HOST: '' }, 'HOST'],
    [{ DATA_DIR: '' }, 'DATA_DIR'],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
    [{ SHUTDOWN_GRACE_MS: 'soon' }, 'SHUTDOWN_GRACE_MS'],
    [{ GROUP_RETENTION_MS: '0' }, 'GROUP_RETENTION_MS'],
    [{ MAX_GROUPS: '-5' }, 'MAX_GROUPS'],
    [{ MAX_READ_GROUPS: 'many' }, 'MAX_READ_GROUPS'],
    [{ MAX_RANGES: '0' }, 'MAX_RANGES'],
  ]
  for (const [env, variable] of cases) {
    let caught: unknown
    try {
      loadConfig(env)
    } catch (err) {
      caught = err
    }
    t.ok(caught instanceof ConfigError, `${JSON.stringify(env)} throws a ConfigError`)
    t.match((caught as Error | undefined)?.message ?? '', variable, `${JSON.stringify(env)}: the message names ${variable}`)
  }
  let both: unknown
  try {
    loadConfig({ PORT: 'abc', LOG_LEVEL: 'loud' })
  } catch (err) {
    both = err
  }
  t.ok(both instanceof ConfigError)
  t.match((both as Error).message, /PORT[\s\S]*LOG_LEVEL|LOG_LEVEL[\s\S]*PORT/, 'every bad variable is named at once')
})

t.test('loadConfig: an empty or non-decimal PORT is not read as some other port', async (t) => {
  // z.coerce.number() is Number(): '' becomes 0 (a random port), '0x50' becomes 80, '1e3' becomes 1000.
  const bug = t
  for (const value of ['', ' ', '0x50', '1e3']) {
    let port: number | undefined
    let caught: unknown
    try {
      port = loadConfig({ PORT: value }).port
    } catch (err) {
      caught = err
    }
    const named = caught instanceof ConfigError && /PORT/.test(caught.message)
    bug.ok(named || (value.trim() === '' && port === 8080), `PORT=${JSON.stringify(value)}: a ConfigError naming PORT${value.trim() === '' ? ' (or the default 8080)' : ''}, not port ${port}`)
  }
})

/** Runs the compiled entry point with `env`; resolves with its exit code and output (killed after 20 s). */
function runServer(env: Record<string, string>): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string; stdout: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [serverEntry], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000)
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolvePromise({ code, signal, stdout, stderr })
    })
  })
}

t.test('the real entry point refuses a bad configuration: exit 1 and a clear message', { skip: existsSync(serverEntry) ? false : 'dist/src/server.js is missing: run npm run build' }, async (t) => {
  const dataDir = await tempDir(t)
  const { code, signal, stderr, stdout } = await runServer({ PORT: 'abc', DATA_DIR: dataDir })
  t.equal(signal, null, 'it exits by itself (it did not start listening)')
  t.equal(code, 1, 'exit code 1')
  t.match(stderr, /PORT/, 'stderr names the bad variable')
  t.match(stderr, /^filemirror: invalid configuration/m, 'stderr says what is wrong in one line')
  t.notMatch(stderr, /\n\s+at /, 'no stack trace')
  t.equal(stdout, '', 'nothing on stdout')
})
