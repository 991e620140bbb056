import type { AnySagaDefinition } from "../saga/Definition.ts"
import { BalanceCalculation } from "./BalanceCalculation.ts"

/** Every saga definition this build runs, old versions included while instances still use them. */
export const definitions: ReadonlyArray<AnySagaDefinition> = [BalanceCalculation]
