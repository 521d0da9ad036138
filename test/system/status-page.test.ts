// The status page at `/`, in headless Chromium, as an operator uses it: volumes needing attention
// first (failed, read-only, degraded, behind; then by name), each replica with its backend, label,
// throttle, lag and ETA to in-sync (drain measured from the page's own looks, public/eta.js), range
// bars, reads summarised as rates, writes and scrubs live from the event stream, empty sections that
// say what to do, and actions (resync, scrub, add and remove a replica) confirmed in a dialog, showing
// the API's problem when it refuses. With AUTH_TOKEN set, it signs in (the form, or a #token= link),
// reads on the session cookie and acts with the token kept in the tab (sessionStorage), asking for it
// when it has none. Skipped when Debian's chromium is not installed. Leaves screenshots in
// test-artifacts/: status-page.png, status-page-operator.png (the attention order),
// status-page-catching-up.png (lag and ETA of a replica throttled to 64 KiB/s),
// status-page-refused-removal.png (the 409 problem), status-page-resync.png (a confirmed resync),
// status-page-add-replica-refused.png (the form, and the 400 of a path outside the storage roots),
// status-page-empty.png and status-page-sign-in.png.
import { existsSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import type { Page } from 'playwright-core'
import { openLocalFile } from '../../src/engine/replica-file.js'
import { createVolume, json, listen, makeApp, putData, waitInSync } from '../helpers/app.js'
import { FaultInjector } from '../helpers/fault-injecting-file.js'
import { pattern } from '../helpers/pattern.js'
import { scratch } from '../helpers/scratch.js'

const CHROMIUM = '/usr/bin/chromium'
const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts', import.meta.url))
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
  t.match(page.body, /<script src="\/status\.js" defer><\/script>/, 'the script')
  t.notMatch(page.body, /<script(?![^>]*\bsrc=)[^>]*>/, 'no inline script')
  t.notMatch(page.body, /\sstyle=|\son[a-z]+=/i, 'no inline style or handler')
  t.notMatch(page.body, /https?:\/\//, 'nothing from elsewhere')
  const script = await app.inject({ method: 'GET', url: '/status.js' })
  t.match(script.headers['content-type'], /^text\/javascript/)
  t.match(script.body, /new EventSource\('\/events'\)/, 'the script follows the event stream')
  t.match(script.body, /import\('\/eta\.js'\)/, 'and imports the ETA module')
  t.notMatch(script.body, /innerHTML|insertAdjacentHTML|document\.write|eval\(/, 'it never turns text into HTML or code')
  const eta = await app.inject({ method: 'GET', url: '/eta.js' })
  t.equal(eta.statusCode, 200, '/eta.js is served')
  t.match(eta.headers['content-type'], /^text\/javascript/)
  t.match(eta.headers['content-security-policy'], /default-src 'none'/)
  t.match(eta.body, /export class LagTracker/)
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

  const profile = await scratch(t, 'filemirror-chromium-')
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
  t.same(await page.$$eval('article.volume', (cards) => cards.map((c) => c.getAttribute('data-volume'))), ['scratch', 'archive'], 'both volumes, the one behind first')
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

  // Reads made while the page is open are counted, not listed.
  for (let i = 0; i < 12; i++) await app.inject({ method: 'GET', url: '/volumes/archive/data', headers: { range: `bytes=${i * 4096}-${i * 4096 + 4095}` } })
  await page.waitForSelector('#reads tr[data-volume="archive"][data-reads="12"]', { timeout: 10_000 })
  t.ok(Number(await page.getAttribute('#reads tr[data-volume="archive"]', 'data-reads-per-second')) > 0, 'reads/s shown for the volume')
  t.equal(Number(await page.getAttribute('#reads tr[data-volume="archive"]', 'data-bytes-per-second')) > 0, true, 'and bytes/s')
  t.equal((await page.$$('#operations tr[data-kind="read"]')).length, 0, 'no read in the operations table')
  t.notOk(await page.isVisible('#no-reads'), 'the reads section no longer says it is empty')

  await mkdir(ARTIFACTS, { recursive: true })
  const shot = join(ARTIFACTS, 'status-page.png')
  await page.screenshot({ path: shot, fullPage: true })
  t.ok(existsSync(shot), `screenshot kept at ${shot}`)
  t.same(problems, [], 'no script errors and no CSP violations')
})

const SKIP = existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed`

/**
 * A Chromium page of its own profile, closed at the end of the test; `problems` collects script
 * errors, CSP violations and console errors but those of the statuses listed (a refused action's
 * 4xx shows in the console as a failed resource).
 */
async function browse(t: Test, expectedStatuses: number[] = []): Promise<{ page: Page; problems: string[] }> {
  const { chromium } = await import('playwright-core')
  const profile = await scratch(t, 'filemirror-chromium-')
  const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1280, height: 900 } })
  t.teardown(() => context.close())
  const page = context.pages()[0] ?? (await context.newPage())
  const problems: string[] = []
  const expected = new RegExp(`status of (${expectedStatuses.join('|') || 'none'})\\b`)
  page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`))
  page.on('console', (message) => {
    if (message.type() === 'error' && !expected.test(message.text())) problems.push(`console: ${message.text()}`)
  })
  return { page, problems }
}

