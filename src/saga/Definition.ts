/**
 * The saga definition DSL. A saga is a sequence of steps; each step sends a task to a worker and waits for its
 * reply, or waits for a human signal. Per step: the state the saga is in while it runs, the timeout, the retry
 * policy, how a success moves the context on, and the compensation that undoes it. Read top to bottom, a
 * definition is its own transition table (see `transitionTable`).
 */
import { Data, Duration, Effect, Schedule, type Schema } from "effect"

/** What the saga keeps between steps: the input's references plus what steps added. JSON, references only. */
export type Context = Readonly<Record<string, unknown>>
export type JsonObject = Readonly<Record<string, unknown>>

/** A step that cannot go on. Retryable failures are retried per the step's policy; others start compensation. */
export class StepFailed extends Data.TaggedError("StepFailed")<{
  readonly code: string
  readonly message: string
  readonly retryable: boolean
}> {}

type Lift<A> = A | Effect.Effect<A, StepFailed>

export const lift = <A>(value: Lift<A>): Effect.Effect<A, StepFailed> =>
  Effect.isEffect(value) ? value : Effect.succeed(value)

/** Retry policy: a Schedule whose recurrences are the retries and whose delays are the back-off between them. */
export type RetryPolicy = Schedule.Schedule<unknown, unknown>

/** `attempts` in all (the first one included), waiting `initial`, then twice as long each time, at most `max`. */
export const backoff = (options: {
  readonly attempts: number
  readonly initial: Duration.Input
  readonly max?: Duration.Input | undefined
}): RetryPolicy => {
  const initial = Duration.fromInputUnsafe(options.initial)
  const max = options.max === undefined ? Duration.times(initial, 32) : Duration.fromInputUnsafe(options.max)
  const policy = Schedule.max([
    Schedule.exponential(initial).pipe(
      Schedule.modifyDelay(({ duration }) => Effect.succeed(Duration.min(duration, max)))
    ),
    Schedule.recurs(Math.max(0, options.attempts - 1))
  ])
  retryDescriptions.set(policy, `${options.attempts} attempts, back-off from ${Duration.format(initial)}`)
  return policy
}

export const noRetry: RetryPolicy = Schedule.recurs(0)

const retryDescriptions = new WeakMap<RetryPolicy, string>([[noRetry, "no retry"]])
const describeRetry = (policy: RetryPolicy): string => retryDescriptions.get(policy) ?? "per policy"

/** A task sent to undo a completed step. Compensations must be idempotent and succeed when there is nothing to undo. */
export interface Compensation<C extends Context> {
  readonly name: string
  readonly state: string
  readonly taskType: string
  readonly payload: (context: C) => Lift<JsonObject>
  readonly timeout: Duration.Duration
  readonly retry: RetryPolicy
}

export interface TaskStep<C extends Context, R = unknown> {
  readonly _tag: "Task"
  readonly name: string
  readonly state: string
  readonly taskType: string
  readonly payload: (context: C) => Lift<JsonObject>
  /** The reply's `result`, decoded; a result that does not decode is a fatal failure of the step. */
  readonly result: Schema.Decoder<R>
  /** The context after the step succeeded. */
  readonly onSuccess: (context: C, result: R) => Lift<C>
  readonly timeout: Duration.Duration
  /**
   * When set, the worker must send heartbeats: an attempt with none (nor a reply) for this long counts as timed out,
   * long before `timeout` ends it anyway.
   */
  readonly heartbeatTimeout?: Duration.Duration | undefined
  readonly retry: RetryPolicy
  readonly compensation?: Compensation<C> | undefined
}

export interface SignalStep<C extends Context, D = unknown> {
  readonly _tag: "Signal"
  readonly name: string
  readonly state: string
  /** The signal's name in `POST /v1/sagas/{id}/signals/{name}`. */
  readonly signal: string
  /** The signal's `data`; data that does not decode is refused and changes nothing. */
  readonly data: Schema.Decoder<D>
  readonly onSignal: (context: C, data: D) => Lift<C>
  /** How long the saga waits before giving up (and compensating). */
  readonly timeout: Duration.Duration
}

// biome-ignore lint/suspicious/noExplicitAny: a step's result / data type is existential once it is in a list.
export type Step<C extends Context> = TaskStep<C, any> | SignalStep<C, any>

