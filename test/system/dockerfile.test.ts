// The Dockerfile, checked without Docker: its structure is parsed and asserted, then its
// runtime stage is replayed in a temp dir (exactly what it COPYs, production dependencies
// only) and its CMD is started, probed, and stopped with SIGTERM.
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { cp, mkdir, readdir, stat } from 'node:fs/promises'
import { createServer } from 'node:net'
import { dirname, join, posix } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { scratch } from '../helpers/scratch.js'

const root = fileURLToPath(new URL('../..', import.meta.url))
/** FILEMIRROR_DOCKERFILE points the checks at another Dockerfile (to see them fail on a broken one). */
const dockerfilePath = process.env.FILEMIRROR_DOCKERFILE ?? join(root, 'Dockerfile')

// ---------------------------------------------------------------- parsing

interface Instruction {
  /** Upper-case keyword: FROM, RUN, COPY... */
  keyword: string
  /** Everything after the keyword, continuation lines joined. */
  args: string
  /** Leading `--name=value` flags (FROM, RUN, COPY, ADD, HEALTHCHECK). */
  flags: Record<string, string>
  /** `args` without those flags. */
  rest: string
  line: number
}

interface Stage {
  image: string
  name: string | undefined
  instructions: Instruction[]
}

interface Dockerfile {
  globalArgs: Record<string, string>
  stages: Stage[]
}

/** Logical lines: comments and blank lines dropped, `\` continuations joined (as BuildKit does). */
function logicalLines(text: string): { text: string; line: number }[] {
  const out: { text: string; line: number }[] = []
  let pending: { text: string; line: number } | null = null
  text.split(/\r?\n/).forEach((raw, i) => {
    if (/^\s*#/.test(raw)) return // comments (and parser directives), also inside continuations
    if (pending === null && raw.trim() === '') return
    const continued = /\\\s*$/.test(raw)
    const body = continued ? raw.replace(/\\\s*$/, '') : raw
    if (pending === null) pending = { text: body.trim(), line: i + 1 }
    else pending.text += ' ' + body.trim()
    if (!continued) {
      out.push(pending)
      pending = null
    }
  })
  if (pending !== null) out.push(pending)
  return out
}

function splitFlags(args: string): { flags: Record<string, string>; rest: string } {
  const flags: Record<string, string> = {}
  let rest = args
  for (;;) {
    const m = /^--([a-z-]+)(?:=(\S*))?\s*/.exec(rest)
    if (!m) break
    flags[m[1]] = m[2] ?? 'true'
    rest = rest.slice(m[0].length)
  }
  return { flags, rest }
}

function substitute(value: string, vars: Record<string, string>): string {
  return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (_m, a, def, b) => {
    const name = a ?? b
    return vars[name] ?? def ?? ''
  })
}

function parseDockerfile(text: string): Dockerfile {
  const globalArgs: Record<string, string> = {}
  const stages: Stage[] = []
  for (const { text: lineText, line } of logicalLines(text)) {
    const m = /^(\S+)\s*(.*)$/.exec(lineText)
    if (!m) continue
    const keyword = m[1].toUpperCase()
    const args = m[2]
    const { flags, rest } = ['FROM', 'RUN', 'COPY', 'ADD', 'HEALTHCHECK'].includes(keyword) ? splitFlags(args) : { flags: {}, rest: args }
    const instruction: Instruction = { keyword, args, flags, rest, line }
    if (keyword === 'FROM') {
      const from = /^(\S+)(?:\s+as\s+(\S+))?$/i.exec(rest.trim())
      if (!from) throw new Error(`Dockerfile:${line}: cannot parse FROM ${rest}`)
      stages.push({ image: substitute(from[1], globalArgs), name: from[2], instructions: [] })
    } else if (stages.length === 0) {
      if (keyword === 'ARG') {
        const [name, value = ''] = rest.trim().split('=', 2)
        globalArgs[name] = value.replace(/^"(.*)"$/, '$1')
      }
    } else {
      stages[stages.length - 1].instructions.push(instruction)
    }
  }
  return { globalArgs, stages }
}

