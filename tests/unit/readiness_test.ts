/** /healthz and /readyz: what they answer in each phase and state, and on the API port. */
import assert from "node:assert/strict";
import { livenessAnswer, type Readiness, readinessAnswer } from "../../src/core/readiness.ts";
import { ApiPlugin } from "../../src/plugins/api.ts";
import type { EmitResult, EventSink } from "../../src/core/component.ts";

const running: Readiness = {
  phase: "running",
  components: [
    { kind: "plugin", name: "api", state: "running" },
    { kind: "backend", name: "marker", state: "running" },
  ],
};

Deno.test("readiness: ready only while running with every component running; alive until stopping", () => {
  assert.deepEqual(readinessAnswer(running), { status: 200, body: '{"status":"ready","components":2}\n' });
  assert.equal(readinessAnswer({ ...running, phase: "starting" }).status, 503);
  assert.equal(readinessAnswer({ ...running, phase: "stopping" }).body, '{"status":"stopping"}\n');
  const degraded: Readiness = {
    phase: "running",
    components: [
      running.components[0]!,
      { kind: "backend", name: "marker", state: "degraded", reason: "interface eth1 vanished" },
      { kind: "backend", name: "firefly", state: "failed", reason: "cannot report its state: x" },
    ],
  };
  const a = readinessAnswer(degraded);
  assert.equal(a.status, 503);
  const body = JSON.parse(a.body);
  assert.equal(body.status, "failed", "the worst state is reported");
  assert.deepEqual(body.problems.map((p: { name: string }) => p.name), ["marker", "firefly"]);
  assert.equal(livenessAnswer(degraded).status, 200);
  assert.equal(livenessAnswer({ ...running, phase: "starting" }).status, 200);
  assert.equal(livenessAnswer({ ...running, phase: "stopping" }).status, 503);
});

Deno.test("readiness: the API port answers /healthz and /readyz from the daemon's state, without a token or an event", async () => {
  let state: Readiness = running;
  const emitted: unknown[] = [];
  const sink: EventSink = { emit: (e): EmitResult => (emitted.push(e), { accepted: true }) };
  const dir = await Deno.makeTempDir();
  const tokenFile = `${dir}/token`;
  await Deno.writeTextFile(tokenFile, "secret\n");
  const api = new ApiPlugin({
    bindAddress: "127.0.0.1",
    bindPort: 0,
    application: "t",
    tokenFile,
    readiness: () => state,
  });
  await api.start(sink);
  try {
    const get = async (path: string) => {
      const r = await fetch(`http://127.0.0.1:${api.port}${path}`);
      return [r.status, r.headers.get("content-type"), await r.json()];
    };
    assert.deepEqual(await get("/readyz"), [200, "application/json", { status: "ready", components: 2 }]);
    assert.deepEqual(await get("/healthz"), [200, "application/json", { status: "ok" }]);
    state = {
      phase: "running",
      components: [{ kind: "backend", name: "marker", state: "degraded", reason: "r" }],
    };
    assert.deepEqual(await get("/readyz"), [503, "application/json", {
      status: "degraded",
      problems: [{ kind: "backend", name: "marker", state: "degraded", reason: "r" }],
    }]);
    const post = await fetch(`http://127.0.0.1:${api.port}/healthz`, { method: "POST" });
    await post.body?.cancel();
    assert.equal(post.status, 404, "probes are GET only");
    assert.deepEqual(emitted, []);
  } finally {
    await api.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
