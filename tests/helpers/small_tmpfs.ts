/** A tmpfs of a few KiB mounted on a temp dir, for tests of a full disk (needs root). */
import { sh } from "./netns.ts";

/**
 * Runs `fn` with a fresh directory on a tmpfs mounted with `options` (e.g. "size=16k,mode=0700"); unmounts
 * and removes it afterwards, also when `fn` throws.
 */
export async function withSmallTmpfs<T>(
  name: string,
  options: string,
  fn: (dir: string) => Promise<T>,
): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: `${name}-` });
  try {
    await sh(["mount", "-t", "tmpfs", "-o", options, name, dir]);
  } catch (err) {
    await Deno.remove(dir);
    throw err;
  }
  try {
    return await fn(dir);
  } finally {
    await sh(["umount", dir]);
    await Deno.remove(dir);
  }
}
