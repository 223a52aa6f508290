import assert from "node:assert/strict";
import { kernelHz, measureHz, parseConfigHz } from "../../src/bpf/kernel_hz.ts";
import { privilegedTest } from "../helpers/privileged.ts";

/** CONFIG_HZ as the kernel's configuration says; the kernel matrix hands its VMs the file by path. */
async function configuredHz(): Promise<number | undefined> {
  const handed = Deno.env.get("FLOWD_GO_TEST_KERNEL_CONFIG");
  if (handed) return parseConfigHz(await Deno.readTextFile(handed));
  try {
    return parseConfigHz(await Deno.readTextFile(`/boot/config-${Deno.osRelease()}`));
  } catch { /* try /proc */ }
  try {
    const stream = (await Deno.open("/proc/config.gz")).readable.pipeThrough(new DecompressionStream("gzip"));
    return parseConfigHz(await new Response(stream).text());
  } catch {
    return undefined;
  }
}

privilegedTest("kernel HZ: measured from jiffies, it is what the kernel was configured with", async () => {
  const measured = await measureHz();
  const configured = await configuredHz();
  const hz = await kernelHz();
  assert.ok(configured, "no kernel configuration to compare with (FLOWD_GO_TEST_KERNEL_CONFIG names one)");
  assert.equal(measured, configured, `measured ${measured}, CONFIG_HZ=${configured}`);
  assert.equal(hz.hz, configured, `the daemon's value (${hz.source})`);
});
