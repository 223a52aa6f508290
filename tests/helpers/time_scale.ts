/**
 * Waiting times of the test helpers, scaled by FLOWD_GO_TEST_TIME_SCALE (default 1). The kernel matrix sets
 * it inside its VMs, where an emulated CPU (QEMU TCG) runs everything several times slower; the waits are
 * bounds on how long something may take, never the thing measured, so stretching them changes no verdict.
 */
const SCALE = Math.max(1, Number(Deno.env.get("FLOWD_GO_TEST_TIME_SCALE") ?? "1") || 1);

/** A helper's waiting time in milliseconds, scaled for slow machines. */
export function scaled(ms: number): number {
  return ms * SCALE;
}
