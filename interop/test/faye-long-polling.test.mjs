// Interop scenarios: unchanged faye client, transport long-polling.
import {defineSuite} from "../lib/scenarios.mjs";

defineSuite("faye", "long-polling");