async function shoot(t: Test, page: Page, name: string, fullPage = true): Promise<void> {
  await mkdir(ARTIFACTS, { recursive: true })
  const file = join(ARTIFACTS, name)
  await page.screenshot({ path: file, fullPage })
  t.ok(existsSync(file), `screenshot kept at ${file}`)
}

const cardOrder = (page: Page) => page.$$eval('article.volume', (cards) => cards.map((c) => c.getAttribute('data-volume')))

/** Opens the action dialog with a card's button and checks the request it will send. */
async function openAction(t: Test, page: Page, button: string, request: string | RegExp): Promise<void> {
  await page.click(button)
  await page.waitForSelector('dialog#action[open]', { timeout: 5000 })
  t.match(await page.textContent('#action-request'), request, `the dialog says what it sends: ${String(request)}`)
}

t.test("in Chromium: the operator's view: attention order, lag and ETA of a throttled replica catching up, a refused removal, a confirmed resync, adding a replica, a scrub", { skip: SKIP }, async (t) => {
  const faults = new FaultInjector(openLocalFile)
  const { app, dataDir } = await makeApp(t, {}, { openFile: faults.opener })
  const base = await listen(t, app)
  // alpha: healthy (its async replica unthrottled, with a label).
  await createVolume(t, app, 'alpha', [
    { id: 'ssd', path: 'alpha/ssd.bin' },
    { id: 'hdd', path: 'alpha/hdd.bin', mode: 'async', label: { rack: 2, tags: ['ssd'] } },
  ])
  await putData(app, 'alpha', pattern(256 << 10, 1))
  await waitInSync(app, 'alpha')
  // gamma: degraded, its first replica failed by a read error.
  await createVolume(t, app, 'gamma', [
    { id: 'a', path: 'gamma/a.bin' },
    { id: 'b', path: 'gamma/b.bin' },
  ])
  await putData(app, 'gamma', pattern(64 << 10, 2))
  const gammaA = join(dataDir, 'gamma/a.bin')
  faults.set(gammaA, { failReads: 'EIO' })
  t.equal((await app.inject({ url: '/volumes/gamma/data', headers: { range: 'bytes=0-99' } })).statusCode, 206, 'gamma read from b')
  t.equal(json(await app.inject({ url: '/volumes/gamma' })).state, 'degraded', 'gamma is degraded')
  // beta: 2 MiB behind on a replica throttled to 64 KiB/s (32 s to catch up, a MiB every 16 s).
  const betaSpec = (maxBytesPerSecond: number | null) => ({
    replicas: [
      { id: 'fast', path: 'beta/fast.bin' },
      { id: 'slow', path: 'beta/slow.bin', mode: 'async', maxBytesPerSecond },
    ],
  })
  t.equal((await app.inject({ method: 'PUT', url: '/volumes/beta', payload: betaSpec(64 << 10) })).statusCode, 201, 'beta created')
  t.ok((await putData(app, 'beta', pattern(2 << 20, 3))).statusCode < 300, 'beta written: 2 MiB')

  const { page, problems } = await browse(t, [400, 409])
  await page.goto(`${base}/`)
  await page.waitForSelector('#connection[data-state="live"]', { timeout: 10_000 })
  await page.waitForSelector('article.volume[data-volume="alpha"]', { timeout: 10_000 })
  await page.waitForFunction(() => document.querySelectorAll('article.volume').length === 3, undefined, { timeout: 10_000 })

  // The order: degraded, behind, fine; not by name.
  t.same(await cardOrder(page), ['gamma', 'beta', 'alpha'], 'degraded first, then behind, then in sync')
  t.same(await page.$$eval('article.volume', (cards) => cards.map((c) => c.getAttribute('data-attention'))), ['2', '3', '4'], 'their attention ranks')
  t.match(await page.textContent('article[data-volume="gamma"] .attention'), /degraded: a failed \(EIO\)\. Resync it/, 'gamma says what is wrong and what to do')
  t.match(await page.textContent('article[data-volume="beta"] .attention'), /behind: slow/, 'beta says which replica is behind')
  t.equal(await page.$('article[data-volume="alpha"] .attention'), null, 'alpha has nothing to say')

  // Each replica: backend, label, throttle.
  const replica = (volume: string, id: string) => `article[data-volume="${volume}"] .replica[data-replica="${id}"]`
  t.equal(await page.textContent(`${replica('alpha', 'hdd')} .backend`), 'alpha/hdd.bin', 'the path as configured')
  t.equal(await page.getAttribute(`${replica('alpha', 'hdd')} .backend`, 'data-backend'), 'path')
  t.equal(await page.textContent(`${replica('alpha', 'hdd')} .label code`), '{"rack":2,"tags":["ssd"]}', 'the label')
  t.equal(await page.$(`${replica('alpha', 'ssd')} .label`), null, 'no label line without one')
  t.equal(await page.textContent(`${replica('beta', 'slow')} .throttle`), 'throttle 64.0 KiB/s', 'the throttle')
  t.equal(await page.textContent(`${replica('beta', 'fast')} .throttle`), 'unthrottled')
  t.match(await page.textContent(`${replica('gamma', 'a')} .error`), /^EIO: /, 'the failed replica shows its error')
  t.equal(await page.textContent(`${replica('alpha', 'ssd')} .lag`), 'in sync')
  await shoot(t, page, 'status-page-operator.png')

  // Lag and ETA while beta's slow replica catches up: it is copied a MiB at a time at its throttle,
  // so its lag stays 2 MiB for 16 s and the ETA counts down meanwhile.
  const slow = replica('beta', 'slow')
  await page.waitForSelector(`${slow}[data-eta-basis="throttle"][data-eta-seconds]`, { timeout: 10_000 })
  const figures = async () => ({
    eta: Number(await page.getAttribute(slow, 'data-eta-seconds')),
    dirty: Number(await page.getAttribute(slow, 'data-dirty-bytes')),
    rate: Number(await page.getAttribute(slow, 'data-eta-rate')),
  })
  const first = await figures()
  t.equal(first.dirty, 2 << 20, 'lags the 2 MiB written')
  t.equal(first.rate, 64 << 10, 'copied at its throttle')
  t.ok(first.eta > 10 && first.eta <= 32, `in sync in ${first.eta} s, at most 2 MiB over 64 KiB/s`)
  t.match(await page.textContent(`${slow} .lag`), /^lag 2\.00 MiB · in sync in \d+s \(at its throttle, 64\.0 KiB\/s\)$/, 'the lag line')
  t.match(await page.textContent('article[data-volume="beta"] .sync'), /^in sync in \d+s$/, "the volume's ETA in its header")
  t.ok((await page.$$(`${slow} .bar.dirty .seg`)).length >= 1, 'and its dirty bar')
  await page.waitForFunction(([selector, before]) => Number(document.querySelector(selector)?.getAttribute('data-eta-seconds')) <= before - 1.5, [slow, first.eta] as const, { timeout: 5000 })
  const later = await figures()
  t.ok(later.eta < first.eta && later.dirty === first.dirty, `the ETA counts down (${first.eta} s, then ${later.eta} s) while the lag waits for its piece`)
  await shoot(t, page, 'status-page-catching-up.png')

  // Removing beta's fast replica while slow lacks bytes: confirmed, then refused with the API's problem.
  await openAction(t, page, `${replica('beta', 'fast')} button[data-action="remove"]`, 'DELETE /volumes/beta/replicas/fast')
  t.match(await page.textContent('#action-text'), /refuses \(409\)/, 'the dialog says when the server refuses')
  await page.click('#action-confirm')
  await page.waitForSelector('#action-problem[data-status="409"]:not([hidden])', { timeout: 10_000 })
  t.match(await page.textContent('#action-problem .problem-title'), /^409 Conflict$/, 'the problem: its status and title')
  const detail = (await page.textContent('#action-problem .problem-detail')) ?? ''
  t.match(detail, /fast/, `and its detail: ${detail}`)
  t.ok(await page.isVisible('dialog#action[open]'), 'the dialog stays open with it')
  await shoot(t, page, 'status-page-refused-removal.png', false)
  await page.click('#action-cancel')
  t.same(json(await app.inject({ url: '/volumes/beta' })).replicas.map((r: { id: string }) => r.id), ['fast', 'slow'], 'nothing was removed')

  // Unthrottled through the API: slow catches up, beta moves down.
  t.equal((await app.inject({ method: 'PUT', url: '/volumes/beta', payload: betaSpec(null) })).statusCode, 200, 'beta unthrottled in place')
  await page.waitForSelector(`${slow}[data-state="in-sync"][data-dirty-bytes="0"]`, { timeout: 15_000 })
  await page.waitForSelector('article[data-volume="beta"][data-attention="4"] .sync[data-in-sync="true"]', { timeout: 5000 })
  t.equal(await page.textContent(`${slow} .throttle`), 'unthrottled', 'the new throttle shown')
  t.same(await cardOrder(page), ['gamma', 'alpha', 'beta'], 'beta in sync: after the degraded gamma, by name')

  // A confirmed resync of gamma's failed replica, its disk fine again.
  faults.clear(gammaA)
  await openAction(t, page, `${replica('gamma', 'a')} button[data-action="resync"]`, 'POST /volumes/gamma/replicas/a/resync')
  t.match(await page.textContent('#action-text'), /a is failed \(EIO: /, 'the dialog says the replica is failed, and why')
  await page.check('#field-full')
  t.equal(await page.textContent('#action-request'), 'POST /volumes/gamma/replicas/a/resync?full=true', 'the request follows the options')
  await page.uncheck('#field-full')
  await page.click('#action-confirm')
  await page.waitForSelector('dialog#action', { state: 'hidden', timeout: 10_000 })
  t.equal(await page.textContent('#notice'), 'resync of gamma/a started', 'the page says it started')
  await page.waitForSelector(`${replica('gamma', 'a')}[data-state="in-sync"]`, { timeout: 15_000 })
  await page.waitForSelector('article[data-volume="gamma"][data-state="ok"][data-attention="4"]', { timeout: 5000 })
  t.same(await cardOrder(page), ['alpha', 'beta', 'gamma'], 'all in sync: by name')
  await page.waitForSelector('#activity li[data-type="replicaState"]', { timeout: 5000 })
  await shoot(t, page, 'status-page-resync.png')

  // Adding a replica to alpha: the small form; a path outside the storage roots is refused (400), then one is added.
  await openAction(t, page, 'article[data-volume="alpha"] button[data-action="add-replica"]', 'PUT /volumes/alpha/replicas/{id} {"path":"","mode":"async"}')
  await page.fill('#field-id', 'extra')
  await page.fill('#field-path', 'http://node-b:8080/volumes/alpha/data')
  await page.fill('#field-tokenEnv', 'FILEMIRROR_REMOTE_B')
  t.equal(await page.textContent('#action-request'), 'PUT /volumes/alpha/replicas/extra {"url":"http://node-b:8080/volumes/alpha/data","mode":"async","tokenEnv":"FILEMIRROR_REMOTE_B"}', 'a URL is an HTTP replica')
  await page.fill('#field-tokenEnv', '')
  await page.fill('#field-path', 's3://backups/vols/alpha/')
  await page.fill('#field-endpoint', 'http://minio:9000')
  t.equal(await page.textContent('#action-request'), 'PUT /volumes/alpha/replicas/extra {"s3":{"bucket":"backups","prefix":"vols/alpha/","endpoint":"http://minio:9000","forcePathStyle":true},"mode":"async"}', 's3:// is an S3 replica, always async')
  await page.fill('#field-endpoint', '')
  await page.fill('#field-path', '../outside.bin')
  t.equal(await page.textContent('#action-request'), 'PUT /volumes/alpha/replicas/extra {"path":"../outside.bin","mode":"async"}', 'the request as typed')
  await page.click('#action-confirm')
  await page.waitForSelector('#action-problem[data-status="400"]:not([hidden])', { timeout: 10_000 })
  t.match(await page.textContent('#action-problem .problem-title'), /^400 Bad Request$/, 'refused: its problem shown')
  await shoot(t, page, 'status-page-add-replica-refused.png', false)
  await page.fill('#field-path', 'alpha/extra.bin')
  await page.selectOption('#field-mode', 'sync')
  await page.click('#action-confirm')
  await page.waitForSelector('dialog#action', { state: 'hidden', timeout: 10_000 })
  t.equal(await page.textContent('#notice'), 'replica extra added to alpha')
  await page.waitForSelector(`${replica('alpha', 'extra')}[data-state="in-sync"]`, { timeout: 15_000 })
  t.match(json(await app.inject({ url: '/volumes/alpha' })).replicas.find((r: { id: string }) => r.id === 'extra'), { path: 'alpha/extra.bin', mode: 'sync' }, 'the API has it')

  // A scrub of alpha, confirmed: it shows under Operations.
  await openAction(t, page, 'article[data-volume="alpha"] button[data-action="scrub"]', 'POST /volumes/alpha/scrub')
  await page.check('#field-repair')
  await page.click('#action-confirm')
  await page.waitForSelector('dialog#action', { state: 'hidden', timeout: 10_000 })
  t.match(await page.textContent('#notice'), /^scrub of alpha started \(operation group [0-9a-f]{8}\)$/)
  await page.waitForSelector('#operations tr[data-kind="scrub"][data-volume="alpha"][data-status="done"]', { timeout: 15_000 })
  t.pass('the scrub ran, live under Operations')

  t.same(problems, [], 'no script errors and no CSP violations')
})

t.test('in Chromium: an empty page says so, and what to do', { skip: SKIP }, async (t) => {
  const { app } = await makeApp(t)
  const base = await listen(t, app)
  const { page, problems } = await browse(t)
  await page.goto(`${base}/`)
  await page.waitForSelector('#connection[data-state="live"]', { timeout: 10_000 })
  await page.waitForFunction(() => /no volumes yet/.test(document.getElementById('no-volumes-text')?.textContent ?? ''), undefined, { timeout: 10_000 })
  t.equal(await page.textContent('#no-volumes-text'), 'no volumes yet: create one with PUT /volumes/{name}, for example', 'no volumes: how to create one')
  t.match(await page.textContent('#no-volumes pre'), new RegExp(`^curl -X PUT ${base}/volumes/demo -H 'Content-Type: application/json' -d '\\{"replicas": `), 'a command for this server')
  for (const [section, text] of [
    ['reads', /^no reads since this page opened/],
    ['operations', /^no operations since this page opened: writes and scrubs appear here/],
    ['activity', /^no replica state changes since this page opened$/],
  ] as const) {
    t.ok(await page.isVisible(`[data-empty="${section}"]`), `the ${section} section says it is empty`)
    t.match(await page.textContent(`[data-empty="${section}"]`), text)
  }
  t.notOk(await page.isVisible('#operations'), 'no empty operations table')
  t.notOk(await page.isVisible('#reads'), 'no empty reads table')
  await shoot(t, page, 'status-page-empty.png')

  // The first volume replaces the message.
  await createVolume(t, app, 'first', [{ id: 'only', path: 'first/only.bin' }])
  await page.waitForSelector('article.volume[data-volume="first"]', { timeout: 10_000 })
  t.notOk(await page.isVisible('#no-volumes'), 'the message goes once there is a volume')
  t.same(problems, [], 'no script errors and no CSP violations')
})

t.test('in Chromium with AUTH_TOKEN: signing in with the form or a #token= link, then live on the session cookie', { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed` }, async (t) => {
  const { chromium } = await import('playwright-core')
  const TOKEN = 'status-page-token/0123456789+abc='
  const auth = { authorization: `Bearer ${TOKEN}` }
  const { app } = await makeApp(t, { AUTH_TOKEN: TOKEN })
  const base = await listen(t, app)
  const created = await app.inject({
    method: 'PUT',
    url: '/volumes/secured',
    headers: auth,
    payload: { replicas: [{ id: 'ssd', path: 'secured/ssd.bin' }, { id: 'hdd', path: 'secured/hdd.bin', mode: 'async' }] },
  })
  t.equal(created.statusCode, 201, 'volume created with the bearer token')

  const profile = await scratch(t, 'filemirror-chromium-')
  const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1280, height: 900 } })
  t.teardown(() => context.close())
  const page = context.pages()[0] ?? (await context.newPage())
  const problems: string[] = []
  page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`))
  page.on('console', (message) => {
    // The 401s of the sign-in page are expected; anything else (a CSP violation, a script error) is not.
    if (message.type() === 'error' && !/status of 401/.test(message.text())) problems.push(`console: ${message.text()}`)
  })

  // Not signed in: the form, as the body of a 401.
  const first = await page.goto(`${base}/`)
  t.equal(first?.status(), 401, 'GET / without a session is a 401')
  t.equal(await page.title(), 'filemirror: sign in', 'the sign-in page')
  t.ok(await page.isVisible('form#login input[type="password"][name="token"]'), 'with a password field')
  await mkdir(ARTIFACTS, { recursive: true })
  await page.screenshot({ path: join(ARTIFACTS, 'status-page-sign-in.png') })

  // A wrong token: the form again, saying so.
  await page.fill('#token', 'not-the-token-at-all')
  const refused = page.waitForResponse((res) => res.url() === `${base}/session`)
  await page.click('button[type="submit"]')
  t.equal((await refused).status(), 401, 'a wrong token is a 401')
  await page.waitForSelector('[data-error]', { timeout: 10_000 })
  t.equal((await page.textContent('[data-error]'))?.trim(), 'That token was not accepted.', 'the form says the token was refused')
  t.same(await context.cookies(), [], 'no cookie')
  t.equal(await page.evaluate(() => sessionStorage.getItem('filemirror-token')), null, 'and the refused token is not kept')

  // The right one: on to the live page.
  await page.fill('#token', TOKEN)
  await page.click('button[type="submit"]')
  await page.waitForSelector('#connection[data-state="live"]', { timeout: 10_000 })
  t.equal(page.url(), `${base}/`, 'redirected to the status page')
  await page.waitForSelector('article[data-volume="secured"] .replica[data-replica="hdd"]', { timeout: 10_000 })
  const cookies = await context.cookies()
  t.equal(cookies.length, 1, 'one cookie')
  t.match(cookies[0], { name: 'filemirror-session', path: '/', httpOnly: true, sameSite: 'Strict' }, 'HttpOnly, SameSite=Strict, for the whole origin')
  t.notOk(cookies[0].value.includes(TOKEN) || cookies[0].value.includes(encodeURIComponent(TOKEN)), 'it does not hold the token')
  t.equal(await page.evaluate(() => document.cookie), '', "the page's script cannot read it")
  const kept = () => page.evaluate(() => sessionStorage.getItem('filemirror-token'))
  t.equal(await kept(), TOKEN, 'the token typed in the form is kept in this tab, for actions')

  // Actions send the kept token as Authorization: Bearer (the cookie only reads).
  const scrub = 'article[data-volume="secured"] button[data-action="scrub"]'
  await page.click(scrub)
  await page.waitForSelector('dialog#action[open]', { timeout: 5000 })
  const sent = page.waitForRequest((req) => req.method() === 'POST' && req.url() === `${base}/volumes/secured/scrub`)
  await page.click('#action-confirm')
  t.equal((await sent).headers().authorization, `Bearer ${TOKEN}`, 'the action carries the bearer token')
  await page.waitForSelector('dialog#action', { state: 'hidden', timeout: 10_000 })
  t.match(await page.textContent('#notice'), /^scrub of secured started/, 'and the server took it')
  t.ok(await page.isVisible('#token-state'), 'the header says actions use the kept token')

  // A tab without the token (opened before, or forgotten): the action asks for it, then goes through.
  await page.click('#forget-token')
  t.equal(await kept(), null, '"forget it" drops the token')
  await page.click(scrub)
  await page.waitForSelector('dialog#action[open]', { timeout: 5000 })
  await page.click('#action-confirm')
  await page.waitForSelector('#action-problem[data-status="401"]:not([hidden])', { timeout: 10_000 })
  t.ok(await page.isVisible('#action-token-input'), 'refused (401): the dialog asks for the token')
  t.match(await page.textContent('#action-problem'), /needs its token \(AUTH_TOKEN\) for actions/, 'saying why')
  await page.fill('#action-token-input', 'not-the-token-at-all')
  await page.click('#action-confirm')
  await page.waitForFunction(() => /not accepted/.test(document.getElementById('action-problem')?.textContent ?? ''), undefined, { timeout: 10_000 })
  t.equal(await kept(), null, 'a wrong token is not kept')
  await page.fill('#action-token-input', TOKEN)
  await page.click('#action-confirm')
  await page.waitForSelector('dialog#action', { state: 'hidden', timeout: 10_000 })
  t.match(await page.textContent('#notice'), /^scrub of secured started/, 'with the right one it goes through')
  t.equal(await kept(), TOKEN, 'and is kept for the next action')

  // The event stream runs on the cookie: a write made (with the bearer token) while the page is open shows up.
  const res = await app.inject({ method: 'PUT', url: '/volumes/secured/data', headers: { ...auth, 'content-type': 'application/octet-stream' }, payload: pattern(4096, 3) })
  const group = String(res.headers['operation-id'])
  await page.waitForSelector(`#operations tr[data-group="${group}"][data-replica="ssd"][data-status="done"]`, { timeout: 10_000 })
  await page.waitForSelector(`#operations tr[data-group="${group}"][data-replica="hdd"][data-status="done"]`, { timeout: 10_000 })
  t.pass('the write appeared live over the event stream')

  // The session gone: the page says so instead of failing quietly.
  await context.clearCookies()
  await app.inject({ method: 'PUT', url: '/volumes/secured/data', headers: { ...auth, 'content-range': 'bytes 0-3/*' }, payload: 'gone' })
  await page.waitForSelector('#connection[data-state="signed-out"] a[href="/"]', { timeout: 15_000 })
  t.pass('signed out: the page offers to sign in again')
  t.ok(await page.isVisible('article[data-volume="secured"]'), 'and keeps what it showed')

  // A #token= link opened on the signed-out page itself: it signs in again and reloads.
  await page.goto(`${base}/#token=${encodeURIComponent(TOKEN)}`)
  await page.waitForSelector('#connection[data-state="live"]', { timeout: 10_000 })
  t.equal(page.url(), `${base}/`, 'live again, and the token left the address bar')
  t.equal(await kept(), TOKEN, 'the token of the link is kept for actions')
  t.equal((await context.cookies()).length, 1, 'signed in again')

  // A #token= link opened in a new tab, not signed in: the sign-in page posts it by itself.
  await context.clearCookies()
  const tab = await context.newPage()
  tab.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`))
  tab.on('console', (message) => {
    if (message.type() === 'error' && !/status of 401/.test(message.text())) problems.push(`console: ${message.text()}`)
  })
  await tab.goto(`${base}/#token=${encodeURIComponent(TOKEN)}`)
  await tab.waitForSelector('#connection[data-state="live"]', { timeout: 10_000 })
  t.equal(tab.url(), `${base}/`, 'on the status page, without the fragment')
  t.equal((await context.cookies()).length, 1, 'signed in by the link')
  await tab.goBack().catch(() => null)
  t.notMatch(tab.url(), /token=/, 'going back does not bring the token back either')

  t.same(problems, [], 'no script errors and no CSP violations (the sign-in page included)')
})
