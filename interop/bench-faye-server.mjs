// Faye's own Node server (npm faye, faye.NodeAdapter), unmodified, for the
// side-by-side benchmark (scripts/compare.sh). Mounts /cometd on a random
// loopback port (or --port N) and prints "BAYEUX_URL=..." on stdout.
import * as http from "node:http";
import {createRequire} from "node:module";

const require = createRequire(import.meta.url);
const faye = require("faye");

const portArg = process.argv.indexOf("--port");
const port = portArg > 0 ? Number(process.argv[portArg + 1]) : 0;
const bayeux = new faye.NodeAdapter({mount: "/cometd", timeout: 30});
const server = http.createServer();
bayeux.attach(server);
server.listen(port, "127.0.0.1", () => {
    console.log(`BAYEUX_URL=http://127.0.0.1:${server.address().port}/cometd`);
});
for (const sig of ["SIGTERM", "SIGINT"]) {
    process.on(sig, () => server.close(() => process.exit(0)));
}
