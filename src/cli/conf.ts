/** `flowd-go conf`: print the effective configuration, defaults included. */
import { stringify } from "../config/yaml.ts";
import type { CliArgs } from "./args.ts";
import { loadCliConfig, reportConfig } from "./load.ts";

/** Prints the configuration as YAML (or JSON); returns the exit status. */
export async function confCommand(args: CliArgs): Promise<number> {
  const loaded = await loadCliConfig(args);
  reportConfig(loaded);
  const text = args.format === "json"
    ? JSON.stringify(loaded.config, null, 4) + "\n"
    : `# effective configuration from ${loaded.source}\n${stringify(loaded.config)}`;
  await Deno.stdout.write(new TextEncoder().encode(text));
  return 0;
}
