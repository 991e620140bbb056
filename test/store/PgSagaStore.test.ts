import * as TestDatabase from "../utils/TestDatabase.ts"
import { sagaStoreContract } from "./contract.ts"

sagaStoreContract("SagaStore contract: PostgreSQL", TestDatabase.layerStore())
