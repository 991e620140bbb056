/**
 * What an entry point does before the program is loaded (loading takes a moment): a SIGTERM or SIGINT meanwhile — a
 * rollout that changed its mind — ends the process at once, as a stop does, with exit 0. The handler stays installed:
 * a signal that arrived while loading may be handled only once the program's own handlers are in place, which then
 * stop it gracefully. This module imports nothing, so that it runs first.
 */
export const runWhenLoaded = async (load: () => Promise<{ readonly run: () => void }>) => {
  let loading = true
  const stopWhileLoading = () => {
    if (loading) process.exit(0)
  }
  process.on("SIGTERM", stopWhileLoading)
  process.on("SIGINT", stopWhileLoading)
  const program = await load()
  loading = false
  program.run()
}
