import * as net from "node:net"
import { Effect } from "effect"

/** A TCP port nothing listens on at the moment, on 127.0.0.1 (the OS picks it). */
export const freePort = Effect.callback<number>((resume) => {
  const probe = net.createServer()
  probe.once("error", (error) => resume(Effect.die(error)))
  probe.listen(0, "127.0.0.1", () => {
    const address = probe.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    probe.close(() => resume(port === 0 ? Effect.die(new Error("no free port")) : Effect.succeed(port)))
  })
})
