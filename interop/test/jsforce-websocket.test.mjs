// Interop scenarios: unchanged jsforce Streaming API client (Salesforce style: replay, data.event.replayId), transport websocket.
import {defineJsforceSuite} from "../lib/jsforce.mjs";

defineJsforceSuite("websocket");
