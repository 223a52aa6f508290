/**
 * End to end: the daemon refreshes the SciTags registry from a (loopback) URL, resolves names from the
 * fresh copy in named-pipe lines, caches it in workDir, and uses the cache when the URL is down.
 */
import assert from "node:assert/strict";
import { Hono } from "hono";
import { runFlowd, startDaemon, udpReceiver } from "../helpers/daemon.ts";
import { startHttpServer } from "../helpers/http_server.ts";

const FRESH = {
  version: 1,
  modified: "2030-05-01T12:00:00+00:00",
  experiments: [
    { expName: "atlas", expId: 2, activities: [{ activityName: "Staging", activityId: 19 }] },
    { expName: "newexp", expId: 42, activities: [{ activityName: "Fresh Start", activityId: 7 }] },
  ],
};

Deno.test("e2e: registry refresh, names from the fresh copy, the cache when the URL is down", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flowd-e2e-registry-" });
  await using collector = await udpReceiver("127.0.0.1");
  const server = startHttpServer("127.0.0.1", () => new Hono().get("/api.json", (c) => c.json(FRESH)));
  const url = server.url("/api.json");
  const conf = `${dir}/conf.yaml`;
  await Deno.writeTextFile(
    conf,
    `pidPath: ${dir}/pid
workDir: ${dir}
controlSocket: ""
registry: {url: "${url}", refreshInterval: 0, timeout: 1}
plugins:
  namedPipe: {pipePath: np}
backends:
  firefly: {sendToDestination: false, sendToCollector: true, collectorPort: ${collector.port}}
`,
  );
  const writePipe = async (line: string) => {
    const f = await Deno.open(`${dir}/np`, { write: true });
    await f.write(new TextEncoder().encode(line + "\n"));
    f.close();
  };
  const contexts = () =>
    collector.messages.map((m) => {
      const c = JSON.parse(m.slice(m.indexOf("{"))).context;
      return [c["experiment-id"], c["activity-id"]];
    });
  try {
    {
      await using daemon = await startDaemon(conf);
      await daemon.waitForLine(/SciTags registry refreshed.*experiments=2/);
      await writePipe("start tcp ::1 40000 ::1 5201 newexp fresh-start");
      await writePipe("start tcp ::1 40001 ::1 5201 ATLAS staging");
      await writePipe("start tcp ::1 40002 ::1 5201 newexpp 1");
      await collector.waitFor(2);
      await daemon.waitForLine(
        /ignoring a bad line.*unknown experiment \\"newexpp\\"; did you mean \\"newexp\\" \(42\)/,
      );
      assert.deepEqual(contexts(), [[42, 7], [2, 19]]);
      assert.equal(await daemon.stop(), 0);
    }
    assert.deepEqual(JSON.parse(await Deno.readTextFile(`${dir}/scitags-registry.json`)), FRESH);

    await server[Symbol.asyncDispose]();
    {
      await using daemon = await startDaemon(conf);
      await daemon.waitForLine(/level=WARN .*cannot refresh the SciTags registry; using the cached copy/);
      await writePipe("start tcp ::1 40003 ::1 5201 newexp 7");
      await collector.waitFor(3);
      assert.deepEqual(contexts()[2], [42, 7]);
      assert.equal(await daemon.stop(), 0);
      assert.equal(daemon.lines.filter((l) => /level=WARN/.test(l)).length, 1, daemon.lines.join("\n"));
    }
    // Configuration names resolve with the cached copy too.
    await Deno.writeTextFile(
      `${dir}/perfsonar.yaml`,
      `workDir: ${dir}\nregistry: {url: "${url}"}\nplugins:\n  perfsonar: {experimentId: newexp, activityId: Fresh Start}\n`,
    );
    const c = await runFlowd(["--conf", `${dir}/perfsonar.yaml`, "conf", "--format", "json"]);
    assert.equal(c.code, 0, c.stderr);
    assert.deepEqual(JSON.parse(c.stdout).plugins.perfsonar, { experimentId: 42, activityId: 7 });
  } finally {
    await server[Symbol.asyncDispose]();
    await Deno.remove(dir, { recursive: true });
  }
});
