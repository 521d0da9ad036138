import type { Operation } from './operation.js'

/** Resolves true when `promise` settles within `timeoutMs`, false otherwise; no timeout waits forever. */
export async function settlesWithin(promise: Promise<unknown>, timeoutMs?: number): Promise<boolean> {
  if (timeoutMs === undefined) {
    await promise
    return true
  }
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(resolve, timeoutMs, false)))
  try {
    return await Promise.race([promise.then(() => true), timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** The operations of one readAt or writeAt call, one per file (the library's operation list). */
export class OperationList<U = unknown, F = unknown> {
  constructor(readonly operations: ReadonlyArray<Operation<U, F>>) {}

  get size(): number {
    return this.operations.length
  }

  get done(): boolean {
    return this.operations.every((op) => op.done)
  }

  /** Waits until every operation has started; false when the timeout came first. */
  waitForStart(timeoutMs?: number): Promise<boolean> {
    return settlesWithin(Promise.all(this.operations.map((op) => op.whenStarted)), timeoutMs)
  }

  /** Waits until every operation is done; false when the timeout came first. */
  waitForDone(timeoutMs?: number): Promise<boolean> {
    return settlesWithin(Promise.all(this.operations.map((op) => op.whenDone)), timeoutMs)
  }

  pending(): Operation<U, F>[] {
    return this.operations.filter((op) => !op.done)
  }

  asyncOperations(): Operation<U, F>[] {
    return this.operations.filter((op) => op.async)
  }

  syncOperations(): Operation<U, F>[] {
    return this.operations.filter((op) => !op.async)
  }

  firstAsync(): Operation<U, F> | undefined {
    return this.operations.find((op) => op.async)
  }

  firstSync(): Operation<U, F> | undefined {
    return this.operations.find((op) => !op.async)
  }

  failed(): Operation<U, F>[] {
    return this.operations.filter((op) => op.error !== null)
  }
}