/** Words of a shell-like string: whitespace separated, quotes removed, backslash escapes kept literal. */
function words(text: string): string[] {
  const out: string[] = []
  let word: string | null = null
  let quote: string | null = null
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (quote) {
      if (c === quote) quote = null
      else if (c === '\\' && quote === '"' && i + 1 < text.length) word += text[++i]
      else word += c
    } else if (c === '"' || c === "'") {
      quote = c
      word ??= ''
    } else if (c === '\\' && i + 1 < text.length) {
      word = (word ?? '') + text[++i]
    } else if (/\s/.test(c)) {
      if (word !== null) out.push(word)
      word = null
    } else {
      word = (word ?? '') + c
    }
  }
  if (word !== null) out.push(word)
  return out
}

/** ENV in both forms: `ENV A=1 B="two words"` and the legacy `ENV A value with spaces`. */
function envOf(stage: Stage): Record<string, string> {
  const env: Record<string, string> = {}
  for (const ins of stage.instructions.filter((i) => i.keyword === 'ENV')) {
    const parts = words(ins.rest)
    if (parts.length > 0 && !parts[0].includes('=')) {
      env[parts[0]] = parts.slice(1).join(' ')
      continue
    }
    for (const part of parts) {
      const at = part.indexOf('=')
      env[part.slice(0, at)] = substitute(part.slice(at + 1), env)
    }
  }
  return env
}

/** The JSON (exec) form of CMD, ENTRYPOINT or HEALTHCHECK CMD; null for the shell form. */
function execForm(args: string): string[] | null {
  const text = args.trim()
  if (!text.startsWith('[')) return null
  try {
    const value: unknown = JSON.parse(text)
    return Array.isArray(value) && value.every((v) => typeof v === 'string') ? value : null
  } catch {
    return null
  }
}

function last<T>(items: T[]): T | undefined {
  return items[items.length - 1]
}

function workdirOf(stage: Stage, before = stage.instructions.length): string {
  let dir = '/'
  for (const ins of stage.instructions.slice(0, before)) if (ins.keyword === 'WORKDIR') dir = posix.resolve(dir, ins.rest.trim())
  return dir
}

interface CopyStep {
  from: string | undefined
  sources: string[]
  /** Absolute destination inside the image. */
  dest: string
  /** The destination is a directory (several sources, or it ends with a slash). */
  destIsDir: boolean
  line: number
}

function copiesOf(stage: Stage): CopyStep[] {
  return stage.instructions.flatMap((ins, index) => {
    if (ins.keyword !== 'COPY') return []
    const parts = execForm(ins.rest) ?? words(ins.rest)
    const dest = parts[parts.length - 1]
    const sources = parts.slice(0, -1)
    return [
      {
        from: ins.flags.from,
        sources,
        dest: posix.resolve(workdirOf(stage, index), dest),
        destIsDir: sources.length > 1 || dest.endsWith('/') || dest === '.',
        line: ins.line,
      },
    ]
  })
}

/** User and group ids the stage's own useradd/groupadd commands give (`user:name` -> uid, `group:name` -> gid). */
function idsOf(stage: Stage): Map<string, string> {
  const ids = new Map<string, string>()
  for (const ins of stage.instructions.filter((i) => i.keyword === 'RUN')) {
    for (const command of ins.rest.split(/&&|;|\|\|/)) {
      const w = words(command)
      const name = last(w)
      const valueOf = (...flags: string[]) => {
        const at = w.findIndex((x) => flags.includes(x))
        return at >= 0 ? w[at + 1] : undefined
      }
      if (w[0] === 'useradd' && name) {
        const uid = valueOf('--uid', '-u')
        if (uid) ids.set(`user:${name}`, uid)
      } else if (w[0] === 'groupadd' && name) {
        const gid = valueOf('--gid', '-g')
        if (gid) ids.set(`group:${name}`, gid)
      }
    }
  }
  return ids
}

