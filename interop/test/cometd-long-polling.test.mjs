// Interop scenarios: unchanged cometd client, transport long-polling.
import {defineSuite} from "../lib/scenarios.mjs";

defineSuite("cometd", "long-polling");
