/**
 * Splits a command line into flags and positionals, strictly: an unknown flag, a value given to a boolean
 * flag or a missing value is a `UsageError` naming the flag. Our own rather than `node:util`'s parseArgs:
 * that import alone pulls Node's compatibility layer into every command's start-up.
 *
 * Accepted forms: `--name`, `--name=value`, `--name value`, `-h`, grouped short booleans (`-hx`), a short
 * string flag's value attached (`-cfile`) or next; `--` ends the flags, and a lone `-` is a positional.
 */
import { UsageError } from "../core/errors.ts";

/** One flag: a boolean (present or not) or a string (repeatable when `multiple`). */
export interface FlagSpec {
  type: "boolean" | "string";
  short?: string;
  multiple?: boolean;
}

/** The parsed value type of each flag of a spec table. */
export type FlagValues<S extends Record<string, FlagSpec>> = {
  [K in keyof S]?: S[K]["type"] extends "boolean" ? boolean
    : S[K]["multiple"] extends true ? string[]
    : string;
};

export interface SplitArgs<S extends Record<string, FlagSpec>> {
  values: FlagValues<S>;
  positionals: string[];
}

/** Splits `argv` (without the program name) by the flags of `specs`. */
export function splitArgs<S extends Record<string, FlagSpec>>(
  argv: readonly string[],
  specs: S,
): SplitArgs<S> {
  const values: Record<string, boolean | string | string[]> = {};
  const positionals: string[] = [];
  const byShort = new Map<string, string>();
  for (const [name, spec] of Object.entries(specs)) if (spec.short) byShort.set(spec.short, name);

  const setString = (name: string, value: string) => {
    if (specs[name]!.multiple) ((values[name] ??= []) as string[]).push(value);
    else values[name] = value;
  };
  // The value of a string flag given as the next argument; one that looks like a flag is refused, as it is
  // far more likely a forgotten value than a value (`--name=-x` still gives one).
  const nextValue = (shown: string, i: number): string => {
    const next = argv[i];
    if (next === undefined || (next.startsWith("-") && next !== "-")) {
      throw new UsageError(`option '${shown}' needs a value`);
    }
    return next;
  };

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--") {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      const name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
      const spec = Object.hasOwn(specs, name) ? specs[name] : undefined;
      if (spec === undefined) throw new UsageError(`unknown option '--${name}'`);
      if (spec.type === "boolean") {
        if (eq >= 0) throw new UsageError(`option '--${name}' takes no value`);
        values[name] = true;
      } else {
        setString(name, eq >= 0 ? arg.slice(eq + 1) : nextValue(`--${name}`, ++i));
      }
      continue;
    }
    if (arg.startsWith("-") && arg !== "-") {
      for (let j = 1; j < arg.length; j++) {
        const name = byShort.get(arg[j]!);
        if (name === undefined) throw new UsageError(`unknown option '-${arg[j]}'`);
        if (specs[name]!.type === "boolean") {
          values[name] = true;
          continue;
        }
        setString(name, j + 1 < arg.length ? arg.slice(j + 1) : nextValue(`-${arg[j]}`, ++i));
        break;
      }
      continue;
    }
    positionals.push(arg);
  }
  return { values: values as FlagValues<S>, positionals };
}
