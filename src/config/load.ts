/**
 * Reading the configuration: YAML text → validated `Config`, with every error naming the key path and
 * the line in the file, and with the cross-section rules of the original (perfSONAR forces matchAll).
 */
import { isMap, isScalar, isSeq, LineCounter, type Node, type Pair, parseDocument } from "./yaml.ts";
import type { z } from "zod";
import { ConfigError, errorMessage } from "../core/errors.ts";
import { clip, quoted } from "../core/clip.ts";
import { readBoundedTextFileSync } from "../core/bounded_file.ts";
import { Registry } from "../scitags/registry.ts";
import { readCachedRegistry, registryCachePath } from "../scitags/registry_source.ts";
import { type Config, ConfigSchema, configSchema, GROUP_PATHS, SECTION_PATHS } from "./schema.ts";
import { BUILTIN_PREFIX, builtinConfigText } from "./builtin.ts";

export { DEFAULT_CONFIG_PATH } from "./defaults.ts";

/** A validated configuration and the warnings found while resolving it. */
export interface LoadedConfig {
  config: Config;
  /** Where it came from (a path, or a description for built-in configurations). */
  source: string;
  warnings: string[];
}

type Path = readonly (string | number)[];

/** How `parseConfig` resolves experiment and activity names. */
export interface ParseOptions {
  /** The registry for a configuration (given its raw workDir and registry section); default: embedded. */
  registryFor?: (raw: { workDir: unknown; registry: unknown }) => Registry;
}

/**
 * The registry names in a configuration file resolve with: the copy cached in workDir when the
 * `registry` section asks for refreshes and one was cached, else the embedded one.
 */
export function cachedRegistryFor(raw: { workDir: unknown; registry: unknown }): Registry {
  if (raw.registry === undefined || raw.registry === null) return Registry.embedded();
  const workDir = typeof raw.workDir === "string" && raw.workDir !== "" ? raw.workDir : "/var/cache/flowd-go";
  return readCachedRegistry(registryCachePath(workDir))?.registry ?? Registry.embedded();
}

/** Largest configuration file read: real ones are a few KB; this keeps a parse well under a second. */
export const MAX_CONFIG_BYTES = 1 << 20;
/** Deepest nesting of mappings and lists accepted (the schema's deepest key is 4 levels down). */
export const MAX_CONFIG_DEPTH = 32;
/** Most keys and list items accepted in one configuration (real ones have well under a hundred). */
export const MAX_CONFIG_ENTRIES = 10_000;

/** Reads and validates a configuration file; throws `ConfigError` with one clear message. */
// deno-lint-ignore require-await -- callers await it; the read is synchronous on purpose (bounded_file.ts)
export async function loadConfigFile(path: string): Promise<LoadedConfig> {
  let text: string;
  try {
    text = readBoundedTextFileSync(path, MAX_CONFIG_BYTES, "the configuration file");
  } catch (err) {
    throw new ConfigError(errorMessage(err));
  }
  return parseConfig(text, path, { registryFor: cachedRegistryFor });
}

