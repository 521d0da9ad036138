/**
 * The servers the benchmark compares: nginx, Apache httpd with mod_dav, @fastify/static, and filemirror itself.
 * Each runs on its own loopback port with a private configuration in a temporary directory, serving the one shared file.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { chmodSync, copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort, spawnLogged, stopChild, waitForHttp, type Started } from './proc.js'
import { Journal, readJournalIdentity } from '../src/engine/journal.js'
import { RangeSet } from '../src/engine/range-set.js'

export interface Server {
  /** Column name in the tables. */
  name: string
  /** http://127.0.0.1:port */
  base: string
  /** Root pid; peak RSS sums it and its descendants. */
  pid: number
  logPath: string
  stop(): Promise<void>
}

/** Whether peers log every request (their stock Debian configuration does, and so does filemirror at LOG_LEVEL=info). */
const PEER_LOGS = process.env.BENCH_PEER_LOGS !== '0'

function which(cmd: string): string | null {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' })
  return r.status === 0 ? r.stdout.trim() : null
}

/** nginx, apache2 (with mod_dav_fs) and wrk: found on PATH or installed from the Debian packages (needs root). */
export function ensurePeers(): { nginx: string; apache: string; wrk: string } {
  const missing = (): string[] => {
    const m: string[] = []
    if (!which('nginx')) m.push('nginx')
    if (!which('apache2') || !existsSync(apacheModule('mod_dav_fs.so'))) m.push('apache2')
    if (!which('wrk')) m.push('wrk')
    return m
  }
  const need = missing()
  if (need.length > 0) {
    if (process.getuid?.() !== 0) throw new Error(`missing ${need.join(', ')}: install them (apt-get install -y ${need.join(' ')}) or run as root`)
    console.error(`installing ${need.join(' ')} ...`)
    execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit' })
    execFileSync('apt-get', ['install', '-y', '-qq', ...need], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
    const still = missing()
    if (still.length > 0) throw new Error(`still missing after apt-get: ${still.join(', ')}`)
  }
  return { nginx: which('nginx')!, apache: which('apache2')!, wrk: which('wrk')! }
}

function apacheModule(file: string): string {
  return join('/usr/lib/apache2/modules', file)
}

export function versions(): Record<string, string> {
  const v = (cmd: string, args: string[], re: RegExp) => {
    const r = spawnSync(cmd, args, { encoding: 'utf8' })
    return re.exec(`${r.stdout}${r.stderr}`)?.[1] ?? '?'
  }
  let fastifyStatic = '?'
  try {
    fastifyStatic = execFileSync(process.execPath, ['-p', "require('@fastify/static/package.json').version"], { encoding: 'utf8', cwd: projectRoot() }).trim()
  } catch {
    // not installed
  }
  return {
    nginx: v('nginx', ['-v'], /nginx\/(\S+)/),
    apache: v('apache2', ['-v'], /Apache\/(\S+)/),
    wrk: v('wrk', ['-v'], /wrk (\S+)/),
    '@fastify/static': fastifyStatic,
  }
}

/** The repository root (dist/bench/.. /..). */
export function projectRoot(): string {
  return fileURLToPath(new URL('../../', import.meta.url))
}

export async function startNginx(work: string, dataDir: string): Promise<Server> {
  const dir = join(work, 'nginx')
  mkdirSync(dir, { recursive: true })
  const port = await freePort()
  const conf = join(dir, 'nginx.conf')
  writeFileSync(
    conf,
    `# Stock-like nginx: static module, sendfile, ranges; keep-alive not capped so wrk measures requests, not reconnects.
worker_processes auto;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 1024; }
http {
  default_type application/octet-stream;
  ${PEER_LOGS ? `access_log ${dir}/access.log;` : 'access_log off;'}
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  keepalive_timeout 65;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port};
    root ${dataDir};
    location / { }
  }
}
`,
  )
  const started = spawnLogged('nginx', ['-c', conf, '-p', dir + '/', '-e', `${dir}/error.log`], join(dir, 'stdout.log'))
  await waitForHttp(`http://127.0.0.1:${port}/`, 20_000, started.alive)
  return server('nginx', port, started, join(dir, 'access.log'), 'SIGQUIT')
}

export async function startApache(work: string, dataDir: string): Promise<Server> {
  const dir = join(work, 'apache')
  mkdirSync(dir, { recursive: true })
  // The workers (www-data) keep mod_dav_fs's lock database here.
  chmodSync(dir, 0o777)
  const port = await freePort()
  const conf = join(dir, 'httpd.conf')
  writeFileSync(
    conf,
    `# Apache httpd 2.4, mpm_event with Debian's stock sizes, mod_dav_fs taking PUT (with Content-Range) on the data directory.
ServerRoot "${dir}"
DefaultRuntimeDir "${dir}"
ServerName localhost
Listen 127.0.0.1:${port}
PidFile ${dir}/httpd.pid
ErrorLog ${dir}/error.log
LogLevel warn
LoadModule mpm_event_module ${apacheModule('mod_mpm_event.so')}
LoadModule authz_core_module ${apacheModule('mod_authz_core.so')}
LoadModule dav_module ${apacheModule('mod_dav.so')}
LoadModule dav_fs_module ${apacheModule('mod_dav_fs.so')}
StartServers 2
MinSpareThreads 25
MaxSpareThreads 75
ThreadLimit 64
ThreadsPerChild 25
MaxRequestWorkers 150
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 65
User www-data
Group www-data
DocumentRoot "${dataDir}"
DavLockDB ${dir}/davlock
<Directory "${dataDir}">
  Dav On
  Require all granted
</Directory>
LogFormat "%h %l %u %t \\"%r\\" %>s %O \\"%{Referer}i\\" \\"%{User-Agent}i\\"" combined
${PEER_LOGS ? `CustomLog ${dir}/access.log combined` : ''}
`,
  )
  const started = spawnLogged('apache2', ['-f', conf, '-DFOREGROUND'], join(dir, 'stdout.log'))
  await waitForHttp(`http://127.0.0.1:${port}/`, 20_000, started.alive)
  return server('apache', port, started, join(dir, 'access.log'), 'SIGTERM')
}

/** @fastify/static on Fastify 5 with Fastify's default request logging to a file (bench/static-server.ts). */
export async function startFastifyStatic(work: string, dataDir: string): Promise<Server> {
  const dir = join(work, 'fastify-static')
  mkdirSync(dir, { recursive: true })
  const port = await freePort()
  const entry = fileURLToPath(new URL('./static-server.js', import.meta.url))
  const logPath = join(dir, 'server.log')
  const started = spawnLogged(process.execPath, [entry], logPath, {
    env: { ...process.env, PORT: String(port), STATIC_ROOT: dataDir, LOG_LEVEL: PEER_LOGS ? 'info' : 'silent' },
  })
  await waitForHttp(`http://127.0.0.1:${port}/`, 20_000, started.alive)
  return server('@fastify/static', port, started, logPath, 'SIGTERM')
}

/** A Node reference server from bench/ serving `file`, with its own directory and log, once `readyPath` answers. */
async function startReference(work: string, column: string, script: string, file: string, readyPath: string, env: Record<string, string> = {}): Promise<Server> {
  const dir = join(work, column.replace(/\W+/g, '-'))
  mkdirSync(dir, { recursive: true })
  const port = await freePort()
  const entry = fileURLToPath(new URL(`./${script}`, import.meta.url))
  const logPath = join(dir, 'server.log')
  const started = spawnLogged(process.execPath, [entry], logPath, { env: { ...process.env, PORT: String(port), BARE_FILE: file, ...env } })
  await waitForHttp(`http://127.0.0.1:${port}${readyPath}`, 20_000, started.alive)
  return server(column, port, started, logPath, 'SIGTERM')
}

/** The reference Node server (bench/bare-server.ts): node:http and one positional read or write per request, no logging. */
export function startBareNode(work: string, file: string): Promise<Server> {
  return startReference(work, 'bare node', 'bare-server.js', file, '/')
}

/** The Fastify floor (bench/fastify-floor.ts): filemirror's framework and request log line around one positional read or write, at /volumes/bench/data. */
export function startFastifyFloor(work: string, file: string): Promise<Server> {
  return startReference(work, 'Fastify floor', 'fastify-floor.js', file, '/readyz', { LOG_LEVEL: PEER_LOGS ? 'info' : 'silent' })
}

export interface FilemirrorOptions {
  /** Column name. */
  name?: string
  /** The service's own DATA_DIR (configuration, journals); replicas live under `storageRoot`. */
  dataDir: string
  storageRoot: string
  /** Extra environment (MAX_GROUPS, LOG_LEVEL...). */
  env?: Record<string, string>
  /** Extra node flags, e.g. --cpu-prof. */
  nodeArgs?: string[]
  logPath: string
}

/** The compiled service (dist/src/server.js, or BENCH_SERVER), in its production configuration unless `env` says otherwise. */
export function serverEntry(): string {
  return process.env.BENCH_SERVER ?? fileURLToPath(new URL('../src/server.js', import.meta.url))
}

/** The node flags `npm start` and the image run the service with (bench/PROFILE.md: PUT 1 MiB's two GC regimes). */
export const DEPLOYED_NODE_ARGS = ['--initial-old-space-size=128']

export async function startFilemirror(options: FilemirrorOptions): Promise<Server> {
  const port = await freePort()
  mkdirSync(options.dataDir, { recursive: true })
  // The open service is measured: a bearer token from the caller's environment would refuse wrk.
  const { AUTH_TOKEN: _, ...inherited } = process.env
  const started = spawnLogged(process.execPath, [...(options.nodeArgs ?? process.env.BENCH_FM_NODE_ARGS?.split(' ').filter(Boolean) ?? DEPLOYED_NODE_ARGS), serverEntry()], options.logPath, {
    cwd: options.dataDir,
    env: {
      ...inherited,
      PORT: String(port),
      HOST: '127.0.0.1',
      DATA_DIR: options.dataDir,
      STORAGE_ROOTS: options.storageRoot,
      LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'info',
      SHUTDOWN_GRACE_MS: '0',
      ...options.env,
    },
  })
  await waitForHttp(`http://127.0.0.1:${port}/readyz`, 30_000, started.alive)
  return server(options.name ?? 'filemirror', port, started, options.logPath, 'SIGTERM')
}

function server(name: string, port: number, started: Started, logPath: string, signal: NodeJS.Signals): Server {
  return {
    name,
    base: `http://127.0.0.1:${port}`,
    pid: started.child.pid!,
    logPath,
    stop: () => stopChild(started, 15_000, signal),
  }
}

/** PUT /volumes/{name} with the given replicas; throws unless 200/201. */
export async function createVolume(server: Server, name: string, replicas: unknown[], fields: Record<string, unknown> = {}): Promise<unknown> {
  const res = await fetch(`${server.base}/volumes/${name}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ replicas, ...fields }),
  })
  const body = await res.json()
  if (res.status !== 200 && res.status !== 201) throw new Error(`creating volume ${name}: ${res.status} ${JSON.stringify(body)}`)
  await checksummed(server, name)
  return body
}

/** Deletes a volume (its files stay), once the writes a load left in flight have landed (409 until then). */
export async function deleteVolume(server: Server, name: string, timeoutMs = 30_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; ; await new Promise((r) => setTimeout(r, 200))) {
    const res = await fetch(`${server.base}/volumes/${name}`, { method: 'DELETE' })
    if (res.status === 204) return
    const text = await res.text()
    if (res.status !== 409 || Date.now() > deadline) throw new Error(`deleting volume ${name}: ${res.status} ${text}`)
  }
}

/** Waits until the volume's existing content is checksummed: the background pass would otherwise run during a measurement. */
export async function checksummed(server: Server, name: string, timeoutMs = 300_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; await new Promise((r) => setTimeout(r, 200))) {
    const status = (await (await fetch(`${server.base}/volumes/${name}`)).json()) as { checksums?: { enabled: boolean; coveredPercent: number } }
    if (!status.checksums?.enabled || status.checksums.coveredPercent === 100) return
  }
  throw new Error(`volume ${name}: its checksums were not computed within ${timeoutMs} ms`)
}

/**
 * A service whose volume `bench` has `file` as its sync replica plus an async mirror throttled to `rate`,
 * the mirror starting in sync. A new volume would mark the whole mirror dirty (256 MiB at 8 MiB/s: half a
 * minute of resync absorbing every write), so the volume is created, the service stopped, the mirror made
 * a byte copy and its journal rewritten empty with its own identity, and the service started again.
 */
export async function startMirroredFilemirror(options: Omit<FilemirrorOptions, 'dataDir'> & { dataDir: string; file: string; mirror: string; rate: number }): Promise<Server> {
  const replicas = [
    { id: 'main', path: options.file },
    { id: 'mirror', path: options.mirror, mode: 'async', maxBytesPerSecond: options.rate },
  ]
  let server = await startFilemirror(options)
  try {
    await createVolume(server, 'bench', replicas)
  } finally {
    await server.stop()
  }
  copyFileSync(options.file, options.mirror)
  chmodSync(options.mirror, 0o666)
  // An empty journal with the identity the service gave it (volume, replica, generation), written as the service would.
  const journalPath = join(options.dataDir, '.filemirror', 'journals', 'bench', 'mirror.journal')
  const identity = await readJournalIdentity(journalPath)
  await (await Journal.create(journalPath, new RangeSet(), { fsync: false }, () => new RangeSet(), identity)).close()
  server = await startFilemirror(options)
  const status = (await (await fetch(`${server.base}/volumes/bench`)).json()) as { replicas: Array<{ id: string; state: string; dirtyBytes: number }> }
  const mirror = status.replicas.find((r) => r.id === 'mirror')
  if (mirror?.state !== 'in-sync' || mirror.dirtyBytes !== 0) {
    await server.stop()
    throw new Error(`the async mirror did not start in sync: ${JSON.stringify(mirror)}`)
  }
  return server
}
