/**
 * The published firefly JSON schema v1.0.0 as an independent oracle: ajv (draft 2020-12) plus ajv-formats,
 * compiled from `tests/fixtures/firefly.schema.v1.0.0.json` (kept verbatim, trailing commas and all; they are
 * stripped at load time).
 */
import { Ajv2020 } from "ajv/dist/2020.js";
import * as ajvFormats from "ajv-formats";

/** Removes commas that directly precede `}` or `]` (outside strings), turning the published file into JSON. */
export function stripTrailingCommas(text: string): string {
  let out = "";
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (inString) {
      out += ch;
      if (ch === "\\") out += text[++i] ?? "";
      else if (ch === '"') inString = false;
      continue;
    }
    if (ch === '"') inString = true;
    if (ch === ",") {
      let j = i + 1;
      while (j < text.length && /\s/.test(text[j] ?? "")) j++;
      if (text[j] === "}" || text[j] === "]") continue;
    }
    out += ch;
  }
  return out;
}

const SCHEMA_URL = new URL("../fixtures/firefly.schema.v1.0.0.json", import.meta.url);

/** The schema as a plain object. */
export const fireflySchema: Record<string, unknown> = JSON.parse(
  stripTrailingCommas(Deno.readTextFileSync(SCHEMA_URL)),
);

// ajv-formats is CommonJS: its plugin is the default export at run time, but the type checker sees the
// module namespace under `default`; accept either shape.
type FormatsPlugin = (ajv: Ajv2020) => unknown;
function resolveFormatsPlugin(): FormatsPlugin {
  const outer = (ajvFormats as unknown as { default: unknown }).default;
  if (typeof outer === "function") return outer as FormatsPlugin;
  const inner = (outer as { default?: unknown } | undefined)?.default;
  if (typeof inner === "function") return inner as FormatsPlugin;
  throw new Error("ajv-formats: no plugin function found in the module");
}

// Strict, so an unknown keyword or format fails loudly, except two authoring checks the published schema
// does not meet (it relies on `type` declared outside `then`/`if` sub-schemas); they do not change verdicts.
const ajv = new Ajv2020({ allErrors: true, strict: true, strictRequired: false, strictTypes: false });
resolveFormatsPlugin()(ajv);
const validate = ajv.compile(fireflySchema);

/** ajv's verdict on a document and its error lines (`<instance path> <message>`). */
export function ajvCheckFirefly(doc: unknown): { valid: boolean; errors: string[] } {
  const valid = validate(doc) as boolean;
  const errors = (validate.errors ?? []).map((e) => `${e.instancePath || "/"} ${e.message ?? e.keyword}`);
  return { valid, errors };
}

/** Throws, listing ajv's errors, unless `doc` satisfies the published firefly schema. */
export function assertValidFirefly(doc: unknown): void {
  const { valid, errors } = ajvCheckFirefly(doc);
  if (!valid) {
    throw new Error(
      `firefly does not match the published schema v1.0.0:\n  ${errors.join("\n  ")}\n${JSON.stringify(doc)}`,
    );
  }
}
