/** A workDir with no space left: the daemon refuses to start with one line naming the PID file (item 20). */
import assert from "node:assert/strict";
import { privilegedTest } from "../helpers/privileged.ts";
import { withSmallTmpfs } from "../helpers/small_tmpfs.ts";
import { runFlowd } from "../helpers/daemon.ts";

privilegedTest(
  "full workDir: the PID file error names the path and the step, and leaves no file",
  async () => {
    await withSmallTmpfs("flowd-go-full", "size=4k,mode=0755", async (dir) => {
      // One page of data fills this tmpfs; creating the PID file still works, writing to it cannot.
      await Deno.writeFile(`${dir}/filler`, new Uint8Array(4096)).catch(() => {});
      const conf = `${dir}/../flowd-go-full-${Deno.pid}.yaml`;
      await Deno.writeTextFile(conf, `workDir: ${dir}\npidPath: flowd-go.pid\nplugins: {}\nbackends: {}\n`);
      try {
        const r = await runFlowd(["--conf", conf, "run"]);
        assert.equal(r.code, 1, r.stderr);
        const errors = r.stderr.trim().split("\n").filter((l) => l.includes("level=ERROR"));
        assert.equal(errors.length, 1, r.stderr);
        assert.match(
          errors[0]!,
          new RegExp(`cannot write the PID file ${dir}/flowd-go\\.pid: No space left on device`),
        );
        await assert.rejects(() => Deno.stat(`${dir}/flowd-go.pid`), Deno.errors.NotFound);
      } finally {
        await Deno.remove(conf);
      }
    });
  },
);
