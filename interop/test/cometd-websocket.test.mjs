// Interop scenarios: unchanged cometd client, transport websocket.
import {defineSuite} from "../lib/scenarios.mjs";

defineSuite("cometd", "websocket");
