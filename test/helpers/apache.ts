// Apache httpd with mod_dav for tests: a private configuration in a temp dir, a free loopback port, `Dav On` on
// one directory, stopped (and startable again on the same port) by the test. Debian's apache2 package.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { existsSync, openSync, closeSync, readFileSync } from 'node:fs'
import { chmod, chown, mkdir, writeFile } from 'node:fs/promises'
import net from 'node:net'
import { join } from 'node:path'
import { scratch } from './scratch.js'

const MODULES = '/usr/lib/apache2/modules'
const NEEDED_MODULES = ['mod_mpm_event.so', 'mod_authz_core.so', 'mod_dav.so', 'mod_dav_fs.so']

/** Why Apache with mod_dav cannot run here (the test then skips saying so), or undefined when it can. */
export function apacheMissing(): string | undefined {
  const found = spawnSync('sh', ['-c', 'command -v apache2 || test -x /usr/sbin/apache2 && echo /usr/sbin/apache2'], { encoding: 'utf8' })
  if (found.status !== 0 || found.stdout.trim() === '') return 'apache2 is not installed (Debian package apache2; .ci/run installs it)'
  const missing = NEEDED_MODULES.filter((m) => !existsSync(join(MODULES, m)))
  if (missing.length > 0) return `apache2 is installed but ${missing.join(', ')} missing from ${MODULES}`
  return undefined
}

function apacheBinary(): string {
  const found = spawnSync('sh', ['-c', 'command -v apache2'], { encoding: 'utf8' }).stdout.trim()
  return found || '/usr/sbin/apache2'
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })
}

/** uid and gid of a system user, from /etc/passwd. */
function userIds(name: string): { uid: number; gid: number } | undefined {
  try {
    for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
      const fields = line.split(':')
      if (fields[0] === name) return { uid: Number(fields[2]), gid: Number(fields[3]) }
    }
  } catch {
    // no passwd file
  }
  return undefined
}

export interface Apache {
  /** http://127.0.0.1:port */
  base: string
  port: number
  /** The directory served with `Dav On` at `/`. */
  root: string
  /** The error log so far (for a failing test's message). */
  errorLog(): string
  /** Stops it (SIGTERM to the parent, which ends its workers); resolves once it has exited. */
  stop(): Promise<void>
  /** Starts it again, on the same port and directory. */
  start(): Promise<void>
}

interface TestLike {
  teardown(fn: () => unknown): void
}

/** Starts Apache httpd with mod_dav on a free loopback port, serving a fresh temp directory; stopped when the test ends. */
export async function startApache(t: TestLike): Promise<Apache> {
  const dir = await scratch(t, 'filemirror-apache-')
  const root = join(dir, 'dav')
  const lockDir = join(dir, 'lock')
  await mkdir(root)
  await mkdir(lockDir)
  // Run as root, httpd's workers switch to www-data: they must reach the temp dir and write the DAV directory and lock database.
  const asRoot = process.getuid?.() === 0
  const runAs = asRoot ? userIds('www-data') : undefined
  if (asRoot && !runAs) throw new Error('running as root, but there is no www-data user for the Apache workers')
  await chmod(dir, 0o755)
  if (runAs) for (const d of [root, lockDir]) await chown(d, runAs.uid, runAs.gid)
  const port = await freePort()
  const conf = join(dir, 'httpd.conf')
  await writeFile(
    conf,
    `# Apache httpd 2.4 with mod_dav_fs taking PUT (with Content-Range) on ${root}.
ServerRoot "${dir}"
DefaultRuntimeDir "${dir}"
ServerName localhost
Listen 127.0.0.1:${port}
PidFile ${dir}/httpd.pid
ErrorLog ${dir}/error.log
LogLevel info
LoadModule mpm_event_module ${MODULES}/mod_mpm_event.so
LoadModule authz_core_module ${MODULES}/mod_authz_core.so
LoadModule dav_module ${MODULES}/mod_dav.so
LoadModule dav_fs_module ${MODULES}/mod_dav_fs.so
StartServers 1
ServerLimit 2
ThreadsPerChild 16
MaxRequestWorkers 32
MinSpareThreads 8
MaxSpareThreads 32
${runAs ? 'User www-data\nGroup www-data' : ''}
DocumentRoot "${root}"
DavLockDB ${lockDir}/davlock
<Directory "${root}">
  Dav On
  Require all granted
</Directory>
`,
  )

  let child: ChildProcess | undefined
  let exited: Promise<void> = Promise.resolve()
  const errorLog = () => {
    try {
      return readFileSync(join(dir, 'error.log'), 'utf8') + readFileSync(join(dir, 'stdout.log'), 'utf8')
    } catch {
      return ''
    }
  }

  const start = async () => {
    const out = openSync(join(dir, 'stdout.log'), 'a')
    const proc = spawn(apacheBinary(), ['-f', conf, '-DFOREGROUND'], { stdio: ['ignore', out, out] })
    closeSync(out)
    child = proc
    let alive = true
    exited = new Promise((resolve) => proc.once('exit', () => ((alive = false), resolve())))
    const deadline = Date.now() + 20_000
    for (;;) {
      if (!alive) throw new Error(`apache2 exited before it answered:\n${errorLog()}`)
      const up = await new Promise<boolean>((resolve) => {
        const socket = net.connect(port, '127.0.0.1')
        socket.once('connect', () => (socket.destroy(), resolve(true)))
        socket.once('error', () => resolve(false))
      })
      if (up) return
      if (Date.now() > deadline) throw new Error(`apache2 did not listen on ${port} within 20 s:\n${errorLog()}`)
      await new Promise((r) => setTimeout(r, 50))
    }
  }

  const stop = async () => {
    const proc = child
    child = undefined
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return
    proc.kill('SIGTERM')
    const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000)
    await exited
    clearTimeout(timer)
  }

  // Registered after scratch(): tap runs teardowns last-in first-out, so httpd stops before its directory goes.
  t.teardown(stop)
  await start()
  return { base: `http://127.0.0.1:${port}`, port, root, errorLog, stop, start }
}
