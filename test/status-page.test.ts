// The status page at `/`, in headless Chromium: it lists volumes and replicas with their dirty and
// cached ranges as bars, and a write made while it is open appears live from the event stream.
// Skipped when Debian's chromium is not installed. Leaves test-artifacts/status-page.png.
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { createVolume, listen, makeApp, pattern, putData } from './helpers/app.js'

const CHROMIUM = '/usr/bin/chromium'
const ARTIFACTS = fileURLToPath(new URL('../test-artifacts/', import.meta.url))
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

t.test('the page serves its files with a strict CSP', async (t) => {
  const { app } = await makeApp(t)
  const page = await app.inject({ method: 'GET', url: '/' })
  t.equal(page.statusCode, 200)
  t.match(page.headers['content-type'], /^text\/html/)
  t.match(page.headers['content-security-policy'], /default-src 'none'; script-src 'self'/, 'only same-origin scripts')
  t.match(page.body, /<script src="\/status\.js" defer><\/script>/)
  t.notMatch(page.body, /https?:\/\//, 'nothing from elsewhere')
  const script = await app.inject({ method: 'GET', url: '/status.js' })
  t.match(script.headers['content-type'], /^text\/javascript/)
  t.match(script.body, /new EventSource\('\/events'\)/, 'the script follows the event stream')
  t.match((await app.inject({ method: 'GET', url: '/status.css' })).headers['content-type'], /^text\/css/)
})

t.test('in Chromium: volumes and range bars, and a write appearing live', { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed` }, async (t) => {
  const { chromium } = await import('playwright-core')
  const { app } = await makeApp(t)
  const base = await listen(t, app)
  await createVolume(t, app, 'archive', [
    { id: 'ssd', path: 'archive/ssd.bin' },
    { id: 'hdd', path: 'archive/hdd.bin', mode: 'async' },
  ])
  await createVolume(t, app, 'scratch', [
    { id: 'nvme', path: 'scratch/nvme.bin' },
    // Throttled: what is written stays dirty on this replica while the page is open.
    { id: 'remote', path: 'scratch/remote.bin', mode: 'async', maxBytesPerSecond: 2048 },
  ])
  t.equal((await putData(app, 'archive', pattern(1 << 20))).statusCode >= 200, true, 'archive filled')
  for (const start of [0, 200_000, 600_000]) {
    await app.inject({ method: 'GET', url: '/volumes/archive/data', headers: { range: `bytes=${start}-${start + 99_999}` } })
  }
  await putData(app, 'scratch', pattern(256 << 10, 1))

  const profile = await mkdtemp(join(tmpdir(), 'filemirror-chromium-'))
  t.teardown(() => rm(profile, { recursive: true, force: true }))
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 900 },
  })
  t.teardown(() => context.close())
  const page = context.pages()[0] ?? (await context.newPage())
  const problems: string[] = []
  page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`))
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console: ${message.text()}`)
  })

  await page.goto(`${base}/`)
  await page.waitForSelector('#connection[data-state="live"]', { timeout: 10_000 })
  await page.waitForSelector('article[data-volume="scratch"] .replica[data-replica="remote"]', { timeout: 10_000 })
  t.same(await page.$$eval('article.volume', (cards) => cards.map((c) => c.getAttribute('data-volume'))), ['archive', 'scratch'], 'both volumes, in order')
  t.same(
    await page.$$eval('article[data-volume="archive"] .replica', (rows) => rows.map((r) => [r.getAttribute('data-replica'), r.getAttribute('data-state')])),
    [
      ['ssd', 'in-sync'],
      ['hdd', 'in-sync'],
    ],
    'archive: its replicas and their states',
  )
  const cachedSegments = await page.$$eval('article[data-volume="archive"] .replica[data-replica="ssd"] .bar.cached .seg', (segs) =>
    segs.map((s) => [Number(s.getAttribute('data-start')), Number(s.getAttribute('data-end')), (s as HTMLElement).style.left, (s as HTMLElement).style.width]),
  )
  t.same(
    cachedSegments.map((s) => s.slice(0, 2)),
    [
      [0, 100_000],
      [200_000, 300_000],
      [600_000, 700_000],
    ],
    'ssd: one cached range per read',
  )
  t.ok(Math.abs(parseFloat(cachedSegments[2][2] as string) - (600_000 / (1 << 20)) * 100) < 0.01, `drawn at its offset over the volume size (${cachedSegments[2][2]})`)
  t.ok(Math.abs(parseFloat(cachedSegments[2][3] as string) - (100_000 / (1 << 20)) * 100) < 0.01, `as wide as its share of it (${cachedSegments[2][3]})`)
  const remote = 'article[data-volume="scratch"] .replica[data-replica="remote"]'
  t.equal(await page.getAttribute(remote, 'data-state'), 'behind', 'the throttled replica is behind')
  t.ok((await page.$$(`${remote} .bar.dirty .seg`)).length >= 1, 'and its dirty bar has a segment')

  // A write made while the page is open shows up live, first started then done on the sync replica.
  const res = await putData(app, 'archive', pattern(4096, 7), { 'content-range': 'bytes 8192-12287/*' })
  const group = res.headers['operation-id'] as string
  t.ok(group, 'the write has an operation group')
  const row = (replica: string) => `#operations tr[data-group="${group}"][data-replica="${replica}"]`
  await page.waitForSelector(`${row('ssd')}[data-status="done"]`, { timeout: 10_000 })
  await page.waitForSelector(`${row('hdd')}[data-status="done"]`, { timeout: 10_000 })
  const cells = await page.$$eval(`${row('ssd')} td`, (tds) => tds.map((td) => td.textContent))
  t.equal(cells[1], 'archive', 'the row names the volume')
  t.equal(cells[3], 'write', 'the kind')
  t.equal(cells[4], 'ssd (sync)', 'the replica and its mode')
  t.equal(cells[5], 'done', 'its status')
  t.same(cells.slice(6, 9), ['8192', '4096', '4096'], 'offset, length, bytes')
  t.match(await page.textContent('#last-event'), new RegExp(`^${app.events.epoch}-\\d+$`), 'the last event id is shown')
  await page.waitForSelector('#activity li[data-type="idle"]', { timeout: 10_000 })

  // The throttled volume: a new write makes its dirty bar grow, refreshed from the event.
  const before = await page.$$eval(`${remote} .bar.dirty .seg`, (segs) => segs.map((s) => Number(s.getAttribute('data-end'))))
  await putData(app, 'scratch', pattern(64 << 10, 2), { 'content-range': `bytes ${512 << 10}-${(576 << 10) - 1}/*` })
  await page.waitForFunction(
    (selector) => [...document.querySelectorAll(selector)].some((s) => Number(s.getAttribute('data-end')) === 576 << 10),
    `${remote} .bar.dirty .seg`,
    { timeout: 10_000 },
  )
  t.ok(Math.max(...before) < 576 << 10, 'the dirty bar now reaches the new write')

  await mkdir(ARTIFACTS, { recursive: true })
  const shot = join(ARTIFACTS, 'status-page.png')
  await page.screenshot({ path: shot, fullPage: true })
  t.ok(existsSync(shot), `screenshot kept at ${shot}`)
  t.same(problems, [], 'no script errors and no CSP violations')
})