/** Parses and validates configuration text; `source` names it in error messages. */
export function parseConfig(text: string, source: string, opts: ParseOptions = {}): LoadedConfig {
  if (text.length > MAX_CONFIG_BYTES) {
    throw new ConfigError(`${source}: the configuration is larger than ${MAX_CONFIG_BYTES} bytes`);
  }
  // Every key is followed by ":" and every flow item by ",": far more of them than the bound means far
  // more entries, refused before the parser spends time on them.
  let separators = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x3a || c === 0x2c) separators++;
  }
  if (separators > 4 * MAX_CONFIG_ENTRIES) {
    throw new ConfigError(
      `${source}: the configuration has more than ${MAX_CONFIG_ENTRIES} keys and list items (about ${separators})`,
    );
  }
  if (flowNestingDepth(text) > MAX_CONFIG_DEPTH) {
    // Refused before parsing: the parser spends half a second on tens of thousands of "[" before it fails.
    throw new ConfigError(`${source}: the configuration nests more than ${MAX_CONFIG_DEPTH} levels deep`);
  }
  const lineCounter = new LineCounter();
  // Duplicate keys are found below, in linear time (the parser's own check is quadratic in the keys).
  const doc = parseDocument(text, { lineCounter, uniqueKeys: false, prettyErrors: false, logLevel: "error" });
  const lineOf = (offset: number | undefined) =>
    offset === undefined ? undefined : lineCounter.linePos(offset).line;
  const at = (line: number | undefined) => line === undefined ? source : `${source}:${line}`;

  const firstError = doc.errors[0];
  if (firstError) {
    const line = lineOf(firstError.pos[0]);
    const message = firstError.message.split("\n")[0]!;
    if (/call stack/i.test(message)) {
      throw new ConfigError(`${at(line)}: the configuration nests more than ${MAX_CONFIG_DEPTH} levels deep`);
    }
    throw new ConfigError(`${at(line)}: invalid YAML: ${clip(message)}`);
  }

  const index = indexDocument(doc.contents, (offset, message) => {
    throw new ConfigError(`${at(lineOf(offset))}: ${message}`);
  });

  // An empty or comment-only document means "all defaults" (the original applied none).
  let raw: unknown;
  try {
    raw = doc.contents === null ? {} : doc.toJS() ?? {};
  } catch (err) {
    if (err instanceof RangeError) {
      throw new ConfigError(`${source}: the configuration nests more than ${MAX_CONFIG_DEPTH} levels deep`);
    }
    throw new ConfigError(`${source}: invalid YAML: ${clip(errorMessage(err))}`);
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new ConfigError(
      `${at(lineOf(doc.contents?.range?.[0]))}: the configuration must be a mapping of keys`,
    );
  }

  const position = (path: Path, ofKey: boolean): number | undefined => {
    const node = nodeAt(index, doc.contents, path, ofKey);
    return lineOf(node?.range?.[0]);
  };

  normaliseNulls(raw as Record<string, unknown>, [], (path, message) => {
    throw new ConfigError(`${at(position(path, true))}: ${keyPath(path)}: ${message}`);
  });

  const rawObject = raw as Record<string, unknown>;
  const registry = opts.registryFor?.({ workDir: rawObject.workDir, registry: rawObject.registry }) ??
    Registry.embedded();
  const schema = registry === Registry.embedded() ? ConfigSchema : configSchema(registry);
  const parsed = schema.safeParse(raw);
  if (!parsed.success) throw new ConfigError(describeIssues(parsed.error.issues, position, at));

  const warnings = applyCrossSectionRules(parsed.data);
  return { config: parsed.data, source, warnings };
}

/** The deepest nesting of YAML flow collections ([...] and {...}) outside quotes and comments, roughly. */
function flowNestingDepth(text: string): number {
  let depth = 0, deepest = 0;
  let quote: string | undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quote) {
      if (c === "\\" && quote === '"') i++;
      else if (c === quote) quote = undefined;
      continue;
    }
    if (c === '"' || c === "'") quote = c;
    else if (c === "#" && (i === 0 || /\s/.test(text[i - 1]!))) {
      const end = text.indexOf("\n", i);
      i = end < 0 ? text.length : end;
    } else if (c === "[" || c === "{") deepest = Math.max(deepest, ++depth);
    else if ((c === "]" || c === "}") && depth > 0) depth--;
  }
  return deepest;
}

/** The pairs of each YAML mapping by key text, built once so that finding a key's line is O(1). */
type PairIndex = Map<unknown, Map<string, Pair>>;

/**
 * Walks the document once, without recursion: refuses nesting beyond `MAX_CONFIG_DEPTH`, more than
 * `MAX_CONFIG_ENTRIES` keys and items, and duplicate keys; returns the index of every mapping's keys.
 */
