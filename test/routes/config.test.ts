import t, { type Test } from 'tap'
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmdirSync } from 'node:fs'
import { mkdir, readdir, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ConfigError, isLoopback, loadConfig } from '../../src/config.js'
import { scratch } from '../helpers/scratch.js'

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
  const config = loadConfig({ PORT: '0', HOST: '0.0.0.0', ALLOW_UNAUTHENTICATED: 'true', DATA_DIR: 'some/dir', LOG_LEVEL: 'silent', STORAGE_ROOTS: ' /srv/a , b ,,' })
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
    [{ ALLOW_UNAUTHENTICATED: 'yes' }, 'ALLOW_UNAUTHENTICATED'],
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

/**
 * Runs the compiled entry point with `env`; resolves with its exit code and output (killed after 20 s).
 * With `ready`, it is sent SIGTERM once its stdout satisfies it.
 */
function runServer(env: Record<string, string>, ready?: (stdout: string) => boolean): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string; stdout: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [serverEntry], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    let stopped = false
    child.stdout.on('data', (d) => {
      stdout += d
      if (ready && !stopped && ready(stdout)) {
        stopped = true
        child.kill('SIGTERM')
      }
    })
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
  const dataDir = await scratch(t)
  const { code, signal, stderr, stdout } = await runServer({ PORT: 'abc', DATA_DIR: dataDir })
  t.equal(signal, null, 'it exits by itself (it did not start listening)')
  t.equal(code, 1, 'exit code 1')
  t.match(stderr, /PORT/, 'stderr names the bad variable')
  t.match(stderr, /^filemirror: invalid configuration/m, 'stderr says what is wrong in one line')
  t.notMatch(stderr, /\n\s+at /, 'no stack trace')
  t.equal(stdout, '', 'nothing on stdout')
})

t.test('protected mode: a non-loopback HOST needs AUTH_TOKEN or ALLOW_UNAUTHENTICATED=true', async (t) => {
  for (const host of ['127.0.0.1', '127.1.2.3', '127.255.255.254', '::1', '0:0:0:0:0:0:0:1', 'localhost', 'LOCALHOST']) {
    t.ok(isLoopback(host), `${host} is loopback`)
    t.equal(loadConfig({ HOST: host }).host, host, `HOST=${host} needs no token`)
  }
  for (const host of ['0.0.0.0', '::', '10.0.0.1', '192.168.1.20', '128.0.0.1', 'fe80::1', 'example.com', 'localhost.example.com', ' 127.0.0.1']) {
    t.notOk(isLoopback(host), `${JSON.stringify(host)} is not loopback`)
    let caught: unknown
    try {
      loadConfig({ HOST: host })
    } catch (err) {
      caught = err
    }
    t.ok(caught instanceof ConfigError, `HOST=${JSON.stringify(host)} without a token is refused`)
    const message = (caught as Error | undefined)?.message ?? ''
    t.match(message, /AUTH_TOKEN/, 'the message names AUTH_TOKEN')
    t.match(message, /ALLOW_UNAUTHENTICATED=true/, 'and the escape hatch')
    t.notMatch(message, /\n/, 'in one line')
  }
  t.equal(loadConfig({ HOST: '0.0.0.0', AUTH_TOKEN: 'a-token-of-sixteen-chars' }).host, '0.0.0.0', 'a token lifts it')
  const open = loadConfig({ HOST: '0.0.0.0', ALLOW_UNAUTHENTICATED: 'true' })
  t.equal(open.allowUnauthenticated, true, 'ALLOW_UNAUTHENTICATED=true lifts it')
  t.equal(loadConfig({}).allowUnauthenticated, false, 'ALLOW_UNAUTHENTICATED defaults to false')
  t.throws(() => loadConfig({ HOST: '0.0.0.0', ALLOW_UNAUTHENTICATED: 'false' }), { message: /AUTH_TOKEN/ }, 'ALLOW_UNAUTHENTICATED=false keeps it')
})

const built = existsSync(serverEntry) ? false : 'dist/src/server.js is missing: run npm run build'

/** Asserts a refusal to start: exit 1 by itself, one line on stderr, nothing on stdout. */
function assertRefused(t: Test, result: Awaited<ReturnType<typeof runServer>>, pattern: RegExp, what: string): void {
  t.equal(result.signal, null, `${what}: it exits by itself`)
  t.equal(result.code, 1, `${what}: exit code 1`)
  t.match(result.stderr, pattern, `${what}: stderr says why`)
  t.equal(result.stderr.trim().split('\n').length, 1, `${what}: in one line (${result.stderr.trim()})`)
  t.match(result.stderr, /^filemirror: /, `${what}: prefixed with the program name`)
  t.equal(result.stdout, '', `${what}: nothing on stdout (it never listened)`)
}

t.test('the real entry point: protected mode refuses a non-loopback HOST without AUTH_TOKEN', { skip: built }, async (t) => {
  const dataDir = await scratch(t)
  const refused = await runServer({ HOST: '0.0.0.0', PORT: '0', DATA_DIR: dataDir })
  assertRefused(t, refused, /HOST=0\.0\.0\.0.*AUTH_TOKEN.*ALLOW_UNAUTHENTICATED=true/, 'HOST=0.0.0.0')
  t.same(await readdir(dataDir), [], 'nothing was written to DATA_DIR')
})

