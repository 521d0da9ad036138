// README.md's table of settings against src/config.ts (the source of truth): the same settings, each
// with the same default.
import { readFile } from 'node:fs/promises'
import t from 'tap'
import { configSchema, loadConfig } from '../src/config.js'

interface Row {
  variable: string
  /** The Default cell as written. */
  cell: string
  /** The value the cell stands for: its first code span, with `a^b` worked out. */
  value: string
}

/** The rows of the first table under "## Configuration". */
function settingsTable(readme: string): Row[] {
  const lines = readme.split('\n')
  const section = lines.findIndex((line) => line.trim() === '## Configuration')
  if (section < 0) throw new Error('README.md has no "## Configuration" section')
  const header = lines.findIndex((line, i) => i > section && /^\|\s*Variable\s*\|\s*Default\s*\|/.test(line))
  if (header < 0) throw new Error('no | Variable | Default | ... | table under "## Configuration"')
  const rows: Row[] = []
  for (const line of lines.slice(header + 2)) {
    if (!line.startsWith('|')) break
    const cells = line.split(/(?<!\\)\|/).slice(1, -1).map((cell) => cell.trim())
    const variable = /^`([A-Z0-9_]+)`$/.exec(cells[0] ?? '')
    if (!variable) throw new Error(`a row whose first cell is not a \`VARIABLE\`: ${line}`)
    const cell = cells[1] ?? ''
    const code = /`([^`]*)`/.exec(cell)?.[1]
    const power = code === undefined ? null : /^(\d+)\^(\d+)$/.exec(code)
    rows.push({ variable: variable[1], cell, value: power ? String(Number(power[1]) ** Number(power[2])) : (code ?? cell) })
  }
  return rows
}

/** Settings with no default in the schema whose effective default the README names: how to check it. */
const DERIVED: Record<string, { readme: string; holds: () => boolean }> = {
  // Unset, the only storage root is DATA_DIR.
  STORAGE_ROOTS: {
    readme: 'DATA_DIR',
    holds: () => {
      const config = loadConfig({})
      return config.storageRoots.length === 1 && config.storageRoots[0] === config.dataDir
    },
  },
}

const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8')
const rows = settingsTable(readme)
const defaults: Record<string, unknown> = configSchema.parse({})
const settings = Object.keys(configSchema.shape)

t.test('the README lists every setting of the config schema once, and nothing else', async (t) => {
  t.ok(rows.length > 0, `the table has rows (${rows.length})`)
  const listed = rows.map((r) => r.variable)
  t.same(listed.filter((v, i) => listed.indexOf(v) !== i), [], 'no setting is listed twice')
  t.same(settings.filter((s) => !listed.includes(s)), [], 'every setting in src/config.ts is in the README table')
  t.same(listed.filter((v) => !settings.includes(v)), [], 'every setting in the README table is in src/config.ts')
})

t.test('each setting has the same default in the README as in the schema', async (t) => {
  for (const row of rows) {
    if (!settings.includes(row.variable)) continue
    const value = defaults[row.variable]
    const derived = DERIVED[row.variable]
    if (value !== undefined) t.equal(row.value, String(value), `${row.variable}: the README says ${row.cell}, the schema ${String(value)}`)
    else if (derived) {
      t.equal(row.value, derived.readme, `${row.variable}: the README names its effective default`)
      t.ok(derived.holds(), `${row.variable}: unset, it is ${derived.readme}`)
    } else t.equal(row.value, 'unset', `${row.variable}: no default in the schema, so the README says unset`)
  }
})

t.test('the table is found and read as it is written', async (t) => {
  const table = settingsTable('# x\n\n## Configuration\n\n| Variable | Default | Meaning |\n|---|---|---|\n| `A` | `2^10` (1 KiB) | a \\| b |\n| `B` | unset | |\n\nafter\n| `C` | `1` | not in the table |\n')
  t.same(table, [
    { variable: 'A', cell: '`2^10` (1 KiB)', value: '1024' },
    { variable: 'B', cell: 'unset', value: 'unset' },
  ])
  t.throws(() => settingsTable('## Configuration\n\n| Variable | Default | Meaning |\n|---|---|---|\n| A | 1 | x |\n'), /not a `VARIABLE`/, 'a malformed row is an error, not skipped')
  t.throws(() => settingsTable('## Other\n'), /no "## Configuration"/)
})