function indexDocument(
  root: unknown,
  fail: (offset: number | undefined, message: string) => never,
): PairIndex {
  const index: PairIndex = new Map();
  let entries = 0;
  const stack: { node: unknown; depth: number }[] = [{ node: root, depth: 1 }];
  while (stack.length > 0) {
    const { node, depth } = stack.pop()!;
    if (!isMap(node) && !isSeq(node)) continue;
    if (depth > MAX_CONFIG_DEPTH) {
      fail(node.range?.[0], `the configuration nests more than ${MAX_CONFIG_DEPTH} levels deep`);
    }
    entries += node.items.length;
    if (entries > MAX_CONFIG_ENTRIES) {
      fail(node.range?.[0], `the configuration has more than ${MAX_CONFIG_ENTRIES} keys and list items`);
    }
    if (isMap(node)) {
      const keys = new Map<string, Pair>();
      for (const pair of node.items) {
        const key = isScalar(pair.key) ? String(pair.key.value) : undefined;
        if (key !== undefined) {
          if (keys.has(key)) {
            fail(
              (pair.key as Node).range?.[0],
              `invalid YAML: Map keys must be unique (${quoted(key)} again)`,
            );
          }
          keys.set(key, pair);
        }
        stack.push({ node: pair.value, depth: depth + 1 });
      }
      index.set(node, keys);
    } else {
      for (const item of node.items) stack.push({ node: item, depth: depth + 1 });
    }
  }
  return index;
}

/** A key path as messages show it, each key clipped. */
function keyPath(path: Path): string {
  return path.map((seg) => clip(String(seg), 100)).join(".");
}

/** Replaces null values: a null scalar keeps its default, a null group is empty, a null section is an error. */
function normaliseNulls(
  obj: Record<string, unknown>,
  path: string[],
  fail: (path: string[], message: string) => never,
): void {
  for (const [key, value] of Object.entries(obj)) {
    const p = [...path, key];
    const dotted = p.join(".");
    if (value === null) {
      if (GROUP_PATHS.includes(dotted)) obj[key] = {};
      else if (SECTION_PATHS.includes(dotted)) {
        fail(
          p,
          `has no value: write "${key}: {}" to enable it with its defaults, or remove the key to disable it`,
        );
      } else delete obj[key];
    } else if (typeof value === "object" && !Array.isArray(value)) {
      normaliseNulls(value as Record<string, unknown>, p, fail);
    }
  }
}

/** The YAML node at a path (the key node when `ofKey`), for line numbers. */
function nodeAt(index: PairIndex, root: unknown, path: Path, ofKey: boolean): Node | undefined {
  let node = root;
  for (let i = 0; i < path.length; i++) {
    const seg = path[i];
    if (isMap(node)) {
      const pair = index.get(node)?.get(String(seg));
      if (!pair) return node as Node;
      if (i === path.length - 1 && ofKey) return pair.key as Node;
      node = pair.value;
    } else if (isSeq(node) && typeof seg === "number") {
      node = node.items[seg];
    } else {
      return node as Node | undefined;
    }
  }
  return node as Node | undefined;
}

function describeIssues(
  issues: readonly z.core.$ZodIssue[],
  position: (path: Path, ofKey: boolean) => number | undefined,
  at: (line: number | undefined) => string,
): string {
  const lines = issues.slice(0, 5).map((issue) => {
    const path = issue.path.filter((s): s is string | number => typeof s !== "symbol");
    if (issue.code === "unrecognized_keys") {
      const known = knownKeysAt(path);
      const shown = issue.keys.slice(0, 5).map((k) => {
        const full = [...path, k];
        const hint = LEGACY_KEYS[k] ?? (k.length <= 100 ? closest(k, known) : undefined);
        return `${at(position(full, true))}: unknown key ${keyPath(full)}` +
          (hint ? ` (did you mean ${hint}?)` : known.length ? ` (known keys here: ${known.join(", ")})` : "");
      });
      if (issue.keys.length > 5) shown.push(`... and ${issue.keys.length - 5} more unknown keys`);
      return shown.join("\n");
    }
    const where = path.length ? keyPath(path) : "(top level)";
    return `${at(position(path, false))}: ${where}: ${issue.message}`;
  });
  if (issues.length > 5) lines.push(`... and ${issues.length - 5} more problems`);
  return lines.join("\n");
}

