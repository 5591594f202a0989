// Interop scenarios: unchanged faye client, transport websocket.
import {defineSuite} from "../lib/scenarios.mjs";

defineSuite("faye", "websocket");
