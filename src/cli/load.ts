/** Loading the configuration the command line names (a file or a built-in one). */
import { BUILTIN_PREFIX } from "../config/builtin.ts";
import { loadBuiltinConfig, loadConfigFile, type LoadedConfig } from "../config/load.ts";
import { ConfigError } from "../core/errors.ts";
import { logger } from "../core/log.ts";
import type { CliArgs } from "./args.ts";

/** The configuration for `--conf`, with a hint when the default file is missing. */
export async function loadCliConfig(args: Pick<CliArgs, "conf" | "confGiven">): Promise<LoadedConfig> {
  if (args.conf.startsWith(BUILTIN_PREFIX)) return loadBuiltinConfig(args.conf);
  try {
    return await loadConfigFile(args.conf);
  } catch (err) {
    if (err instanceof ConfigError && !args.confGiven && /no such file/.test(err.message)) {
      throw new ConfigError(
        `${err.message}; give --conf PATH, or --conf ${BUILTIN_PREFIX}quickstart to try the built-in configuration`,
      );
    }
    throw err;
  }
}

/** Logs the warnings and (at debug) the effective configuration, under the daemon's logger name. */
export function reportConfig(loaded: LoadedConfig): void {
  const log = logger("run");
  for (const w of loaded.warnings) log.warn(w);
  log.debug("configuration parsed", { source: loaded.source, config: JSON.stringify(loaded.config) });
}
