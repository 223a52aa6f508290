/**
 * A sock_ops BPF object attached to a cgroup v2 directory through a BPF link, with its ring buffer
 * read into TypeScript. Shared by the skops enricher and the iperf3 plugin: configure the object's
 * read-only data, load, attach, read records, and on close detach (closing the link fd) and unload.
 */
import {
  BPF_CGROUP_SOCK_OPS,
  type BpfMap,
  BpfObject,
  linkCreate,
  mapLookup,
  progInfo,
  RingBuffer,
} from "../../ffi/libbpf.ts";
import { closeFd } from "../../ffi/libc_net.ts";
import { O_CLOEXEC, O_RDONLY, openFd } from "../../ffi/libc.ts";
import type { Logger } from "../core/log.ts";
import { RingReader } from "./ring_reader.ts";

const O_DIRECTORY = 0o200000;

// Possible CPUs do not change while the process runs.
let cpuCount: number | undefined;

/** The number of possible CPUs (per-CPU map values have one slot each), from sysfs: "0-3,6" is 7. */
export function parseCpuList(list: string): number {
  let max = -1;
  for (const part of list.trim().split(",")) {
    const [a, b] = part.split("-");
    max = Math.max(max, Number(b ?? a));
  }
  return max + 1;
}

function possibleCpus(): number {
  cpuCount ??= parseCpuList(Deno.readTextFileSync("/sys/devices/system/cpu/possible"));
  return cpuCount;
}

/** How to load one sock_ops object. */
export interface SockOpsProgramOptions {
  /** The ELF object. */
  bytes: Uint8Array;
  /** Name for messages ("skops", "watcher"). */
  name: string;
  /** The program to attach. */
  programName: string;
  /** The ring buffer map. */
  ringMapName: string;
  /** A one-entry per-CPU u64 array the program counts records it could not write in (ring full). */
  lostMapName?: string;
  /** Global-data section and its bytes, set before load. */
  config?: { section: string; bytes: Uint8Array<ArrayBuffer> };
  /** cgroup v2 directory to attach to. */
  cgroupPath: string;
  /** Called on the JS thread with every ring-buffer record; the bytes are reused after the call returns. */
  onRecord: (record: Uint8Array) => void;
  /** Longest time between two reads of the ring (records the program writes without a wake-up wait that long). */
  readSliceMs?: number;
  log: Logger;
}

/** The loaded, attached program and its maps. */
export class SockOpsProgram {
  readonly #object: BpfObject;
  #linkFd = -1;
  #ring: RingBuffer | undefined;
  #reader: RingReader | undefined;
  #lostMap: BpfMap | undefined;
  /** Kernel id of the attached program (to find it in `bpftool cgroup tree`). */
  readonly programId: number;

  private constructor(object: BpfObject, programId: number) {
    this.#object = object;
    this.programId = programId;
  }

  /** Loads, attaches and starts reading; on any failure releases what it took and throws. */
  static open(o: SockOpsProgramOptions): SockOpsProgram {
    const object = BpfObject.openMem(o.bytes, o.name);
    let program: SockOpsProgram | undefined;
    try {
      if (o.config) {
        const section = object.findMap(o.config.section);
        if (!section) throw new Error(`the ${o.name} BPF object has no ${o.config.section} section`);
        section.setInitialValue(o.config.bytes);
      }
      object.load();
      const prog = object.findProgram(o.programName);
      if (!prog) throw new Error(`the ${o.name} BPF object has no program ${o.programName}`);
      const ringMap = object.findMap(o.ringMapName);
      if (!ringMap) throw new Error(`the ${o.name} BPF object has no map ${o.ringMapName}`);
      program = new SockOpsProgram(object, progInfo(prog.fd).id);
      if (o.lostMapName) program.#lostMap = program.map(o.lostMapName);
      program.#ring = RingBuffer.open(ringMap.fd, o.onRecord);
      program.#reader = new RingReader(program.#ring, o.log, o.name, o.readSliceMs);
      const cgroupFd = openFd(o.cgroupPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      try {
        // A link (not a legacy attachment): it goes away with its fd, also when the process dies.
        program.#linkFd = linkCreate(prog.fd, cgroupFd, BPF_CGROUP_SOCK_OPS);
      } finally {
        closeFd(cgroupFd);
      }
      program.#reader.start();
      return program;
    } catch (err) {
      if (program) void program.close();
      else object.close();
      throw err;
    }
  }

  /** A map of the loaded object, or an error naming it. */
  map(name: string): BpfMap {
    const m = this.#object.findMap(name);
    if (!m) throw new Error(`BPF map ${name} not found`);
    return m;
  }

  /** Records read so far. */
  get consumed(): number {
    return this.#reader?.consumed ?? 0;
  }

  /** Records the program could not write because the ring was full, over all CPUs. */
  lost(): bigint {
    const map = this.#lostMap;
    if (!map) return 0n;
    const cpus = possibleCpus();
    const value = mapLookup(map.fd, new Uint8Array(4), 8 * cpus);
    if (!value) return 0n;
    const v = new DataView(value.buffer, value.byteOffset, value.byteLength);
    let sum = 0n;
    for (let i = 0; i < cpus; i++) sum += v.getBigUint64(8 * i, true);
    return sum;
  }

  /** Reads what is waiting in the ring right now (records the kernel wrote before a call returned). */
  drain(): number {
    return this.#reader?.drain() ?? 0;
  }

  /** Detaches (no new records), reads what is left, frees the ring and unloads the object. */
  async close(): Promise<void> {
    if (this.#linkFd >= 0) {
      closeFd(this.#linkFd);
      this.#linkFd = -1;
    }
    await this.#reader?.stop();
    this.#reader?.drain();
    this.#reader = undefined;
    this.#ring?.close();
    this.#ring = undefined;
    this.#object.close();
  }
}