export interface SagaDefinition<C extends Context = Context, I = unknown> {
  readonly type: string
  /** Recorded on every instance at start: an instance is only ever driven by the version it started with. */
  readonly version: number
  readonly input: Schema.Decoder<I>
  /** The context a new saga starts with. */
  readonly initialContext: (input: I) => C
  readonly steps: ReadonlyArray<Step<C>>
}

const durationOf = (input: Duration.Input) => Duration.fromInputUnsafe(input)

export const task = <C extends Context, R>(options: {
  readonly name: string
  readonly state: string
  readonly taskType: string
  readonly payload: (context: C) => Lift<JsonObject>
  readonly result: Schema.Decoder<R>
  readonly onSuccess: (context: C, result: R) => Lift<C>
  readonly timeout: Duration.Input
  readonly heartbeatTimeout?: Duration.Input | undefined
  readonly retry?: RetryPolicy | undefined
  readonly compensation?:
    | (Omit<Compensation<C>, "timeout" | "retry"> & {
        readonly timeout: Duration.Input
        readonly retry?: RetryPolicy | undefined
      })
    | undefined
}): TaskStep<C, R> => ({
  _tag: "Task",
  ...options,
  timeout: durationOf(options.timeout),
  heartbeatTimeout: options.heartbeatTimeout === undefined ? undefined : durationOf(options.heartbeatTimeout),
  retry: options.retry ?? noRetry,
  compensation:
    options.compensation === undefined
      ? undefined
      : {
          ...options.compensation,
          timeout: durationOf(options.compensation.timeout),
          retry: options.compensation.retry ?? noRetry
        }
})

export const signal = <C extends Context, D>(options: {
  readonly name: string
  readonly state: string
  readonly signal: string
  readonly data: Schema.Decoder<D>
  readonly onSignal: (context: C, data: D) => Lift<C>
  readonly timeout: Duration.Input
}): SignalStep<C, D> => ({ _tag: "Signal", ...options, timeout: durationOf(options.timeout) })

/**
 * A definition of some context and input type, as the engine and the registry hold them. (Function parameters make
 * `SagaDefinition` invariant, so only `any` lets different sagas share one list.)
 */
// biome-ignore lint/suspicious/noExplicitAny: existential saga definition, see above.
export type AnySagaDefinition = SagaDefinition<any, any>

export const define = <C extends Context, I>(definition: SagaDefinition<C, I>): SagaDefinition<C, I> => definition

/** The state names a saga ends in. */
export const finalStates = { COMPLETED: "COMPLETED", FAILED: "FAILED", CANCELLED: "CANCELLED" } as const

export interface TransitionRow {
  readonly state: string
  readonly waitsFor: string
  readonly onSuccess: string
  readonly onFailure: string
  readonly timeout: string
  readonly compensation: string
}

/** The definition as a transition table: one row per state. */
export const transitionTable = (definition: AnySagaDefinition): ReadonlyArray<TransitionRow> => {
  const rows: Array<TransitionRow> = definition.steps.map((step, index) => {
    const next = definition.steps[index + 1]?.state ?? finalStates.COMPLETED
    const undo = definition.steps
      .slice(0, step._tag === "Task" ? index + 1 : index)
      .flatMap((s) => (s._tag === "Task" && s.compensation ? [s.compensation.name] : []))
      .reverse()
    const compensate = undo.length === 0 ? finalStates.FAILED : `compensate ${undo.join(" → ")} → FAILED`
    return step._tag === "Task"
      ? {
          state: step.state,
          waitsFor: `reply to ${step.taskType}`,
          onSuccess: next,
          onFailure: `retry (${describeRetry(step.retry)}), then ${compensate}`,
          timeout:
            step.heartbeatTimeout === undefined
              ? Duration.format(step.timeout)
              : `${Duration.format(step.timeout)} (heartbeat ${Duration.format(step.heartbeatTimeout)})`,
          compensation: step.compensation ? `${step.compensation.name} (${step.compensation.taskType})` : "—"
        }
      : {
          state: step.state,
          waitsFor: `signal ${step.signal}`,
          onSuccess: next,
          onFailure: compensate,
          timeout: Duration.format(step.timeout),
          compensation: "—"
        }
  })
  return rows
}
