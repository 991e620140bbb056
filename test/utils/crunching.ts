/** A one-step saga whose task expects heartbeats every 2 s, for the heartbeat tests in memory and through RabbitMQ. */
import { type Duration, Schema } from "effect"
import { backoff, define, task } from "../../src/saga/Definition.ts"

export const crunchingType = "HEARTBEAT_TEST"

export const crunching = (options: { readonly timeout: Duration.Input; readonly retryAfter: Duration.Input }) =>
  define({
    type: crunchingType,
    version: 1,
    input: Schema.Struct({ ref: Schema.String }),
    initialContext: (input) => ({ ...input }),
    steps: [
      task({
        name: "crunch",
        state: "CRUNCHING",
        taskType: "test.crunch",
        payload: (c) => ({ ref: c.ref }),
        result: Schema.Struct({ outputRef: Schema.optionalKey(Schema.String) }),
        onSuccess: (c, r) => (r.outputRef === undefined ? c : { ...c, outputRef: r.outputRef }),
        timeout: options.timeout,
        heartbeatTimeout: "2 seconds",
        retry: backoff({ attempts: 3, initial: options.retryAfter })
      })
    ]
  })
