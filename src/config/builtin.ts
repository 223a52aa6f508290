/**
 * Built-in configurations, selected with `--conf builtin:<name>`, so flowd-go can be tried with no
 * file in /etc. Paths live under one temporary directory, printed at start.
 */
import { ConfigError } from "../core/errors.ts";

/** Prefix of `--conf` values that name a built-in configuration. */
export const BUILTIN_PREFIX = "builtin:";

/** The directory the quick-start configuration uses for its pipe, PID file and work files. */
export function quickstartDir(): string {
  const tmp = Deno.env.get("TMPDIR") || "/tmp";
  const uid = Deno.uid();
  return uid === 0 || uid === null ? `${tmp}/flowd-go-quickstart` : `${tmp}/flowd-go-quickstart-${uid}`;
}

function quickstart(): string {
  const dir = quickstartDir();
  return `# Built-in quick-start configuration: REST API and named pipe in, fireflies out to a local collector.
pidPath: ${dir}/flowd-go.pid
workDir: ${dir}
plugins:
  api:
    bindAddress: 127.0.0.1
    bindPort: 7777
    # GET /dummy/start and /dummy/end emit a test flow; fine on loopback for a demo, off by default.
    enableDummyEndpoints: true
  namedPipe:
    pipePath: ${dir}/np
    pipeMode: "0600"
backends:
  firefly:
    # Fireflies go to a collector on loopback only (a stand-in: the python3 one-liner in the README).
    sendToDestination: false
    sendToCollector: true
    collectorAddress: 127.0.0.1
    collectorPort: 10514
`;
}

const BUILTINS: Record<string, () => string> = { quickstart };

/** Names of the built-in configurations. */
export const BUILTIN_NAMES = Object.keys(BUILTINS);

/** The text of a built-in configuration. */
export function builtinConfigText(name: string): string {
  const make = BUILTINS[name];
  if (!make) {
    throw new ConfigError(
      `there is no built-in configuration "${name}"; known: ${
        BUILTIN_NAMES.map((n) => BUILTIN_PREFIX + n).join(", ")
      }`,
    );
  }
  return make();
}