function uidOf(user: string, ids: Map<string, string>): string {
  return /^\d+$/.test(user) ? user : (ids.get(`user:${user}`) ?? user)
}

// ----------------------------------------------------------- .dockerignore

function ignoreMatcher(text: string): (path: string) => boolean {
  const rules = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const negated = l.startsWith('!')
      const pattern = posix.normalize((negated ? l.slice(1) : l).replace(/^\/+/, '')).replace(/\/+$/, '')
      const source = pattern
        .split('/')
        .map((seg) => (seg === '**' ? '.*' : seg.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')))
        .join('/')
        .replace(/\.\*\//g, '(?:.*/)?')
      return { negated, regex: new RegExp(`^${source}$`) }
    })
  // A path is excluded when it, or a folder above it, matches; the last matching rule wins.
  return (path) => {
    const prefixes = path.split('/').map((_, i, all) => all.slice(0, i + 1).join('/'))
    let ignored = false
    for (const rule of rules) if (prefixes.some((p) => rule.regex.test(p))) ignored = !rule.negated
    return ignored
  }
}

// ------------------------------------------------------------ processes

interface Exit {
  code: number | null
  signal: NodeJS.Signals | null
}

function exitOf(child: ChildProcess): Promise<Exit> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode })
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
}

function within<T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(resolve, ms, 'timeout')))
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** Runs a command to its end, collecting its output. */
async function run(argv: string[], options: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number }): Promise<Exit & { output: string }> {
  const child = spawn(argv[0], argv.slice(1), { cwd: options.cwd, env: options.env, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout!.on('data', (d) => (output += d))
  child.stderr!.on('data', (d) => (output += d))
  const spawned = new Promise<Exit>((resolve) => child.once('error', (err) => ((output += String(err)), resolve({ code: -1, signal: null }))))
  const result = await within(Promise.race([exitOf(child), spawned]), options.timeoutMs)
  if (result === 'timeout') {
    child.kill('SIGKILL')
    return { code: null, signal: 'SIGKILL', output: output + `\n(killed after ${options.timeoutMs} ms)` }
  }
  return { ...result, output }
}

/** This machine's environment for npm, without what the test runner injects (a loader, the project's own prefix). */
function npmEnv(): NodeJS.ProcessEnv {
  const keep = /^npm_config_(cache|userconfig|globalconfig|cafile|ca|registry|proxy|https_proxy|http_proxy|noproxy|strict_ssl)$/i
  const env: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(process.env)) {
    if (key === 'NODE_OPTIONS' || /^TAP/.test(key) || key === 'INIT_CWD') continue
    if (/^npm_/i.test(key) && !keep.test(key)) continue
    env[key] = value
  }
  return env
}

function npmCommand(args: string[]): string[] {
  const cli = process.env.npm_execpath
  return cli && /\.c?js$/.test(cli) && existsSync(cli) ? [process.execPath, cli, ...args] : ['npm', ...args]
}

async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

async function waitFor200(url: string, deadline: number): Promise<{ status: number; body: string }> {
  let last = { status: 0, body: '' }
  while (Date.now() < deadline) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) })
      last = { status: res.status, body: await res.text() }
      if (res.status === 200) return last
    } catch (err) {
      last = { status: 0, body: String(err) }
    }
    await new Promise((r) => setTimeout(r, 100))
  }
  return last
}

/** Every installed package as its lockfile key (`node_modules/a`, `node_modules/a/node_modules/@s/b`). */
async function installedPackages(dir: string, prefix = 'node_modules'): Promise<string[]> {
  const base = join(dir, prefix)
  if (!existsSync(base)) return []
  const found: string[] = []
  for (const entry of await readdir(base, { withFileTypes: true })) {
    if (entry.name.startsWith('.') || !(entry.isDirectory() || entry.isSymbolicLink())) continue
    const names = entry.name.startsWith('@')
      ? (await readdir(join(base, entry.name))).map((n) => `${entry.name}/${n}`)
      : [entry.name]
    for (const name of names) {
      const key = `${prefix}/${name}`
      if (!existsSync(join(dir, key, 'package.json'))) continue
      found.push(key, ...(await installedPackages(dir, `${key}/node_modules`)))
    }
  }
  return found
}