t.test('the real entry point: ALLOW_UNAUTHENTICATED=true serves, with a warning', { skip: built }, async (t) => {
  const dataDir = await scratch(t)
  const result = await runServer({ HOST: '0.0.0.0', PORT: '0', DATA_DIR: dataDir, ALLOW_UNAUTHENTICATED: 'true' }, (stdout) => /"volumes open"/.test(stdout))
  t.match(result.stdout, /Server listening at/, 'it listens')
  const warning = result.stdout.split('\n').find((line) => /ALLOW_UNAUTHENTICATED/.test(line))
  t.ok(warning, 'it warns')
  t.match(JSON.parse(warning ?? '{}'), { level: 40, host: '0.0.0.0' }, 'at warn level, naming the host')
  t.equal(result.code, 0, 'and stops cleanly on SIGTERM')
})

t.test('the real entry point: DATA_DIR is created when missing, and must be writable', { skip: built }, async (t) => {
  const base = await scratch(t)
  const fresh = join(base, 'fresh', 'data')
  const started = await runServer({ PORT: '0', DATA_DIR: fresh }, (stdout) => /"volumes open"/.test(stdout))
  t.equal(started.code, 0, 'a missing DATA_DIR is no error (a fresh clone starts)')
  t.ok((await stat(fresh)).isDirectory(), 'DATA_DIR was created')

  const file = join(base, 'a-file')
  await writeFile(file, 'x')
  assertRefused(t, await runServer({ PORT: '0', DATA_DIR: file }), new RegExp(`DATA_DIR ${file} is not a directory`), 'DATA_DIR is a file')
})

/** false when `mount --bind -o ro` works here (as root in CI), else why the read-only test is skipped. */
function readOnlyMountSkip(): string | false {
  const probe = mkdtempSync(join(tmpdir(), 'filemirror-mount-probe-'))
  try {
    execFileSync('mount', ['--bind', '-o', 'ro', probe, probe], { stdio: 'ignore' })
    execFileSync('umount', [probe], { stdio: 'ignore' })
    return false
  } catch (err) {
    return `mount --bind -o ro failed here (${(err as Error).message.split('\n')[0]}): it needs root and a mount namespace that allows it`
  } finally {
    rmdirSync(probe)
  }
}
const roSkip = built || readOnlyMountSkip()
if (roSkip) console.log(`# skipping the read-only DATA_DIR test: ${roSkip}`)

t.test('the real entry point: a read-only DATA_DIR is said to be not writable', { skip: roSkip }, async (t) => {
  const dir = await scratch(t)
  execFileSync('mount', ['--bind', '-o', 'ro', dir, dir], { stdio: 'ignore' })
  t.teardown(() => execFileSync('umount', [dir], { stdio: 'ignore' }))
  const empty = await runServer({ PORT: '0', DATA_DIR: dir })
  assertRefused(t, empty, new RegExp(`DATA_DIR ${dir} is not writable \\(EROFS\\)`), 'an empty read-only DATA_DIR')
  t.notMatch(empty.stderr, /ENOENT|mkdir/, 'not the misleading ENOENT of mkdir')
  const below = await runServer({ PORT: '0', DATA_DIR: join(dir, 'sub', 'data') })
  assertRefused(t, below, new RegExp(`DATA_DIR ${dir}/sub/data is not writable: .*${dir} is not writable \\(EROFS\\)`), 'a missing DATA_DIR under a read-only mount')
})

t.test('the real entry point: a storage root other than DATA_DIR is never created', { skip: built }, async (t) => {
  const base = await scratch(t)
  const dataDir = join(base, 'data')
  const slow = join(base, 'slow')
  const archive = join(base, 'archive')
  const result = await runServer({ PORT: '0', DATA_DIR: dataDir, STORAGE_ROOTS: `${dataDir},${slow},${archive}` })
  assertRefused(t, result, new RegExp(`STORAGE_ROOTS: ${slow} does not exist; ${archive} does not exist`), 'two missing roots')
  t.match(result.stderr, /never created/, 'and says they are never created')
  t.notOk(existsSync(slow) || existsSync(archive), 'neither was created')

  await writeFile(slow, 'not a directory')
  assertRefused(t, await runServer({ PORT: '0', DATA_DIR: dataDir, STORAGE_ROOTS: `${dataDir},${slow}` }), new RegExp(`${slow} is not a directory`), 'a root that is a file')

  await mkdir(archive)
  const ok = await runServer({ PORT: '0', DATA_DIR: dataDir, STORAGE_ROOTS: `${dataDir},${archive}` }, (stdout) => /"volumes open"/.test(stdout))
  t.equal(ok.code, 0, 'with every root there, it starts')
  const missingData = join(base, 'other-data')
  const onlyData = await runServer({ PORT: '0', DATA_DIR: missingData, STORAGE_ROOTS: missingData }, (stdout) => /"volumes open"/.test(stdout))
  t.equal(onlyData.code, 0, 'DATA_DIR listed in STORAGE_ROOTS is still created when missing')
})
