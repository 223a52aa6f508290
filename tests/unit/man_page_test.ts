/** The man page documents every configuration key the code accepts. */
import assert from "node:assert/strict";
import { ConfigSchema } from "../../src/config/schema.ts";

// deno-lint-ignore no-explicit-any
function objectShape(schema: any): Record<string, unknown> | undefined {
  for (let i = 0; i < 6 && schema; i++) {
    if (schema.shape) return schema.shape;
    schema = schema.def?.innerType ?? schema.def?.in ?? schema.def?.schema;
  }
  return undefined;
}

/** Every key path of the schema, e.g. "backends.firefly.stun.manualMapping". */
function keyPaths(schema: unknown, prefix: string[] = []): string[][] {
  const shape = objectShape(schema);
  if (!shape) return [];
  return Object.entries(shape).flatMap(([k, v]) => [[...prefix, k], ...keyPaths(v, [...prefix, k])]);
}

const man = await Deno.readTextFile(new URL("../../man/flowd-go.1.md", import.meta.url));

Deno.test("man page: every configuration key of the code is documented", () => {
  const paths = keyPaths(ConfigSchema);
  assert.ok(paths.length > 60, `only ${paths.length} keys found: the schema walk is broken`);
  const missing: string[] = [];
  for (const path of paths) {
    const key = path.at(-1)!;
    const isSection = objectShape(
      path.reduce<unknown>((s, k) => objectShape(s)?.[k], ConfigSchema),
    ) !== undefined;
    // Sections appear as headings (## backends.firefly.stun), keys in bold (**collectorPort**).
    const documented = isSection
      ? man.includes(`## ${path.join(".")}`) || (path.length === 1 && man.includes(`## ${key}`)) ||
        (path.length === 1 && man.includes("## Top level"))
      : man.includes(`**${key}**`);
    if (!documented) missing.push(path.join("."));
  }
  assert.deepEqual(missing, []);
});
