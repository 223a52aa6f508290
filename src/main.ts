/**
 * flowd-go entry point: parse the command line, set up logging, dispatch to a command, and turn
 * every failure into one error line and a non-zero exit status (1: failure, 2: bad command line).
 *
 * Each command's module is imported when that command runs: `version` and `help` load neither the
 * configuration parser nor any component.
 */
import { parseCli } from "./cli/args.ts";
import { helpText } from "./cli/help.ts";
import { errorMessage, UsageError } from "./core/errors.ts";
import { logger, setupLogging } from "./core/log.ts";

async function print(text: string): Promise<void> {
  await Deno.stdout.write(new TextEncoder().encode(text));
}

/** Runs the CLI with the given arguments and returns the exit status. */
export async function main(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseCli(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    await Deno.stderr.write(
      new TextEncoder().encode(`flowd-go: ${err.message}\nRun "flowd-go --help" for usage.\n`),
    );
    return 2;
  }
  setupLogging({ level: args.logLevel, withTime: args.logTime });
  if (args.help || args.command === "none") {
    await print(helpText(args.help ? args.command : undefined));
    return 0;
  }
  try {
    switch (args.command) {
      case "help":
        await print(helpText(args.rest.join(" ")));
        return 0;
      case "version":
        return await (await import("./cli/version.ts")).versionCommand();
      case "conf":
        return await (await import("./cli/conf.ts")).confCommand(args);
      case "run":
        return await (await import("./cli/run.ts")).runCommand(args);
      case "reload":
        return await (await import("./cli/reload.ts")).reloadCommand(args);
      case "flows":
        return await (await import("./cli/flows.ts")).flowsCommand(args);
      case "status":
        return await (await import("./cli/status.ts")).statusCommand(args);
      case "doctor":
        return await (await import("./cli/doctor.ts")).doctorCommand(args);
      case "marker clean":
        return await (await import("./cli/marker_clean.ts")).markerCleanCommand(args);
      case "stun sample":
        return await (await import("./cli/stun_sample.ts")).stunSampleCommand(args);
    }
  } catch (err) {
    // One line, naming what is wrong; multi-line configuration reports are joined.
    logger("cli").error(errorMessage(err).replaceAll("\n", "; "));
    return 1;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
