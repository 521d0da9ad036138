/**
 * Polls `check` (sync or async) every `everyMs` until it returns something truthy, and returns that;
 * rejects naming `what` once `timeoutMs` have passed. A check that throws fails the wait at once.
 * For state with no event to wait on: where there is an event, wait on the event instead.
 */
export async function eventually<T>(check: () => T | Promise<T>, what: string, timeoutMs = 15_000, everyMs = 10): Promise<T> {
  const deadline = performance.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value) return value
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, everyMs))
  }
}
