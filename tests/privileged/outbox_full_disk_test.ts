/** The outbox on a full file system: writes fail without a throw, the file keeps whole records, and it goes on once there is room. */
import assert from "node:assert/strict";
import { privilegedTest } from "../helpers/privileged.ts";
import { withSmallTmpfs } from "../helpers/small_tmpfs.ts";
import { sh } from "../helpers/netns.ts";
import { Outbox } from "../../src/core/outbox.ts";

privilegedTest(
  "outbox: a full disk is counted, never thrown; what is on disk stays readable, and writing resumes",
  async () => {
    await withSmallTmpfs("flowd-outbox-full", "size=16k,mode=0700", async (dir) => {
      const { outbox } = Outbox.open(`${dir}/o.log`, 1 << 20);
      const errors: string[] = [];
      outbox.onWriteError = (m) => errors.push(m);
      const payload = new Uint8Array(1000).fill(65);
      for (let i = 0; i < 40; i++) {
        assert.ok(outbox.append(payload), "taken in memory even when the disk is full");
        outbox.flush();
      }
      assert.ok(outbox.writeErrors > 0, "some writes failed");
      assert.match(errors[0]!, /No space left on device/);
      assert.equal(outbox.depth, 40, "every message still pending (and publishable)");
      const onDisk = Outbox.open(`${dir}/o.log`, 1 << 20);
      assert.deepEqual(onDisk.report.cutBytes, 0, "only whole records on disk");
      assert.ok(
        onDisk.report.recovered > 0 && onDisk.report.recovered < 40,
        `${onDisk.report.recovered} on disk`,
      );
      onDisk.outbox.close();
      // Room again (all acknowledged, and a file system with space): the next flush writes and compacts.
      for (let seq = 1; seq <= 40; seq++) outbox.ack(seq);
      await sh(["mount", "-o", "remount,size=1m", dir]);
      outbox.flush();
      outbox.close();
      const after = Outbox.open(`${dir}/o.log`, 1 << 20);
      after.outbox.close();
      assert.equal(after.report.recovered, 0);
    });
  },
);