// --------------------------------------------------------------- tests

const dockerfile = parseDockerfile(readFileSync(dockerfilePath, 'utf8'))
const [buildStage] = dockerfile.stages
const runtime = last(dockerfile.stages)!
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  dependencies?: Record<string, string>
  devDependencies?: Record<string, string>
}
const lock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8')) as {
  packages: Record<string, { dev?: boolean; devOptional?: boolean; engines?: { node?: string } }>
}

t.test('the Dockerfile has a build stage and a runtime stage on the same pinned Node LTS slim image', async (t) => {
  t.ok(dockerfile.stages.length >= 2, 'at least two stages')
  t.ok(buildStage.name, 'the first stage is named')
  t.not(runtime, buildStage, 'the runtime stage is not the build stage')
  const majors = dockerfile.stages.map((s) => /^node:(\d+)(?:\.\d+){0,2}-(?:bookworm|trixie)-slim$/.exec(s.image)?.[1])
  t.ok(majors.every(Boolean), `every stage is FROM node:<major>-<debian>-slim (got ${dockerfile.stages.map((s) => s.image).join(', ')})`)
  t.equal(new Set(majors).size, 1, 'both stages use the same Node major')
  const major = Number(majors[0])
  t.ok(major >= 24, `Node ${major} is a supported LTS line (24 or later)`)

  // The image's Node must satisfy every production package's engines.node.
  const { createRequire } = await import('node:module')
  let semver: { intersects(a: string, b: string): boolean } | undefined
  try {
    semver = createRequire(join(root, 'package.json'))('semver')
  } catch {
    semver = undefined
  }
  if (semver) {
    const unmet = Object.entries(lock.packages)
      .filter(([key, p]) => key !== '' && !p.dev && p.engines?.node)
      .filter(([, p]) => {
        try {
          return !semver.intersects(p.engines!.node!, `^${major}.0.0`)
        } catch {
          return false
        }
      })
      .map(([key, p]) => `${key.replace(/^.*node_modules\//, '')} (${p.engines!.node})`)
    t.same(unmet, [], `every production dependency supports Node ${major}`)
  }
})

t.test('the build stage installs everything and compiles', async (t) => {
  const runs = buildStage.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.rest)
  const ci = runs.findIndex((r) => /\bnpm ci\b/.test(r))
  const build = runs.findIndex((r) => /\bnpm run build\b/.test(r))
  t.ok(ci >= 0, 'RUN npm ci')
  t.notMatch(runs[ci] ?? '', /--omit[= ]dev|--production/, 'with dev dependencies (tsc needs them)')
  t.ok(build > ci, 'then RUN npm run build')
  t.equal(workdirOf(buildStage), '/app', 'in /app')
})

