/**
 * The service's SecureRandom: bytes from the operating system's CSPRNG, drawn 4 KiB at a time. Every step takes a
 * few UUIDs (task, transition and message ids); asking the system for each one's 10 bytes would cost a call into
 * the crypto binding per id. Each byte handed out is used once, as Node's own `crypto.randomUUID` does with its pool.
 */
import { randomFillSync } from "node:crypto"
import { Layer } from "effect"
import { SecureRandom } from "effect/crypto"

const poolSize = 4096

const pooledBytes = () => {
  const pool = new Uint8Array(poolSize)
  let offset = poolSize
  return (size: number): Uint8Array => {
    if (size > poolSize) return randomFillSync(new Uint8Array(size))
    if (offset + size > poolSize) {
      randomFillSync(pool)
      offset = 0
    }
    // A copy: SecureRandom formats UUIDs in place, and a byte must never be handed out twice.
    const bytes = pool.slice(offset, offset + size)
    offset += size
    return bytes
  }
}

export const layer: Layer.Layer<SecureRandom.SecureRandom> = Layer.sync(SecureRandom.SecureRandom, () =>
  SecureRandom.make(pooledBytes())
)
