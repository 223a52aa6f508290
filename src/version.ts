/**
 * Version and build identity. The version comes from deno.json; the commit is written into
 * build_info.json by the build, and looked up with git when running from a source checkout.
 */
import denoJson from "../deno.json" with { type: "json" };
import buildInfo from "./build_info.json" with { type: "json" };

/** The flowd-go version (deno.json "version"). */
export const VERSION: string = denoJson.version;

/** Application name in fireflies and syslog headers, as the original: "flowd-go-<version>". */
export const APPLICATION_NAME = `flowd-go-${VERSION}`;

/** The commit this was built from: baked in by the build, else asked of git, else "unknown". */
export async function buildCommit(): Promise<string> {
  if (buildInfo.commit) return buildInfo.commit;
  try {
    const dir = new URL("..", import.meta.url);
    if (dir.protocol !== "file:") return "unknown";
    const out = await new Deno.Command("git", {
      args: ["-C", dir.pathname, "describe", "--always", "--dirty", "--abbrev=40"],
      stdout: "piped",
      stderr: "null",
    }).output();
    const text = new TextDecoder().decode(out.stdout).trim();
    return out.success && text ? text : "unknown";
  } catch {
    return "unknown";
  }
}
