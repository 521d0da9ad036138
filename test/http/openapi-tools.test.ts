// openapi.yaml against three tools of others (tools/openapi-check, with dependencies of its own:
// openapi-typescript needs TypeScript 5's JavaScript API, the project is on TypeScript 7):
//  - `swagger-cli validate` (the OpenAPI 3.1 schema, $refs resolved);
//  - `redocly lint` with tools/openapi-check/redocly.yaml (the recommended rules, each an error; the
//    few places they do not fit are listed with reasons in .redocly.lint-ignore.yaml);
//  - types generated with openapi-typescript (generate-types.mjs) compile, with the tool folder's
//    TypeScript 5 and with the project's TypeScript 7, together with a file using them.
// Skipped, saying why, when tools/openapi-check/node_modules is missing (`npm ci --prefix
// tools/openapi-check` installs it; .ci/run does).
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import t from 'tap'

const run = promisify(execFile)
const TOOLS = fileURLToPath(new URL('../../tools/openapi-check/', import.meta.url))
const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const bin = (name: string) => join(TOOLS, 'node_modules', '.bin', name)

const missing = ['swagger-cli', 'redocly', 'openapi-typescript', 'tsc'].filter((name) => !existsSync(bin(name)))
const skip = missing.length ? `tools/openapi-check/node_modules lacks ${missing.join(', ')}: run npm ci --prefix tools/openapi-check` : false
if (skip) console.log(`# skipping the openapi tool checks: ${skip}`)

/**
 * The tools run as plain node programs: without tap's loaders (NODE_OPTIONS carries tsx and tap's
 * own imports), and without telemetry or an update check from redocly (no network here but the
 * package registries).
 */
const env: NodeJS.ProcessEnv = { REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true', NO_COLOR: '1' }
for (const [key, value] of Object.entries(process.env)) {
  if (key !== 'NODE_OPTIONS' && !/^(TAP|_TAPJS)/.test(key) && !(key in env)) env[key] = value
}

/** Runs a command in the tool folder; resolves with its output whatever its exit code. */
async function tool(file: string, args: string[], cwd = TOOLS): Promise<{ code: number; output: string }> {
  try {
    const { stdout, stderr } = await run(file, args, { cwd, env, timeout: 120_000, maxBuffer: 16 << 20 })
    return { code: 0, output: stdout + stderr }
  } catch (err) {
    const e = err as { code?: number | string; stdout?: string; stderr?: string; message: string }
    return { code: typeof e.code === 'number' ? e.code : 1, output: `${e.stdout ?? ''}${e.stderr ?? ''}` || e.message }
  }
}

t.test('openapi.yaml passes swagger-cli validate', { skip }, async (t) => {
  const { code, output } = await tool(bin('swagger-cli'), ['validate', '../../openapi.yaml'])
  t.equal(code, 0, 'swagger-cli exits 0', { output })
  t.match(output, /openapi\.yaml is valid/, 'and says the document is valid')
})

t.test('openapi.yaml passes redocly lint (recommended rules, each an error)', { skip }, async (t) => {
  const { code, output } = await tool(bin('redocly'), ['lint', '--config', 'redocly.yaml', '--format', 'stylish', '../../openapi.yaml'])
  t.equal(code, 0, 'redocly lint exits 0', { output })
  t.notMatch(output, /\b(error|warning)\b.*\brule\b|[1-9]\d* (errors?|warnings?)\b/i, 'no error and no warning', { output })
})

t.test('types generated with openapi-typescript compile (TypeScript 5 and 7)', { skip }, async (t) => {
  const generated = await tool(process.execPath, ['generate-types.mjs'])
  t.equal(generated.code, 0, 'openapi-typescript generated generated/openapi.d.ts', { output: generated.output })
  t.match(generated.output, /type aliases: .*JsonValue/, 'the recursive JsonValue is emitted as a type alias')
  const ts5 = await tool(bin('tsc'), ['-p', 'tsconfig.json'])
  t.equal(ts5.code, 0, 'they compile with TypeScript 5 (tools/openapi-check), with a file using them', { output: ts5.output })
  t.match((await tool(bin('tsc'), ['--version'])).output, /^Version 5\./, 'that is TypeScript 5')
  // typescript/lib/tsc.js, by path: its bin (an ES module without an extension) does not load under tap's require hook.
  const ts7 = await tool(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'lib', 'tsc.js'), '-p', join(TOOLS, 'tsconfig.json')], ROOT)
  t.equal(ts7.code, 0, "and with the project's own TypeScript", { output: ts7.output })
})