/** The keys the schema allows at a path, for hints. */
function knownKeysAt(path: Path): string[] {
  // deno-lint-ignore no-explicit-any
  let schema: any = ConfigSchema;
  for (const seg of path) {
    schema = unwrap(schema);
    const shape = schema?.shape;
    if (!shape || typeof seg !== "string") return [];
    schema = shape[seg];
  }
  schema = unwrap(schema);
  return schema?.shape ? Object.keys(schema.shape) : [];
}

// deno-lint-ignore no-explicit-any
function unwrap(schema: any): any {
  // optional / default / pipe (superRefine) wrappers hide the object schema.
  for (let i = 0; i < 5 && schema && !schema.shape; i++) {
    schema = schema.def?.innerType ?? schema.def?.in ?? schema.def?.schema;
  }
  return schema;
}

/** Spellings seen in the original's documentation and shipped files, and what they should be. */
const LEGACY_KEYS: Record<string, string> = {
  np: "namedPipe",
  activityID: "activityId",
  experimentID: "experimentId",
  activityIds: "activityIDs",
  experimentIds: "experimentIDs",
  forceHookRemoval: "removeQdisc (forceHookRemoval was removed in flowd-go 2)",
  httpResolution: "nothing: this switch was removed from flowd-go",
  stunResolution: "nothing: this switch was removed from flowd-go",
};

/** The known key closest to a typo, if it is close enough to be a likely intent. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDist = Infinity;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestDist) [best, bestDist] = [c, d];
  }
  return best !== undefined && bestDist <= Math.max(1, Math.floor(word.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length]!;
}

/** Dependencies between sections, resolved before anything is built; returns warnings. */
function applyCrossSectionRules(config: Config): string[] {
  const warnings: string[] = [];
  const { plugins, backends, enrichers } = config;
  if (plugins.perfsonar && backends.marker && !backends.marker.matchAll) {
    backends.marker.matchAll = true;
    warnings.push(
      "plugins.perfsonar is enabled: overriding backends.marker.matchAll to true (marking all traffic)",
    );
  }
  if (plugins.perfsonar && !backends.marker) {
    warnings.push("plugins.perfsonar is enabled without backends.marker: nothing will be marked");
  }
  if (backends.firefly?.enrich && !enrichers?.netlink && !enrichers?.skops) {
    warnings.push(
      "backends.firefly.enrich is true but no enricher is enabled: no periodic fireflies will be sent",
    );
  }
  if (backends.prometheus && backends.prometheus.netlinkPort === 0 && backends.prometheus.skopsPort === 0) {
    warnings.push("backends.prometheus: both netlinkPort and skopsPort are 0, no metrics will be served");
  }
  if ((enrichers?.netlink || enrichers?.skops) && !backends.prometheus && !backends.firefly?.enrich) {
    warnings.push(
      "enrichers are enabled but nothing uses their samples (add backends.prometheus or backends.firefly.enrich)",
    );
  }
  for (const [name, port] of [["netlink", "netlinkPort"], ["skops", "skopsPort"]] as const) {
    if (enrichers?.[name] && backends.prometheus && backends.prometheus[port] === 0) {
      warnings.push(`backends.prometheus.${port} is 0: the samples of enrichers.${name} are not exported`);
    }
  }
  const hasPlugin = Object.values(plugins).some((p) => p !== undefined);
  const hasBackend = Object.values(backends).some((b) => b !== undefined);
  if (!hasPlugin) warnings.push("no plugin is enabled: no flow events will be produced");
  if (!hasBackend) warnings.push("no backend is enabled: flow events will be discarded");
  return warnings;
}

/** Loads a built-in configuration by `--conf` value (builtin:<name>). */
export function loadBuiltinConfig(confArg: string): LoadedConfig {
  const name = confArg.slice(BUILTIN_PREFIX.length);
  return parseConfig(builtinConfigText(name), confArg);
}
