/**
 * Gating for tests that need root (BPF, tc, network namespaces). When not root such tests are
 * registered as ignored AND announced on stderr, so a skip is never mistaken for a pass.
 */

/** True when the tests run as root. */
export const isRoot: boolean = Deno.uid() === 0;

/** Registers a test that needs root; when not root it is ignored with a loud note. */
export function privilegedTest(name: string, fn: (t: Deno.TestContext) => Promise<void> | void): void {
  if (!isRoot) {
    console.error(`SKIPPED (needs root): ${name}`);
    Deno.test({ name: `${name} [SKIPPED: needs root]`, ignore: true, fn });
    return;
  }
  Deno.test({ name, fn, sanitizeResources: true, sanitizeOps: true });
}

/** Whether an executable is on PATH. */
export function hasCommand(cmd: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${cmd}`).isFile) return true;
    } catch { /* not here */ }
  }
  return false;
}
