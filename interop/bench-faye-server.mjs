// Faye's own Node server (npm faye, faye.NodeAdapter), unmodified, for the
// side-by-side benchmarks (scripts/compare.sh, scripts/scale.sh). Mounts
// /cometd on a random loopback port (or --port N) and prints
// "BAYEUX_URL=..." on stdout. With --redis host:port it runs on Faye's
// Redis engine (npm faye-redis, pinned in package.json), so that several
// such processes behind a balancer form one Faye cluster.
import * as http from "node:http";
import {createRequire} from "node:module";

const require = createRequire(import.meta.url);
const faye = require("faye");

const arg = name => {
    const i = process.argv.indexOf(name);
    return i > 0 ? process.argv[i + 1] : undefined;
};
const port = Number(arg("--port") ?? 0);
const options = {mount: "/cometd", timeout: 30};
const redis = arg("--redis");
if (redis) {
    const [host, redisPort] = redis.split(":");
    options.engine = {type: require("faye-redis"), host, port: Number(redisPort)};
}
const bayeux = new faye.NodeAdapter(options);
const server = http.createServer();
bayeux.attach(server);
server.listen(port, "127.0.0.1", () => {
    console.log(`BAYEUX_URL=http://127.0.0.1:${server.address().port}/cometd`);
});
for (const sig of ["SIGTERM", "SIGINT"]) {
    process.on(sig, () => server.close(() => process.exit(0)));
}
