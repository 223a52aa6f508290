/**
 * Hostile configuration files: every one is refused quickly with a message that names the problem and
 * quotes none of the input whole (hardening issue items 18, 19 and 24).
 */
import assert from "node:assert/strict";
import { loadConfigFile, MAX_CONFIG_BYTES, parseConfig } from "../../src/config/load.ts";
import { ConfigError } from "../../src/core/errors.ts";
import { mkfifo } from "../../ffi/libc.ts";

/** The ConfigError a text gives, and how long it took. */
function refusal(text: string): { message: string; ms: number } {
  const t0 = performance.now();
  try {
    parseConfig(text, "conf.yaml");
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${err}`);
    return { message: err.message, ms: performance.now() - t0 };
  }
  assert.fail("the configuration was accepted");
}

Deno.test("config limits: deep nesting is refused as such, never a stack overflow", () => {
  for (
    const text of [
      "a: " + "[".repeat(5000) + "]".repeat(5000),
      "x: " + "{a: ".repeat(40) + "1" + "}".repeat(40),
    ]
  ) {
    const { message } = refusal(text);
    assert.match(message, /^conf\.yaml(:\d+)?: the configuration nests more than 32 levels deep$/);
    assert.doesNotMatch(message, /call stack/i);
  }
  let block = "";
  for (let i = 0; i < 40; i++) block += `${" ".repeat(i * 2)}k${i}:\n`;
  assert.match(refusal(block).message, /^conf\.yaml:\d+: the configuration nests more than 32 levels deep$/);
});

Deno.test("config limits: 100,000 keys are refused at once", () => {
  const text = Array.from({ length: 100_000 }, (_, i) => `${i.toString(36)}: 0`).join("\n");
  const { message, ms } = refusal(text);
  console.error(`100,000 keys refused in ${ms.toFixed(0)} ms`);
  assert.match(message, /more than 10000 keys and list items/);
  assert.ok(ms < 500, `took ${ms} ms`);
});

Deno.test("config limits: thousands of unknown keys are reported in linear time, five of them by name", () => {
  // Just under the entry bound: the whole path (parse, positions, schema, message) runs on every key.
  const text = Array.from({ length: 9_000 }, (_, i) => `unknownKey${i}: ${i}`).join("\n");
  const { message, ms } = refusal(text);
  console.error(`9,000 unknown keys reported in ${ms.toFixed(0)} ms`);
  const lines = message.split("\n");
  assert.equal(lines.length, 6, message.slice(0, 500));
  assert.match(lines[0]!, /^conf\.yaml:1: unknown key unknownKey0\b/);
  assert.equal(lines[5], "... and 8995 more unknown keys");
  // The quadratic version took 4.3 s for 10,000 keys on this kind of machine.
  assert.ok(ms < 1500, `took ${ms} ms`);
});

Deno.test("config limits: huge values and keys are quoted by their first characters only", () => {
  const big = "x".repeat(900_000);
  for (
    const [text, re] of [
      [
        `plugins:\n  api:\n    bindPort: "${big}"\n`,
        /bindPort: expected a port number in 0\.\.65535, got "x{200}…\(\+899800 chars\)"/,
      ],
      [`${"y".repeat(1000)}: 1\n`, /unknown key y{100}…\(\+900 chars\)/],
      [`plugins:\n  perfsonar: {experimentId: "${big}", activityId: 1}\n`, /unknown experiment "x{200}…/],
    ] as const
  ) {
    const { message } = refusal(text);
    assert.match(message, re);
    assert.ok(message.length < 2000, `a message of ${message.length} characters`);
  }
});

Deno.test("config limits: duplicate keys are refused with the line of the second one", () => {
  assert.match(
    refusal("pidPath: a\nworkDir: /tmp\npidPath: b\n").message,
    /^conf\.yaml:3: invalid YAML: Map keys must be unique/,
  );
});

Deno.test("config limits: --conf names a FIFO, a device, a directory or a huge file: refused at once, naming it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flowd-config-limits-" });
  try {
    mkfifo(`${dir}/fifo`, 0o600);
    await Deno.writeFile(`${dir}/huge.yaml`, new Uint8Array(MAX_CONFIG_BYTES + 1).fill(0x20));
    await Deno.symlink(`${dir}/fifo`, `${dir}/link-to-fifo`);
    for (
      const [path, what] of [
        [`${dir}/fifo`, "it is a named pipe \\(FIFO\\), expected a regular file"],
        [`${dir}/link-to-fifo`, "it is a named pipe \\(FIFO\\), expected a regular file"],
        ["/dev/zero", "it is a character device, expected a regular file"],
        [dir, "it is a directory, expected a regular file"],
        [`${dir}/huge.yaml`, `it is ${MAX_CONFIG_BYTES + 1} bytes, more than the limit of 1 MiB`],
      ]
    ) {
      const t0 = performance.now();
      await assert.rejects(
        () => loadConfigFile(path!),
        (err: Error) => {
          assert.ok(err instanceof ConfigError);
          assert.match(err.message, new RegExp(`^cannot read the configuration file ${path}: ${what}$`));
          return true;
        },
      );
      assert.ok(performance.now() - t0 < 500, `${path} took ${performance.now() - t0} ms`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
