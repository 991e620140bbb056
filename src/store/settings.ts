import { Duration } from "effect"

export interface StoreSettings {
  /** Largest accepted context, in bytes of its JSON text. */
  readonly maxContextBytes: number
  /**
   * How long a claimed timer stays hidden from other instances before it comes due again: short, so that the timers
   * of an instance that died fire elsewhere within seconds. A firing that outlasts it is safe: a timer fires at the
   * version it was claimed at, so a second firing is a version conflict, never a second step.
   */
  readonly timerLease: Duration.Duration
  /** How long `transact` keeps retrying retryable database failures before giving up. */
  readonly retryFor: Duration.Duration
  /**
   * How many bytes of context and progress (as JSON text) one page of `find` may hold: a page ends early, with a
   * cursor, once it reaches them. It bounds what a list request holds in memory, whatever its `limit`.
   */
  readonly pageBytes: number
}

export const defaultStoreSettings: StoreSettings = {
  maxContextBytes: 64 * 1024,
  timerLease: Duration.seconds(3),
  retryFor: Duration.seconds(30),
  pageBytes: 2 * 1024 * 1024
}
