/** Service entry: the service, once loaded (see entry.ts for a stop meanwhile). */
import { runWhenLoaded } from "./entry.ts"

await runWhenLoaded(() => import("./service.ts"))
