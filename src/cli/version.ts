/** `flowd-go version`: the original's two lines, now actually filled in. */
import { buildCommit, VERSION } from "../version.ts";

export async function versionCommand(): Promise<number> {
  const text = `built commit: ${await buildCommit()}\nbase version: ${VERSION}\n`;
  await Deno.stdout.write(new TextEncoder().encode(text));
  return 0;
}
