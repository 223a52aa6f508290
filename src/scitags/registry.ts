/**
 * The SciTags registry of experiments and their activities (https://scitags.org/api.json), embedded as of
 * its last copy, for turning the names people write in configuration into the numeric ids on the wire and
 * back into names for logs.
 *
 * Real clients spell names inconsistently ("Data Challenge", "DataChallenge", "data-challenge"), so names
 * match case-insensitively and ignoring everything but letters and digits.
 */
import { clip } from "../core/clip.ts";
import embeddedData from "./scitags_registry.json" with { type: "json" };
import { MAX_ID } from "../core/flow_event.ts";
import { parseRfc3339Micros } from "../core/time.ts";

/** One activity of an experiment. */
export interface RegistryActivity {
  readonly name: string;
  readonly id: number;
}

/** One experiment and its activities (activity ids are per experiment). */
export interface RegistryExperiment {
  readonly name: string;
  readonly id: number;
  readonly activities: readonly RegistryActivity[];
}

/** A name did not resolve, or registry data is malformed; `suggestions` lists close names when known. */
export class RegistryError extends Error {
  constructor(message: string, readonly suggestions: readonly string[] = []) {
    super(message);
    this.name = "RegistryError";
  }
}

/** The comparison key of a name: lower case, only letters and digits. */
export function normalizeName(name: string): string {
  return name.normalize("NFKD").toLowerCase().replace(/[^a-z0-9]/g, "");
}

/** Levenshtein distance, for suggestions. */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row.push(Math.min((prev[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost));
    }
    prev = row;
  }
  return prev[b.length] ?? 0;
}

/** Names close to `query`: small edit distance on normalised names, or one containing the other. */
function closeMatches(query: string, names: readonly string[]): string[] {
  const q = normalizeName(query);
  const limit = Math.max(2, Math.floor(q.length / 3));
  const scored: Array<[number, string]> = [];
  for (const name of names) {
    const n = normalizeName(name);
    const d = editDistance(q, n);
    const contains = q.length >= 3 && (n.includes(q) || q.includes(n));
    if (d <= limit || contains) scored.push([d, name]);
  }
  scored.sort((a, b) => a[0] - b[0] || a[1].localeCompare(b[1]));
  return scored.slice(0, 5).map(([, name]) => name);
}

/** A number or a decimal string is an id (checked for range); anything else is a name (undefined). */
function asId(value: string | number, what: string): number | undefined {
  let n: number;
  if (typeof value === "number") {
    n = value;
  } else {
    const text = value.trim();
    if (!/^\d+$/.test(text)) return undefined;
    n = Number(text);
  }
  if (!Number.isInteger(n) || n < 0 || n > MAX_ID) {
    throw new RegistryError(`${what} id ${quoted(value)} is not an integer in 0..${MAX_ID}`);
  }
  return n;
}

