// node --test reporter: prints a client x transport pass/fail matrix at the end,
// and a closing "N passed, N failed" line. Use together with the spec reporter.
const SUITE = /^(cometd|faye|sfdx-faye|jsforce)\/(long-polling|callback-polling|websocket)$/;

export default async function* summary(source) {
    const counts = new Map(); // suite -> {pass, fail, failed: []}
    let pass = 0;
    let fail = 0;
    const bump = (name, ok) => {
        const m = /^(\S+) (\d+)\./.exec(name);
        if (!m || !SUITE.test(m[1])) {
            return;
        }
        const c = counts.get(m[1]) || {pass: 0, fail: 0, failed: []};
        counts.set(m[1], c);
        if (ok) {
            c.pass++;
        } else {
            c.fail++;
            c.failed.push(m[2]);
        }
    };
    for await (const event of source) {
        if (event.type !== "test:pass" && event.type !== "test:fail") {
            continue;
        }
        const d = event.data;
        if (d.details && d.details.type === "suite") {
            continue;
        }
        const ok = event.type === "test:pass" && !d.skip && !d.todo;
        if (event.type === "test:pass" && (d.skip || d.todo)) {
            continue;
        }
        if (!SUITE.test(String(d.name).split(" ")[0])) {
            // A failure outside a scenario (e.g. a file that failed to load) still counts.
            if (!ok) {
                fail++;
                yield `FAILED outside the scenarios: ${d.name} (${d.file || ""})\n`;
            }
            continue;
        }
        bump(d.name, ok);
        ok ? pass++ : fail++;
    }
    const order = ["cometd/long-polling", "cometd/callback-polling", "cometd/websocket", "faye/long-polling", "faye/websocket",
        "sfdx-faye/long-polling", "sfdx-faye/websocket", "jsforce/long-polling", "jsforce/websocket"];
    let out = "\n==== interop summary (client/transport: passed, failed) ====\n";
    for (const s of [...order, ...[...counts.keys()].filter((k) => !order.includes(k))]) {
        const c = counts.get(s);
        if (!c) {
            continue;
        }
        out += `${s.padEnd(26)} ${String(c.pass).padStart(3)} passed ${String(c.fail).padStart(3)} failed` +
            (c.failed.length ? `   (failed scenarios: ${c.failed.join(", ")})` : "") + "\n";
    }
    out += `interop: ${pass} passed, ${fail} failed\n`;
    yield out;
}
