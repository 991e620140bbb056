import { Context, type Effect, Schema } from "effect"

/** A message as it goes onto the wire: persistent, JSON, with a unique message id. */
export interface OutgoingMessage {
  readonly exchange: string
  readonly routingKey: string
  readonly messageId: string
  readonly correlationId: string
  readonly headers: Readonly<Record<string, string>>
  /** JSON text. */
  readonly body: string
}

/** A message as a consumer receives it. Anything may be missing or malformed: it comes from outside. */
export interface Delivery {
  readonly exchange: string
  readonly routingKey: string
  readonly messageId: string | undefined
  readonly correlationId: string | undefined
  readonly headers: Readonly<Record<string, string>>
  readonly body: string
  /** true when the broker delivered this message before and it was not acknowledged. */
  readonly redelivered: boolean
}

/** What happens to a delivery once its handler is done with it. */
export type Disposition =
  | { readonly _tag: "Ack" }
  | { readonly _tag: "Requeue" }
  | { readonly _tag: "DeadLetter"; readonly reason: string }

export const Disposition = {
  ack: { _tag: "Ack" } as Disposition,
  requeue: { _tag: "Requeue" } as Disposition,
  deadLetter: (reason: string): Disposition => ({ _tag: "DeadLetter", reason })
}

export class BrokerUnavailable extends Schema.TaggedError<BrokerUnavailable>()("BrokerUnavailable", {
  reason: Schema.String
}) {
  override get message() {
    return `message broker unavailable: ${this.reason}`
  }
}

/**
 * The message broker port. Delivery is at least once: a handler that fails, dies or is interrupted leaves its
 * message to be delivered again, so every consumer must be idempotent.
 */
export class Broker extends Context.Service<
  Broker,
  {
    /** Publishes with confirms: succeeds once the broker has taken responsibility for every message. */
    readonly publish: (messages: ReadonlyArray<OutgoingMessage>) => Effect.Effect<void, BrokerUnavailable>
    /**
     * Consumes a queue until interrupted, at most `prefetch` unacknowledged deliveries at a time; each delivery is
     * settled as its handler decides.
     */
    readonly consume: <R>(
      queue: string,
      handle: (delivery: Delivery) => Effect.Effect<Disposition, never, R>,
      options?: { readonly prefetch?: number | undefined }
    ) => Effect.Effect<never, BrokerUnavailable, R>
    /** Succeeds while connected to the broker; fails saying why not (readiness probes). */
    readonly health: Effect.Effect<void, BrokerUnavailable>
  }
>()("saga-orchestrator/broker/Broker") {}