/** Finds the one entry named `query`: exact, then case-insensitive, then normalised; errors otherwise. */
function findByName<T extends { name: string; id: number }>(
  entries: readonly T[],
  query: string,
  what: string,
  scope: string,
): T {
  if (normalizeName(query) === "") {
    throw new RegistryError(`${what} name ${quoted(query)}${scope} has no letters or digits`);
  }
  const tests: Array<(e: T) => boolean> = [
    (e) => e.name === query,
    (e) => e.name.toLowerCase() === query.toLowerCase(),
    (e) => normalizeName(e.name) === normalizeName(query),
  ];
  for (const test of tests) {
    const found = entries.filter(test);
    if (found.length === 1) return found[0]!;
    if (found.length > 1) {
      const list = found.map((e) => `${JSON.stringify(e.name)} (${e.id})`).join(", ");
      throw new RegistryError(`${what} name ${quoted(query)}${scope} is ambiguous: ${list}`);
    }
  }
  const names = entries.map((e) => e.name);
  const close = closeMatches(query, names);
  const label = (name: string) => `${JSON.stringify(name)} (${entries.find((e) => e.name === name)?.id})`;
  const hint = close.length
    ? `did you mean ${close.map(label).join(", ")}?`
    : `known: ${names.map(label).join(", ")}`;
  throw new RegistryError(`unknown ${what} ${quoted(query)}${scope}; ${hint}`, close);
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Input as an error message quotes it: JSON, clipped to ~200 characters. */
function quoted(v: unknown): string {
  return typeof v === "string" ? JSON.stringify(clip(v)) : clip(JSON.stringify(v) ?? String(v));
}

function show(v: unknown): string {
  const text = JSON.stringify(v) ?? String(v);
  return text.length > 40 ? `${text.slice(0, 40)}…` : text;
}

/** Checks the registry's shape (schema v1.0.0 plus unique ids) and returns its experiments, or the errors. */
function readRegistry(
  value: unknown,
): { errors: string[]; experiments: RegistryExperiment[]; modified?: string } {
  const errors: string[] = [];
  const experiments: RegistryExperiment[] = [];
  if (!isObject(value)) {
    return { errors: [`(registry): expected an object, got ${show(value)}`], experiments };
  }
  if (value.version !== 1) errors.push(`version: expected 1, got ${show(value.version)}`);
  let modified: string | undefined;
  if (value.modified !== undefined) {
    if (typeof value.modified === "string" && parseRfc3339Micros(value.modified) !== undefined) {
      modified = value.modified;
    } else {
      errors.push(`modified: ${show(value.modified)} is not an RFC 3339 date-time`);
    }
  }
  const id = (path: string, v: unknown): number | undefined => {
    if (typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= MAX_ID) return v;
    errors.push(`${path}: ${show(v)} is not an integer in 0..${MAX_ID}`);
    return undefined;
  };
  const name = (path: string, v: unknown): string | undefined => {
    if (typeof v === "string" && normalizeName(v) !== "") return v;
    errors.push(`${path}: ${show(v)} is not a name with letters or digits`);
    return undefined;
  };
  if (!Array.isArray(value.experiments) || value.experiments.length === 0) {
    errors.push(`experiments: expected a non-empty array, got ${show(value.experiments)}`);
    return { errors, experiments };
  }
  const expIds = new Set<number>();
  value.experiments.forEach((exp: unknown, i: number) => {
    const at = `experiments[${i}]`;
    if (!isObject(exp)) return void errors.push(`${at}: expected an object, got ${show(exp)}`);
    const expName = name(`${at}.expName`, exp.expName);
    const expId = id(`${at}.expId`, exp.expId);
    if (expId !== undefined) {
      if (expIds.has(expId)) errors.push(`${at}.expId: ${expId} is used by an earlier experiment`);
      expIds.add(expId);
    }
    if (!Array.isArray(exp.activities) || exp.activities.length === 0) {
      return void errors.push(`${at}.activities: expected a non-empty array, got ${show(exp.activities)}`);
    }
    const activities: RegistryActivity[] = [];
    const actIds = new Set<number>();
    exp.activities.forEach((act: unknown, j: number) => {
      const aat = `${at}.activities[${j}]`;
      if (!isObject(act)) return void errors.push(`${aat}: expected an object, got ${show(act)}`);
      const actName = name(`${aat}.activityName`, act.activityName);
      const actId = id(`${aat}.activityId`, act.activityId);
      if (actId !== undefined) {
        if (actIds.has(actId)) errors.push(`${aat}.activityId: ${actId} is used by an earlier activity`);
        actIds.add(actId);
      }
      if (actName !== undefined && actId !== undefined) activities.push({ name: actName, id: actId });
    });
    if (expName !== undefined && expId !== undefined) {
      experiments.push({ name: expName, id: expId, activities });
    }
  });
  return modified === undefined ? { errors, experiments } : { errors, experiments, modified };
}

let embedded: Registry | undefined;

/** Resolves experiment and activity names to ids and back. Immutable. */
export class Registry {
  readonly #byId: ReadonlyMap<number, RegistryExperiment>;

  private constructor(
    readonly experiments: readonly RegistryExperiment[],
    /** The registry's `modified` time, for logs ("registry of 2025-09-04..."). */
    readonly modified: string | undefined,
  ) {
    this.#byId = new Map(experiments.map((e) => [e.id, e]));
  }

  /** The registry shipped with the daemon. */
  static embedded(): Registry {
    embedded ??= Registry.fromObject(embeddedData, "embedded SciTags registry");
    return embedded;
  }

  /** Parses and checks registry JSON (for example a fresh copy of https://scitags.org/api.json). */
  static fromJson(text: string, source = "SciTags registry"): Registry {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw new RegistryError(`${source} is not JSON: ${err instanceof Error ? err.message : String(err)}`);
    }
    return Registry.fromObject(value, source);
  }

  /** Checks an already parsed registry document; throws `RegistryError` listing what is wrong. */
  static fromObject(value: unknown, source = "SciTags registry"): Registry {
    const { errors, experiments, modified } = readRegistry(value);
    if (errors.length) {
      const more = errors.length > 5 ? `; and ${errors.length - 5} more` : "";
      throw new RegistryError(`${source} is not a valid registry: ${errors.slice(0, 5).join("; ")}${more}`);
    }
    return new Registry(experiments, modified);
  }

  /** The experiment id for a name (any spelling variant) or an id; ids pass through even if not listed. */
  experimentId(nameOrId: string | number): number {
    const id = asId(nameOrId, "experiment");
    if (id !== undefined) return id;
    return findByName(this.experiments, String(nameOrId), "experiment", "").id;
  }

  /**
   * The activity id for a name or an id within an experiment (a name or an id). Ids pass through; a name
   * needs the experiment to be in the registry, since activity ids are per experiment.
   */
  activityId(experiment: string | number, nameOrId: string | number): number {
    const id = asId(nameOrId, "activity");
    if (id !== undefined) return id;
    const expId = this.experimentId(experiment);
    const exp = this.#byId.get(expId);
    if (!exp) {
      throw new RegistryError(
        `experiment ${expId} is not in the registry, so activity ${
          quoted(nameOrId)
        } cannot be resolved by name; give the activity id as a number`,
      );
    }
    return findByName(exp.activities, String(nameOrId), "activity", ` of experiment ${exp.name} (${exp.id})`)
      .id;
  }

  /** The registry name of an experiment id, for logs; undefined when not listed. */
  experimentName(id: number): string | undefined {
    return this.#byId.get(id)?.name;
  }

  /** The registry name of an activity id within an experiment, for logs; undefined when not listed. */
  activityName(experimentId: number, activityId: number): string | undefined {
    return this.#byId.get(experimentId)?.activities.find((a) => a.id === activityId)?.name;
  }
}
