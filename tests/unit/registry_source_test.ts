/**
 * Refreshing the SciTags registry from a Hono server on loopback: a good copy is used and cached; every
 * failure (HTTP error, no answer, bad content) keeps the copy in use with one warning; a fresh cache spares
 * the fetch; refreshes repeat on their interval and stop cleanly.
 */
import assert from "node:assert/strict";
import { Hono } from "hono";
import { Registry } from "../../src/scitags/registry.ts";
import { RegistrySource, registrySourceFor } from "../../src/scitags/registry_source.ts";
import { startHttpServer } from "../helpers/http_server.ts";
import { captureLogs } from "../helpers/log_capture.ts";

const FRESH = {
  version: 1,
  modified: "2030-05-01T12:00:00+00:00",
  experiments: [
    { expName: "atlas", expId: 2, activities: [{ activityName: "Staging", activityId: 19 }] },
    { expName: "newexp", expId: 42, activities: [{ activityName: "Fresh Start", activityId: 7 }] },
  ],
};

/** A registry server whose answer a test can change; counts requests. */
function registryServer() {
  const state = { mode: "ok" as "ok" | "error" | "never" | "garbage" | "invalid", requests: 0 };
  const server = startHttpServer("127.0.0.1", (gate) =>
    new Hono().get("/api.json", async (c) => {
      state.requests++;
      switch (state.mode) {
        case "ok":
          return c.json(FRESH);
        case "error":
          return c.text("maintenance", 503);
        case "garbage":
          return c.text("<html>not json</html>");
        case "invalid":
          return c.json({ version: 1, experiments: [{ expName: "x", expId: -3, activities: [] }] });
        case "never":
          await gate;
          return c.json(FRESH);
      }
    }));
  return { state, server };
}

async function tempDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "flowd-registry-" });
}

function source(url: string, dir: string, over: { timeoutMs?: number; refreshIntervalMs?: number } = {}) {
  return RegistrySource.refreshing({
    url,
    cachePath: `${dir}/scitags-registry.json`,
    timeoutMs: over.timeoutMs ?? 2000,
    refreshIntervalMs: over.refreshIntervalMs ?? 0,
  });
}

Deno.test("registry refresh: a good copy is used at once and cached in workDir", async () => {
  using logs = captureLogs("info");
  const { server } = registryServer();
  await using _s = server;
  const dir = await tempDir();
  const src = source(server.url("/api.json"), dir);
  try {
    assert.equal(src.origin, "embedded");
    assert.throws(() => src.current().experimentId("newexp"), /unknown experiment "newexp"/);
    assert.deepEqual(await src.refresh(), { ok: true, modified: "2030-05-01T12:00:00+00:00" });
    assert.equal(src.current().experimentId("newexp"), 42);
    assert.equal(src.current().activityId("newexp", "freshstart"), 7);
    assert.equal(src.origin, server.url("/api.json"));
    const cached = JSON.parse(await Deno.readTextFile(`${dir}/scitags-registry.json`));
    assert.deepEqual(cached, FRESH);
    assert.equal(logs.matching(/SciTags registry refreshed.*experiments=2/).length, 1);
  } finally {
    await src.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("registry refresh: failures keep the embedded copy, one warning each, nothing cached", async () => {
  const { state, server } = registryServer();
  await using _s = server;
  const dir = await tempDir();
  const cases: [typeof state.mode, RegExp][] = [
    ["error", /err="HTTP 503"/],
    ["never", /err="no answer within 200 ms"/],
    ["garbage", /is not JSON/],
    ["invalid", /is not a valid registry: .*expId: -3 is not an integer/],
  ];
  try {
    for (const [mode, re] of cases) {
      using logs = captureLogs("info");
      state.mode = mode;
      const src = source(server.url("/api.json"), dir, { timeoutMs: 200 });
      const t0 = performance.now();
      const outcome = await src.refresh();
      assert.ok(performance.now() - t0 < 1500, `${mode} took too long`);
      assert.equal(outcome.ok, false, mode);
      assert.equal(src.current(), Registry.embedded(), mode);
      const warnings = logs.matching(/level=WARN/);
      assert.equal(warnings.length, 1, `${mode}: ${logs.lines.join("\n")}`);
      assert.match(warnings[0]!, /cannot refresh the SciTags registry; using the embedded copy/);
      assert.match(warnings[0]!, re);
      await src.stop();
    }
    await assert.rejects(() => Deno.stat(`${dir}/scitags-registry.json`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("registry refresh: a cached copy is used from the start and kept when the server fails", async () => {
  const { state, server } = registryServer();
  await using _s = server;
  const dir = await tempDir();
  try {
    await Deno.writeTextFile(`${dir}/scitags-registry.json`, JSON.stringify(FRESH));
    using logs = captureLogs("info");
    state.mode = "error";
    const src = source(server.url("/api.json"), dir);
    assert.equal(src.origin, `cache ${dir}/scitags-registry.json`);
    assert.equal(src.current().experimentId("newexp"), 42);
    await src.refresh();
    assert.equal(src.current().experimentId("newexp"), 42);
    assert.match(logs.matching(/level=WARN/)[0] ?? "", /using the cached copy/);
    await src.stop();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("registry refresh: a fresh cache spares the fetch at start; a stale one is refreshed", async () => {
  const { state, server } = registryServer();
  await using _s = server;
  const dir = await tempDir();
  const path = `${dir}/scitags-registry.json`;
  try {
    await Deno.writeTextFile(path, JSON.stringify({ ...FRESH, modified: "2029-01-01T00:00:00+00:00" }));
    const fresh = source(server.url("/api.json"), dir, { refreshIntervalMs: 3_600_000 });
    fresh.start();
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(state.requests, 0);
    await fresh.stop();

    const hourAgo = new Date(Date.now() - 2 * 3_600_000);
    await Deno.utime(path, hourAgo, hourAgo);
    const stale = source(server.url("/api.json"), dir, { refreshIntervalMs: 3_600_000 });
    stale.start();
    for (let i = 0; i < 100 && stale.current().modified !== FRESH.modified; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(state.requests, 1);
    assert.equal(stale.current().modified, FRESH.modified);
    await stale.stop();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("registry refresh: repeats on its interval, and stop() ends it (no timer left behind)", async () => {
  const { state, server } = registryServer();
  await using _s = server;
  const dir = await tempDir();
  try {
    const src = source(server.url("/api.json"), dir, { refreshIntervalMs: 100 });
    src.start();
    await new Promise((r) => setTimeout(r, 360));
    await src.stop();
    const seen = state.requests;
    assert.ok(seen >= 3 && seen <= 5, `${seen} refreshes in 360 ms at 100 ms intervals`);
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(state.requests, seen, "none after stop()");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("registry refresh: an unusable cache file is ignored with a warning; no section means embedded", async () => {
  const dir = await tempDir();
  try {
    await Deno.writeTextFile(`${dir}/scitags-registry.json`, '{"version": 1, "experiments": "none"}');
    using logs = captureLogs("info");
    const src = registrySourceFor({
      workDir: dir,
      registry: { url: "http://127.0.0.1:9/api.json", refreshInterval: 0, timeout: 1 },
    });
    assert.equal(src.current(), Registry.embedded());
    assert.match(
      logs.matching(/level=WARN/)[0] ?? "",
      /cached SciTags registry is not valid; using the embedded copy/,
    );
    await src.stop();
    const none = registrySourceFor({ workDir: dir });
    none.start();
    assert.equal(none.origin, "embedded");
    assert.deepEqual(await none.refresh(), { ok: false, error: "no registry URL configured" });
    await none.stop();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
