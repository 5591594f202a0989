// Interop scenarios: unchanged jsforce Streaming API client (Salesforce style: replay, data.event.replayId), transport long-polling.
import {defineJsforceSuite} from "../lib/jsforce.mjs";

defineJsforceSuite("long-polling");
