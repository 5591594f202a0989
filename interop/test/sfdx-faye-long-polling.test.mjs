// Interop scenarios: unchanged sfdx-faye client (the Salesforce CLI's fork of Faye 1.2), transport long-polling.
import {defineSuite} from "../lib/scenarios.mjs";

defineSuite("sfdx-faye", "long-polling");