t.test('the runtime stage: production dependencies, the compiled output, a non-root user', async (t) => {
  const runs = runtime.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.rest)
  const ci = runs.find((r) => /\bnpm ci\b/.test(r))
  t.match(ci ?? '', /--omit[= ]dev/, 'RUN npm ci --omit=dev')
  t.notOk(runs.some((r) => /\bnpm run build\b|\btsc\b/.test(r)), 'no compiling in the runtime stage')
  t.equal(workdirOf(runtime), '/app', 'WORKDIR /app')

  const copies = copiesOf(runtime)
  const fromBuild = copies.filter((c) => c.from !== undefined)
  t.ok(fromBuild.every((c) => c.from === buildStage.name), `COPY --from names the build stage (${buildStage.name})`)
  t.notOk(copies.some((c) => c.sources.some((s) => /node_modules/.test(s))), 'node_modules is never copied in (dev dependencies would come along)')
  const targets = copies.flatMap((c) => c.sources.map((s) => (c.destIsDir ? posix.join(c.dest, posix.basename(s)) : c.dest)))
  // What the compiled routes read at run time, relative to dist/routes/: the API description and the status page.
  const assets = ['openapi.yaml', 'public'].filter((a) => existsSync(join(root, a))).map((a) => `/app/${a}`)
  for (const wanted of ['/app/package.json', '/app/package-lock.json', '/app/dist', ...assets]) {
    t.ok(targets.includes(wanted), `the runtime stage COPYs ${wanted}`)
  }

  const env = envOf(runtime)
  t.equal(env.HOST, '0.0.0.0', 'ENV HOST=0.0.0.0')
  t.notOk('ALLOW_UNAUTHENTICATED' in env, 'no ENV ALLOW_UNAUTHENTICATED: protected mode stays on (a container needs AUTH_TOKEN)')
  t.notOk('AUTH_TOKEN' in env, 'no ENV AUTH_TOKEN: a token is given at run time, never baked into the image')
  t.equal(env.DATA_DIR, '/data', 'ENV DATA_DIR=/data')
  t.ok(runtime.instructions.some((i) => i.keyword === 'EXPOSE' && words(i.rest).includes(env.PORT ?? '8080')), `EXPOSE the port the server listens on (${env.PORT ?? '8080'})`)

  const user = last(runtime.instructions.filter((i) => i.keyword === 'USER'))
  t.ok(user, 'a USER is set')
  const [userName = '', groupName] = (user?.rest.trim() ?? '').split(':')
  const ids = idsOf(runtime)
  const uid = uidOf(userName, ids)
  t.notOk(['root', '0', ''].includes(userName) || uid === '0', `USER ${user?.rest} is not root`)
  if (groupName !== undefined) t.notOk(['root', '0'].includes(groupName), 'nor is its group')

  const volumeAt = runtime.instructions.findIndex((i) => i.keyword === 'VOLUME' && (execForm(i.rest) ?? words(i.rest)).includes('/data'))
  t.ok(volumeAt >= 0, 'VOLUME /data')
  const chown = runtime.instructions
    .slice(0, volumeAt)
    .filter((i) => i.keyword === 'RUN')
    .map((i) => /\bchown\s+(?:-R\s+)?([^\s:]+)(?::\S+)?\s+\/data\b/.exec(i.rest))
    .find(Boolean)
  t.ok(chown, 'a RUN before VOLUME hands /data to the user (changes after VOLUME would be discarded)')
  if (chown) t.equal(uidOf(chown[1], ids), uid, `/data is owned by the USER (${chown[1]})`)
  const userAt = runtime.instructions.indexOf(user!)
  t.ok(runtime.instructions.slice(userAt + 1).every((i) => i.keyword !== 'RUN'), 'nothing RUNs after USER drops root (installs happen as root, files stay read-only to the service)')
})

