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

/** Kernel version as [major, minor] from the release string ("6.1.0-50-cloud-amd64" → [6, 1]). */
export function kernelVersion(): [number, number] {
  const m = /^(\d+)\.(\d+)/.exec(Deno.osRelease());
  return m ? [Number(m[1]), Number(m[2])] : [0, 0];
}

/** TCX links (BPF_TCX_EGRESS) came with Linux 6.6; older kernels (Debian 12's 6.1) only have clsact. */
export const kernelHasTcx: boolean = (() => {
  const [major, minor] = kernelVersion();
  return major > 6 || (major === 6 && minor >= 6);
})();

/** A root test that needs TCX links; on an older kernel it is ignored with a loud note. */
export function tcxTest(name: string, fn: (t: Deno.TestContext) => Promise<void> | void): void {
  if (!kernelHasTcx) {
    console.error(`SKIPPED (kernel ${Deno.osRelease()} has no TCX; the clsact variants run): ${name}`);
    Deno.test({ name: `${name} [SKIPPED: no TCX]`, ignore: true, fn });
    return;
  }
  privilegedTest(name, fn);
}

/** A root test of what a kernel WITHOUT TCX does; on a kernel with TCX it is ignored with a loud note. */
export function noTcxTest(name: string, fn: (t: Deno.TestContext) => Promise<void> | void): void {
  if (kernelHasTcx) {
    console.error(`SKIPPED (kernel ${Deno.osRelease()} has TCX; runs in the kernel matrix on 6.1): ${name}`);
    Deno.test({ name: `${name} [SKIPPED: kernel has TCX]`, ignore: true, fn });
    return;
  }
  privilegedTest(name, fn);
}
