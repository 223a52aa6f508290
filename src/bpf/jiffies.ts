/**
 * The kernel's jiffies counter, read from user space, so that the jiffies BPF programs record (the marker's
 * first and last marked packet) become ages. There is no unprivileged file that shows it, so two tiny
 * programs ask the kernel: `r0 = bpf_jiffies64()`, shifted right by 32 for the high half, returned through
 * BPF_PROG_TEST_RUN (whose return value has 32 bits).
 */
import { BPF_PROG_TYPE_SCHED_CLS, loadRawProgram, progTestRun } from "../../ffi/libbpf.ts";
import { closeFd } from "../../ffi/libc_net.ts";

const BPF_FUNC_JIFFIES64 = 118;
/** The smallest frame a tc program's test run accepts (an Ethernet header). */
const FRAME = new Uint8Array(14);

/** `call bpf_jiffies64; [r0 >>= 32;] exit`. */
function jiffiesProgram(highHalf: boolean): Uint8Array<ArrayBuffer> {
  const insns = new Uint8Array(highHalf ? 24 : 16);
  const dv = new DataView(insns.buffer);
  insns[0] = 0x85; // BPF_JMP | BPF_CALL
  dv.setInt32(4, BPF_FUNC_JIFFIES64, true);
  let at = 8;
  if (highHalf) {
    insns[at] = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K, dst r0
    dv.setInt32(at + 4, 32, true);
    at += 8;
  }
  insns[at] = 0x95; // BPF_JMP | BPF_EXIT
  return insns;
}

/** Reads the kernel's jiffies; loads its two programs on first use, `close` unloads them. */
export class JiffiesClock implements Disposable {
  #low = -1;
  #high = -1;

  /** The kernel's jiffies now (the 64-bit counter bpf_jiffies64 reads). */
  now(): bigint {
    if (this.#low < 0) {
      this.#low = loadRawProgram(BPF_PROG_TYPE_SCHED_CLS, "flowd_jiffies_lo", jiffiesProgram(false));
      this.#high = loadRawProgram(BPF_PROG_TYPE_SCHED_CLS, "flowd_jiffies_hi", jiffiesProgram(true));
    }
    // High, low, high again: a carry between the two reads shows as a changed high half.
    for (;;) {
      const high = progTestRun(this.#high, { data: FRAME }).retval;
      const low = progTestRun(this.#low, { data: FRAME }).retval;
      if (progTestRun(this.#high, { data: FRAME }).retval === high) {
        return (BigInt(high) << 32n) | BigInt(low);
      }
    }
  }

  close(): void {
    for (const fd of [this.#low, this.#high]) if (fd >= 0) closeFd(fd);
    this.#low = this.#high = -1;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Milliseconds from a recorded jiffies value to `now`, at the kernel's CONFIG_HZ. */
export function jiffiesAgeMs(recorded: bigint, now: bigint, hz: number): number {
  return now <= recorded ? 0 : Number(((now - recorded) * 1000n) / BigInt(hz));
}