t.test('HEALTHCHECK, STOPSIGNAL and CMD', async (t) => {
  const health = runtime.instructions.find((i) => i.keyword === 'HEALTHCHECK')
  t.ok(health, 'a HEALTHCHECK')
  const healthCmd = health ? execForm(health.rest.replace(/^CMD\s+/, '')) : null
  t.match(health?.rest ?? '', /^CMD\s+\[/, 'HEALTHCHECK CMD in exec form')
  t.equal(healthCmd?.[0], 'node', 'run by node itself')
  t.match(healthCmd?.join(' ') ?? '', /\/healthz/, 'asking /healthz')
  t.notMatch(health?.rest ?? '', /\b(curl|wget)\b/, 'no curl or wget (not in slim images)')

  const stopSignal = runtime.instructions.find((i) => i.keyword === 'STOPSIGNAL')
  t.equal(stopSignal?.rest.trim(), 'SIGTERM', 'STOPSIGNAL SIGTERM')

  const entrypoint = runtime.instructions.find((i) => i.keyword === 'ENTRYPOINT')
  if (entrypoint) t.ok(execForm(entrypoint.rest), 'an ENTRYPOINT, if any, is in exec form')
  const cmds = runtime.instructions.filter((i) => i.keyword === 'CMD')
  t.equal(cmds.length, 1, 'one CMD')
  t.same(execForm(cmds[0]?.rest ?? ''), ['node', '--initial-old-space-size=128', 'dist/src/server.js'], 'CMD ["node", "--initial-old-space-size=128", "dist/src/server.js"] in exec form, so SIGTERM reaches node')
})

t.test('.dockerignore keeps installed, built and local files out, and the sources in', async (t) => {
  const path = join(root, '.dockerignore')
  t.ok(existsSync(path), '.dockerignore exists')
  const ignored = ignoreMatcher(existsSync(path) ? readFileSync(path, 'utf8') : '')
  for (const out of ['node_modules', 'node_modules/fastify/package.json', 'dist/src/server.js', 'data/volume.img', '.git/HEAD', '.tap/test-results/x.tap', 'coverage/lcov.info']) {
    t.ok(ignored(out), `${out} is kept out`)
  }
  const needed = ['package.json', 'package-lock.json', 'tsconfig.json', 'src/server.ts', 'src/app.ts', 'routes/health.ts', 'openapi.yaml', 'public/status.html']
  for (const file of needed) t.notOk(ignored(file), `${file} is in the build context`)
  for (const copy of copiesOf(runtime).filter((c) => c.from === undefined)) {
    for (const source of copy.sources) t.notOk(ignored(source), `${source} (COPY at line ${copy.line}) is in the build context`)
  }
})

const serverJs = join(root, 'dist', 'src', 'server.js')
const distMissing = existsSync(serverJs) ? false : 'dist/src/server.js is missing: run `npm run build` first (`npm test` builds before testing)'

t.test('the runtime stage, replayed: its CMD serves from the built output with production dependencies only', { skip: distMissing }, async (t) => {
  const work = await scratch(t, 'filemirror-image-')
  const app = join(work, 'app')
  const data = join(work, 'data')
  await mkdir(app)
  await mkdir(data)
  let server: ChildProcess | undefined
  t.teardown(async () => {
    if (server && server.exitCode === null && server.signalCode === null) {
      server.kill('SIGKILL')
      await exitOf(server)
    }
  })

  // 1. Exactly what the runtime stage COPYs: context files from the repo, build-stage files
  //    from where the build stage made them (its WORKDIR is this repo, built by `npm run build`).
  const buildDir = workdirOf(buildStage)
  const missing: string[] = []
  for (const copy of copiesOf(runtime)) {
    t.ok(copy.dest === '/app' || copy.dest.startsWith('/app/'), `COPY at line ${copy.line} lands in /app`)
    for (const source of copy.sources) {
      let from: string
      if (copy.from === undefined) {
        from = join(root, source)
      } else {
        t.ok(source.startsWith(`${buildDir}/`), `${source} comes from the build stage's ${buildDir}`)
        from = join(root, posix.relative(buildDir, source))
      }
      if (!existsSync(from)) {
        missing.push(source)
        continue
      }
      const dest = join(app, posix.relative('/app', copy.destIsDir ? posix.join(copy.dest, posix.basename(source)) : copy.dest))
      await mkdir(dirname(dest), { recursive: true })
      await cp(from, dest, { recursive: true })
    }
  }
  t.same(missing, [], 'every source the runtime stage COPYs exists (else `docker build` fails at that COPY)')

  // 2. Production dependencies only, from the warm npm cache (online if the cache lacks something).
  const ciArgs = ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund']
  let install = await run(npmCommand([...ciArgs, '--offline']), { cwd: app, env: npmEnv(), timeoutMs: 120_000 })
  if (install.code !== 0) {
    t.comment('npm ci --offline failed, retrying online: ' + (install.output.match(/npm error .*/)?.[0] ?? install.output.slice(-300)))
    install = await run(npmCommand([...ciArgs, '--prefer-offline']), { cwd: app, env: npmEnv(), timeoutMs: 240_000 })
  }
  if (!t.equal(install.code, 0, 'npm ci --omit=dev succeeds')) {
    t.comment(install.output.slice(-2000))
    return
  }
  const installed = await installedPackages(app)
  for (const name of Object.keys(pkg.dependencies ?? {})) t.ok(installed.includes(`node_modules/${name}`), `production dependency ${name} is installed`)
  for (const name of Object.keys(pkg.devDependencies ?? {})) {
    // A devDependency that production code also pulls in (ajv, through fastify) is rightly there.
    const alsoProduction = lock.packages[`node_modules/${name}`] && !lock.packages[`node_modules/${name}`].dev
    if (alsoProduction) t.ok(installed.includes(`node_modules/${name}`), `devDependency ${name} is also a production dependency's dependency, so it is installed`)
    else t.notOk(installed.includes(`node_modules/${name}`), `devDependency ${name} is not installed`)
  }
  for (const name of ['typescript', 'tap', 'tsx', '@typescript/native-preview', 'fast-check']) {
    t.notOk(existsSync(join(app, 'node_modules', name)), `${name} is absent`)
  }
  const devOnly = installed.filter((key) => lock.packages[key]?.dev)
  t.same(devOnly, [], 'no package the lockfile marks dev-only is installed')
  const unknown = installed.filter((key) => !lock.packages[key])
  t.same(unknown, [], 'every installed package is in the lockfile')

  // 3. The CMD, as the container runs it: the image's ENV, the stage's WORKDIR, a clean environment.
  const cmd = execForm(runtime.instructions.find((i) => i.keyword === 'CMD')?.rest ?? '')
  if (!t.ok(cmd && cmd.length > 0, 'an exec-form CMD to run')) return
  const script = cmd!.find((arg, i) => i > 0 && !arg.startsWith('-')) ?? ''
  t.ok(existsSync(join(app, script)), `${script} is in the image`)
  const argv = cmd![0] === 'node' ? [process.execPath, ...cmd!.slice(1)] : cmd!
  // Without a token, the image's HOST=0.0.0.0 is refused (protected mode) before anything listens.
  const imageEnv: NodeJS.ProcessEnv = { PATH: process.env.PATH, ...envOf(runtime), PORT: '0', DATA_DIR: data }
  const refused = await run(argv, { cwd: app, env: imageEnv, timeoutMs: 20_000 })
  t.equal(refused.code, 1, '`docker run` without AUTH_TOKEN: the CMD exits 1')
  t.match(refused.output, /^filemirror: refusing to listen on HOST=0\.0\.0\.0 without authentication: set AUTH_TOKEN.*ALLOW_UNAUTHENTICATED=true/, 'saying to set AUTH_TOKEN (or ALLOW_UNAUTHENTICATED=true)')
  t.notMatch(refused.output, /Server listening/, 'it never listened')
  // `docker run -e AUTH_TOKEN=...`: the image's own environment (HOST=0.0.0.0), plus the token.
  const token = 'image-smoke-token-0123456789'
  const bearer = { authorization: `Bearer ${token}` }
  const env: NodeJS.ProcessEnv = { ...imageEnv, AUTH_TOKEN: token }
  server = spawn(argv[0], argv.slice(1), { cwd: app, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  server.stdout!.on('data', (d) => (stdout += d))
  server.stderr!.on('data', (d) => (stderr += d))
  const diagnostics = () => `stdout:\n${stdout.slice(-1500)}\nstderr:\n${stderr.slice(-1500)}`

  const started = Date.now()
  let port: number | undefined
  while (port === undefined && Date.now() - started < 20_000 && server.exitCode === null) {
    const m = /Server listening at http:\/\/127\.0\.0\.1:(\d+)/.exec(stdout)
    if (m) port = Number(m[1])
    else await new Promise((r) => setTimeout(r, 50))
  }
  if (!t.ok(port, 'the server starts listening')) {
    t.comment(diagnostics())
    return
  }
  const base = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 20_000
  const healthz = await waitFor200(`${base}/healthz`, deadline)
  t.equal(healthz.status, 200, 'GET /healthz is 200')
  const readyz = await waitFor200(`${base}/readyz`, deadline)
  t.equal(readyz.status, 200, 'GET /readyz is 200')
  if (existsSync(join(root, 'openapi.yaml'))) {
    const spec = await fetch(`${base}/openapi.yaml`, { headers: bearer })
    t.equal(spec.status, 200, 'GET /openapi.yaml finds /app/openapi.yaml next to /app/dist')
    t.match(await spec.text(), /openapi:/, 'and serves it')
  }
  if (existsSync(join(root, 'public', 'status.html'))) {
    const page = await fetch(`${base}/`, { headers: bearer })
    t.equal(page.status, 200, 'GET / finds the status page in /app/public')
    t.match(page.headers.get('content-type') ?? '', /text\/html/, 'and serves it as HTML')
    const signIn = await fetch(`${base}/`, { headers: { accept: 'text/html' } })
    t.equal(signIn.status, 401, 'without the token, GET / is a 401')
    t.match(await signIn.text(), /<form id="login"/, 'with the sign-in form from /app/public')
  }
  t.equal((await fetch(`${base}/volumes`)).status, 401, 'the API needs the token')

  // The dependencies behind a real request are there: create a volume, write, read back.
  const created = await fetch(`${base}/volumes/image-smoke`, {
    method: 'PUT',
    headers: { ...bearer, 'content-type': 'application/json' },
    body: JSON.stringify({ replicas: [{ id: 'a', path: 'image-smoke/a.img' }] }),
  })
  t.equal(created.status, 201, 'PUT /volumes/image-smoke creates a volume')
  const written = await fetch(`${base}/volumes/image-smoke/data`, { method: 'PUT', headers: bearer, body: 'hello from the image' })
  t.ok([200, 202].includes(written.status), `PUT data is accepted (${written.status})`)
  const read = await fetch(`${base}/volumes/image-smoke/data`, { headers: { ...bearer, range: 'bytes=6-9' } })
  t.equal(read.status, 206, 'a ranged GET is 206')
  t.equal(await read.text(), 'from', 'and returns the bytes written')
  t.ok((await stat(join(data, 'image-smoke', 'a.img'))).size > 0, 'the replica file is under DATA_DIR')

  // The HEALTHCHECK command, run as Docker would (exec form, the container's environment).
  const health = runtime.instructions.find((i) => i.keyword === 'HEALTHCHECK')
  const healthCmd = health ? execForm(health.rest.replace(/^CMD\s+/, '')) : null
  if (healthCmd) {
    const healthArgv = healthCmd[0] === 'node' ? [process.execPath, ...healthCmd.slice(1)] : healthCmd
    const healthy = await run(healthArgv, { cwd: app, env: { ...env, PORT: String(port) }, timeoutMs: 10_000 })
    t.equal(healthy.code, 0, `the HEALTHCHECK passes against the running server ${healthy.output.trim()}`)
    const closed = await freePort()
    const unhealthy = await run(healthArgv, { cwd: app, env: { ...env, PORT: String(closed) }, timeoutMs: 10_000 })
    t.not(unhealthy.code, 0, 'and fails when nothing listens')
  }

  // 4. docker stop: SIGTERM, then a bounded wait for a clean exit.
  const graceMs = Number(env.SHUTDOWN_GRACE_MS ?? 10_000)
  const boundMs = graceMs + 5_000
  const stopping = Date.now()
  server.kill('SIGTERM')
  const exit = await within(exitOf(server), boundMs)
  if (exit === 'timeout') {
    t.fail(`the server did not exit within ${boundMs} ms of SIGTERM`)
    t.comment(diagnostics())
    return
  }
  t.same(exit, { code: 0, signal: null }, `SIGTERM stops it with exit code 0 (in ${Date.now() - stopping} ms)`)
  t.match(stdout, /"signal":"SIGTERM"/, 'the server logged the SIGTERM it handled')
})
