/**
 * Summarises a V8 .cpuprofile (node --cpu-prof): self and inclusive time by function, and self time by
 * area (filemirror's src/ and routes/, fastify, pino, node internals, GC...).
 * Usage: node dist/bench/cpuprofile.js <file.cpuprofile> [top=30]
 */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

interface CallFrame {
  functionName: string
  url: string
  lineNumber: number
  columnNumber: number
}
interface ProfileNode {
  id: number
  callFrame: CallFrame
  children?: number[]
}
interface CpuProfile {
  nodes: ProfileNode[]
  startTime: number
  endTime: number
  samples: number[]
  timeDeltas: number[]
}

export interface FunctionTime {
  key: string
  area: string
  selfMs: number
  totalMs: number
}

export interface ProfileSummary {
  totalMs: number
  /** Sampled time that was not idle. */
  busyMs: number
  functions: FunctionTime[]
  areas: Array<{ area: string; selfMs: number }>
  /** Busy time by what it was for, from whole stacks (see subsystemOf). */
  subsystems: Array<{ subsystem: string; ms: number }>
}

/** Subsystems that own everything beneath them wherever they appear on the stack (a log line's fs.write is logging). */
const OWNERS: Array<[string, RegExp]> = [
  ['logging (pino, sonic-boom, Fastify request logs)', /node_modules\/(pino|sonic-boom|pino-std-serializers)\/|fastify\/lib\/(logger|log-controller)/],
  ['event stream (src/http/event-stream)', /dist\/src\/http\/event-stream\.js/],
  ['metrics (prom-client, src/http/metrics)', /node_modules\/prom-client\/|dist\/src\/http\/metrics\.js/],
  ['validation (zod)', /node_modules\/zod\//],
]
/** Otherwise the frame closest to the leaf that matches decides. */
const NEAREST: Array<[string, RegExp]> = [
  ['socket writes (node:net, streams, http outgoing)', /^node:(net|internal\/stream_base_commons|_http_outgoing|internal\/streams)/],
  ['HTTP parsing (node:_http_*)', /^node:(_http_common|_http_incoming|_http_server)/],
  ['file I/O (node:fs, src/engine/replica-file)', /^node:(fs|internal\/fs)|dist\/src\/engine\/replica-file\.js/],
  ['Fastify, find-my-way', /node_modules\/(fastify|find-my-way|avvio|@fastify)\//],
  ['filemirror engine and routes', /dist\/(src|routes)\//],
  ['start-up (module loading)', /^node:internal\/modules|^node:internal\/(main|bootstrap)/],
]

function subsystemOf(stack: CallFrame[]): string {
  const leaf = stack[0]
  if (leaf.functionName === '(garbage collector)') return '(gc)'
  if (leaf.functionName === '(program)') return '(program: native, unattributed)'
  for (const [name, re] of OWNERS) if (stack.some((f) => re.test(f.url))) return name
  for (const f of stack) for (const [name, re] of NEAREST) if (re.test(f.url)) return name
  return 'other'
}

/** Which part of the process a frame belongs to. */
export function areaOf(frame: CallFrame): string {
  const { url, functionName } = frame
  if (!url) {
    if (functionName === '(idle)') return '(idle)'
    if (functionName === '(garbage collector)') return '(gc)'
    if (functionName === '(program)') return '(program: native, unattributed)'
    return '(native)'
  }
  if (url.startsWith('node:')) {
    const m = /^node:(?:internal\/)?([^/]+)/.exec(url)
    return `node:${m?.[1] ?? url}`
  }
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)
  if (nm) return nm[1]
  const own = /\/dist\/((?:src|routes|bench)\/[^/]+)\.js/.exec(url)
  if (own) return `filemirror ${own[1]}`
  return url
}

function keyOf(frame: CallFrame): string {
  const file = frame.url.replace(/^file:\/\/.*?\/(node_modules|dist)\//, '$1/').replace(/^node:internal\//, 'node:')
  return `${frame.functionName || '(anonymous)'} ${file ? `${file}:${frame.lineNumber + 1}` : ''}`.trim()
}

export function summarize(profile: CpuProfile): ProfileSummary {
  const byId = new Map<number, ProfileNode>()
  const parent = new Map<number, number>()
  for (const n of profile.nodes) byId.set(n.id, n)
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const self = new Map<string, number>()
  const total = new Map<string, number>()
  const areaSelf = new Map<string, number>()
  const areaByKey = new Map<string, string>()
  const subsystems = new Map<string, number>()
  let totalUs = 0
  let idleUs = 0
  for (let i = 0; i < profile.samples.length; i++) {
    // timeDeltas[i] is the time before sample i; attribute the following delta to this sample.
    const dt = profile.timeDeltas[i + 1] ?? 0
    if (dt <= 0) continue
    totalUs += dt
    const leaf = byId.get(profile.samples[i])!
    const leafKey = keyOf(leaf.callFrame)
    const area = areaOf(leaf.callFrame)
    areaByKey.set(leafKey, area)
    if (area === '(idle)') idleUs += dt
    self.set(leafKey, (self.get(leafKey) ?? 0) + dt)
    areaSelf.set(area, (areaSelf.get(area) ?? 0) + dt)
    const seen = new Set<string>()
    const stack: CallFrame[] = []
    for (let id: number | undefined = leaf.id; id !== undefined; id = parent.get(id)) {
      const frame = byId.get(id)!.callFrame
      stack.push(frame)
      const key = keyOf(frame)
      if (seen.has(key)) continue
      seen.add(key)
      areaByKey.set(key, areaOf(frame))
      total.set(key, (total.get(key) ?? 0) + dt)
    }
    if (area !== '(idle)') {
      const sub = subsystemOf(stack)
      subsystems.set(sub, (subsystems.get(sub) ?? 0) + dt)
    }
  }
  const functions = [...total.keys()].map((key) => ({ key, area: areaByKey.get(key) ?? '?', selfMs: (self.get(key) ?? 0) / 1000, totalMs: (total.get(key) ?? 0) / 1000 }))
  return {
    totalMs: totalUs / 1000,
    busyMs: (totalUs - idleUs) / 1000,
    functions,
    areas: [...areaSelf].map(([area, us]) => ({ area, selfMs: us / 1000 })).sort((a, b) => b.selfMs - a.selfMs),
    subsystems: [...subsystems].map(([subsystem, us]) => ({ subsystem, ms: us / 1000 })).sort((a, b) => b.ms - a.ms),
  }
}

/** Markdown tables: areas by self time, top functions by self time, top filemirror functions by inclusive time. */
export function formatSummary(s: ProfileSummary, top = 30): string {
  const pct = (ms: number) => `${((ms / s.busyMs) * 100).toFixed(1)}%`
  const lines = [`Sampled ${(s.totalMs / 1000).toFixed(1)} s, busy (not idle) ${(s.busyMs / 1000).toFixed(1)} s; percentages are of busy time.`, '']
  lines.push('| what the busy time was for (whole stacks) | time | % busy |', '|---|---|---|')
  for (const x of s.subsystems) lines.push(`| ${x.subsystem} | ${x.ms.toFixed(0)} ms | ${pct(x.ms)} |`)
  lines.push('', '| area (self time of leaf frames) | self | % busy |', '|---|---|---|')
  for (const a of s.areas.filter((a) => a.area !== '(idle)').slice(0, 20)) lines.push(`| ${a.area} | ${a.selfMs.toFixed(0)} ms | ${pct(a.selfMs)} |`)
  lines.push('', '| function (self time) | area | self | % busy |', '|---|---|---|---|')
  for (const f of [...s.functions].filter((f) => f.area !== '(idle)').sort((a, b) => b.selfMs - a.selfMs).slice(0, top)) lines.push(`| \`${f.key}\` | ${f.area} | ${f.selfMs.toFixed(0)} ms | ${pct(f.selfMs)} |`)
  lines.push('', '| function (inclusive time) | area | total | % busy |', '|---|---|---|---|')
  const interesting = s.functions.filter((f) => /^filemirror|^fastify|^pino|^@fastify|^node:(fs|http|_http|stream|net)/.test(f.area) || f.area.startsWith('node:internal'))
  for (const f of interesting.sort((a, b) => b.totalMs - a.totalMs).slice(0, top)) lines.push(`| \`${f.key}\` | ${f.area} | ${f.totalMs.toFixed(0)} ms | ${pct(f.totalMs)} |`)
  return lines.join('\n')
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [file, topArg] = process.argv.slice(2)
  if (!file) {
    console.error('usage: node dist/bench/cpuprofile.js <file.cpuprofile> [top]')
    process.exit(2)
  }
  console.log(formatSummary(summarize(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile), Number(topArg ?? 30)))
}
