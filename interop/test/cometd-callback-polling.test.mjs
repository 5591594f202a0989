// Interop scenarios: unchanged cometd client, transport callback-polling.
import {defineSuite} from "../lib/scenarios.mjs";

defineSuite("cometd", "callback-polling");
