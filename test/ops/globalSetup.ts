/**
 * Runs once before the ops tests: installs the Debian packages they drive when missing (see packages.ts), outside
 * the tests' own time limits — an install takes from seconds to a minute and a half.
 */
import { ensurePackages } from "./packages.ts"

export default async function setup() {
  const begin = performance.now()
  const installed = await ensurePackages()
  if (installed.length > 0)
    console.log(`ops tests: installed ${installed.join(", ")} in ${Math.round(performance.now() - begin)} ms`)
}
